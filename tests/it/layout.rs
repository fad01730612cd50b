//! The library's layers: each module of `src/` refers only to modules below
//! it, so that a reader can start at the bottom and a change moves upward,
//! never in circles (README, "Architecture"). A `crate::X` in code (not in a
//! comment, not in a test module) of a module above `X` fails this test.

use std::path::{Path, PathBuf};

/// The library's top-level modules, lowest first: each may use only the
/// modules before it.
const LAYERS: &[&str] = &[
    "secret",
    "json_canon",
    "proxy",
    "shutdown",
    "signature",
    "redact",
    "retry",
    "tls",
    "guard",
    "settings",
    "message",
    "telemetry",
    "http",
    "decrypt",
    "mapping",
    "port",
    "report",
    "outcome",
    "delivery",
    "invoke",
    "source",
    "pipeline",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file: without its test module and without comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or(text);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `(file, used module)` for each reference to a module at or above the
/// file's own layer.
fn upward_references() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut found = Vec::new();
    for file in files {
        let module = module_of(&src, &file);
        let Some(own) = rank(&module) else {
            assert!(
                ["lib", "main"].contains(&module.as_str()),
                "{} is in no layer: add its module to LAYERS",
                file.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a source file");
        let code = code(&text);
        for (i, _) in code.match_indices("crate::") {
            let used: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(r) if r < own => {}
                _ => found.push((
                    file.strip_prefix(&src).expect("under src/").display().to_string(),
                    used,
                )),
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_module_uses_only_the_modules_below_it() {
    let upward = upward_references();
    assert!(
        upward.is_empty(),
        "modules that use a module at or above their own layer (file, used module): {upward:?}"
    );
}

/// The examples the re-layout named, so that a change of `LAYERS` cannot
/// quietly allow them.
#[test]
fn sources_do_not_know_the_pipeline_nor_anything_the_command_line() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m).expect("a layer");
    assert!(rank("source") < rank("pipeline"));
    assert!(LAYERS.last() == Some(&"cli"));
    assert!(rank("delivery") < rank("source") && rank("outcome") < rank("source"));
    assert!(rank("telemetry") < rank("mapping") && rank("telemetry") < rank("port"));
}

/// Inside `mapping::jq`, the regex builtins do not borrow from the
/// compatibility layer that calls them.
#[test]
fn the_jq_regex_builtins_do_not_use_the_compatibility_layer() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mapping/jq/regex.rs");
    let text = std::fs::read_to_string(file).expect("regex.rs");
    assert!(
        !code(&text).contains("compat"),
        "src/mapping/jq/regex.rs uses jq::compat"
    );
}
