//! The state as records, written once for SQLite (the local backend's file) and Postgres
//! (the admin schema): a header, and one record per tenant, each with its own generation.
//!
//! A tenant's step writes its record alone, only where the generation is the one this run
//! last read or wrote (`… WHERE generation = expected`), so a write costs one tenant however
//! large the fleet, and a run that is not the last writer of a record is refused rather than
//! writing over what another run recorded. The header holds what is the fleet's (lineage,
//! master key, migrations' checksums, released tenants) and is written by a run's whole
//! writes only (when the state is new or its key changes, and at the run's end); the record table's own columns (lifecycle, tenant id) answer fleet-wide
//! questions without reading every record.
//!
//! The state's serial, which a saved plan compares, is the header's generation plus every
//! record's: a write of either moves it by one, and a header written after records were
//! removed takes their generations on, so it never goes back.
//!
//! A run that applies some tenants only holds a lease on each (`state_leases`, see
//! `leases.rs`), and its record writes are fenced by it: a record is written only while the
//! run's lease on its tenant stands.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::header::{converted, Header};
use super::whole_write::{RecordWrite, WholeWrite, Written};
use super::{Scope, State, StateError, TenantState, RECORDS_VERSION};
use crate::clients::error::ProviderError;
use crate::clients::sql::{read_rows, Dialect, Pool, Statement};

/// The tables, on either server; each statement is idempotent.
pub const TABLES: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS {schema}.state_header (
        name       text PRIMARY KEY,
        generation bigint NOT NULL,
        body       text NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS {schema}.state_tenants (
        name       text NOT NULL,
        slug       text NOT NULL,
        generation bigint NOT NULL,
        lifecycle  text NOT NULL,
        tenant_id  text,
        body       text NOT NULL,
        PRIMARY KEY (name, slug)
    )",
    // How many tenants are live, counted without reading a record (a plan of some tenants
    // weighs the files gone against it). Partial, so that no statement but that count can
    // use it (SQLite took an index on the lifecycle for a record's lookup by name alone).
    "CREATE INDEX IF NOT EXISTS {index state_tenants_live state_tenants} (name)
        WHERE lifecycle <> 'deprovisioned'",
    // A run's hold on a tenant: `run` is its lock id, `info` its `LockInfo`, and the lease
    // ends at `expires_at` (seconds since 1970, the server's clock) unless renewed.
    "CREATE TABLE IF NOT EXISTS {schema}.state_leases (
        name       text NOT NULL,
        slug       text NOT NULL,
        run        text NOT NULL,
        info       text NOT NULL,
        expires_at bigint NOT NULL,
        PRIMARY KEY (name, slug)
    )",
    // A saved plan's tenants, claimed by runners that apply it together (`claims.rs`):
    // `plan` is the plan's digest, `run` and `info` the holder as in `state_leases`, and
    // `done` how the tenant ended (`applied`, `failed`, `stale`), once.
    "CREATE TABLE IF NOT EXISTS {schema}.state_claims (
        name       text NOT NULL,
        plan       text NOT NULL,
        slug       text NOT NULL,
        run        text,
        info       text,
        expires_at bigint,
        done       text,
        seeded_at  bigint,
        PRIMARY KEY (name, plan, slug)
    )",
    // The rows not done yet, in slug order: a claim walks these only, not the rows of the
    // tenants done before it (which, in key order, a large plan's claims would walk again
    // and again).
    "CREATE INDEX IF NOT EXISTS {index state_claims_open state_claims} (name, plan, slug)
        WHERE done IS NULL",
    // A plan's rows by when they were written: the plans of past weeks are removed.
    "CREATE INDEX IF NOT EXISTS {index state_claims_seeded state_claims} (name, seeded_at)",
];

/// The header in `row` (of [`Records::header_statement`]) and its generation; `None` for no
/// row. A header of another format version is refused as that.
pub(super) fn parse_header(
    row: Option<crate::clients::sql::Row>,
    describe: &str,
) -> Result<Option<(u64, Header)>, StateError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let (generation, body) = read_rows(&[row], "read the state's header", |r| {
        Ok((r.int(0)?, r.text(1)?))
    })
    .map_err(|source| StateError::Store {
        context: format!("read {describe}"),
        source,
    })?
    .remove(0);
    let header: Header = serde_json::from_str(&body).map_err(|e| StateError::Corrupt {
        path: describe.to_string(),
        message: format!("header: {e}"),
    })?;
    header.check_version(describe)?;
    Ok(Some((generation as u64, header)))
}

/// The page size of a new local state file: a record (1.5 KB for a tenant of the example)
/// fits in one page, and a one-tenant change writes that page, not a 4 KB one.
pub const PAGE_SIZE: u32 = 2048;

/// How many parts the records are read in, side by side.
pub const READ_PARTS: usize = 2;

/// The most records one statement writes: a conversion writes every tenant's.
const RECORDS_PER_STATEMENT: usize = 1000;

/// The records of one state (`name`) on one server.
#[derive(Clone)]
pub struct Records {
    pub dialect: Dialect,
    pub name: String,
}

fn store(describe: &str) -> impl Fn(ProviderError) -> StateError + '_ {
    move |source| StateError::Store {
        context: format!("read {describe}"),
        source,
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).expect("a generation fits in 63 bits")
}

impl Records {
    /// The state recorded, or `None` when there is no header (nothing written yet, or a
    /// state in the one-document format not converted yet). `describe` names the state in
    /// errors.
    pub async fn read(&self, pool: &Pool, describe: &str) -> Result<Option<State>, StateError> {
        // The records come folded into one text per part (a driver hands rows over one at a
        // time, which at 100,000 tenants would be most of the read), the parts read side by
        // side on connections of their own and parsed side by side, each record left as
        // raw text until then and decoded side by side too.
        let header = self.header_statement().first(pool);
        let parts = futures::future::try_join_all(
            (0..READ_PARTS).map(|part| self.records_statement(part).first(pool)),
        );
        let (header, parts) = tokio::try_join!(header, parts).map_err(store(describe))?;
        self.assemble(header, parts, describe)
    }

    /// The header and the records of `slugs` only, what a plan of some tenants reads: three
    /// statements whatever the fleet, each by the primary key. The state says which tenants
    /// it was read for ([`State::scope`]), and how many of the fleet's are live.
    pub async fn read_some(
        &self,
        pool: &Pool,
        describe: &str,
        slugs: &BTreeSet<String>,
    ) -> Result<Option<State>, StateError> {
        let header = self.header_statement().first(pool);
        let records = Statement::new(
            &self.dialect,
            "read the state's records",
            "SELECT {lbrace} || COALESCE({text_list}(
                 {json_quote slug} || ':[' || generation || ',' || body || ']', ','), '') || {rbrace}
             FROM {schema}.state_tenants WHERE name = $1 AND slug IN ({each $2})",
        )
        .text(&self.name)
        .list(slugs)
        .first(pool);
        // Answered from the partial index of the live records, not the records.
        let live = Statement::new(
            &self.dialect,
            "count the state's live tenants",
            "SELECT count(*) FROM {schema}.state_tenants
             WHERE name = $1 AND lifecycle <> 'deprovisioned'",
        )
        .text(&self.name)
        .first(pool);
        let (header, records, live) =
            tokio::try_join!(header, records, live).map_err(store(describe))?;
        let live = match live {
            Some(row) => row
                .int(0)
                .map_err(ProviderError::sql("count the state's live tenants"))
                .map_err(store(describe))?,
            None => 0,
        };
        let mut state = self.assemble(header, vec![records], describe)?;
        if let Some(state) = &mut state {
            state.scope = Some(Scope {
                held: false,
                slugs: slugs.clone(),
                live: live as usize,
                own_live: state.own_live(),
            });
        }
        Ok(state)
    }

    /// The state of a header row and the rows of folded records read with it.
    fn assemble(
        &self,
        header: Option<crate::clients::sql::Row>,
        parts: Vec<Option<crate::clients::sql::Row>>,
        describe: &str,
    ) -> Result<Option<State>, StateError> {
        let corrupt = |message: String| StateError::Corrupt {
            path: describe.to_string(),
            message,
        };
        let Some((generation, header)) = parse_header(header, describe)? else {
            return Ok(None);
        };
        let records = parts
            .par_iter()
            .flatten()
            .map(|row| {
                // Read where the row holds it: the records are most of the state's bytes.
                let text = row
                    .maybe_str(0)
                    .map_err(|e| format!("records: {e}"))?
                    .unwrap_or("{}");
                let raw: BTreeMap<&str, (u64, &RawValue)> =
                    serde_json::from_str(text).map_err(|e| format!("records: {e}"))?;
                raw.into_par_iter()
                    .map(|(slug, (generation, body))| {
                        match serde_json::from_str::<TenantState>(body.get()) {
                            Ok(t) => Ok((slug.to_string(), generation, t)),
                            Err(e) => Err(format!("tenant {slug}: {e}")),
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(corrupt)?;
        drop(parts);
        let records = records.into_iter().flatten();
        let mut state = header.into_state(generation);
        for (slug, generation, tenant) in records {
            state.generations.insert(slug.clone(), generation);
            state.tenants.insert(slug, tenant);
        }
        state.serial = state.generation + state.generations.values().sum::<u64>();
        Ok(Some(state))
    }

    pub(super) fn header_statement(&self) -> Statement {
        Statement::new(
            &self.dialect,
            "read the state's header",
            "SELECT generation, body FROM {schema}.state_header WHERE name = $1",
        )
        .text(&self.name)
    }

    /// Part `part` of [`READ_PARTS`] of the records, as one JSON object of each tenant's
    /// generation and record: joined as text, not built as JSON, which the server would do
    /// by parsing every record, written as JSON by this tool.
    fn records_statement(&self, part: usize) -> Statement {
        Statement::new(
            &self.dialect,
            "read the state's records",
            "SELECT {lbrace} || COALESCE({text_list}(
                 {json_quote slug} || ':[' || generation || ',' || body || ']', ','), '') || {rbrace}
             FROM {schema}.state_tenants WHERE name = $1 AND {part $2 $3}",
        )
        .text(&self.name)
        .int(READ_PARTS as i64)
        .int(part as i64)
    }

    /// Writes records, each only where its generation is still the one expected: one
    /// statement for up to [`RECORDS_PER_STATEMENT`]. Any that was not where expected fails
    /// the write, naming them.
    pub fn write_records(&self, writes: &[RecordWrite<'_>]) -> Vec<Checked> {
        self.write_records_as(writes, None)
    }

    /// [`Records::write_records`], each record written only while `run` (a lock id) holds
    /// the lease on its tenant, when it is given: a run whose lease ended and was taken by
    /// another cannot write over that run's records.
    pub fn write_records_as(&self, writes: &[RecordWrite<'_>], run: Option<&str>) -> Vec<Checked> {
        let leased = match run {
            Some(_) => {
                "EXISTS (SELECT 1 FROM {schema}.state_leases AS l
                         WHERE l.name = $1 AND l.slug = r.slug AND l.run = $3
                         AND l.expires_at >= {epoch})"
            }
            None => "true",
        };
        // A record none was expected for is made (and not if one stands); one expected at a
        // generation is changed only there (and not made again if another run removed it).
        let made = format!(
            "INSERT INTO {{schema}}.state_tenants (name, slug, generation, lifecycle, tenant_id, body)
             SELECT $1, r.slug, CAST(r.generation AS bigint), r.lifecycle, r.tenant_id, r.body
             FROM {{rows $2 slug generation lifecycle tenant_id body}} AS r
             WHERE {leased}
             ON CONFLICT (name, slug) DO NOTHING"
        );
        let sqlite = matches!(self.dialect, Dialect::Sqlite);
        let moved = match sqlite {
            // On SQLite an UPDATE … FROM walks the records it updates (every record of the
            // state) and looks each up in the rows, so each write cost the whole fleet; an
            // upsert from the rows looks each record up by its key. It never makes a record:
            // the one it finds is the one it conflicts with. The lifecycle is not set here:
            // SQLite rewrites an index entry for every column a write sets, changed or not,
            // and the lifecycle is indexed and seldom moves (see `moved_lifecycle`).
            true => format!(
                "INSERT INTO {{schema}}.state_tenants (name, slug, generation, lifecycle, tenant_id, body)
                 SELECT $1, r.slug, CAST(r.generation AS bigint), r.lifecycle, r.tenant_id, r.body
                 FROM {{rows $2 slug generation lifecycle tenant_id body expected}} AS r
                 WHERE EXISTS (SELECT 1 FROM {{schema}}.state_tenants AS t WHERE t.name = $1
                     AND t.slug = r.slug AND t.generation = CAST(r.expected AS bigint))
                   AND {leased}
                 ON CONFLICT (name, slug) DO UPDATE SET generation = excluded.generation,
                     tenant_id = excluded.tenant_id, body = excluded.body"
            ),
            // Postgres joins as it should, and leaves an index alone when the value it holds
            // is the same.
            false => format!(
                "UPDATE {{schema}}.state_tenants SET generation = CAST(r.generation AS bigint),
                     lifecycle = r.lifecycle, tenant_id = r.tenant_id, body = r.body
                 FROM {{rows $2 slug generation lifecycle tenant_id body expected}} AS r
                 WHERE state_tenants.name = $1 AND state_tenants.slug = r.slug
                   AND state_tenants.generation = CAST(r.expected AS bigint) AND {leased}"
            ),
        };
        // On SQLite, after the write above and in its transaction: the lifecycle of the
        // records it wrote (at their new generation) where it moved, by an upsert as above.
        let moved_lifecycle = "INSERT INTO {schema}.state_tenants (name, slug, generation, lifecycle, tenant_id, body)
             SELECT $1, r.slug, 0, r.lifecycle, NULL, '' FROM {rows $2 slug generation lifecycle} AS r
             WHERE EXISTS (SELECT 1 FROM {schema}.state_tenants AS t WHERE t.name = $1
                 AND t.slug = r.slug AND t.generation = CAST(r.generation AS bigint)
                 AND t.lifecycle <> r.lifecycle)
             ON CONFLICT (name, slug) DO UPDATE SET lifecycle = excluded.lifecycle";
        let mut out = Vec::new();
        for chunk in writes.chunks(RECORDS_PER_STATEMENT) {
            for (sql, part, updates) in [
                (
                    &made,
                    chunk.iter().filter(|w| w.expected == 0).collect::<Vec<_>>(),
                    false,
                ),
                (
                    &moved,
                    chunk.iter().filter(|w| w.expected > 0).collect(),
                    true,
                ),
            ] {
                if part.is_empty() {
                    continue;
                }
                let rows = part
                    .iter()
                    .map(|w| {
                        serde_json::json!([
                            w.slug,
                            w.generation,
                            w.tenant.lifecycle.as_str(),
                            w.tenant.tenant_id,
                            serde_json::to_string(w.tenant).expect("state serializes"),
                            w.expected,
                        ])
                    })
                    .collect();
                let statement = Statement::new(&self.dialect, "write the tenants' records", sql)
                    .text(&self.name)
                    .rows(rows);
                let statement = match run {
                    Some(run) => statement.text(run),
                    None => statement,
                };
                let slugs: Vec<String> = part.iter().map(|w| w.slug.to_string()).collect();
                if sqlite && updates {
                    let rows = part
                        .iter()
                        .map(|w| {
                            serde_json::json!([w.slug, w.generation, w.tenant.lifecycle.as_str()])
                        })
                        .collect();
                    let lifecycle = Statement::new(
                        &self.dialect,
                        "write the tenants' lifecycles",
                        moved_lifecycle,
                    )
                    .text(&self.name)
                    .rows(rows);
                    out.push((statement, slugs.len() as u64, slugs.clone()));
                    out.push((lifecycle, u64::MAX, slugs));
                } else {
                    out.push((statement, slugs.len() as u64, slugs));
                }
            }
        }
        out
    }

    /// Removes a record, only at the generation expected.
    pub fn remove_record(&self, slug: &str, expected: u64) -> Statement {
        Statement::new(
            &self.dialect,
            "remove a tenant's record",
            "DELETE FROM {schema}.state_tenants WHERE name = $1 AND slug = $2 AND generation = $3",
        )
        .text(&self.name)
        .text(slug)
        .int(int(expected))
    }

    /// Writes the header at `generation`, only where it is at `expected` now (0: none yet).
    pub fn write_header(&self, header: &Header, expected: u64, generation: u64) -> Statement {
        Statement::new(
            &self.dialect,
            "write the state's header",
            "INSERT INTO {schema}.state_header (name, generation, body) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET generation = excluded.generation, body = excluded.body
             WHERE state_header.generation = $4",
        )
        .text(&self.name)
        .int(int(generation))
        .text(serde_json::to_string(header).expect("state serializes"))
        .int(int(expected))
    }

    /// Removes every record and the header: a conversion starts over from the document.
    pub fn clear(&self) -> [Statement; 2] {
        [
            Statement::new(
                &self.dialect,
                "clear the state's records",
                "DELETE FROM {schema}.state_tenants WHERE name = $1",
            )
            .text(&self.name),
            Statement::new(
                &self.dialect,
                "clear the state's header",
                "DELETE FROM {schema}.state_header WHERE name = $1",
            )
            .text(&self.name),
        ]
    }
}

/// A statement, how many rows it must change (`u64::MAX`: any number), and the tenants it
/// writes, named when it changes fewer.
pub type Checked = (Statement, u64, Vec<String>);

/// What a whole write of `state` (its serial already moved by `prepare_snapshot`) sends, and
/// what says how `state` stands once it is done ([`WholeWrite`]); its records fenced by the
/// leases of `run` when given. Each statement comes with what it must change, and the tenants
/// it names for the error when it does not.
pub fn persist(records: &Records, state: &State, run: Option<&str>) -> (Vec<Checked>, Written) {
    // Its other tenants' records were never read: written whole, they would be removed.
    // Held through leases, only its own records are written (and removed).
    assert!(
        state.scope.as_ref().is_none_or(|s| s.held && run.is_some()),
        "a state read for some tenants is written"
    );
    let write = WholeWrite::of(state, Header::of(state));
    let mut statements: Vec<Checked> = write
        .removed
        .iter()
        .map(|(slug, expected)| {
            (
                records.remove_record(slug, *expected),
                1,
                vec![slug.to_string()],
            )
        })
        .collect();
    statements.extend(records.write_records_as(&write.writes, run));
    if let Some((header, expected, generation)) = &write.header {
        statements.push((
            records.write_header(header, *expected, *generation),
            1,
            Vec::new(),
        ));
    }
    (statements, write.written())
}

/// The error of a write that changed fewer rows than it must: another run wrote what this
/// one last read.
pub fn moved_on(what: &[String]) -> StateError {
    let what = if what.is_empty() {
        "the state's header".to_string()
    } else {
        format!("the record of {}", what.join(", "))
    };
    StateError::MovedOn(format!(
        "{what} was written by another run since this one read it (or this run's lease on the tenant ended), so this run's write of it was refused"
    ))
}

/// The document left where a one-document state was, saying where its records are: an
/// older tenant-reconcile reads its version and refuses it as a newer format.
pub fn stub(records_at: &str) -> Vec<u8> {
    let stub = serde_json::json!({
        "format_version": RECORDS_VERSION,
        "records": records_at,
        "note": "this state is kept as a record per tenant; read it with `tenant-reconcile show --json`",
    });
    let mut body = serde_json::to_vec_pretty(&stub).expect("json");
    body.push(b'\n');
    body
}

/// Whether `document` is such a stub: a state kept as records.
pub fn is_stub(document: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Version {
        format_version: Option<u32>,
    }
    serde_json::from_slice::<Version>(document)
        .is_ok_and(|v| v.format_version == Some(RECORDS_VERSION))
}

/// A state in the one-document format made into records: the header and every tenant's,
/// each tenant at generation 1 and the header where the serial comes out past the
/// document's, so a plan saved before the conversion is stale after it.
pub fn conversion(records: &Records, state: &mut State) -> Vec<Checked> {
    let generation = converted(state);
    let mut statements: Vec<Checked> = records
        .clear()
        .into_iter()
        .map(|s| (s, u64::MAX, Vec::new()))
        .collect();
    let writes: Vec<RecordWrite<'_>> = state
        .tenants
        .iter()
        .map(|(slug, tenant)| RecordWrite {
            slug,
            expected: 0,
            generation: 1,
            tenant,
        })
        .collect();
    statements.extend(records.write_records(&writes));
    statements.push((
        records.write_header(&Header::of(state), 0, generation),
        1,
        Vec::new(),
    ));
    statements
}

/// The records of a state `s` in a SQLite file of its own in `dir`, its tables made.
#[cfg(test)]
pub(super) async fn sqlite_records(dir: &std::path::Path) -> (Pool, Records) {
    let pool = crate::clients::sqlite::open(
        &dir.join("state.db"),
        true,
        sqlx::sqlite::SqliteJournalMode::Wal,
    )
    .await
    .unwrap();
    let pool = Pool::Sqlite(pool);
    let records = Records {
        dialect: Dialect::Sqlite,
        name: "s".into(),
    };
    for table in TABLES {
        Statement::new(&records.dialect, "make", table)
            .execute(&pool)
            .await
            .unwrap();
    }
    (pool, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::Lifecycle;

    /// Writes and reads records in a SQLite file of its own: a lifecycle that moves reaches
    /// the column the live tenants are counted by, and a read of some tenants gets theirs.
    #[tokio::test]
    async fn a_read_of_some_tenants_gets_theirs_and_counts_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, records) = sqlite_records(dir.path()).await;
        let run = |statements: Vec<Checked>| {
            let pool = pool.clone();
            async move {
                for (statement, must, _) in statements {
                    let changed = statement.execute(&pool).await.unwrap();
                    assert!(must == u64::MAX || changed == must);
                }
            }
        };
        let mut state = State::empty();
        state.lineage = "l".into();
        for slug in ["acme", "globex", "initech"] {
            let tenant = TenantState {
                lifecycle: Lifecycle::Active,
                ..TenantState::default()
            };
            state.tenants.insert(slug.into(), tenant);
            state.unwritten.insert(slug.into());
        }
        state.prepare_snapshot();
        let (statements, written) = persist(&records, &state, None);
        run(statements).await;
        written.done(&mut state);

        // globex is tombstoned, and acme's name alone changes.
        state.tenants.get_mut("globex").unwrap().lifecycle = Lifecycle::Deprovisioned;
        state.tenants.get_mut("acme").unwrap().updated_at = "now".into();
        state
            .unwritten
            .extend(["globex".to_string(), "acme".to_string()]);
        state.prepare_snapshot();
        let (statements, written) = persist(&records, &state, None);
        run(statements).await;
        written.done(&mut state);

        let only: BTreeSet<String> = ["globex".to_string(), "nosuch".to_string()].into();
        let read = records.read_some(&pool, "s", &only).await.unwrap().unwrap();
        assert_eq!(read.tenants.keys().collect::<Vec<_>>(), ["globex"]);
        assert_eq!(read.tenants["globex"].lifecycle, Lifecycle::Deprovisioned);
        assert_eq!(read.generation_of("globex"), 2);
        assert_eq!(read.live_tenants(), 2, "acme and initech");
        let whole = records.read(&pool, "s").await.unwrap().unwrap();
        assert_eq!(whole.serial, state.serial);
        assert_eq!(whole.tenants["acme"].updated_at, "now");

        // Each write looks its records up by their key: a write that walked the state's
        // records made every checkpoint cost the fleet, and an apply of 10,000 tenants
        // took half an hour.
        let tenant = TenantState::default();
        let writes = [RecordWrite {
            slug: "acme",
            expected: 2,
            generation: 3,
            tenant: &tenant,
        }];
        for run in [None, Some("run")] {
            for (statement, _, _) in records.write_records_as(&writes, run) {
                let steps = statement
                    .explained(&records.dialect)
                    .fetch(&pool)
                    .await
                    .unwrap();
                for step in &steps {
                    let step = step.text(3).unwrap();
                    if step.contains("state_tenants") || step.contains(" t ") {
                        assert!(
                            step.contains("(name=? AND slug=?)"),
                            "a write walks the records: {step}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_whole_write_moves_the_serial_on_even_past_removed_records() {
        let records = Records {
            dialect: Dialect::Sqlite,
            name: "s".into(),
        };
        let mut state = State::empty();
        state.lineage = "l".into();
        for slug in ["acme", "globex"] {
            state.tenants.insert(slug.into(), TenantState::default());
            state.generations.insert(slug.into(), 5);
        }
        state.generation = 3;
        state.serial = 13;
        state.tenants.remove("acme");
        state.prepare_snapshot();
        let before = state.serial;
        let (statements, written) = persist(&records, &state, None);
        // The removal, and the header: globex was written already.
        assert_eq!(statements.len(), 2);
        written.done(&mut state);
        assert_eq!(state.generation, 9);
        assert_eq!(state.serial, before);
        assert!(state.serial > 13);
    }

    /// A tenant an apply let go of once its record was written is neither written again nor
    /// removed by the whole write, and still counts as live; one whose record is still to
    /// be written is kept in memory until it is.
    #[test]
    fn a_tenant_let_go_of_is_neither_written_nor_removed_and_still_counted() {
        let mut state = State::empty();
        state.lineage = "l".into();
        for slug in ["acme", "globex", "initech"] {
            state.tenants.insert(slug.into(), TenantState::default());
            state.generations.insert(slug.into(), 2);
        }
        state.tenants.get_mut("initech").unwrap().lifecycle = Lifecycle::Deprovisioned;
        state.generation = 1;
        state.serial = 7;
        let mut acme = state.tenants["acme"].clone();
        acme.lifecycle = Lifecycle::Active;
        state.record("acme".into(), acme.clone());
        let entry = state.checkpoint("acme", &acme);
        assert_eq!(entry.generation, 3);
        state.record("globex".into(), state.tenants["globex"].clone());
        let live = state.own_live();
        for slug in ["acme", "globex", "initech"] {
            state.let_go(slug);
        }
        assert!(!state.tenants.contains_key("acme"), "written, let go of");
        assert!(state.tenants.contains_key("globex"), "still to be written");
        assert_eq!(state.own_live(), live);
        state.prepare_snapshot();
        let write = WholeWrite::of(&state, Header::of(&state));
        assert!(write.removed.is_empty(), "{:?}", write.removed);
        let written: Vec<&str> = write.writes.iter().map(|w| w.slug).collect();
        assert_eq!(written, ["globex"]);
    }

    #[test]
    fn the_stub_is_refused_by_the_one_document_reader_as_a_newer_format() {
        // The reader an earlier tenant-reconcile has, unchanged here.
        let err = State::decode(&stub("state.db"), || "state.json".into()).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Version {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("upgrade tenant-reconcile"),
            "{err}"
        );
        assert!(is_stub(&stub("state.db")));
        assert!(!is_stub(br#"{"format_version": 1}"#));
    }

    #[test]
    fn a_conversion_makes_a_serial_past_the_documents() {
        let records = Records {
            dialect: Dialect::Sqlite,
            name: "s".into(),
        };
        let mut state = State::empty();
        state.lineage = "l".into();
        state.serial = 2;
        for slug in ["a", "b", "c", "d"] {
            state.tenants.insert(slug.into(), TenantState::default());
        }
        let statements = conversion(&records, &mut state);
        assert_eq!(statements.len(), 4);
        assert!(state.serial > 2, "{}", state.serial);
        assert_eq!(state.generations.len(), 4);
    }
}
