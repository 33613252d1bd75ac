//! Property tests of the config loader (`parse_str`): whatever the text — arbitrary characters,
//! the annotated example mutated, or YAML built from the config's own vocabulary with hostile
//! values — loading returns (never panics), quickly, and every error carries a 1-based
//! `line:column` and a one-line message. Bounded: 256 cases per property, small inputs, no
//! failure files written.

use std::time::{Duration, Instant};

use egress_probe::config::parse_str;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value};

/// Longest one load may take, even in a debug build on a busy machine.
const BOUND: Duration = Duration::from_secs(5);

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// The property: `parse_str` returns within [`BOUND`]; an error lists at least one problem,
/// each at line ≥ 1, column ≥ 1, with a non-empty one-line message.
fn loads_or_explains(text: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let result = parse_str(text, "prop.yaml");
    prop_assert!(start.elapsed() < BOUND, "took {:?}", start.elapsed());
    if let Err(e) = result {
        prop_assert!(!e.errors.is_empty());
        for x in &e.errors {
            prop_assert!(x.line >= 1 && x.column >= 1, "no position: {x:?}");
            prop_assert!(!x.message.is_empty() && !x.message.contains('\n'), "{x:?}");
        }
        for line in e.to_string().lines() {
            prop_assert!(line.starts_with("prop.yaml:"), "{line:?}");
        }
    }
    Ok(())
}

/// The annotated example without the system CA bundle (present on every machine but slow to
/// parse thousands of times) and its regexes (slow to compile in a debug build).
fn example() -> String {
    include_str!("../probes/example.yaml")
        .lines()
        .filter(|l| !l.contains("ca_file:") && !l.contains("expect_body:") && !l.contains("expect: '"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Pieces of YAML syntax and hostile values inserted by the mutation strategy.
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
    "%YAML 1.2\n",
    "\u{feff}",
    "é",
    "\0",
    "~",
    "null",
    "-1",
    "1e999",
    "99999999999999999999",
    "18446744073709551615s",
    "file:/dev/zero",
    "file:/dev/urandom",
    "env:EGRESS_PROBE_PROP_UNSET",
    "(a|b)*{1000}{1000}",
];

#[derive(Clone, Debug)]
enum Edit {
    Insert { at: usize, piece: usize },
    Delete { at: usize, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, piece)| Edit::Insert { at, piece }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
    ]
}

/// Applies edits at char boundaries (positions taken modulo the current length).
fn mutate(mut t: String, edits: &[Edit]) -> String {
    for e in edits {
        let boundary = |t: &String, i: usize| (0..=i.min(t.len())).rev().find(|j| t.is_char_boundary(*j)).unwrap_or(0);
        match *e {
            Edit::Insert { at, piece } => {
                let at = boundary(&t, at % (t.len() + 1));
                t.insert_str(at, PIECES[piece]);
            }
            Edit::Delete { at, len } => {
                let start = boundary(&t, at % (t.len() + 1));
                let end = boundary(&t, start + len);
                t.replace_range(start..end, "");
            }
        }
    }
    t
}

/// Keys of the config, so generated mappings reach deep into the checker.
const KEYS: &[&str] = &[
    "listen",
    "defaults",
    "proxy",
    "probes",
    "interval",
    "timeout",
    "jitter",
    "concurrency",
    "name",
    "kind",
    "labels",
    "target",
    "addresses",
    "query",
    "record",
    "resolver",
    "expect",
    "url",
    "method",
    "headers",
    "body",
    "expect_status",
    "expect_body",
    "follow_redirects",
    "ping",
    "send",
    "server",
    "count",
    "nat_mapping",
    "second_server",
    "nat_filtering",
    "binding_lifetime",
    "max",
    "credentials",
    "size",
    "channel",
    "servers",
    "policy",
    "network_types",
    "connectivity",
    "server_name",
    "alpn",
    "ca_file",
    "pin_sha256",
    "min_version",
    "tls",
    "username",
    "password",
    "rest_secret",
    "rest_user",
    "ttl",
    "contains",
    "rcode",
    "x-base",
    "<<",
];

/// Scalars that are valid somewhere, invalid elsewhere, or hostile everywhere.
const SCALARS: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "65536",
    "18446744073709551616",
    "true",
    "no",
    "~",
    "1.3",
    "10%",
    "0.5",
    "80%",
    "500ms",
    "10s",
    "24h",
    "25h",
    "18446744073709551615s",
    "tcp",
    "tls",
    "http",
    "dns",
    "stun",
    "turn",
    "ice",
    "websocket",
    "first",
    "all",
    "A",
    "aaaa",
    "GET",
    "post",
    "relay",
    "udp4",
    "host",
    "srflx",
    "2xx",
    "200-299",
    "6xx",
    "noerror",
    "rcode_4095",
    "127.0.0.1:443",
    "[::1]:443",
    "a.example:0",
    "host",
    "http://127.0.0.1/",
    "wss://h/",
    "ftp://h/",
    "stun:127.0.0.1",
    "turns:relay.example:443?transport=tcp",
    "turn:h?transport=sctp",
    "env:EGRESS_PROBE_PROP_UNSET",
    "file:/dev/zero",
    "file:/dev/urandom",
    "file:/nonexistent/x",
    "/dev/zero",
    "/etc",
    "none",
    "env",
    "http://u:p@proxy:3128",
    "(unclosed",
    "\\w{1000}{1000}",
    "ab",
    "sha256/AAAA",
    "é",
    "\u{feff}",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0..SCALARS.len()).prop_map(|i| Value::String(SCALARS[i].to_string())),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

/// A JSON (hence YAML) tree of at most a few dozen nodes over the config's vocabulary.
fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((0..KEYS.len(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (KEYS[k].to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

/// A config-shaped document: a top level with `probes`, each probe a kind plus random fields.
fn document() -> impl Strategy<Value = String> {
    let kinds = ["dns", "tcp", "tls", "http", "websocket", "stun", "turn", "ice", "nope"];
    // Mostly scalars under a probe's keys, so values reach the kinds' converters.
    let value = prop_oneof![3 => scalar(), 1 => tree()];
    let probe = (0..kinds.len(), prop::collection::vec((0..KEYS.len(), value), 0..8)).prop_map(move |(k, fields)| {
        let mut m = Map::new();
        m.insert("name".into(), Value::String(format!("p{k}")));
        m.insert("kind".into(), Value::String(kinds[k].into()));
        for (key, v) in fields {
            m.insert(KEYS[key].to_string(), v);
        }
        Value::Object(m)
    });
    (
        prop::collection::vec(probe, 0..4),
        prop::collection::vec((0..KEYS.len(), tree()), 0..3),
    )
        .prop_map(|(probes, top)| {
            let mut m = Map::new();
            for (key, v) in top {
                m.insert(KEYS[key].to_string(), v);
            }
            m.insert("probes".into(), Value::Array(probes));
            // JSON is YAML; pretty-printing gives block-like lines and real line numbers.
            serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics_and_errors_have_positions(
        chars in prop::collection::vec(any::<char>(), 0..400)
    ) {
        loads_or_explains(&chars.into_iter().collect::<String>())?;
    }

    #[test]
    fn mutated_example_never_panics_and_errors_have_positions(
        edits in prop::collection::vec(edit(), 1..8)
    ) {
        loads_or_explains(&mutate(example(), &edits))?;
    }

    #[test]
    fn config_shaped_documents_with_hostile_values_never_panic(doc in document()) {
        loads_or_explains(&doc)?;
    }
}
