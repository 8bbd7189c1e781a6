//! Running hooks: the config's commands at moments of a tenant's life (billing, CRM).
//!
//! # The contract a hook gets
//! - Its command line is the config's, as written; tenant text never reaches its arguments.
//! - stdin: one JSON object, `{"hook", "moment", "idempotency_key", "attempt", "tenant"}`,
//!   `tenant` being the effective settings with `id` and `outputs` (a deprovisioned tenant's
//!   carry no name or email: its tombstone has none).
//! - environment: nothing of tenant-reconcile's own but `PATH`, the config's `env`, the
//!   variables `pass_env` names, and `TENANT_RECONCILE_HOOK`, `_MOMENT`,
//!   `_IDEMPOTENCY_KEY`, `_TENANT_ID`, `_TENANT_SLUG`, `_ATTEMPT`.
//! - The idempotency key is the same for every try of the same moment (it is recorded
//!   before the first), so a hook run again after a crash between its success and our
//!   record can tell it has done this already.
//! - exit 0 is success; anything else, or running past the timeout (the hook's whole
//!   process group is killed), is a failure, shown with the end of its stderr.
//! - An apply that is interrupted kills the process groups of the hooks still running; the
//!   run stays owed, untried, and the next apply runs it under the same key.
//! - stdout is empty or one JSON object; `{"outputs": {"billing_customer_id": "cus_123"}}`
//!   records those values on the tenant. Outputs are not secrets: a hook must not print one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::desired::Effective;
pub use crate::model::hook_runs::{HookDone, HookRun};
use crate::repo::hooks::{HookSpec, Moment};

/// `04:10` of a time within the day, `2026-12-02 04:10` of a later one (UTC), as plans say
/// when a hook is tried next.
pub fn clock(at: std::time::SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    if stamp[..10] == today[..10] {
        stamp[11..16].to_string()
    } else {
        format!("{} {}", &stamp[..10], &stamp[11..16])
    }
}

/// What a run of a hook needs besides its spec and record.
pub struct Invocation<'a> {
    pub spec: &'a HookSpec,
    pub run: &'a HookRun,
    pub tenant: &'a Effective,
    pub tenant_id: &'a str,
    pub outputs: &'a BTreeMap<String, String>,
    /// Where a relative program is found, and where the hook runs.
    pub root: &'a Path,
    /// Cancelled when the apply is interrupted: the hook is killed, and its try not counted.
    pub stop: &'a CancellationToken,
}

/// Why a try of a hook did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum HookError {
    /// It failed: counted as a try, and retried after its backoff.
    Failed(String),
    /// The apply was interrupted and the hook killed: no try is counted, and the next apply
    /// runs it at once, under the same key.
    Interrupted,
}

impl From<String> for HookError {
    fn from(e: String) -> HookError {
        HookError::Failed(e)
    }
}

/// At most this much of a hook's stdout is read, and of its stderr the end is shown.
const STDOUT_LIMIT: usize = 1 << 20;
const STDERR_SHOWN: usize = 2000;

/// Runs one try of a hook and returns its outputs, or why it failed.
pub async fn run(inv: &Invocation<'_>) -> Result<BTreeMap<String, String>, HookError> {
    if inv.stop.is_cancelled() {
        return Err(HookError::Interrupted);
    }
    let spec = inv.spec;
    let attempt = inv.run.attempts + 1;
    let program = &spec.command[0];
    let program_path = if program.contains('/') {
        inv.root.join(program)
    } else {
        program.into()
    };
    // Read once: given to the hook, and kept out of what it printed.
    let passed: Vec<(String, String)> = spec
        .pass_env
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let mut cmd = tokio::process::Command::new(&program_path);
    cmd.args(&spec.command[1..])
        .current_dir(inv.root)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .envs(&spec.env)
        .envs(passed.iter().map(|(k, v)| (k, v)))
        .env("TENANT_RECONCILE_HOOK", &spec.name)
        .env("TENANT_RECONCILE_MOMENT", inv.run.moment.as_str())
        .env("TENANT_RECONCILE_IDEMPOTENCY_KEY", &inv.run.idempotency_key)
        .env("TENANT_RECONCILE_TENANT_ID", inv.tenant_id)
        .env("TENANT_RECONCILE_TENANT_SLUG", inv.tenant.slug.as_str())
        .env("TENANT_RECONCILE_ATTEMPT", attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program_path.display()))?;
    // Killed with all it started if this try is dropped or the process is stopped at once,
    // not only at its timeout.
    let group = child.id().map(Group::started);
    let input = serde_json::to_vec(&stdin_document(inv, attempt)).expect("json");
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let work = async {
        // A hook that does not read its stdin is not an error.
        let write = async {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            let _ = (&mut stdout)
                .take(STDOUT_LIMIT as u64 + 1)
                .read_to_end(&mut out)
                .await;
        };
        let read_err = async {
            let _ = stderr.read_to_end(&mut err).await;
        };
        let ((), (), (), status) = tokio::join!(write, read_out, read_err, child.wait());
        (status, out, err)
    };
    let ended = tokio::select! {
        done = tokio::time::timeout(spec.timeout(), work) => done.map_err(|_| {
            HookError::Failed(format!(
                "was killed after its timeout of {}",
                humantime::format_duration(spec.timeout())
            ))
        }),
        () = inv.stop.cancelled() => Err(HookError::Interrupted),
    };
    let (status, out, err) = match ended {
        Ok(done) => {
            // The leader is gone; what it left running in its group is its own affair.
            if let Some(g) = group {
                g.finished();
            }
            done
        }
        Err(e) => {
            drop(group);
            // Reaped at once: the group was sent SIGKILL.
            let _ = child.wait().await;
            return Err(e);
        }
    };
    let status = status.map_err(|e| format!("cannot wait for it: {e}"))?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(with_stderr(how, &redact(&err, &passed)).into());
    }
    if out.len() > STDOUT_LIMIT {
        return Err(HookError::Failed(
            "printed more than 1 MiB on stdout".into(),
        ));
    }
    parse_outputs(&out).map_err(|e| with_stderr(e, &redact(&err, &passed)).into())
}

/// The hook's stderr without the values `pass_env` gave it (a token a verbose client
/// prints): what it printed is kept in the state with the run owed.
fn redact(err: &[u8], passed: &[(String, String)]) -> Vec<u8> {
    let mut text = String::from_utf8_lossy(err).into_owned();
    for (_, value) in passed.iter().filter(|(_, v)| v.len() >= 4) {
        text = text.replace(value.as_str(), "[redacted]");
    }
    text.into_bytes()
}

fn stdin_document(inv: &Invocation<'_>, attempt: u32) -> Value {
    let mut tenant = serde_json::to_value(inv.tenant).expect("json");
    tenant["id"] = json!(inv.tenant_id);
    tenant["outputs"] = json!(inv.outputs);
    if inv.run.moment == Moment::Deprovisioned {
        if let Some(t) = tenant.as_object_mut() {
            t.remove("name");
            t.remove("owner_email");
        }
    }
    json!({
        "hook": inv.spec.name,
        "moment": inv.run.moment,
        "idempotency_key": inv.run.idempotency_key,
        "attempt": attempt,
        "tenant": tenant,
    })
}

fn with_stderr(what: String, err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    if text.is_empty() {
        return what;
    }
    let start = text
        .char_indices()
        .rev()
        .nth(STDERR_SHOWN)
        .map_or(0, |(i, _)| i);
    format!("{what}; its stderr ends: {}", &text[start..])
}

/// The process groups of the hooks running now, so that a process stopped at once (a second
/// Ctrl-C) leaves none of them behind.
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A hook's process group while its leader runs: killed when dropped before
/// [`Group::finished`]. The leader was started with `process_group(0)`, so the group's id is
/// its pid, and nothing outside the hook is in that group.
struct Group(i32);

impl Group {
    fn started(pid: u32) -> Group {
        let pgid = i32::try_from(pid).expect("a pid fits in pid_t");
        RUNNING.lock().expect("never poisoned").insert(pgid);
        Group(pgid)
    }

    /// The leader has exited and been waited for: nothing is killed.
    fn finished(self) {
        RUNNING.lock().expect("never poisoned").remove(&self.0);
        std::mem::forget(self);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        RUNNING.lock().expect("never poisoned").remove(&self.0);
        kill_group(self.0);
    }
}

/// Kills the process group of every hook running now; for a process about to exit without
/// unwinding its tasks.
pub fn kill_running() {
    let groups = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for pgid in groups {
        kill_group(pgid);
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// What a hook printed: nothing, or `{"outputs": {name: value}}`, names plain, values text
/// (numbers and booleans are taken as their text).
pub fn parse_outputs(stdout: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let doc: Value = serde_json::from_str(text.trim()).map_err(|e| {
        format!("printed something that is not JSON on stdout ({e}); it prints one JSON object, or nothing, and logs on stderr")
    })?;
    let Some(doc) = doc.as_object() else {
        return Err("printed JSON that is not an object on stdout".into());
    };
    let Some(outputs) = doc.get("outputs") else {
        return Ok(BTreeMap::new());
    };
    let Some(outputs) = outputs.as_object() else {
        return Err("its `outputs` is not an object".into());
    };
    if outputs.len() > 32 {
        return Err("it gave more than 32 outputs".into());
    }
    let mut out = BTreeMap::new();
    for (name, value) in outputs {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(format!(
                "the output name {name:?} is not lower-case letters, digits and _"
            ));
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(format!("the output {name} is not text")),
        };
        if value.len() > 1024 {
            return Err(format!("the output {name} is longer than 1024 bytes"));
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::Lifecycle;

    #[test]
    fn outputs_are_plain_names_and_text() {
        let o = parse_outputs(br#"{"outputs": {"billing_customer_id": "cus_1", "n": 3}}"#).unwrap();
        assert_eq!(o["billing_customer_id"], "cus_1");
        assert_eq!(o["n"], "3");
        assert!(parse_outputs(b"").unwrap().is_empty());
        assert!(parse_outputs(b"created customer").is_err());
        assert!(parse_outputs(br#"{"outputs": {"Bad Name": "x"}}"#).is_err());
        assert!(parse_outputs(br#"{"outputs": {"x": {"nested": 1}}}"#).is_err());
    }

    #[test]
    fn a_run_waits_for_its_next_try() {
        let mut r = HookRun::new("billing", Moment::Provisioned, Some(Lifecycle::Active));
        let now = std::time::SystemTime::now();
        assert!(r.due(now));
        r.next_try_at = Some(
            humantime::format_rfc3339_seconds(now + std::time::Duration::from_secs(60)).to_string(),
        );
        assert!(!r.due(now));
        assert!(r.due(now + std::time::Duration::from_secs(61)));
    }
}
