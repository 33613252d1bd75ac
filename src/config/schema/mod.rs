//! The JSON Schema of the config file (`egress-probe schema`), generated from what `validate`
//! itself uses, so the two cannot drift apart:
//! - which keys each kind allows: the checker's tables (`check::kinds::KINDS`, one entry per
//!   kind with its keys and its builder, and `TOP`, `DEFAULTS`, `TLS_OPTS`, `CREDENTIALS` ...);
//! - which keys each kind requires: asked of the checker itself (a probe with only `name` and
//!   `kind` is checked and its "missing required field" problems are read back);
//! - the words an enum accepts (`record`, `method`, `policy` ...): the same serde enums the
//!   checker parses them with (their "expected one of" list);
//! - the presets and the config keys that pull one in: `config::preset`.
//!
//! What the table does not say is the JSON type of each key; [`key_schema`] gives it. A key the
//! tables gain without a type here still appears in the schema, untyped (so `egress-probe
//! schema` never rejects a file `validate` accepts), and is listed by [`untyped_keys`], which a
//! test requires to be empty.
//! The schema is deliberately looser than `validate` where JSON Schema cannot say the rule
//! (durations, URLs, secrets, timeout <= interval): `validate` stays the judge, the schema is
//! for editors and CI linters, and must never reject a file `validate` accepts.

use serde_json::{json, Map, Value};

use super::check::kinds::{DNS_EXPECT, HTTP_STEP, ICE_SERVER, KINDS, RCODES, STEP, WS_STEP};
use super::check::media::MEDIA;
use super::check::{AUTH, CREDENTIALS, DEFAULTS, METRICS, OAUTH2, TLS_OPTS, TOP};
use super::preset;
use super::types::{AddressMode, CandidateKind, HttpMethod, IcePolicy, NetworkType, PathProtocol, RecordKind, TlsVersion};

/// Where the schema is published (its `$id`); files point at a copy with a relative path.
pub const ID: &str = "https://github.com/egress-probe/egress-probe/blob/main/docs/config.schema.json";

thread_local! {
    /// Keys met during generation that have no type here (see [`untyped_keys`]).
    static GAPS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An untyped schema for a key the tables have and this module does not know yet.
fn gap(what: String) -> Value {
    GAPS.with(|g| g.borrow_mut().push(what));
    json!({ "description": "no schema type recorded for this key yet; `egress-probe validate` checks it" })
}

/// The keys of the checker's tables that have no JSON type in this module (empty when the two
/// agree; `tests` require it).
pub fn untyped_keys() -> Vec<String> {
    GAPS.with(|g| g.borrow_mut().clear());
    let _ = schema();
    GAPS.with(|g| std::mem::take(&mut *g.borrow_mut()))
}

/// The words serde accepts for enum `T`, read from its "expected one of" message.
fn variants<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let probe = "\u{1}not-a-variant";
    let Err(e) = serde_norway::from_value::<T>(serde_norway::Value::String(probe.into())) else {
        return Vec::new();
    };
    let text = e.to_string();
    let Some((_, expected)) = text.split_once("expected") else {
        return Vec::new();
    };
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// `words` plus their lower-case spellings (the checker upper-cases `record` and `method`).
fn any_case(words: Vec<String>) -> Vec<String> {
    let mut out = words.clone();
    for w in words {
        let l = w.to_ascii_lowercase();
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn duration(description: &str) -> Value {
    json!({ "type": "string", "description": format!("{description} (a duration: 500ms, 10s, 2m, 1h30m)") })
}

fn secret(description: &str) -> Value {
    json!({ "type": "string", "description": format!("{description}; env:NAME or file:/path keeps it out of the file") })
}

fn words(list: Vec<String>, description: &str) -> Value {
    json!({ "type": "string", "enum": list, "description": description })
}

fn int(min: u64, max: u64, description: &str) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max, "description": description })
}

fn boolean(description: &str) -> Value {
    json!({ "type": "boolean", "description": description })
}

fn strings(description: &str) -> Value {
    json!({ "type": "array", "items": { "type": "string" }, "description": description })
}

fn object(keys: &[&str], each: impl Fn(&str) -> Value, description: &str) -> Value {
    let props: Map<String, Value> = keys.iter().map(|k| (k.to_string(), each(k))).collect();
    json!({ "type": "object", "properties": props, "additionalProperties": false, "description": description })
}

fn credentials() -> Value {
    object(
        CREDENTIALS,
        |k| match k {
            "username" => secret("TURN long-term username"),
            "password" => secret("TURN long-term password"),
            "rest_secret" => secret("TURN REST API shared secret (coturn use-auth-secret)"),
            "rest_user" => string("user part of the REST username (default egress-probe)"),
            "ttl" => duration("lifetime of REST credentials (default 1h)"),
            other => gap(format!("credentials key {other}")),
        },
        "TURN credentials: username and password, or rest_secret",
    )
}

/// One `remote_write:` receiver, keyed by the push checker's tables.
fn remote_write() -> Value {
    use super::check::push::{BASIC_AUTH, QUEUE, REMOTE_WRITE};
    let mut v = object(
        REMOTE_WRITE,
        |k| match k {
            "url" => string("the receiver's remote_write URL (http or https)"),
            "interval" => duration("how often the families are gathered and queued (default 15s)"),
            "timeout" => duration("deadline of one write request (default 10s)"),
            "external_labels" => {
                json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "labels added to every pushed series" })
            }
            "headers" => {
                json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "extra request headers; values may be env:NAME or file:/path" })
            }
            "basic_auth" => object(
                BASIC_AUTH,
                |k| match k {
                    "username" => string("basic auth user"),
                    "password" => secret("basic auth password"),
                    other => gap(format!("basic_auth key {other}")),
                },
                "HTTP basic auth for the receiver",
            ),
            "bearer_token" => secret("bearer token for the receiver"),
            "tls" => object(TLS_OPTS, |k| key_schema("http", k), "TLS options for the receiver"),
            "proxy" => string("none, env, or http://[user:pass@]host:port (default: the top-level proxy)"),
            "queue" => object(
                QUEUE,
                |k| match k {
                    "max_samples" => int(1, 100_000_000, "most samples held while the receiver is away (default 100000)"),
                    "max_age" => duration("oldest sample kept (default 2h)"),
                    other => gap(format!("queue key {other}")),
                },
                "the bounded queue",
            ),
            other => gap(format!("remote_write key {other}")),
        },
        "a Prometheus remote_write 1.0 receiver",
    );
    v["required"] = json!(["url"]);
    v
}

/// The schema of one probe key. Panics for a key the checker's table has and this does not.
fn key_schema(kind: &str, key: &str) -> Value {
    match (kind, key) {
        (_, "name") => json!({ "type": "string", "minLength": 1, "description": "unique probe name (metric label `probe`)" }),
        (_, "kind") => json!({ "const": kind }),
        (_, "interval") => duration("how often this probe runs"),
        (_, "timeout") => duration("deadline of one run, all phases; <= interval"),
        (_, "labels") => json!({
            "type": "object",
            "additionalProperties": { "type": "string" },
            "propertyNames": { "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$" },
            "description": "extra Prometheus labels on this probe's series",
        }),
        (_, "proxy") => string("none, env, or http://[user:pass@]host:port"),
        (_, "addresses") => words(
            variants::<AddressMode>(),
            "first: the first address; all: every address the name resolves to",
        ),
        (_, "tls") => object(TLS_OPTS, |k| key_schema(kind, k), "TLS options (may also be written on the probe)"),
        (_, "server_name") => string("SNI and the name to verify (default: the target host)"),
        (_, "alpn") => strings("ALPN protocols to offer"),
        (_, "ca_file") => string("PEM bundle to trust instead of the system roots"),
        (_, "pin_sha256") => strings("SHA-256 pins (base64 or hex) of a certificate in the chain"),
        (_, "min_version") => words(variants::<TlsVersion>(), "lowest TLS version accepted"),
        (_, "headers") => {
            json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "request headers; values may be env:/file: secrets" })
        }
        ("dns", "query") => string("the name to resolve"),
        ("dns", "record") => words(any_case(variants::<RecordKind>()), "record type"),
        ("dns", "resolver") => string("resolver ip[:port] (default: the system's)"),
        ("dns", "expect") => object(
            DNS_EXPECT,
            |k| match k {
                "contains" => strings("answers that must all be present"),
                "rcode" => {
                    json!({ "type": "string", "description": format!("expected response code: {} or rcode_<number>", RCODES.join(", ")) })
                }
                other => gap(format!("dns expect key {other}")),
            },
            "what the answer must hold",
        ),
        ("tcp" | "tls" | "path", "target") => string("host:port"),
        ("media", "target") => string("host:port of a UDP echo (the responder's udp_echo)"),
        ("turn" | "media", "media") => {
            let number = |d: &str| json!({ "type": ["number", "string"], "description": d });
            let block = object(
                MEDIA,
                |k| match k {
                    "duration" => duration("how long to stream, 1s..60s (default 10s); the interval must cover timeout + duration"),
                    "packet_ms" => int(10, 120, "packet spacing in ms (default 20)"),
                    "payload" => int(16, 1200, "RTP payload bytes per packet (default 160, G.711 at 20 ms)"),
                    "max_rtt" => duration("highest average round trip of one client leg (default 100ms): media/rtt"),
                    "max_loss" => number("highest one-way loss estimate, 1% or 0.01 (default 1%): media/loss"),
                    "max_jitter" => duration("highest RFC 3550 jitter (default 30ms): media/jitter"),
                    "min_mos" => {
                        json!({ "type": "number", "minimum": 1.0, "maximum": 4.5, "description": "lowest E-model MOS (none by default): media/mos" })
                    }
                    "peer" => string("turn only: ip:port of a UDP echo to stream to through the relay (default: a second allocation)"),
                    other => gap(format!("media key {other}")),
                },
                "a paced RTP-sized call-quality stream (loss, jitter, RTT, MOS)",
            );
            json!({ "oneOf": [block, { "type": "boolean", "const": true }], "description": "call-quality stream; `true` for the defaults" })
        }
        ("path", "protocol") => words(variants::<PathProtocol>(), "tcp (SYNs) or udp (STUN Binding requests)"),
        ("path", "max_hops") => int(1, 64, "highest TTL tried (default 16)"),
        ("path", "probes_per_hop") => int(1, 5, "attempts while a TTL stays silent (default 2)"),
        ("udp_ports", "host") => string("host name or IP address of the UDP echo responder (no port)"),
        ("udp_ports", "ports") => {
            json!({ "type": ["string", "integer"], "description": "the port set: ranges and single ports, e.g. \"16384-65535\" or \"3478, 10000-20000\" (at most 64 items)" })
        }
        ("udp_ports", "sample") => int(1, 256, "ports probed per run; successive runs cover the whole set (default 64)"),
        ("udp_ports", "port_timeout") => duration("how long one port's echo is awaited before its one retry, 10ms..10s (default 500ms)"),
        ("path", "hop_timeout") => duration("how long one attempt waits, 10ms..30s (default 1s)"),
        ("http" | "websocket", "url") => string("the URL to request"),
        ("http", "method") => words(any_case(variants::<HttpMethod>()), "HTTP method"),
        ("http", "body") => string("request body"),
        ("http", "expect_status") => {
            let one = json!({ "type": ["integer", "string"], "description": "200, 200-299 or 2xx" });
            json!({ "oneOf": [one, { "type": "array", "items": one, "minItems": 1 }], "description": "accepted statuses (default 200-399)" })
        }
        ("http", "expect_body") => string("regex the body must match"),
        ("http", "follow_redirects") => int(0, 20, "redirects to follow"),
        ("websocket", "ping") => int(0, 100, "pings to time after the upgrade"),
        ("websocket", "send") => string("a text message to send"),
        ("websocket", "expect") => string("regex the answer to `send` must match"),
        ("stun" | "turn", "server") => string("stun:/stuns: (stun) or turn:/turns: (turn) URI, ?transport=udp|tcp"),
        ("stun", "count") => int(1, 100, "Binding requests to send"),
        ("stun", "nat_mapping") => boolean("RFC 5780 mapping behaviour (UDP; needs a server with OTHER-ADDRESS, or second_server)"),
        ("stun", "second_server") => string("a second STUN server for the NAT mapping test when the server has no OTHER-ADDRESS"),
        ("stun", "nat_filtering") => boolean("RFC 5780 filtering behaviour (UDP; needs a server with OTHER-ADDRESS and CHANGE-REQUEST)"),
        ("stun", "binding_lifetime") => object(
            &["max"],
            |_| duration("search up to this long (2s-10m); the run may take 2 x max + 4s longer"),
            "how long an idle UDP mapping survives (RFC 5780 section 4.6)",
        ),
        ("turn", "credentials") => credentials(),
        ("turn", "count") => int(1, 1000, "packets to relay"),
        ("turn", "size") => int(8, 16_384, "bytes per relayed packet"),
        ("turn", "channel") => boolean("bind a channel and relay ChannelData"),
        ("ice", "servers") => json!({
            "type": "array",
            "minItems": 1,
            "items": { "oneOf": [
                { "type": "string" },
                object(ICE_SERVER, |k| match k {
                    "url" => string("stun:/turn: URI"),
                    "credentials" => credentials(),
                    other => gap(format!("ICE server key {other}")),
                }, "an ICE server with credentials"),
            ] },
            "description": "STUN/TURN servers for the ICE agent",
        }),
        ("ice", "policy") => words(variants::<IcePolicy>(), "candidate policy"),
        ("ice", "network_types") => {
            json!({ "type": "array", "minItems": 1, "items": words(variants::<NetworkType>(), "network type"), "description": "network types to gather on (default [udp4])" })
        }
        ("ice", "expect") => {
            json!({ "type": "array", "items": words(variants::<CandidateKind>(), "candidate type"), "description": "candidate types that must be gathered" })
        }
        ("ice", "connectivity") => boolean("run a connectivity check through the relay"),
        ("http" | "websocket" | "session", "auth") => object(
            AUTH,
            |k| match k {
                "oauth2" => {
                    let mut v = object(
                        OAUTH2,
                        |k| match k {
                            "token_url" => string("the token endpoint (http or https)"),
                            "client_id" => string("the OAuth2 client id"),
                            "client_secret" => string("the client secret: env:NAME, file:/path or literal"),
                            "scopes" => strings("scopes to ask for (sent space-joined)"),
                            "audience" => string("the `audience` parameter"),
                            "extra_params" => {
                                json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "further form parameters of the token request" })
                            }
                            other => gap(format!("oauth2 key {other}")),
                        },
                        "OAuth 2.0 client credentials grant",
                    );
                    v["required"] = json!(["token_url", "client_id", "client_secret"]);
                    v
                }
                other => gap(format!("auth key {other}")),
            },
            "how to obtain the bearer token sent on the request/upgrade",
        ),
        ("websocket", "hold") => duration("keep the socket open this long after the exchange (needs ping_interval or idle)"),
        ("websocket", "ping_interval") => duration("with hold: a ping this often (>= 100ms)"),
        ("websocket", "idle") => boolean("with hold: no traffic at all while holding"),
        ("websocket", "concurrent") => int(1, 64, "WebSockets opened at once (default 1)"),
        ("turn", "concurrent") => int(1, 64, "TURN allocations opened at once, each on its own connection (default 1)"),
        ("session", "steps") => json!({
            "type": "array",
            "minItems": 1,
            "maxItems": super::types::MAX_SESSION_STEPS,
            "items": object(
                STEP,
                |k| match k {
                    "http" => object(HTTP_STEP, |k| key_schema("http", k), "an HTTP request (url/body may use ${var})"),
                    "websocket" => object(WS_STEP, |k| key_schema("websocket", k), "a WebSocket (url may use ${var})"),
                    "extract" => {
                        json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "variable name -> JSON pointer into the response body" })
                    }
                    other => gap(format!("session step key {other}")),
                },
                "one step: http or websocket",
            ),
            "description": "ordered steps under one deadline",
        }),
        (kind, key) => gap(format!("key {key} of kind {kind}")),
    }
}

/// The keys the checker requires for `kind`, asked of the checker itself.
fn required(kind: &str) -> Vec<String> {
    let text = format!("probes:\n  - name: schema-probe\n    kind: {kind}\n");
    let mut out = vec!["name".to_string(), "kind".to_string()];
    if let Err(e) = super::parse_str(&text, "schema") {
        for err in e.errors {
            if let Some((_, rest)) = err.message.split_once("missing required field `") {
                if let Some((field, _)) = rest.split_once('`') {
                    out.push(field.to_string());
                }
            }
        }
    }
    out
}

fn probe() -> Value {
    let mut branches = Vec::new();
    for k in KINDS {
        let kind = k.name;
        let props: Map<String, Value> = k.fields().iter().map(|f| (f.to_string(), key_schema(kind, f))).collect();
        branches.push(json!({
            "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
            "then": { "properties": props, "required": required(kind), "additionalProperties": false },
        }));
    }
    json!({
        "type": "object",
        "required": ["name", "kind"],
        "properties": { "kind": { "enum": KINDS.iter().map(|k| k.name).collect::<Vec<_>>(), "description": "probe kind" } },
        "allOf": branches,
    })
}

/// The whole schema (draft-07, which editors' YAML language servers support best).
pub fn schema() -> Value {
    let mut top = Map::new();
    for key in TOP {
        let v = match *key {
            "listen" => string("ip:port for /metrics, /probe, /healthz, /ready (default 0.0.0.0:9469)"),
            "defaults" => object(
                DEFAULTS,
                |k| match k {
                    "interval" => duration("how often each probe runs (default 30s)"),
                    "timeout" => duration("deadline of one run (default 10s)"),
                    "jitter" => {
                        json!({ "type": ["string", "number"], "description": "random schedule offset, 0%..50% or 0..0.5 (default 10%)" })
                    }
                    "concurrency" => int(1, 10_000, "most probe runs in flight at once (default 16)"),
                    other => gap(format!("defaults key {other}")),
                },
                "values every probe inherits",
            ),
            "proxy" => string("none, env, or http://[user:pass@]host:port, for every TCP-based probe"),
            "probes" => json!({ "type": "array", "items": { "$ref": "#/definitions/probe" }, "description": "the probes" }),
            "web" => json!({
                "type": "object",
                "properties": { "probe_targets": { "type": "array", "items": { "type": "string" }, "description": "CIDRs and host globs /probe?target= may point at besides each module's own target" } },
                "additionalProperties": false,
                "description": "settings of the HTTP endpoints (see docs/running.md)",
            }),
            // From the push checker's own key tables (check/push.rs).
            "push" => json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": { "remote_write": remote_write() },
                    "required": ["remote_write"],
                    "additionalProperties": false,
                },
                "description": "where to push the metrics (Prometheus remote_write receivers)",
            }),
            "metrics" => object(
                METRICS,
                |k| match k {
                    "histograms" => words(
                        variants::<crate::config::Histograms>(),
                        "per_probe (default): one latency histogram per probe; per_phase: also the per-phase and RTT histograms",
                    ),
                    other => gap(format!("metrics key {other}")),
                },
                "how much detail /metrics and /probe carry (see docs/metrics.md)",
            ),
            other => gap(format!("top-level key {other}")),
        };
        top.insert(key.to_string(), v);
    }
    for key in preset::CONFIG_KEYS {
        let v = match *key {
            "preset" => words(
                preset::names().into_iter().map(String::from).collect(),
                "a vendor preset whose probes are merged in (your probe wins on a name clash)",
            ),
            "region" => string("the preset's region (default: its default region)"),
            "inputs" => {
                json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "the preset's inputs; credentials as env:NAME or file:/path" })
            }
            other => gap(format!("preset key {other}")),
        };
        top.insert(key.to_string(), v);
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": ID,
        "title": "egress-probe config",
        "description": "Generated by `egress-probe schema` from the tables `egress-probe validate` uses; validate remains the judge.",
        "type": "object",
        "properties": top,
        "patternProperties": { "^x-": {} },
        "additionalProperties": false,
        "anyOf": [{ "required": ["probes"] }, { "required": ["preset"] }],
        "definitions": { "probe": probe() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_words_come_from_the_serde_types() {
        assert_eq!(variants::<RecordKind>(), ["A", "AAAA", "CNAME", "SRV", "TXT"]);
        assert_eq!(variants::<TlsVersion>(), ["1.2", "1.3"]);
        assert_eq!(variants::<IcePolicy>(), ["all", "relay"]);
    }

    #[test]
    fn required_keys_are_read_back_from_the_checker() {
        assert_eq!(required("dns"), ["name", "kind", "query"]);
        assert_eq!(required("turn"), ["name", "kind", "server", "credentials"]);
        assert_eq!(required("ice"), ["name", "kind", "servers"]);
    }

    #[test]
    fn every_key_in_the_checkers_tables_has_a_type() {
        assert_eq!(untyped_keys(), Vec::<String>::new(), "add these keys' types to config::schema");
        let s = schema();
        assert_eq!(s["definitions"]["probe"]["allOf"].as_array().map(Vec::len), Some(KINDS.len()));
    }
}
