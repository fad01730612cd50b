//! Checks and rewrites of a parsed expression before it is compiled:
//! `$__loc__`, constant division by zero.

use jaq_core::load;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::path::Part;

use super::{describe_at, position, CompileError, Val};

/// `$__loc__` is `{"file":"<top-level>","line":N}` with the line it is
/// written on. Each occurrence is replaced by a variable of the same length
/// (`$__l0001` for line 1), so positions in error messages stay right, and
/// the variable is bound to that line's value.
pub(super) fn with_locations(code: &str) -> (String, Vec<(String, Val)>) {
    const LOC: &str = "$__loc__";
    let mut text = code.to_string();
    let mut vars: Vec<(String, Val)> = Vec::new();
    if !code.contains(LOC) {
        return (text, vars);
    }
    let Some(mut term) = load::parse(code, |p| p.term()) else {
        return (text, vars);
    };
    let mut offsets = Vec::new();
    walk(&mut term, &mut |t| {
        if let Term::Var(name) = t {
            if *name == LOC {
                offsets.extend(position(code, name));
            }
        }
    });
    for at in offsets {
        let line = code.get(..at).unwrap_or(code).matches('\n').count() + 1;
        if line > 9999 {
            continue;
        }
        let name = format!("$__l{line:04}");
        text.replace_range(at..at + LOC.len(), &name);
        if !vars.iter().any(|(n, _)| *n == name) {
            let loc = [
                (
                    Val::from("file".to_string()),
                    Val::from("<top-level>".to_string()),
                ),
                (Val::from("line".to_string()), Val::from(line)),
            ];
            vars.push((name, Val::obj(loc.into_iter().collect())));
        }
    }
    (text, vars)
}

/// jq 1.6 folds constant arithmetic when it compiles, so `1 / 0` is a
/// compile error there; it is here too.
pub(super) fn reject_constant_division_by_zero(
    code: &str,
    term: &mut Term<&str>,
) -> Result<(), CompileError> {
    use jaq_core::ops::Math;
    let mut found = None;
    walk(term, &mut |t| {
        if let Term::BinOp(l, BinaryOp::Math(Math::Div), r) = t {
            if let (Term::Num(l), Term::Num(r)) = (&**l, &**r) {
                let zero = |n: &str| n.parse::<f64>().is_ok_and(|z| z == 0.0);
                // jq 1.6 folds `0 / 0` to NaN instead (see README).
                if found.is_none() && zero(r) && !zero(l) {
                    found = Some(describe_at(code, "Division by zero".to_string(), r));
                }
            }
        }
    });
    found.map_or(Ok(()), Err)
}

/// Visit `term` and every term inside it, parents first.
pub(super) fn walk<'s>(term: &mut Term<&'s str>, f: &mut dyn FnMut(&mut Term<&'s str>)) {
    f(term);
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) | Term::Var(_) => {}
        Term::Str(_, parts) => {
            for p in parts {
                if let jaq_core::load::lex::StrPart::Term(t) = p {
                    walk(t, f);
                }
            }
        }
        Term::Arr(t) => {
            if let Some(t) = t {
                walk(t, f);
            }
        }
        Term::Obj(kvs) => {
            for (k, v) in kvs {
                walk(k, f);
                if let Some(v) = v {
                    walk(v, f);
                }
            }
        }
        Term::Neg(t) | Term::Label(_, t) => walk(t, f),
        Term::BinOp(l, op, r) => {
            walk(l, f);
            if let BinaryOp::Pipe(Some(p)) = op {
                walk_pattern(p, f);
            }
            walk(r, f);
        }
        Term::Fold(_, xs, pat, args) => {
            walk(xs, f);
            walk_pattern(pat, f);
            for a in args {
                walk(a, f);
            }
        }
        Term::TryCatch(t, c) => {
            walk(t, f);
            if let Some(c) = c {
                walk(c, f);
            }
        }
        Term::IfThenElse(branches, els) => {
            for (c, t) in branches {
                walk(c, f);
                walk(t, f);
            }
            if let Some(e) = els {
                walk(e, f);
            }
        }
        Term::Def(defs, rest) => {
            for d in defs {
                walk(&mut d.body, f);
            }
            walk(rest, f);
        }
        Term::Call(_, args) => {
            for a in args {
                walk(a, f);
            }
        }
        Term::Path(t, path) => {
            walk(t, f);
            for (part, _) in &mut path.0 {
                match part {
                    Part::Index(i) => walk(i, f),
                    Part::Range(a, b) => {
                        for x in [a, b].into_iter().flatten() {
                            walk(x, f);
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn walk_pattern<'s>(p: &mut Pattern<&'s str>, f: &mut dyn FnMut(&mut Term<&'s str>)) {
    match p {
        Pattern::Var(_) => {}
        Pattern::Arr(ps) => ps.iter_mut().for_each(|p| walk_pattern(p, f)),
        Pattern::Obj(kvs) => {
            for (k, p) in kvs {
                walk(k, f);
                walk_pattern(p, f);
            }
        }
    }
}
