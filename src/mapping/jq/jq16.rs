//! Natives that behave as jq 1.6's C builtins (`src/builtin.c` at tag
//! jq-1.6): the same results and the same error texts, so that a mapping's
//! `try … catch .` sees what the Python agent's pyjq saw. The math builtins
//! call the C library as jq does, so they round as jq 1.6 rounds
//! (`3 | exp10` is 1000.0000000000001, `27 | cbrt` 3.0000000000000004).

use jaq_core::box_iter::box_once;
use jaq_core::native::{v, Fun};
use jaq_core::Native;
use jaq_json::jqerr::{type_error, type_error2};
use jaq_json::Num;
use jaq_std::ValT as _;

use super::compat::{jq_number, once};
use super::str_of;
use super::{Val, D};

/// The C library's math functions, as linked into this program. Some
/// symbols (`cbrt`) bind to compiler-builtins' port of musl's libm, which
/// rounds differently from glibc's: [`c_fn!`] prefers glibc's libm.so.6.
mod libm {
    extern "C" {
        pub fn lgamma_r(x: f64, sign: *mut i32) -> f64;
        pub fn acos(x: f64) -> f64;
        pub fn acosh(x: f64) -> f64;
        pub fn asin(x: f64) -> f64;
        pub fn asinh(x: f64) -> f64;
        pub fn atan(x: f64) -> f64;
        pub fn atanh(x: f64) -> f64;
        pub fn cbrt(x: f64) -> f64;
        pub fn cos(x: f64) -> f64;
        pub fn cosh(x: f64) -> f64;
        pub fn exp(x: f64) -> f64;
        pub fn exp10(x: f64) -> f64;
        pub fn exp2(x: f64) -> f64;
        pub fn expm1(x: f64) -> f64;
        pub fn erf(x: f64) -> f64;
        pub fn erfc(x: f64) -> f64;
        pub fn fabs(x: f64) -> f64;
        pub fn j0(x: f64) -> f64;
        pub fn j1(x: f64) -> f64;
        pub fn lgamma(x: f64) -> f64;
        pub fn log(x: f64) -> f64;
        pub fn log10(x: f64) -> f64;
        pub fn log1p(x: f64) -> f64;
        pub fn log2(x: f64) -> f64;
        pub fn logb(x: f64) -> f64;
        pub fn rint(x: f64) -> f64;
        pub fn significand(x: f64) -> f64;
        pub fn sin(x: f64) -> f64;
        pub fn sinh(x: f64) -> f64;
        pub fn sqrt(x: f64) -> f64;
        pub fn tan(x: f64) -> f64;
        pub fn tanh(x: f64) -> f64;
        pub fn tgamma(x: f64) -> f64;
        pub fn trunc(x: f64) -> f64;
        pub fn y0(x: f64) -> f64;
        pub fn y1(x: f64) -> f64;
        pub fn atan2(x: f64, y: f64) -> f64;
        pub fn copysign(x: f64, y: f64) -> f64;
        pub fn drem(x: f64, y: f64) -> f64;
        pub fn fdim(x: f64, y: f64) -> f64;
        pub fn fmax(x: f64, y: f64) -> f64;
        pub fn fmin(x: f64, y: f64) -> f64;
        pub fn fmod(x: f64, y: f64) -> f64;
        pub fn hypot(x: f64, y: f64) -> f64;
        pub fn nextafter(x: f64, y: f64) -> f64;
        pub fn pow(x: f64, y: f64) -> f64;
        pub fn remainder(x: f64, y: f64) -> f64;
        pub fn scalb(x: f64, y: f64) -> f64;
        pub fn ldexp(x: f64, e: i32) -> f64;
        pub fn scalbln(x: f64, e: i64) -> f64;
        pub fn jn(n: i32, x: f64) -> f64;
        pub fn yn(n: i32, x: f64) -> f64;
        pub fn fma(x: f64, y: f64, z: f64) -> f64;
        pub fn frexp(x: f64, e: *mut i32) -> f64;
        pub fn modf(x: f64, i: *mut f64) -> f64;
    }
}

/// Looking up the C library's libm.so.6, where jq 1.6 finds its math.
mod dl {
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::OnceLock;

    extern "C" {
        fn dlopen(file: *const c_char, flag: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    const RTLD_NOW: c_int = 2;

    /// The address of `name` (NUL-terminated) in libm.so.6; 0 when there
    /// is no such library (not glibc) or symbol.
    pub fn lookup(name: &'static str) -> usize {
        static LIBM: OnceLock<usize> = OnceLock::new();
        // SAFETY: dlopen with a NUL-terminated name; the handle is never closed.
        let handle = *LIBM.get_or_init(|| unsafe { dlopen(c"libm.so.6".as_ptr(), RTLD_NOW) } as usize);
        if handle == 0 || !name.ends_with('\0') {
            return 0;
        }
        // SAFETY: a valid handle and a NUL-terminated name.
        unsafe { dlsym(handle as *mut c_void, name.as_ptr().cast()) as usize }
    }
}

/// The C library's `name` as a function pointer of type `ty`: glibc's from
/// libm.so.6 (what jq 1.6 calls), else the one linked into this program.
macro_rules! c_fn {
    ($name:ident : $ty:ty) => {{
        static ADDR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let addr = *ADDR.get_or_init(|| dl::lookup(concat!(stringify!($name), "\0")));
        if addr == 0 {
            libm::$name as $ty
        } else {
            // SAFETY: `addr` is libm's `$name`, whose C signature is `$ty`.
            unsafe { std::mem::transmute::<usize, $ty>(addr) }
        }
    }};
}

type F1 = unsafe extern "C" fn(f64) -> f64;
type F2 = unsafe extern "C" fn(f64, f64) -> f64;

/// A double converted to a C `int` as x86-64 does (`cvttsd2si`): out of
/// range or NaN gives `INT_MIN` (jq 1.6 casts the arguments of `jn`, `yn`
/// and `ldexp` so).
fn c_int(f: f64) -> i32 {
    if f.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        i32::MIN
    } else {
        f as i32
    }
}

/// [`c_int`] for a C `long`.
fn c_long(f: f64) -> i64 {
    if f.is_nan() || !(-(i64::MAX as f64)..(i64::MAX as f64)).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// A number argument, or jq's `number required`.
fn num(v: &Val) -> Result<f64, jaq_core::Error<Val>> {
    match v {
        Val::Num(_) => Ok(v.as_f64().unwrap_or(f64::NAN)),
        other => Err(type_error(other, "number required")),
    }
}

fn err<'a>(e: jaq_core::Error<Val>) -> jaq_core::ValXs<'a, Val> {
    box_once(Err(jaq_core::Exn::from(e)))
}

fn num_val(f: f64) -> Val {
    if f.is_nan() {
        Val::Num(Num::Float(f))
    } else {
        jq_number(f)
    }
}

/// The natives of jq 1.6's math builtins.
fn math_natives() -> Vec<Fun<D>> {
    macro_rules! one {
        ($name:ident) => {
            (
                stringify!($name),
                v(0),
                Native::<D>::new(|cv| match num(&cv.1) {
                    Ok(x) => {
                        let f = c_fn!($name: F1);
                        // SAFETY: a libm function of one double, pure and thread-safe.
                        box_once(Ok(num_val(unsafe { f(x) })))
                    }
                    Err(e) => err(e),
                }),
            )
        };
    }
    let mut funs: Vec<Fun<D>> = vec![
        one!(acos),
        one!(acosh),
        one!(asin),
        one!(asinh),
        one!(atan),
        one!(atanh),
        one!(cbrt),
        one!(cos),
        one!(cosh),
        one!(exp),
        one!(exp10),
        one!(exp2),
        one!(expm1),
        one!(erf),
        one!(erfc),
        one!(fabs),
        one!(j0),
        one!(j1),
        one!(lgamma),
        one!(log),
        one!(log10),
        one!(log1p),
        one!(log2),
        one!(logb),
        one!(rint),
        one!(significand),
        one!(sin),
        one!(sinh),
        one!(sqrt),
        one!(tan),
        one!(tanh),
        one!(tgamma),
        one!(trunc),
        one!(y0),
        one!(y1),
    ];
    funs.extend(two_argument_math());
    funs.extend(special_math());
    funs.extend(multi_result_math());
    funs
}

macro_rules! two {
    ($name:ident, $f:ident) => {
        (
            stringify!($name),
            v(2),
            Native::<D>::new(|mut cv| {
                let b = cv.0.pop_var();
                let a = cv.0.pop_var();
                match num(&a).and_then(|a| Ok((a, num(&b)?))) {
                    Ok((a, b)) => {
                        let f = c_fn!($f: F2);
                        // SAFETY: a libm function of two doubles, pure and thread-safe.
                        box_once(Ok(num_val(unsafe { f(a, b) })))
                    }
                    Err(e) => err(e),
                }
            }),
        )
    };
}

/// jq 1.6's two-argument math builtins (`LIBM_DDD`).
fn two_argument_math() -> Vec<Fun<D>> {
    vec![
        two!(atan2, atan2),
        two!(copysign, copysign),
        two!(drem, drem),
        two!(fdim, fdim),
        two!(fmax, fmax),
        two!(fmin, fmin),
        two!(fmod, fmod),
        two!(hypot, hypot),
        two!(nextafter, nextafter),
        two!(nexttoward, nextafter),
        two!(pow, pow),
        two!(remainder, remainder),
        two!(scalb, scalb),
    ]
}

/// Math builtins with integer arguments.
fn special_math() -> Vec<Fun<D>> {
    fn nat(name: &'static str, arity: usize, f: jaq_core::RunPtr<D>) -> Fun<D> {
        (name, v(arity), Native::<D>::new(f))
    }
    vec![
        nat("ldexp", 2, |mut cv| {
            let (e, x) = (cv.0.pop_var(), cv.0.pop_var());
            match num(&x).and_then(|x| Ok((x, num(&e)?))) {
                // SAFETY: libm's ldexp, pure.
                Ok((x, e)) => box_once(Ok(num_val({
                    let f = c_fn!(ldexp: unsafe extern "C" fn(f64, i32) -> f64);
                    // SAFETY: a pure libm function of these C types.
                    unsafe { f(x, c_int(e)) }
                }))),
                Err(e) => err(e),
            }
        }),
        nat("scalbln", 2, |mut cv| {
            let (e, x) = (cv.0.pop_var(), cv.0.pop_var());
            match num(&x).and_then(|x| Ok((x, num(&e)?))) {
                // SAFETY: libm's scalbln, pure.
                Ok((x, e)) => box_once(Ok(num_val({
                    let f = c_fn!(scalbln: unsafe extern "C" fn(f64, i64) -> f64);
                    // SAFETY: a pure libm function of these C types.
                    unsafe { f(x, c_long(e)) }
                }))),
                Err(e) => err(e),
            }
        }),
        nat("jn", 2, |mut cv| {
            bessel(
                cv.0.pop_var(),
                cv.0.pop_var(),
                c_fn!(jn: unsafe extern "C" fn(i32, f64) -> f64),
            )
        }),
        nat("yn", 2, |mut cv| {
            bessel(
                cv.0.pop_var(),
                cv.0.pop_var(),
                c_fn!(yn: unsafe extern "C" fn(i32, f64) -> f64),
            )
        }),
    ]
}

/// Math builtins with several results or three arguments.
fn multi_result_math() -> Vec<Fun<D>> {
    fn nat(name: &'static str, arity: usize, f: jaq_core::RunPtr<D>) -> Fun<D> {
        (name, v(arity), Native::<D>::new(f))
    }
    vec![
        nat("lgamma_r", 0, |cv| match num(&cv.1) {
            Ok(x) => {
                let mut sign = 0i32;
                let f = c_fn!(lgamma_r: unsafe extern "C" fn(f64, *mut i32) -> f64);
                // SAFETY: libm's lgamma_r writes one int through a valid pointer.
                let y = unsafe { f(x, &mut sign) };
                box_once(Ok([num_val(y), Val::from(sign as isize)].into_iter().collect()))
            }
            Err(e) => err(e),
        }),
        nat("fma", 3, |mut cv| {
            let (z, y, x) = (cv.0.pop_var(), cv.0.pop_var(), cv.0.pop_var());
            match num(&x).and_then(|x| Ok((x, num(&y)?, num(&z)?))) {
                // SAFETY: libm's fma, pure.
                Ok((x, y, z)) => box_once(Ok(num_val({
                    let f = c_fn!(fma: unsafe extern "C" fn(f64, f64, f64) -> f64);
                    // SAFETY: a pure libm function of these C types.
                    unsafe { f(x, y, z) }
                }))),
                Err(e) => err(e),
            }
        }),
        nat("frexp", 0, |cv| match num(&cv.1) {
            Ok(x) => {
                let mut e = 0i32;
                // SAFETY: libm's frexp writes one int through a valid pointer.
                let m = {
                    let f = c_fn!(frexp: unsafe extern "C" fn(f64, *mut i32) -> f64);
                    unsafe { f(x, &mut e) }
                };
                box_once(Ok([num_val(m), Val::from(e as isize)].into_iter().collect()))
            }
            Err(e) => err(e),
        }),
        nat("modf", 0, |cv| match num(&cv.1) {
            Ok(x) => {
                let mut i = 0f64;
                // SAFETY: libm's modf writes one double through a valid pointer.
                let f = {
                    let f = c_fn!(modf: unsafe extern "C" fn(f64, *mut f64) -> f64);
                    unsafe { f(x, &mut i) }
                };
                box_once(Ok([num_val(f), num_val(i)].into_iter().collect()))
            }
            Err(e) => err(e),
        }),
    ]
}

fn bessel<'a>(x: Val, n: Val, f: unsafe extern "C" fn(i32, f64) -> f64) -> jaq_core::ValXs<'a, Val> {
    match num(&n).and_then(|n| Ok((n, num(&x)?))) {
        // SAFETY: libm's jn/yn, pure.
        Ok((n, x)) => box_once(Ok(num_val(unsafe { f(c_int(n), x) }))),
        Err(e) => err(e),
    }
}

/// `KIND (VALUE) MESSAGE` for definitions (`__type_error("has no keys")`).
fn type_error_native() -> Fun<D> {
    (
        "__type_error",
        v(1),
        Native::<D>::new(|mut cv| {
            let msg = cv.0.pop_var();
            err(type_error(&cv.1, str_of(&msg).unwrap_or("")))
        }),
    )
}

/// C builtins whose checks and texts jaq does not share.
fn checked_natives() -> Vec<Fun<D>> {
    fn nat(name: &'static str, arity: usize, f: jaq_core::RunPtr<D>) -> Fun<D> {
        (name, v(arity), Native::<D>::new(f))
    }
    vec![
        nat("utf8bytelength", 0, |cv| match str_of(&cv.1) {
            Some(s) => box_once(Ok(Val::from(s.len() as isize))),
            None => err(type_error(&cv.1, "only strings have UTF-8 byte length")),
        }),
        nat("keys_unsorted", 0, |cv| match &cv.1 {
            Val::Obj(o) => box_once(Ok(o.keys().cloned().collect())),
            Val::Arr(a) => box_once(Ok((0..a.len() as isize).map(Val::from).collect())),
            other => err(type_error(other, "has no keys")),
        }),
        nat("sort", 0, |cv| match cv.1 {
            Val::Arr(a) => {
                let mut items: Vec<Val> = a.iter().cloned().collect();
                items.sort();
                box_once(Ok(items.into_iter().collect()))
            }
            other => err(type_error(&other, "cannot be sorted, as it is not an array")),
        }),
        nat("startswith", 1, |mut cv| {
            let s = cv.0.pop_var();
            match (str_of(&cv.1), str_of(&s)) {
                (Some(a), Some(b)) => box_once(Ok(Val::from(a.starts_with(b)))),
                _ => once(Err("startswith() requires string inputs".into())),
            }
        }),
        nat("endswith", 1, |mut cv| {
            let s = cv.0.pop_var();
            match (str_of(&cv.1), str_of(&s)) {
                (Some(a), Some(b)) => box_once(Ok(Val::from(a.ends_with(b)))),
                _ => once(Err("endswith() requires string inputs".into())),
            }
        }),
        nat("implode", 0, |cv| match &cv.1 {
            Val::Arr(a) => {
                let chars: Option<String> = a
                    .iter()
                    .map(|c| match c {
                        Val::Num(_) => char::from_u32(c.as_f64().unwrap_or(-1.0) as u32),
                        _ => None,
                    })
                    .collect();
                match chars {
                    Some(s) => box_once(Ok(Val::from(s))),
                    None => once(Err("Unicode codepoint out of range".into())),
                }
            }
            _ => once(Err("implode input must be an array".into())),
        }),
        nat("__explode_check", 0, |cv| match str_of(&cv.1) {
            Some(_) => box_once(Ok(cv.1)),
            None => once(Err("explode input must be a string".into())),
        }),
        type_error_native(),
        nat("__array_or", 2, |mut cv| {
            let msg = cv.0.pop_var();
            let other = cv.0.pop_var();
            match cv.1 {
                Val::Arr(_) => box_once(Ok(cv.1)),
                v => err(type_error2(&v, &other, str_of(&msg).unwrap_or(""))),
            }
        }),
        nat("__numeric_bounds", 2, |mut cv| {
            let (upto, from) = (cv.0.pop_var(), cv.0.pop_var());
            match (from, upto) {
                (Val::Num(_), Val::Num(_)) => box_once(Ok(cv.1)),
                _ => once(Err("Range bounds must be numeric".into())),
            }
        }),
        nat("ascii_downcase", 0, |cv| ascii_case(&cv.1, false)),
        nat("ascii_upcase", 0, |cv| ascii_case(&cv.1, true)),
    ]
}

/// `ascii_downcase`, `ascii_upcase`: jq 1.6 defines them over `explode`.
fn ascii_case<'a>(v: &Val, upper: bool) -> jaq_core::ValXs<'a, Val> {
    match str_of(v) {
        Some(s) if upper => box_once(Ok(Val::from(s.to_ascii_uppercase()))),
        Some(s) => box_once(Ok(Val::from(s.to_ascii_lowercase()))),
        None => once(Err("explode input must be a string".into())),
    }
}

/// Every native of this module.
pub(super) fn jq16_natives() -> Vec<Fun<D>> {
    let mut funs = math_natives();
    funs.extend(checked_natives());
    funs
}
