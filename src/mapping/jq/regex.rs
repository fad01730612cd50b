//! Regular expressions as jq 1.6 (Oniguruma, Perl syntax) runs them, on
//! `fancy-regex`: Unicode-aware classes (`\w` matches `é`), look-around and
//! back-references; offsets and lengths in code points.

use super::Val;
use super::{str_of, type_name, Thrown};
use jaq_json::jqerr::dump_trunc;
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

fn flags(v: &Val) -> Result<Flags, Thrown> {
    let text = match v {
        Val::Null => "",
        other => str_of(other).ok_or_else(|| Thrown(format!("{other} is not a string")))?,
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
            _ => return Err(Thrown(format!("{text} is not a valid modifier string"))),
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

fn compile(re: &str, prefix: &str) -> Result<Rc<fancy_regex::Regex>, Thrown> {
    let key = format!("{prefix}\u{0}{re}");
    if let Some(found) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(found);
    }
    let compiled = fancy_regex::Regex::new(&format!("{prefix}{}", translate(re)))
        .map(Rc::new)
        .map_err(|e| Thrown(format!("{re} (at offset 0) is not a valid regex: {e}")))?;
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
    });
    Ok(compiled)
}

/// Code-point offsets of byte positions in one text, counted from the
/// last position asked for: matches come in order, so converting all the
/// offsets of a scan costs one pass over the text, not one per match.
#[derive(Default)]
struct CharCursor {
    byte: usize,
    chars: usize,
}

impl CharCursor {
    fn at(&mut self, text: &str, byte: usize) -> usize {
        if byte >= self.byte {
            self.chars += text.get(self.byte..byte).map_or(0, |s| s.chars().count());
        } else {
            self.chars -= text.get(byte..self.byte).map_or(0, |s| s.chars().count());
        }
        self.byte = byte;
        self.chars
    }
}

/// One scan of a text by a regular expression, match by match, with jq
/// 1.6's rules for global scans and empty matches.
pub(super) struct Scan {
    /// The input, checked to be UTF-8 once (not at every match).
    text: String,
    regex: Rc<fancy_regex::Regex>,
    names: Rc<[Option<String>]>,
    global: bool,
    no_empty: bool,
    start: usize,
    done: bool,
    cursor: CharCursor,
}

fn not_a_string(v: &Val) -> String {
    format!(
        "{} ({}) cannot be matched, as it is not a string",
        type_name(v),
        dump_trunc(v)
    )
}

impl Scan {
    /// Scan `input` (a string) for `re` with jq's `flags`.
    pub(super) fn new(input: Val, re: &Val, flags_v: &Val) -> Result<Scan, Thrown> {
        let text = str_of(&input).ok_or_else(|| not_a_string(&input))?.to_string();
        let pattern = str_of(re).ok_or_else(|| not_a_string(re))?;
        let f = flags(flags_v)?;
        let regex = compile(pattern, &f.prefix)?;
        let names = regex.capture_names().map(|n| n.map(str::to_string)).collect();
        Ok(Scan {
            text,
            regex,
            names,
            global: f.global,
            no_empty: f.no_empty,
            start: 0,
            done: false,
            cursor: CharCursor::default(),
        })
    }

    /// The next match, given to `f` with the text; `None` after the last.
    ///
    /// As jq 1.6: after an empty match the search goes on one character
    /// further, and it stops at the end of the text, so an empty match at
    /// the very end is only found when it is the first search.
    fn next_with<T>(
        &mut self,
        mut f: impl FnMut(&str, &fancy_regex::Captures<'_>, &mut CharCursor, &[Option<String>]) -> T,
    ) -> Option<Result<T, Thrown>> {
        let text = self.text.as_str();
        while !self.done {
            if let Err(why) = jaq_core::meter::check() {
                self.done = true;
                return Some(Err(Thrown(format!("evaluation stopped: {why}"))));
            }
            let caps = match self.regex.captures_from_pos(text, self.start) {
                Ok(caps) => caps,
                Err(e) => {
                    self.done = true;
                    return Some(Err(Thrown(format!("regex failure: {e}"))));
                }
            };
            let Some(whole) = caps.as_ref().and_then(|c| c.get(0)) else {
                self.done = true;
                return None;
            };
            let (start, end) = (whole.start(), whole.end());
            let empty = start == end;
            self.done = !self.global;
            self.start = if empty {
                match text.get(end..).and_then(|rest| rest.chars().next()) {
                    Some(c) => end + c.len_utf8(),
                    None => {
                        self.done = true;
                        end
                    }
                }
            } else {
                end
            };
            if self.start >= text.len() {
                self.done = true;
            }
            if !(self.no_empty && empty) {
                let caps = caps?;
                return Some(Ok(f(text, &caps, &mut self.cursor, &self.names)));
            }
        }
        None
    }
}

/// `test`: whether `input` matches.
pub(super) fn test(input: Val, re: &Val, flags_v: &Val) -> Result<Val, Thrown> {
    let mut scan = Scan::new(input, re, flags_v)?;
    match scan.next_with(|_, _, _, _| ()) {
        Some(Err(e)) => Err(e),
        found => Ok(Val::Bool(found.is_some())),
    }
}

/// `match`: the match objects, one at a time.
impl Iterator for Scan {
    type Item = Result<Val, Thrown>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(|text, caps, cursor, names| match_object(text, names, caps, cursor))
    }
}

/// The named captures of one match as `capture` gives them.
fn capture_object(caps: &fancy_regex::Captures<'_>, names: &[Option<String>]) -> Val {
    let fields = names.iter().enumerate().skip(1).filter_map(|(i, name)| {
        let name = name.as_ref()?;
        let string = caps
            .get(i)
            .map_or(Val::Null, |m| Val::from(m.as_str().to_string()));
        Some((Val::from(name.clone()), string))
    });
    Val::obj(fields.collect())
}

/// `sub(re; str; flags)` in one pass: each match is replaced by the first
/// output of `replace` on its capture object. `Ok(None)` when `replace`
/// has no output for a match (jq's `reduce` then has none either).
pub(super) fn sub<'a>(
    mut scan: Scan,
    mut replace: impl FnMut(Val) -> Option<Result<Val, jaq_core::Exn<'a, Val>>>,
) -> Result<Option<Val>, SubError<'a>> {
    let mut out: Vec<u8> = Vec::with_capacity(scan.text.len());
    let mut kept = 0;
    loop {
        let step = scan.next_with(|text, caps, _, names| {
            let whole = caps.get(0).map_or((0, 0), |m| (m.start(), m.end()));
            (
                text.get(kept..whole.0).unwrap_or("").to_string(),
                whole.1,
                capture_object(caps, names),
            )
        });
        let (gap, end, captures) = match step {
            None => break,
            Some(Err(e)) => return Err(SubError::Message(e)),
            Some(Ok(found)) => found,
        };
        let piece = match replace(captures) {
            None => return Ok(None),
            Some(Err(e)) => return Err(SubError::Exn(e)),
            Some(Ok(Val::Null)) => Val::from(gap),
            Some(Ok(rep)) => (Val::from(gap) + rep).map_err(|e| SubError::Exn(e.into()))?,
        };
        match str_of(&piece) {
            Some(s) => {
                jaq_core::meter::reserve(s.len())
                    .map_err(|why| SubError::Message(format!("evaluation stopped: {why}").into()))?;
                out.extend_from_slice(s.as_bytes());
            }
            None => {
                let e = (Val::from(String::new()) + piece).err().map(Into::into);
                return Err(e.map_or_else(
                    || SubError::Message("cannot add the replacement".into()),
                    SubError::Exn,
                ));
            }
        }
        kept = end;
    }
    let rest = scan.text.get(kept..).unwrap_or("");
    out.extend_from_slice(rest.as_bytes());
    // Pieces of a text and replacement strings: UTF-8 (checked, not copied).
    let out = String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok(Some(Val::from(out)))
}

/// Why `sub` failed: a message of ours, or the replacement's own error.
pub(super) enum SubError<'a> {
    Message(Thrown),
    Exn(jaq_core::Exn<'a, Val>),
}

/// `split(re; flags)`: the text between the matches, in one pass.
pub(super) fn split(mut scan: Scan) -> Result<Val, Thrown> {
    let mut pieces = Vec::new();
    let mut kept = 0;
    while let Some(found) = scan.next_with(|text, caps, _, _| {
        let (start, end) = caps.get(0).map_or((0, 0), |m| (m.start(), m.end()));
        (text.get(kept..start).unwrap_or("").to_string(), end)
    }) {
        let (piece, end) = found?;
        pieces.push(Val::from(piece));
        kept = end;
    }
    let rest = scan.text.get(kept..).unwrap_or("");
    pieces.push(Val::from(rest.to_string()));
    Ok(pieces.into_iter().collect())
}

/// The match object jq builds for one match: offset, length, string and
/// the captures (offsets and lengths in code points).
fn match_object(
    text: &str,
    names: &[Option<String>],
    caps: &fancy_regex::Captures<'_>,
    cursor: &mut CharCursor,
) -> Val {
    let mut span = |start: usize, end: usize| {
        let offset = cursor.at(text, start);
        let length = cursor.at(text, end) - offset;
        (Val::from(offset), Val::from(length))
    };
    let whole = caps.get(0).map_or((0, 0), |m| (m.start(), m.end()));
    let (offset, length) = span(whole.0, whole.1);
    let mut captures = Vec::new();
    for (i, name) in names.iter().enumerate().skip(1) {
        let name = name.clone().map_or(Val::Null, Val::from);
        let fields: Vec<(Val, Val)> = match caps.get(i) {
            Some(m) => {
                let (offset, length) = span(m.start(), m.end());
                vec![
                    (Val::from("offset".to_string()), offset),
                    (Val::from("length".to_string()), length),
                    (Val::from("string".to_string()), Val::from(m.as_str().to_string())),
                    (Val::from("name".to_string()), name),
                ]
            }
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
        (Val::from("offset".to_string()), offset),
        (Val::from("length".to_string()), length),
        (
            Val::from("string".to_string()),
            Val::from(text.get(whole.0..whole.1).unwrap_or("").to_string()),
        ),
        (Val::from("captures".to_string()), captures.into_iter().collect()),
    ];
    Val::obj(fields.into_iter().collect())
}
