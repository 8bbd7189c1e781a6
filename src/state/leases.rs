//! Leases on tenants, so that runs applying disjoint tenants of one state go at the same
//! time (`apply --tenant`, `--shard`), written once for SQLite and Postgres.
//!
//! Such a run holds the state's lock shared (a run over the whole state holds it alone, so
//! the two never meet) and a lease on each of its tenants: a row of `state_leases` naming
//! the run, taken for all of them in one transaction or for none, so two runs never hold
//! part of each other's tenants and wait on each other. A run that finds one of its tenants
//! held waits (`--lock-timeout`) and names the holder. A lease lasts [`LEASE_SECONDS`] and is
//! renewed while the run lives; one whose run is gone (its process gone from this host, or
//! its connection from the server) or that ran out is taken over. Every record the run
//! writes is fenced by its lease (`Records::write_records_as`), so a run whose lease was
//! taken over cannot write over the new holder's records.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{LockInfo, StateError, Wait};
use super::record_writer::RecordWriter;
use super::records::Records;
use crate::clients::sql::{read_rows, Statement};

/// How long a lease holds without being renewed.
pub const LEASE_SECONDS: i64 = 60;

/// How often a run renews its leases: well within their length.
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// A holder of some of the tenants a run asked for.
struct Holder {
    run: String,
    info: Option<LockInfo>,
    tenants: Vec<String>,
}

impl Records {
    /// Who holds leases on any of `slugs` now, ended or not.
    fn holders(&self, slugs: &[String]) -> Statement {
        Statement::new(
            &self.dialect,
            "read the tenants' leases",
            "SELECT slug, run, info FROM {schema}.state_leases
             WHERE name = $1 AND slug IN ({each $2})",
        )
        .text(&self.name)
        .list(slugs)
    }

    /// Ends the leases that ran out, and those of `gone` runs.
    pub(super) fn drop_ended(&self, gone: &[String]) -> Statement {
        Statement::new(
            &self.dialect,
            "end the leases whose runs are gone",
            "DELETE FROM {schema}.state_leases
             WHERE name = $1 AND (expires_at < {epoch} OR run IN ({each $2}))",
        )
        .text(&self.name)
        .list(gone)
    }

    /// Takes a lease on each of `slugs` no one holds.
    fn take(&self, slugs: &[String], run: &str, info: &str) -> Statement {
        let rows = slugs.iter().map(|s| serde_json::json!([s])).collect();
        Statement::new(
            &self.dialect,
            "take the tenants' leases",
            &format!(
                "INSERT INTO {{schema}}.state_leases (name, slug, run, info, expires_at)
                 SELECT $1, s.slug, $3, $4, {{epoch}} + {LEASE_SECONDS} FROM {{rows $2 slug}} AS s
                 WHERE true ON CONFLICT (name, slug) DO NOTHING"
            ),
        )
        .text(&self.name)
        .rows(rows)
        .text(run)
        .text(info)
    }

    fn renew(&self, run: &str) -> Statement {
        Statement::new(
            &self.dialect,
            "renew the tenants' leases",
            &format!(
                "UPDATE {{schema}}.state_leases SET expires_at = {{epoch}} + {LEASE_SECONDS}
                 WHERE name = $1 AND run = $2"
            ),
        )
        .text(&self.name)
        .text(run)
    }

    fn release(&self, run: &str) -> Statement {
        Statement::new(
            &self.dialect,
            "let go of the tenants' leases",
            "DELETE FROM {schema}.state_leases WHERE name = $1 AND run = $2",
        )
        .text(&self.name)
        .text(run)
    }
}

/// Takes a lease on every one of `slugs` for the run `info` names, waiting as `wait` says
/// while another run holds any of them. A lease of a run the writer finds gone
/// ([`RecordWriter::alive`]) is ended at once.
pub async fn take(
    records: &Records,
    writer: &dyn RecordWriter,
    slugs: &BTreeSet<String>,
    info: &LockInfo,
    wait: &Wait,
) -> Result<(), StateError> {
    let slugs: Vec<String> = slugs.iter().cloned().collect();
    let body = serde_json::to_string(info).expect("lock info serializes");
    let started = Instant::now();
    let mut gone: Vec<String> = Vec::new();
    loop {
        let statements = vec![
            (records.drop_ended(&gone), u64::MAX, Vec::new()),
            (
                records.take(&slugs, &info.id, &body),
                slugs.len() as u64,
                slugs.clone(),
            ),
        ];
        match writer.run(statements).await {
            Ok(()) => return Ok(()),
            Err(StateError::MovedOn(_)) => {}
            Err(e) => return Err(e),
        }
        let holders = holders(records, writer, &slugs).await?;
        if holders.is_empty() {
            // Let go of in between: try again at once.
            continue;
        }
        gone.clear();
        for h in &holders {
            if !writer.alive(&h.run, h.info.as_ref()).await {
                gone.push(h.run.clone());
            }
        }
        if !gone.is_empty() {
            continue;
        }
        if started.elapsed() >= wait.timeout {
            let holder = holders.first().map_or_else(
                || "another run".to_string(),
                |h| {
                    let who = h
                        .info
                        .as_ref()
                        .map_or_else(|| format!("run {}", h.run), LockInfo::describe);
                    let count = h.tenants.len();
                    format!(
                        "{who}, which is applying {} of these tenants ({})",
                        count,
                        h.tenants
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            );
            return Err(StateError::Locked { holder });
        }
        wait.poll().await?;
    }
}

async fn holders(
    records: &Records,
    writer: &dyn RecordWriter,
    slugs: &[String],
) -> Result<Vec<Holder>, StateError> {
    let rows = writer.fetch(records.holders(slugs)).await?;
    let rows = read_rows(&rows, "read the tenants' leases", |r| {
        Ok((r.text(0)?, r.text(1)?, r.text(2)?))
    })
    .map_err(|source| StateError::Store {
        context: "read the tenants' leases".into(),
        source,
    })?;
    let mut holders: Vec<Holder> = Vec::new();
    for (slug, run, info) in rows {
        match holders.iter_mut().find(|h| h.run == run) {
            Some(h) => h.tenants.push(slug),
            None => holders.push(Holder {
                info: serde_json::from_str(&info).ok(),
                run,
                tenants: vec![slug],
            }),
        }
    }
    Ok(holders)
}

/// A run's leases while it lives: renewed in the background, and whether they still hold.
pub struct Held {
    pub run: String,
    lost: Arc<AtomicBool>,
    renewing: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Starts renewing the `count` leases of `run`, through `writer`. Once one is found
    /// another run's, or none could be renewed for nearly a lease's length (a renewal that
    /// fails is tried again until then), [`Held::check`] fails from then on.
    pub fn start(
        records: Arc<Records>,
        writer: Arc<dyn RecordWriter>,
        run: String,
        count: usize,
    ) -> Held {
        let lost = Arc::new(AtomicBool::new(false));
        let renewing = {
            let (lost, run) = (lost.clone(), run.clone());
            tokio::spawn(async move {
                let mut renewed_at = Instant::now();
                let margin = Duration::from_secs(LEASE_SECONDS as u64) - RENEW_EVERY / 2;
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let renewal = (records.renew(&run), count as u64, Vec::new());
                    match writer.run(vec![renewal]).await {
                        Ok(()) => renewed_at = Instant::now(),
                        Err(StateError::MovedOn(_)) => lost.store(true, Ordering::SeqCst),
                        Err(_) if renewed_at.elapsed() >= margin => {
                            lost.store(true, Ordering::SeqCst)
                        }
                        Err(_) => {}
                    }
                    if lost.load(Ordering::SeqCst) {
                        return;
                    }
                }
            })
        };
        Held {
            run,
            lost,
            renewing,
        }
    }

    /// Fails once a renewal failed: the leases may be another run's by now.
    pub fn check(&self) -> Result<(), StateError> {
        match self.lost.load(Ordering::SeqCst) {
            true => Err(StateError::LockLost {
                holder: "another run, or nobody: this run's leases could not be renewed".into(),
            }),
            false => Ok(()),
        }
    }

    /// Stops renewing and lets go of the leases.
    pub async fn release(
        self,
        records: &Records,
        writer: &dyn RecordWriter,
    ) -> Result<(), StateError> {
        self.renewing.abort();
        writer
            .run(vec![(records.release(&self.run), u64::MAX, Vec::new())])
            .await
    }
}

impl Drop for Held {
    /// A lock dropped without being let go of (its run failed on the way) stops renewing:
    /// its leases then run out.
    fn drop(&mut self) {
        self.renewing.abort();
    }
}
