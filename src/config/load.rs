//! YAML → [`Config`], collecting every problem with its 1-based `line:column`.
//!
//! The text is parsed once into a position-carrying tree (`config::yaml`), then checked field by
//! field (`config::check`) so that one run reports all problems, not just serde's first. Errors
//! are sorted by position and printed one per line as `FILE:LINE:COLUMN: message`.

use std::fmt;
use std::path::Path;

use super::check;
use super::files::{read_bounded, FileError, MAX_CONFIG_FILE};
use super::preset;
use super::types::*;
use super::yaml;

/// One problem in a config file, with its position (1-based; line 0 = not about a place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// File name as given, for `FILE:LINE:COLUMN:` prefixes.
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.line == 0 {
                // Not about a place in the file (e.g. it cannot be read).
                write!(f, "{}: {}", self.origin, e.message)?;
            } else {
                write!(f, "{}:{}:{}: {}", self.origin, e.line, e.column, e.message)?;
            }
        }
        Ok(())
    }
}

/// Reads and validates a config file, with every file it names (`ca_file`, `file:` secrets).
/// Synchronous and blocking: on an async runtime call [`load`] instead.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let unreadable = |message: String| ConfigErrors {
        origin: origin.clone(),
        errors: vec![ConfigError {
            line: 0,
            column: 0,
            message,
        }],
    };
    let bytes = read_bounded(path, MAX_CONFIG_FILE).map_err(|e| {
        unreadable(match e {
            FileError::Io(e) => format!("cannot read config: {e}"),
            other => format!("cannot read config: the file {other}"),
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|_| unreadable("cannot read config: stream did not contain valid UTF-8".into()))?;
    parse_str(&text, &origin)
}

/// [`load_file`] on tokio's blocking pool, so reading the config and the files it names never
/// stalls the runtime's workers (`run` at start and on SIGHUP, `check`, `validate`).
pub async fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let owned = path.to_path_buf();
    match tokio::task::spawn_blocking(move || load_file(&owned)).await {
        Ok(result) => result,
        Err(e) => Err(ConfigErrors {
            origin: path.display().to_string(),
            errors: vec![ConfigError {
                line: 0,
                column: 0,
                message: format!(
                    "cannot read config: the loader {}",
                    if e.is_panic() { "panicked" } else { "was cancelled" }
                ),
            }],
        }),
    }
}

impl ConfigErrors {
    /// The errors found in `origin`, each at its position.
    fn at(origin: &str, list: Vec<(yaml::Pos, String)>) -> ConfigErrors {
        ConfigErrors {
            origin: origin.to_string(),
            errors: list
                .into_iter()
                .map(|(p, message)| ConfigError {
                    line: p.line,
                    column: p.column,
                    message,
                })
                .collect(),
        }
    }
}

/// Parses and validates config text; `origin` names it in error messages.
/// Never panics, whatever the input; every problem found is returned, sorted by position.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let errors = |list: Vec<(yaml::Pos, String)>| ConfigErrors::at(origin, list);
    let mut root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(errors(vec![(
                yaml::Pos { line: 1, column: 1 },
                "the config is empty; expected a mapping with at least `probes:`".to_string(),
            )]))
        }
        Err(e) => return Err(errors(vec![(e.pos, e.message)])),
    };
    let mut problems = check::Problems::default();
    // `preset:` / `region:` / `inputs:` pull a vendor preset's probes in before the check.
    preset::apply(&mut root, &mut problems);
    check_tree(&root, problems, errors)
}

/// Expands a vendor preset on its own (`check --preset`) and validates it; `origin` in errors
/// is `preset NAME`.
pub fn load_preset(req: &preset::PresetRequest) -> Result<Config, ConfigErrors> {
    let origin = format!("preset {}", req.name);
    let errors = |list: Vec<(yaml::Pos, String)>| ConfigErrors::at(&origin, list);
    match preset::tree(req) {
        Ok(root) => check_tree(&root, check::Problems::default(), errors),
        Err(messages) => Err(ConfigErrors {
            origin: origin.clone(),
            errors: messages
                .into_iter()
                .map(|message| ConfigError {
                    line: 0,
                    column: 0,
                    message,
                })
                .collect(),
        }),
    }
}

/// Runs the checker over a tree, starting from problems found before it.
fn check_tree(
    root: &yaml::Node,
    mut problems: check::Problems,
    errors: impl Fn(Vec<(yaml::Pos, String)>) -> ConfigErrors,
) -> Result<Config, ConfigErrors> {
    let config = check::config(root, &mut problems);
    match config {
        Some(c) if problems.list.is_empty() => Ok(c),
        _ => {
            let mut list = problems.list;
            if list.is_empty() {
                // A builder gave up without saying why: a bug, but never an Ok with parts missing.
                list.push((root.pos, "config could not be built (internal error: no problem recorded)".into()));
            }
            list.sort_by_key(|(p, _)| *p);
            list.dedup();
            Err(errors(list))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The annotated example without its regexes and its `ca_file`: compiling a regex takes
    /// ~7 ms in a debug build and reading + parsing the system CA bundle a few more, which
    /// would dominate thousands of fuzz rounds without testing our code.
    fn example() -> String {
        include_str!("../../probes/example.yaml")
            .lines()
            .filter(|l| !l.contains("expect_body:") && !l.contains("expect: '") && !l.contains("ca_file:"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A tiny deterministic generator, so a failing input can be reproduced from the seed.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n.max(1)
        }
    }

    /// Whatever the text, loading returns (never panics), and an error always has a message
    /// and a 1-based position.
    fn survives(text: &str) {
        if let Err(e) = parse_str(text, "fuzz.yaml") {
            assert!(!e.errors.is_empty());
            for x in &e.errors {
                assert!(x.line >= 1 && x.column >= 1 && !x.message.is_empty(), "{x:?} for {text:?}");
                assert!(!x.message.contains('\n'), "{x:?}");
            }
        }
    }

    #[test]
    fn truncated_example_never_panics() {
        let example = example();
        let cuts: Vec<usize> = example.char_indices().map(|(i, _)| i).step_by(5).collect();
        for i in cuts {
            survives(&example[..i]);
        }
    }

    #[test]
    fn mutated_and_garbage_yaml_never_panics() {
        const PIECES: &[&str] = &[
            ":",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "&a ",
            "*a",
            "<<: ",
            "!!str ",
            "!!binary ",
            "\t",
            "\n",
            "  ",
            "'",
            "\"",
            "#",
            "|",
            ">",
            "?",
            "---\n",
            "...\n",
            "%YAML 1.2\n",
            "\u{feff}",
            "é",
            "\0",
            "~",
            "null",
            "-1",
            "1e999",
            "99999999999999999999",
            ",",
        ];
        let example = example();
        let mut rng = Lcg(0x5eed);
        for round in 0..1000 {
            let mut t: String = if round % 5 == 0 { String::new() } else { example.clone() };
            for _ in 0..1 + rng.next(6) {
                let piece = PIECES[rng.next(PIECES.len())];
                let at = rng.next(t.len() + 1);
                let at = (0..=at).rev().find(|i| t.is_char_boundary(*i)).unwrap_or(0);
                if rng.next(3) == 0 && at < t.len() {
                    // Delete a short run instead of inserting.
                    let end = (at + 1 + rng.next(40)).min(t.len());
                    let end = (end..=t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                    t.replace_range(at..end, "");
                } else {
                    t.insert_str(at, piece);
                }
            }
            survives(&t);
        }
    }

    #[test]
    fn hostile_shapes_never_panic() {
        for t in [
            "",
            "\n\n",
            "probes",
            "- 1\n- 2\n",
            "probes: ~",
            "probes: [~, 1, [], {}, {name: ~}]",
            "probes: [{name: a, kind: [tcp]}]",
            "probes: [{name: a, kind: tcp, target: {x: 1}}]",
            "? [a, b]\n: c\n",
            "probes: &p [*p]",
            "defaults: {interval: 1ns, timeout: 1ns, jitter: -0%, concurrency: 18446744073709551616}\nprobes: [{name: a, kind: tcp, target: 'a:1'}]",
            &"[".repeat(200),
            &"- ".repeat(200),
            &format!("probes:\n{}", "  - {name: a, kind: tcp, target: 'a:1'}\n".repeat(500)),
        ] {
            survives(t);
        }
    }

    #[test]
    fn listen_and_empty_or_non_mapping_root() {
        let e = parse_str("", "x").unwrap_err();
        assert_eq!((e.errors[0].line, e.errors[0].column), (1, 1));
        assert!(e.errors[0].message.contains("empty"));
        let e = parse_str("- a\n", "x").unwrap_err();
        assert!(e.errors[0].message.contains("must be a mapping, found a list"), "{e}");
        let e = parse_str("listen: localhost:9469\nprobes: [{name: a, kind: tcp, target: 'a:1'}]\n", "x").unwrap_err();
        assert_eq!((e.errors[0].line, e.errors[0].column), (1, 9));
    }

    #[test]
    fn cannot_read_has_no_position() {
        let e = load_file(Path::new("/nonexistent/egress-probe.yaml")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/egress-probe.yaml: cannot read config"),
            "{e}"
        );
    }
}
