//! `kind: session`: the softphone's signalling set-up walked end to end, in order: the OAuth2
//! token (phase `auth`, once for the session), then each step, e.g. a REST call that returns
//! the signalling WebSocket's URL, then that WebSocket (with pings and a hold).
//!
//! One [`Run`] and one deadline cover the whole session (`ProbeConfig::run_time`: the timeout
//! plus every step's hold), so the phases of all steps are in one outcome and a slow step 1
//! leaves less time for step 2. Phases and reasons stay the fixed words of every other probe
//! (metric labels must not multiply per step); the failing step is named at the start of the
//! message, `step 2 (websocket): ...`, and in `detail.session.failed_step`. A 408 on step 1 is
//! `request/status_408` with `failed_step: 1`; a stripped upgrade on step 2 is
//! `upgrade/not_upgraded` with `failed_step: 2`.
//!
//! An http step may `extract` values from its JSON response body by JSON pointer into
//! variables that later steps use as `${name}` in their URL or body. Extracted values may
//! carry tokens (a signed WebSocket URL), so only their names are reported, and URLs are shown
//! without query.

use std::collections::BTreeMap;

use crate::config::{redact_url, HttpSpec, Secret, SessionSpec, SessionStep, StepAction, WebsocketSpec};
use crate::outcome::details::SessionDetails;
use crate::outcome::{Failure, Outcome, Phase, Reason, Run};

use super::ProbeContext;

/// Longest value a variable may take (a URL or an id).
const MAX_VALUE: usize = 8 * 1024;

/// Runs one session probe.
pub async fn probe(spec: &SessionSpec, ctx: &ProbeContext) -> Outcome {
    let mut run = Run::new(ctx.deadline);
    let result = walk(&mut run, spec, ctx).await;
    run.finish(result)
}

async fn walk(run: &mut Run, spec: &SessionSpec, ctx: &ProbeContext) -> Result<(), Failure> {
    run.detail.session = Some(SessionDetails {
        steps: spec.steps.len() as u32,
        ..Default::default()
    });
    let bearer = match &spec.auth {
        Some(a) => Some(super::oauth2::bearer(run, a, &spec.tls, ctx).await?),
        None => None,
    };
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let kind = match step.action {
            StepAction::Http(_) => "http",
            StepAction::Websocket(_) => "websocket",
        };
        let result = one(run, spec, step, &vars, bearer.as_ref(), ctx).await;
        let result = result.and_then(|body| extract(step, &body, &mut vars));
        match result {
            Ok(()) => {
                if let Some(d) = run.detail.session.as_mut() {
                    d.completed += 1;
                    d.extracted = vars.keys().cloned().collect();
                }
            }
            Err(f) => {
                if let (Some(a), Reason::Status(401)) = (&spec.auth, &f.reason) {
                    super::oauth2::forget(a);
                }
                if let Some(d) = run.detail.session.as_mut() {
                    d.failed_step = Some(i as u32 + 1);
                }
                return Err(Failure::new(f.phase, f.reason, format!("step {} ({kind}): {}", i + 1, f.message)));
            }
        }
    }
    Ok(())
}

/// Runs one step on the session's run; an http step returns its body.
async fn one(
    run: &mut Run,
    spec: &SessionSpec,
    step: &SessionStep,
    vars: &BTreeMap<String, String>,
    bearer: Option<&Secret>,
    ctx: &ProbeContext,
) -> Result<Vec<u8>, Failure> {
    let url = if step.url.contains("${") {
        let text = expand(&step.url, vars);
        let schemes: &[&str] = match step.action {
            StepAction::Http(_) => &["http", "https"],
            StepAction::Websocket(_) => &["ws", "wss"],
        };
        match url::Url::parse(&text) {
            Ok(u) if schemes.contains(&u.scheme()) && u.host_str().is_some() => Some(u),
            Ok(u) => {
                return Err(Failure::new(
                    Phase::Resolve,
                    Reason::BadResponse,
                    format!(
                        "the URL an earlier step returned ({}) is not one of {}",
                        redact_url(&u),
                        schemes.join(", ")
                    ),
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    Phase::Resolve,
                    Reason::BadResponse,
                    format!("the URL an earlier step returned is not a URL: {e}"),
                ))
            }
        }
    } else {
        None
    };
    // A URL a server supplied gets the token and secret headers only when it points at a host
    // the configuration itself names (a literal step URL; another port of that host is the same
    // server, as for `/probe`): a compromised or misdirected answer must not collect the
    // tenant's credentials.
    let trusted = url.as_ref().is_none_or(|u| configured_hosts(spec).contains(&host_key(u)));
    let bearer = bearer.filter(|_| trusted);
    match &step.action {
        StepAction::Http(h) => {
            let mut h: HttpSpec = h.clone();
            if let Some(u) = url {
                h.url = u;
            }
            if !trusted {
                crate::config::web::drop_secret_headers(&mut h.headers);
            }
            h.body = h.body.map(|b| expand(&b, vars));
            h.tls = spec.tls.clone();
            super::http::follow_with(run, &h, ctx, bearer).await
        }
        StepAction::Websocket(w) => {
            let mut w: WebsocketSpec = w.clone();
            if let Some(u) = url {
                w.url = u;
            }
            if !trusted {
                crate::config::web::drop_secret_headers(&mut w.headers);
            }
            w.tls = spec.tls.clone();
            super::websocket::open(run, &w, ctx, None, bearer).await.map(|()| Vec::new())
        }
    }
}

/// The host of a URL, lower case, without a trailing dot.
fn host_key(u: &url::Url) -> String {
    u.host_str().unwrap_or_default().trim_end_matches('.').to_ascii_lowercase()
}

/// The hosts the session's own configuration names: those of its literal step URLs.
fn configured_hosts(spec: &SessionSpec) -> Vec<String> {
    spec.steps
        .iter()
        .filter(|st| !st.url.contains("${"))
        .filter_map(|st| url::Url::parse(&st.url).ok())
        .map(|u| host_key(&u))
        .collect()
}

/// `${name}` → its value (names were checked against earlier extracts at load).
fn expand(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// Reads the step's `extract` pointers from its JSON body into `vars`.
fn extract(step: &SessionStep, body: &[u8], vars: &mut BTreeMap<String, String>) -> Result<(), Failure> {
    if step.extract.is_empty() {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        Failure::new(
            Phase::Body,
            Reason::BadResponse,
            format!("the response ({} bytes) is not JSON, so nothing can be extracted", body.len()),
        )
    })?;
    for (name, pointer) in &step.extract {
        let value = match json.pointer(pointer) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
            Some(_) => {
                return Err(Failure::new(
                    Phase::Body,
                    Reason::ExpectFailed,
                    format!("extract {name}: {pointer} is not a string, number or boolean"),
                ))
            }
            None => {
                return Err(Failure::new(
                    Phase::Body,
                    Reason::ExpectFailed,
                    format!("extract {name}: {pointer} is not in the response"),
                ))
            }
        };
        if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
            return Err(Failure::new(
                Phase::Body,
                Reason::BadResponse,
                format!("extract {name}: the value at {pointer} is longer than {MAX_VALUE} bytes or has control characters"),
            ));
        }
        vars.insert(name.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_wherever_they_appear() {
        let vars = BTreeMap::from([("ws_url".to_string(), "wss://a/b".to_string()), ("id".into(), "7".into())]);
        assert_eq!(expand("${ws_url}?c=${id}&d=${id}", &vars), "wss://a/b?c=7&d=7");
    }
}
