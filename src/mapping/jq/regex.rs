//! Regular expressions as jq 1.6 (Oniguruma, Perl syntax) runs them, on
//! `fancy-regex`: Unicode-aware classes (`\w` matches `é`), look-around and
//! back-references; offsets and lengths in code points.

use super::compat::{str_of, type_name};
use super::Val;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Compiled expressions kept per thread, so that a mapping does not
/// compile its `gsub` pattern for every message.
const CACHE_SIZE: usize = 64;

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<fancy_regex::Regex>>> = RefCell::new(HashMap::new());
}

struct Flags {
    global: bool,
    no_empty: bool,
    prefix: String,
}

fn flags(v: &Val) -> Result<Flags, String> {
    let text = match v {
        Val::Null => "",
        other => str_of(other).ok_or_else(|| format!("{other} is not a string"))?,
    };
    let mut f = Flags {
        global: false,
        no_empty: false,
        prefix: String::new(),
    };
    let (mut i, mut s, mut x) = (false, false, false);
    for c in text.chars() {
        match c {
            'g' => f.global = true,
            'n' => f.no_empty = true,
            'i' => i = true,
            'x' => x = true,
            // Oniguruma's MULTILINE: `.` also matches a newline.
            'p' | 'm' => s = true,
            // SINGLELINE is already the Perl syntax's default; the
            // longest-match option has no equivalent (see README).
            's' | 'l' => {}
            _ => return Err(format!("{text} is not a valid modifier string")),
        }
    }
    for (on, flag) in [(i, "i"), (s, "s"), (x, "x")] {
        if on {
            f.prefix.push_str(&format!("(?{flag})"));
        }
    }
    Ok(f)
}

/// Oniguruma's Perl syntax in fancy-regex's: `$` and `\Z` match at the
/// end or before a final newline; `^` only at the start (already so).
fn translate(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 8);
    let mut chars = re.chars();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('Z') if class_depth == 0 => out.push_str(r"(?=\n?\z)"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' => {
                class_depth += 1;
                out.push(c);
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(c);
            }
            '$' if class_depth == 0 => out.push_str(r"(?=\n?\z)"),
            _ => out.push(c),
        }
    }
    out
}

fn compile(re: &str, prefix: &str) -> Result<Rc<fancy_regex::Regex>, String> {
    let key = format!("{prefix}\u{0}{re}");
    if let Some(found) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(found);
    }
    let compiled = fancy_regex::Regex::new(&format!("{prefix}{}", translate(re)))
        .map(Rc::new)
        .map_err(|e| format!("{re} (at offset 0) is not a valid regex: {e}"))?;
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
    });
    Ok(compiled)
}

fn chars(text: &str, from: usize, to: usize) -> usize {
    text.get(from..to).map_or(0, |s| s.chars().count())
}

/// `_match_impl`: with `test`, whether there is a match; otherwise the
/// array of match objects jq builds.
pub(super) fn run(input: &Val, re: &Val, flags_v: &Val, test: bool) -> Result<Val, String> {
    let text = str_of(input).ok_or_else(|| {
        format!(
            "{} ({input}) cannot be matched, as it is not a string",
            type_name(input)
        )
    })?;
    let pattern = str_of(re).ok_or_else(|| {
        format!(
            "{} ({re}) cannot be matched, as it is not a string",
            type_name(re)
        )
    })?;
    let f = flags(flags_v)?;
    let regex = compile(pattern, &f.prefix)?;
    let names: Vec<Option<String>> = regex.capture_names().map(|n| n.map(str::to_string)).collect();
    let mut found = Vec::new();
    let mut start = 0;
    // As jq 1.6: after an empty match the search goes on one character
    // further, and it stops at the end of the text, so an empty match
    // at the very end is only found when it is the first search.
    loop {
        let caps = regex
            .captures_from_pos(text, start)
            .map_err(|e| format!("regex failure: {e}"))?;
        let Some(caps) = caps else { break };
        let Some(whole) = caps.get(0) else { break };
        let empty = whole.start() == whole.end();
        if !(f.no_empty && empty) {
            if test {
                return Ok(Val::Bool(true));
            }
            found.push(match_object(text, &names, &caps, &whole));
        }
        if !f.global {
            break;
        }
        start = if empty {
            match text.get(whole.end()..).and_then(|rest| rest.chars().next()) {
                Some(c) => whole.end() + c.len_utf8(),
                None => break,
            }
        } else {
            whole.end()
        };
        if start >= text.len() {
            break;
        }
    }
    if test {
        return Ok(Val::Bool(false));
    }
    Ok(found.into_iter().collect())
}

/// The match object jq builds for one match: offset, length, string and
/// the captures (offsets and lengths in code points).
fn match_object(
    text: &str,
    names: &[Option<String>],
    caps: &fancy_regex::Captures<'_>,
    whole: &fancy_regex::Match<'_>,
) -> Val {
    let mut captures = Vec::new();
    for (i, name) in names.iter().enumerate().skip(1) {
        let name = name.clone().map_or(Val::Null, Val::from);
        let fields: Vec<(Val, Val)> = match caps.get(i) {
            Some(m) => vec![
                (
                    Val::from("offset".to_string()),
                    Val::from(chars(text, 0, m.start())),
                ),
                (
                    Val::from("length".to_string()),
                    Val::from(chars(text, m.start(), m.end())),
                ),
                (Val::from("string".to_string()), Val::from(m.as_str().to_string())),
                (Val::from("name".to_string()), name),
            ],
            None => vec![
                (Val::from("offset".to_string()), Val::from(-1isize)),
                (Val::from("string".to_string()), Val::Null),
                (Val::from("length".to_string()), Val::from(0usize)),
                (Val::from("name".to_string()), name),
            ],
        };
        captures.push(Val::obj(fields.into_iter().collect()));
    }
    let fields = [
        (
            Val::from("offset".to_string()),
            Val::from(chars(text, 0, whole.start())),
        ),
        (
            Val::from("length".to_string()),
            Val::from(chars(text, whole.start(), whole.end())),
        ),
        (
            Val::from("string".to_string()),
            Val::from(whole.as_str().to_string()),
        ),
        (Val::from("captures".to_string()), captures.into_iter().collect()),
    ];
    Val::obj(fields.into_iter().collect())
}
