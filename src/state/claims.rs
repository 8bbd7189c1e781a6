//! Runners draining one saved plan together (`apply PLAN --claim`), written once for SQLite
//! and Postgres.
//!
//! The first runner to come writes a row of `state_claims` for each of the plan's tenants;
//! then every runner, again and again, claims a few rows no one holds, applies those tenants
//! and marks them done. A claim is a lease like a tenant's (`leases.rs`): renewed while its
//! runner lives, and freed once the runner is found gone (its process gone from this host,
//! or its connection from the server) or the lease ran out, for another runner to take. On
//! Postgres the rows are claimed with `FOR UPDATE SKIP LOCKED`, so runners claiming at the
//! same moment pass by each other's rows instead of queueing on them; SQLite's writer has
//! the file to itself anyway. A row's `done` says how its tenant ended, once: a tenant is
//! marked done only by the runner that holds its claim.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::backend::{Ended, LockInfo, PlanClaims, StateError, StateLock, Tally, Wait};
use super::leases::LEASE_SECONDS;
use super::record_lock::RecordLock;
use super::record_writer::RecordWriter;
use super::records::Records;
use crate::clients::sql::{read_rows, Statement};

/// Why a state cannot be claimed from yet.
pub const NOT_SHARED: &str = "runners claim tenants only from a state kept as records that was written once already\n  hint: apply once without --claim (the state's first write, or its conversion from one document, is the whole state's)";

/// How long a plan's claims are kept, in seconds: a week, so a runner that comes late to a
/// plan finds it done rather than starting it again.
const KEPT_FOR: i64 = 7 * 24 * 3600;

/// How often a runner renews its claims: well within a lease.
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// This runner's hold on a plan's claims: its own connection (or run file), which says it is
/// alive while it lasts.
pub struct Claims {
    records: Arc<Records>,
    writer: Arc<dyn RecordWriter>,
    info: LockInfo,
    body: String,
    plan: String,
    describe: String,
    lost: Arc<AtomicBool>,
    renewing: tokio::task::JoinHandle<()>,
}

impl Records {
    fn seed(&self, plan: &str, slugs: &[String]) -> Statement {
        let rows = slugs.iter().map(|s| serde_json::json!([s])).collect();
        Statement::new(
            &self.dialect,
            "write the plan's claims",
            "INSERT INTO {schema}.state_claims (name, plan, slug, seeded_at)
             SELECT $1, $2, s.slug, {epoch} FROM {rows $3 slug} AS s
             WHERE true ON CONFLICT (name, plan, slug) DO NOTHING",
        )
        .text(&self.name)
        .text(plan)
        .rows(rows)
    }

    /// Removes the claims of other plans written more than [`KEPT_FOR`] ago.
    fn prune(&self, plan: &str) -> Statement {
        Statement::new(
            &self.dialect,
            "remove the claims of past plans",
            &format!(
                "DELETE FROM {{schema}}.state_claims
                 WHERE name = $1 AND plan <> $2 AND seeded_at < {{epoch}} - {KEPT_FOR}"
            ),
        )
        .text(&self.name)
        .text(plan)
    }

    /// Claims up to `count` tenants no one holds (or whose holder's claim ran out), and
    /// returns them. A tenant another run holds a lease on (an `apply --tenant` beside the
    /// runners, or a runner gone whose lease has not run out) is left until it is let go.
    /// The rows are picked in a query of their own, joined to the update: with the pick as
    /// a subquery of the update's condition, a runner on Postgres claimed a whole plan at
    /// once, far more than `count`.
    fn claim(&self, plan: &str, run: &str, info: &str, count: usize) -> Statement {
        Statement::new(
            &self.dialect,
            "claim tenants of the plan",
            &format!(
                "WITH picked AS (
                     SELECT c.slug AS picked_slug FROM {{schema}}.state_claims AS c
                     WHERE c.name = $1 AND c.plan = $2 AND c.done IS NULL
                       AND (c.run IS NULL OR c.expires_at < {{epoch}})
                       AND NOT EXISTS (SELECT 1 FROM {{schema}}.state_leases AS l
                           WHERE l.name = c.name AND l.slug = c.slug AND l.expires_at >= {{epoch}})
                     ORDER BY c.slug LIMIT $5 {{lock c}})
                 UPDATE {{schema}}.state_claims SET run = $3, info = $4, expires_at = {{epoch}} + {LEASE_SECONDS}
                 FROM picked WHERE name = $1 AND plan = $2 AND slug = picked_slug
                 RETURNING slug"
            ),
        )
        .text(&self.name)
        .text(plan)
        .text(run)
        .text(info)
        .int(count as i64)
    }

    /// Frees the claims of `gone` runners on tenants they did not finish.
    fn free(&self, plan: &str, gone: &[String]) -> Statement {
        Statement::new(
            &self.dialect,
            "free the claims of runners that are gone",
            "UPDATE {schema}.state_claims SET run = NULL, info = NULL, expires_at = NULL
             WHERE name = $1 AND plan = $2 AND done IS NULL AND run IN ({each $3})",
        )
        .text(&self.name)
        .text(plan)
        .list(gone)
    }

    fn mark_done(&self, plan: &str, run: &str, ended: &Ended, slugs: &[String]) -> Statement {
        Statement::new(
            &self.dialect,
            "mark claimed tenants done",
            "UPDATE {schema}.state_claims SET done = $4
             WHERE name = $1 AND plan = $2 AND run = $3 AND done IS NULL AND slug IN ({each $5})",
        )
        .text(&self.name)
        .text(plan)
        .text(run)
        .text(ended.as_str())
        .list(slugs)
    }

    fn renew_claims(&self, plan: &str, run: &str) -> Statement {
        Statement::new(
            &self.dialect,
            "renew the claims",
            &format!(
                "UPDATE {{schema}}.state_claims SET expires_at = {{epoch}} + {LEASE_SECONDS}
                 WHERE name = $1 AND plan = $2 AND run = $3 AND done IS NULL"
            ),
        )
        .text(&self.name)
        .text(plan)
        .text(run)
    }

    /// How many rows end each way, by runner.
    fn tally(&self, plan: &str) -> Statement {
        Statement::new(
            &self.dialect,
            "read where the plan's claims stand",
            "SELECT coalesce(done, ''), coalesce(run, ''), count(*)
             FROM {schema}.state_claims WHERE name = $1 AND plan = $2
             GROUP BY done, run",
        )
        .text(&self.name)
        .text(plan)
    }

    /// The runners holding claims on tenants not done, from the index of those.
    fn claim_holders(&self, plan: &str) -> Statement {
        Statement::new(
            &self.dialect,
            "read who holds the plan's claims",
            "SELECT DISTINCT run, info FROM {schema}.state_claims
             WHERE name = $1 AND plan = $2 AND done IS NULL AND run IS NOT NULL",
        )
        .text(&self.name)
        .text(plan)
    }
}

fn read_failed(
    context: &'static str,
) -> impl FnOnce(crate::clients::error::ProviderError) -> StateError {
    move |source| StateError::Store {
        context: context.into(),
        source,
    }
}

impl Claims {
    /// Holds the claims of the plan `plan` for the run `info` names, through `writer` (which
    /// holds the state's lock shared and says this run is alive), writing a row for each of
    /// `slugs` that has none yet.
    pub async fn open(
        records: Records,
        writer: Arc<dyn RecordWriter>,
        describe: String,
        info: LockInfo,
        plan: &str,
        slugs: &[String],
    ) -> Result<Claims, StateError> {
        let records = Arc::new(records);
        let seed = vec![
            (records.prune(plan), u64::MAX, Vec::new()),
            (records.seed(plan, slugs), u64::MAX, Vec::new()),
        ];
        if let Err(e) = writer.run(seed).await {
            let _ = writer.release().await;
            return Err(e);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewing = {
            let (records, writer, lost) = (records.clone(), writer.clone(), lost.clone());
            let (plan, run) = (plan.to_string(), info.id.clone());
            tokio::spawn(async move {
                // A renewal that fails is tried again until the claims would run out.
                let margin = Duration::from_secs(LEASE_SECONDS as u64) - RENEW_EVERY / 2;
                let mut renewed_at = std::time::Instant::now();
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let renewal = (records.renew_claims(&plan, &run), u64::MAX, Vec::new());
                    match writer.run(vec![renewal]).await {
                        Ok(()) => renewed_at = std::time::Instant::now(),
                        Err(_) if renewed_at.elapsed() >= margin => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        Ok(Claims {
            body: serde_json::to_string(&info).expect("lock info serializes"),
            records,
            writer,
            info,
            plan: plan.to_string(),
            describe,
            lost,
            renewing,
        })
    }

    /// The runners holding claims on tenants not done.
    async fn holders(&self) -> Result<Vec<(String, Option<LockInfo>)>, StateError> {
        let rows = self
            .writer
            .fetch(self.records.claim_holders(&self.plan))
            .await?;
        let rows = read_rows(&rows, "read who holds the plan's claims", |r| {
            Ok((r.text(0)?, r.text(1)?))
        })
        .map_err(read_failed("read who holds the plan's claims"))?;
        Ok(rows
            .into_iter()
            .map(|(run, info)| (run, serde_json::from_str(&info).ok()))
            .collect())
    }
}

#[async_trait]
impl PlanClaims for Claims {
    async fn claim(&self, count: usize) -> Result<Vec<String>, StateError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(StateError::LockLost {
                holder: "another runner, or nobody: this runner's claims could not be renewed"
                    .into(),
            });
        }
        let mut gone = Vec::new();
        for (run, info) in self.holders().await? {
            // Never asked of itself: on Postgres a session asking for its own key is given it.
            if run != self.info.id && !self.writer.alive(&run, info.as_ref()).await {
                gone.push(run);
            }
        }
        if !gone.is_empty() {
            // Their leases go too: a claim passes by a tenant under a lease, and the leases of
            // a runner killed mid-batch would otherwise hold its tenants until they ran out.
            self.writer
                .run(vec![
                    (self.records.free(&self.plan, &gone), u64::MAX, Vec::new()),
                    (self.records.drop_ended(&gone), u64::MAX, Vec::new()),
                ])
                .await?;
        }
        let rows = self
            .writer
            .fetch(
                self.records
                    .claim(&self.plan, &self.info.id, &self.body, count),
            )
            .await?;
        read_rows(&rows, "claim tenants of the plan", |r| r.text(0))
            .map_err(read_failed("claim tenants of the plan"))
    }

    /// Holds `slugs` (claimed by this runner) to apply them: a lease on each, as
    /// [`StateBackend::lock_tenants`](super::StateBackend::lock_tenants) takes, through this
    /// runner's own connection.
    async fn lock(
        &self,
        slugs: &BTreeSet<String>,
        wait: &Wait,
    ) -> Result<Box<dyn StateLock>, StateError> {
        let lock = RecordLock::borrowing(
            (*self.records).clone(),
            self.writer.clone(),
            self.describe.clone(),
            &self.info,
            wait,
            slugs,
        )
        .await?;
        Ok(Box::new(lock))
    }

    /// Records how `slugs` (claimed by this runner) ended.
    async fn done(&self, slugs: &[String], ended: Ended) -> Result<(), StateError> {
        if slugs.is_empty() {
            return Ok(());
        }
        let statement = self
            .records
            .mark_done(&self.plan, &self.info.id, &ended, slugs);
        self.writer
            .run(vec![(statement, slugs.len() as u64, slugs.to_vec())])
            .await
    }

    /// Where the plan's claims stand now.
    async fn tally(&self) -> Result<Tally, StateError> {
        let rows = self.writer.fetch(self.records.tally(&self.plan)).await?;
        let rows = read_rows(&rows, "read where the plan's claims stand", |r| {
            Ok((r.text(0)?, r.text(1)?, r.int(2)?))
        })
        .map_err(read_failed("read where the plan's claims stand"))?;
        let mut tally = Tally::default();
        let mut runners = BTreeSet::new();
        for (done, run, count) in rows {
            let count = count as usize;
            tally.tenants += count;
            match done.as_str() {
                "applied" => tally.applied += count,
                "failed" => tally.failed += count,
                "stale" => tally.stale += count,
                _ if !run.is_empty() => tally.in_hand += count,
                _ => {}
            }
            if !run.is_empty() {
                runners.insert(run);
            }
        }
        tally.runners = runners.len();
        Ok(tally)
    }

    async fn give_back(&self) -> Result<(), StateError> {
        let statement = self
            .records
            .free(&self.plan, std::slice::from_ref(&self.info.id));
        self.writer
            .run(vec![(statement, u64::MAX, Vec::new())])
            .await
    }

    /// Stops renewing, frees the claims this runner did not finish, and lets go of its
    /// connection.
    async fn close(self: Box<Self>) -> Result<(), StateError> {
        self.renewing.abort();
        let freed = self.give_back().await;
        let released = self.writer.release().await;
        freed.and(released)
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim takes at most what it asks for, from rows no one holds, and finds them in the
    /// index of the rows not done: walking the plan's rows in key order, a large plan's
    /// claims would go past every tenant done before them, again and again.
    #[tokio::test]
    async fn a_claim_takes_what_it_asks_from_the_rows_not_done() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, records) = super::super::records::sqlite_records(dir.path()).await;
        let slugs: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
        records.seed("p", &slugs).execute(&pool).await.unwrap();
        records.seed("p", &slugs).execute(&pool).await.unwrap();
        let claim = |run: &'static str| {
            let records = records.clone();
            let pool = pool.clone();
            async move {
                let rows = records
                    .claim("p", run, "{}", 10)
                    .fetch(&pool)
                    .await
                    .unwrap();
                read_rows(&rows, "claim", |r| r.text(0)).unwrap()
            }
        };
        let first = claim("a").await;
        let second = claim("b").await;
        assert_eq!(first.len(), 10);
        assert_eq!(second.len(), 10);
        assert!(first.iter().all(|s| !second.contains(s)), "claimed twice");
        records
            .mark_done("p", "a", &Ended::Applied, &first)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(claim("a").await.len(), 5, "the rest, and no more");
        assert!(claim("c").await.is_empty());
        records
            .free("p", &["b".to_string()])
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            claim("c").await,
            second,
            "a gone runner's claims taken over"
        );

        let steps = records
            .claim("p", "d", "{}", 10)
            .explained(&records.dialect)
            .fetch(&pool)
            .await
            .unwrap();
        let steps: Vec<String> = steps.iter().map(|s| s.text(3).unwrap()).collect();
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING INDEX state_claims_open")),
            "{steps:?}"
        );
    }
}
