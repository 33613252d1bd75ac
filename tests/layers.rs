//! The layer rule of `src/lib.rs`, enforced: every `crate::<module>` path in a source file must
//! name a module its layer may use. Layers run one way — outcome → config → net → probe →
//! schedule → metrics/server/report → commands — so a protocol file can never reach the
//! scheduler or Prometheus, and the vocabulary at the bottom imports nothing.
//!
//! The check reads the source text (comments stripped), so it also catches paths written inline
//! (`crate::probe::run(..)`), not only `use` lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What each top-level module may import from the crate. A module missing here fails the test,
/// so a new folder must say where it sits.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("outcome", &[][..]),
        ("shutdown", &[][..]),
        // The tracing layer that withholds dependencies' wire dumps: imports nothing.
        ("log_redact", &[][..]),
        // glibc malloc settings applied at start by main.rs: imports nothing.
        ("allocator", &[][..]),
        // The endpoint's web config (exporter-toolkit format) and bounded listener; it reads
        // its files with the config's bounded reader.
        ("web", &["config"][..]),
        ("config", &["outcome"][..]),
        ("net", &["outcome", "config"][..]),
        ("probe", &["outcome", "config", "net"][..]),
        ("schedule", &["outcome", "config", "net", "probe", "shutdown"][..]),
        ("metrics", &["outcome", "config", "schedule"][..]),
        ("push", &["outcome", "config", "net", "schedule", "metrics", "shutdown"][..]),
        ("report", &["outcome", "config"][..]),
        ("responder", &["outcome", "config", "net", "shutdown"][..]),
        (
            "server",
            &[
                "outcome", "config", "net", "probe", "schedule", "metrics", "report", "shutdown", "web",
            ][..],
        ),
        ("demo", &["outcome", "config", "responder", "shutdown"][..]),
        // The thin edge: arguments → one library call → exit code.
        ("cli", &["config", "report"][..]),
        (
            "commands",
            &[
                "outcome",
                "config",
                "net",
                "probe",
                "schedule",
                "metrics",
                "push",
                "report",
                "responder",
                "server",
                "demo",
                "cli",
                "shutdown",
                "web",
            ][..],
        ),
    ])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/probe/ice/agent.rs` → `probe`, `src/schedule.rs`
/// → `schedule`; `None` for the crate roots (`lib.rs`, `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// `crate::X` module names used in `text`, with line numbers, ignoring comments.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let boundary_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            if boundary_ok && !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for item in group.split([',', '}']) {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.push((n + 1, name));
                }
            }
        }
    }
    found
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let rules = allowed();
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(may) = rules.get(module.as_str()) else {
            violations.push(format!("{}: module `{module}` has no place in the layer table", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, used) in crate_paths(&text) {
            if used != module && !may.contains(&used.as_str()) {
                violations.push(format!("{}:{line}: `{module}` imports `crate::{used}`", file.display()));
            }
        }
    }
    assert!(violations.is_empty(), "layer violations:\n{}", violations.join("\n"));
}

#[test]
fn the_layer_check_sees_inline_paths_and_use_groups() {
    let found = crate_paths("use crate::{probe, config::Secret};\nlet x = crate::schedule::launch(); // crate::server in a comment\n");
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains(&"probe") && names.contains(&"config") && names.contains(&"schedule"),
        "{names:?}"
    );
    assert!(!names.contains(&"server"), "comments are ignored: {names:?}");
}
