//! Vendor presets: ready-made probe sets for a softphone vendor (`genesys-cloud`, `twilio-voice`,
//! `amazon-connect`, `microsoft-teams`, `zoom`, `generic-webrtc`), embedded in the binary from
//! `probes/presets/*.yaml` so a network team can run `check --preset NAME` on day one.
//!
//! A preset file is an ordinary config file (`probes:`) plus an `x-preset:` block (ignored by the
//! config checker like every `x-` key) that lists its regions, the values each region fills in,
//! and the inputs the user gives (a TURN host handed out at run time, an instance alias,
//! credentials as `env:`/`file:` references). Probes write `${name}` where a value goes.
//!
//! Expansion works on the position-carrying YAML tree, not on text, so an input can never
//! change the YAML structure (no injection), and the result goes through the one checker
//! (`config::check`) like a hand-written file. Rules, each pinned by a test:
//! - a probe that uses an input the user did not give is left out (with a warning naming the
//!   inputs), so `check --preset twilio-voice` runs the probes that need no credentials;
//! - an `optional:` input not given drops the key whose whole value is that placeholder;
//! - a placeholder that is neither a region value nor a declared input is an error (a bug in
//!   the preset, caught by the every-preset test);
//! - merged into a user's config (`preset:`, `region:`, `inputs:` top-level keys), the user's
//!   probe wins on a name clash: the preset's probe of that name is left out, so a user can
//!   override one probe (another proxy, another interval) without copying the preset.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::check::Problems;
use super::yaml::{self, Node, Pos, Val};

/// The top-level keys a config uses to pull in a preset (the checker never sees them).
pub const CONFIG_KEYS: &[&str] = &["preset", "region", "inputs"];

/// Every embedded preset: name and file text.
const PRESETS: &[(&str, &str)] = &[
    ("amazon-connect", include_str!("../../../probes/presets/amazon-connect.yaml")),
    ("generic-webrtc", include_str!("../../../probes/presets/generic-webrtc.yaml")),
    ("genesys-cloud", include_str!("../../../probes/presets/genesys-cloud.yaml")),
    ("microsoft-teams", include_str!("../../../probes/presets/microsoft-teams.yaml")),
    ("twilio-voice", include_str!("../../../probes/presets/twilio-voice.yaml")),
    ("zoom", include_str!("../../../probes/presets/zoom.yaml")),
];

/// Names of the embedded presets, sorted.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

/// The embedded text of preset `name` (as shipped in `probes/presets/NAME.yaml`).
pub fn text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// What a preset offers, read from its `x-preset:` block.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetInfo {
    /// One line: what the preset probes.
    pub about: String,
    /// Region used when none is given (presets with regions only).
    #[serde(default)]
    pub default_region: Option<String>,
    /// Region name → the values it fills in (`${domain}` ...).
    #[serde(default)]
    pub regions: BTreeMap<String, BTreeMap<String, String>>,
    /// Input name → what to give.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Values of inputs the user may leave out.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// Inputs whose key is dropped when not given.
    #[serde(default)]
    pub optional: Vec<String>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "x-preset")]
    preset: PresetInfo,
}

/// The `x-preset:` block of preset `name`.
pub fn info(name: &str) -> Result<PresetInfo, String> {
    let t = text(name).ok_or_else(|| unknown_preset(name))?;
    serde_norway::from_str::<Header>(t)
        .map(|h| h.preset)
        .map_err(|e| format!("preset {name}: bad x-preset block ({e})"))
}

fn unknown_preset(name: &str) -> String {
    format!("unknown preset {name:?}; presets: {}", names().join(", "))
}

/// Which preset to expand, for which region, with which inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresetRequest {
    pub name: String,
    pub region: Option<String>,
    /// Input name → value as given (`env:NAME` / `file:/path` for anything secret).
    pub inputs: BTreeMap<String, String>,
}

/// The preset's probes for a request: the probe nodes (positions in the preset file) and the
/// probes left out for missing inputs, as (probe name, missing inputs).
pub struct Expanded {
    pub probes: Vec<Node>,
    pub left_out: Vec<(String, Vec<String>)>,
}

/// Expands a preset. `Err` holds messages (unknown preset, region or input; a preset bug).
pub fn expand(req: &PresetRequest) -> Result<Expanded, Vec<String>> {
    let name = req.name.as_str();
    let info = info(name).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    match (&req.region, info.regions.is_empty()) {
        (Some(r), true) => errors.push(format!("preset {name} has no regions; remove region {r:?}")),
        (region, false) => {
            let r = region.clone().or_else(|| info.default_region.clone()).unwrap_or_default();
            match info.regions.get(&r) {
                Some(values) => vars.extend(values.clone()),
                None => errors.push(format!(
                    "preset {name}: unknown region {r:?}; regions: {}",
                    info.regions.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            }
        }
        (None, true) => {}
    }
    for (k, v) in &req.inputs {
        if !info.inputs.contains_key(k) {
            let known: Vec<&str> = info.inputs.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            errors.push(format!("preset {name}: unknown input {k:?}; its inputs: {known}"));
        } else if v.trim().is_empty() {
            errors.push(format!("preset {name}: input {k} is empty"));
        } else {
            vars.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &info.defaults {
        vars.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = text(name).ok_or_else(|| vec![unknown_preset(name)])?;
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return Err(vec![format!("preset {name} is empty")]),
        Err(e) => return Err(vec![format!("preset {name}:{}:{}: {}", e.pos.line, e.pos.column, e.message)]),
    };
    let items = match &root.val {
        Val::Map(entries) => entries.iter().find(|(k, _)| k.scalar() == Some("probes")).map(|(_, v)| v.clone()),
        _ => None,
    };
    let Some(Node { val: Val::Seq(items), .. }) = items else {
        return Err(vec![format!("preset {name} has no probes list")]);
    };
    let optional: BTreeSet<&str> = info.optional.iter().map(String::as_str).collect();
    let mut out = Expanded {
        probes: Vec::new(),
        left_out: Vec::new(),
    };
    for mut probe in items {
        let mut missing = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        substitute(&mut probe, &vars, &info.inputs, &optional, &mut missing, &mut unknown);
        let probe_name = probe_name(&probe).unwrap_or("?").to_string();
        if !unknown.is_empty() {
            errors.push(format!(
                "preset {name}: probe {probe_name} uses undeclared placeholder(s) {}",
                unknown.into_iter().collect::<Vec<_>>().join(", ")
            ));
        } else if !missing.is_empty() {
            out.left_out.push((probe_name, missing.into_iter().collect()));
        } else {
            out.probes.push(probe);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The `name:` of a probe mapping.
fn probe_name(probe: &Node) -> Option<&str> {
    match &probe.val {
        Val::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar() == Some("name"))
            .and_then(|(_, v)| v.scalar()),
        _ => None,
    }
}

/// The placeholder names in `s` (`${name}`), in order.
fn placeholders(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Fills `${name}` in every scalar below `node`; drops mapping entries whose whole value is an
/// optional input that was not given; collects inputs not given and names nobody declared.
fn substitute(
    node: &mut Node,
    vars: &BTreeMap<String, String>,
    declared: &BTreeMap<String, String>,
    optional: &BTreeSet<&str>,
    missing: &mut BTreeSet<String>,
    unknown: &mut BTreeSet<String>,
) {
    match &mut node.val {
        Val::Scalar { text, .. } => {
            let mut filled = text.clone();
            for name in placeholders(text) {
                match vars.get(name) {
                    Some(v) => filled = filled.replace(&format!("${{{name}}}"), v),
                    None if declared.contains_key(name) => {
                        missing.insert(name.to_string());
                    }
                    None => {
                        unknown.insert(name.to_string());
                    }
                }
            }
            *text = filled;
        }
        Val::Seq(items) => {
            for i in items {
                substitute(i, vars, declared, optional, missing, unknown);
            }
        }
        Val::Map(entries) => {
            entries.retain(|(_, v)| {
                let whole = v.scalar().and_then(|s| s.strip_prefix("${")).and_then(|s| s.strip_suffix('}'));
                !whole.is_some_and(|n| optional.contains(n) && !vars.contains_key(n))
            });
            for (_, v) in entries.iter_mut() {
                substitute(v, vars, declared, optional, missing, unknown);
            }
        }
    }
}

/// Moves every position below `node` to `pos` (preset probes merged into a user's file point at
/// its `preset:` line, not at lines of a file the user never wrote).
fn relocate(node: &mut Node, pos: Pos) {
    node.pos = pos;
    match &mut node.val {
        Val::Scalar { .. } => {}
        Val::Seq(items) => items.iter_mut().for_each(|i| relocate(i, pos)),
        Val::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            relocate(k, pos);
            relocate(v, pos);
        }),
    }
}

fn scalar_node(pos: Pos, text: &str) -> Node {
    Node {
        pos,
        val: Val::Scalar {
            text: text.to_string(),
            plain: false,
        },
    }
}

/// A config tree holding only the preset's probes (for `check --preset`), positions in the
/// preset file. `Err` holds messages.
pub fn tree(req: &PresetRequest) -> Result<Node, Vec<String>> {
    let expanded = expand(req)?;
    warn_left_out(&req.name, &expanded.left_out);
    let pos = Pos { line: 1, column: 1 };
    Ok(Node {
        pos,
        val: Val::Map(vec![(
            scalar_node(pos, "probes"),
            Node {
                pos,
                val: Val::Seq(expanded.probes),
            },
        )]),
    })
}

fn warn_left_out(name: &str, left_out: &[(String, Vec<String>)]) {
    for (probe, missing) in left_out {
        tracing::warn!(
            preset = name,
            probe = probe.as_str(),
            "preset {name}: probe {probe} left out: give input(s) {}",
            missing.join(", ")
        );
    }
}

/// Applies the `preset:` / `region:` / `inputs:` keys of a config tree: removes them and merges
/// the preset's probes into `probes:` (the user's probe wins on a name clash). Problems are
/// recorded at the positions of those keys.
pub fn apply(root: &mut Node, p: &mut Problems) {
    let Val::Map(entries) = &mut root.val else { return };
    let mut taken: BTreeMap<&'static str, (Node, Node)> = BTreeMap::new();
    let mut i = 0;
    while i < entries.len() {
        let key = entries[i].0.scalar().and_then(|k| CONFIG_KEYS.iter().find(|c| **c == k).copied());
        match key {
            // A duplicate is left in place for the checker to report as unknown.
            Some(k) if !taken.contains_key(k) => {
                taken.insert(k, entries.remove(i));
            }
            _ => i += 1,
        }
    }
    let Some((preset_key, preset_val)) = taken.remove("preset") else {
        for (k, _) in taken.values() {
            p.at(k.pos, format!("`{}` only applies with `preset:`", k.scalar().unwrap_or_default()));
        }
        return;
    };
    let Some(name) = preset_val.scalar().map(str::to_string) else {
        p.at(preset_val.pos, format!("`preset` must be a preset name ({})", names().join(", ")));
        return;
    };
    let mut req = PresetRequest {
        name,
        ..PresetRequest::default()
    };
    let mut ok = true;
    if let Some((_, v)) = taken.get("region") {
        match v.scalar() {
            Some(r) => req.region = Some(r.to_string()),
            None => {
                p.at(v.pos, format!("`region` must be a string, found {}", v.describe()));
                ok = false;
            }
        }
    }
    if let Some((_, v)) = taken.get("inputs") {
        match &v.val {
            Val::Map(m) => {
                for (k, val) in m {
                    match (k.scalar(), val.scalar()) {
                        (Some(k), Some(val)) => {
                            req.inputs.insert(k.to_string(), val.to_string());
                        }
                        _ => {
                            p.at(k.pos, "inputs: each input is `name: value` with a string value");
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                p.at(v.pos, format!("`inputs` must be a mapping, found {}", v.describe()));
                ok = false;
            }
        }
    }
    if !ok {
        return;
    }
    let expanded = match expand(&req) {
        Ok(x) => x,
        Err(messages) => {
            for m in messages {
                p.at(preset_val.pos, m);
            }
            return;
        }
    };
    warn_left_out(&req.name, &expanded.left_out);
    let Val::Map(entries) = &mut root.val else { return };
    let probes_at = entries.iter().position(|(k, _)| k.scalar() == Some("probes"));
    let mut preset_probes = expanded.probes;
    for probe in &mut preset_probes {
        relocate(probe, preset_val.pos);
    }
    match probes_at {
        None => entries.push((
            scalar_node(preset_key.pos, "probes"),
            Node {
                pos: preset_key.pos,
                val: Val::Seq(preset_probes),
            },
        )),
        Some(i) => {
            let user = &mut entries[i].1;
            if user.is_null() {
                *user = Node {
                    pos: user.pos,
                    val: Val::Seq(Vec::new()),
                };
            }
            if let Val::Seq(items) = &mut user.val {
                let user_names: BTreeSet<String> = items.iter().filter_map(probe_name).map(str::to_string).collect();
                for probe in preset_probes {
                    match probe_name(&probe) {
                        Some(n) if user_names.contains(n) => {
                            tracing::info!(
                                preset = req.name.as_str(),
                                probe = n,
                                "preset {}: your probe {n} replaces the preset's",
                                req.name
                            );
                        }
                        _ => items.push(probe),
                    }
                }
            }
            // Not a list: the checker reports it.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_in_order() {
        assert_eq!(placeholders("turn:${host}:${port}?x"), vec!["host", "port"]);
        assert_eq!(placeholders("no placeholders"), Vec::<&str>::new());
        assert_eq!(placeholders("unterminated ${host"), Vec::<&str>::new());
    }

    #[test]
    fn every_embedded_preset_has_a_readable_header() {
        for name in names() {
            let info = info(name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!info.about.is_empty(), "{name}");
            if let Some(d) = &info.default_region {
                assert!(info.regions.contains_key(d), "{name}: default region {d} is not a region");
            }
            for k in info.defaults.keys().chain(&info.optional) {
                assert!(info.inputs.contains_key(k), "{name}: {k} is not a declared input");
            }
        }
    }
}
