//! The Postgres data target's smoke tests, run as the tenant's own login role, the way the
//! product's code connects:
//!
//! - `login`: the role may log in, the server keeps the verifier of the password derived for
//!   it, and a connection with that password is accepted;
//! - `data`: it reads every table of its slice (shared tables through row-level security),
//!   and a seeded tenant finds rows;
//! - `write`: it updates one of its rows (a column set to itself) and rolls back;
//! - `isolation`: it is refused the control plane's schema and tables (from the admin
//!   database, which a database-mode role may connect to as well), and other tenants'
//!   slices (their schemas or databases); it reads every relation it can (tables, views,
//!   materialized views): none is outside its slice, none shows another tenant's rows even
//!   when it claims that tenant's id in `app.tenant_id`, and in shared mode none reads with
//!   its owner's rights (a view without `security_invoker`);
//! - each declared `sql` check, in a transaction that is rolled back, under its timeout.

use std::time::Instant;

use sqlx::{Connection, Executor as _, PgConnection, Postgres, Row, Transaction};

use crate::clients::postgres::server::{quote, PgServer};
use crate::model::checks::{CheckSpec, Probe};
use crate::model::health::CheckOutcome;
use crate::model::resource::{Key, Kind};
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::smoke::verdicts::sql_verdict;
use crate::targets::provider::{ProviderError, Smoke, StepContext};

use super::smoke_catalog::{control_sql, Answers, Question, Readable};
use super::PgData;

/// What one tenant's checks work from.
pub(crate) struct Target<'a> {
    pub server: &'a PgServer,
    pub admin: &'a sqlx::PgPool,
    /// The admin schema, quoted.
    pub admin_schema: &'a str,
    /// The admin schema's plain name.
    pub admin_schema_name: &'a str,
    /// The one role it may be a member of (the shared group), in shared mode.
    pub group: Option<String>,
    pub tenant_id: &'a str,
    pub role: String,
    pub password: String,
    pub isolation: Isolation,
    /// The schema or database of the slice.
    pub slice: String,
    /// The schema its tables are in.
    pub schema: String,
    pub seeded: bool,
    /// The tenant is not active yet, so its login is held.
    pub held: bool,
    /// The admin is a superuser, who may read the role's verifier.
    pub superuser: bool,
    /// The admin database's schemas anyone may use ([`PgData::public_schemas`]).
    pub public_schemas: &'a [i64],
    /// A few other tenants' slices of the same mode, with their tenant ids, read as the
    /// admin (`PgData::other_slices`): the role must reach none of them.
    pub others: Result<Vec<(String, String)>, String>,
}

pub(crate) async fn checks(t: &Target<'_>, sql: &[&CheckSpec]) -> Vec<CheckOutcome> {
    let started = Instant::now();
    let mut out = Vec::new();
    let conn = login(t).await;
    out.push(CheckOutcome::of(
        "login",
        started,
        conn.as_ref().map(|(_, m)| m.clone()).map_err(Clone::clone),
    ));
    let mut conn = match conn {
        Ok((c, _)) => c,
        Err(_) => {
            let names = ["data", "write", "isolation"]
                .into_iter()
                .chain(sql.iter().map(|c| c.name.as_str()));
            out.extend(names.map(|n| {
                CheckOutcome::fail(n, "not run: the role cannot log in", started.elapsed())
            }));
            return out;
        }
    };
    let mut acting = acting_as_role(t).await;
    let started = Instant::now();
    let others = &t.others;
    let names: Vec<&str> = match &others {
        Ok(others) => others.iter().map(|(n, _)| n.as_str()).collect(),
        Err(_) => Vec::new(),
    };
    let question = Question {
        role: &t.role,
        isolation: t.isolation,
        schema: &t.schema,
        admin_schema_name: t.admin_schema_name,
        group: t.group.as_deref(),
        others: &names,
        public_schemas: t.public_schemas,
    };
    let answers = Answers::ask(&question, catalog(&mut acting, &mut conn)).await;
    let counted = match &answers {
        Ok(answers) => count_rows(&mut conn, &t.schema, &answers.tables).await,
        Err(e) => Err(e.clone()),
    };
    let data = crate::smoke::verdicts::data_verdict(&format!("{} ", t.role), &counted, t.seeded);
    out.push(CheckOutcome::of("data", started, data));
    let started = Instant::now();
    let write = match crate::smoke::verdicts::write_target(&counted) {
        Ok(Some(table)) => {
            let column = answers.as_ref().ok().and_then(|a| {
                a.tables
                    .iter()
                    .find(|(t, _)| t == table)
                    .and_then(|(_, c)| c.as_deref())
            });
            write_and_roll_back(&mut conn, &t.schema, table, column).await
        }
        Ok(None) => Ok("no row to write to".into()),
        Err(e) => Err(e),
    };
    out.push(CheckOutcome::of("write", started, write));
    let started = Instant::now();
    // The tables the data check read: the isolation check need not read them again.
    let read: Vec<String> = counted
        .as_ref()
        .map(|c| c.iter().map(|(table, _)| table.clone()).collect())
        .unwrap_or_default();
    let isolation = match (&answers, others) {
        (Ok(answers), Ok(others)) => isolation(t, answers, others, &mut conn, &read).await,
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    out.push(CheckOutcome::of("isolation", started, isolation));
    for check in sql {
        let Probe::Sql { sql } = &check.probe else {
            continue;
        };
        let started = Instant::now();
        let verdict = query_check(&mut conn, sql, check.timeout_ms).await;
        out.push(CheckOutcome::of(&check.name, started, verdict));
    }
    if let Some(acting) = acting {
        let _ = acting.rollback().await;
    }
    let _ = conn.close().await;
    out
}

/// The admin's connection acting as the role, where the role's catalog questions are asked
/// (what it may use, read and write, and what it is): every privilege function answers for
/// the role there (`SET LOCAL ROLE`), and the server plans them with its catalog caches
/// warm. On the role's own new connection each was planned cold, which was most of a smoke
/// test's cost on the server. What the role reads and writes it still does on its own
/// connection, as it logged in. `None`, and the role's connection answers them too, for a
/// slice that is a database of its own (only a connection to it reads its catalog), or an
/// admin that may not act as the role (no superuser).
async fn acting_as_role(t: &Target<'_>) -> Option<Transaction<'static, Postgres>> {
    if t.isolation == Isolation::Database || !t.superuser {
        return None;
    }
    let acting = async {
        let mut tx = t.admin.begin().await?;
        // The catalog question names its joins in the order they run, each a lookup by an
        // index from the role or schema it starts at: the planner, left to weigh other
        // orders, spent a third as long again planning it, on every test (a schema made
        // anywhere on the server throws every cached plan away).
        tx.execute(
            format!(
                "SET LOCAL ROLE {}; SET LOCAL join_collapse_limit = 1; SET LOCAL from_collapse_limit = 1",
                quote(&t.role)
            )
            .as_str(),
        )
        .await?;
        Ok::<_, sqlx::Error>(tx)
    };
    match acting.await {
        Ok(acting) => Some(acting),
        Err(e) => {
            tracing::debug!(role = %t.role, error = %e, "cannot act as the role; its own connection answers");
            None
        }
    }
}

/// Where a catalog question is asked: acting as the role, or on its own connection.
fn catalog<'a>(
    acting: &'a mut Option<Transaction<'static, Postgres>>,
    own: &'a mut PgConnection,
) -> &'a mut PgConnection {
    match acting {
        Some(acting) => acting.as_mut(),
        None => own,
    }
}

async fn login(t: &Target<'_>) -> Result<(PgConnection, String), String> {
    // The role's flags and stored verifier, read as the admin in one query. pg_authid needs
    // a superuser; without one the verifier is not compared, and the connection alone is
    // the test.
    let sql = if t.superuser {
        "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1"
    } else {
        "SELECT rolcanlogin, NULL::text FROM pg_roles WHERE rolname = $1"
    };
    let found: Option<(bool, Option<String>)> = sqlx::query_as(sql)
        .bind(&t.role)
        .fetch_optional(t.admin)
        .await
        .map_err(|e| format!("cannot read the role {}: {e}", t.role))?;
    let (held, stored) = match found {
        None => return Err(format!("the role {} does not exist", t.role)),
        Some((false, _)) if !t.held => {
            return Err(format!("the role {} may not log in (NOLOGIN)", t.role))
        }
        Some((can_login, stored)) => (!can_login, stored),
    };
    let verified = match stored {
        Some(v) if v == crate::clients::postgres::scram::verifier(&t.password) => true,
        Some(_) => {
            return Err(format!(
                "the password the server keeps for {} is not the one derived for it\n  hint: `tenant-reconcile plan` shows it as drift; apply sets it again",
                t.role
            ))
        }
        None => false,
    };
    let database = matches!(t.isolation, Isolation::Database).then_some(t.slice.as_str());
    // A tenant not yet active has its login held (`StepContext::login_opens`): it is
    // opened for this one connection, the way the product will connect, and closed again
    // at once; the session lives on, a new login is refused.
    if held {
        set_login(t, true).await?;
    }
    let conn = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        t.server
            .connect_as(&t.role, &t.password, database, &t.schema),
    )
    .await;
    if held {
        set_login(t, false).await?;
    }
    let conn = conn
        .map_err(|_| format!("{} could not connect within 10 s", t.role))?
        .map_err(|e| format!("{} cannot connect: {}", t.role, crate::causes::chain(&e)))?;
    Ok((
        conn,
        format!(
            "{} connected{}{}",
            t.role,
            if verified {
                " with its derived password (the server's verifier matches)"
            } else {
                ""
            },
            if held {
                "; its login is held until it is active, opened for this check only"
            } else {
                ""
            }
        ),
    ))
}

/// Opens or closes the login of a tenant whose login is held until it is active.
async fn set_login(t: &Target<'_>, login: bool) -> Result<(), String> {
    let sql = format!(
        "ALTER ROLE {} {}",
        quote(&t.role),
        if login { "LOGIN" } else { "NOLOGIN" }
    );
    t.admin
        .execute(sql.as_str())
        .await
        .map(drop)
        .map_err(|e| format!("cannot set the login of {}: {e}", t.role))
}

/// Every table of `schema` (`tables`, from the catalog) and the rows the role sees in it,
/// counted in one statement. A table it may not read fails the check: its grant was taken
/// away.
async fn count_rows(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[(String, Option<String>)],
) -> Result<Vec<(String, u64)>, String> {
    let tables: Vec<&str> = tables
        .iter()
        .map(|(table, _)| table.as_str())
        .filter(|table| crate::targets::data::is_plain_ident(table))
        .collect();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let counts = super::holdings::table_counts(schema, &tables, "");
    // The text is new on every connection, and its only values are the identifiers: sent
    // as it is, one round trip, where a prepared statement costs two.
    let row = conn
        .fetch_one(format!("SELECT {}", counts.join(", ")).as_str())
        .await
        .map_err(|e| format!("cannot read its tables: {e}"))?;
    tables
        .iter()
        .enumerate()
        .map(|(i, table)| {
            let n: i64 = row.try_get(i).map_err(|e| e.to_string())?;
            Ok((table.to_string(), n as u64))
        })
        .collect()
}

/// One row of `table` written (its `column` set to itself) and rolled back, in one message.
async fn write_and_roll_back(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    column: Option<&str>,
) -> Result<String, String> {
    let Some(column) = column.filter(|c| crate::targets::data::is_plain_ident(c)) else {
        return Ok(format!("{table} has no column to write"));
    };
    let t = format!("{}.{}", quote(schema), quote(table));
    let c = quote(column);
    let done = conn
        .execute(
            format!(
                "BEGIN; UPDATE {t} SET {c} = {c} WHERE ctid = (SELECT ctid FROM {t} LIMIT 1); ROLLBACK"
            )
            .as_str(),
        )
        .await;
    if done.is_err() {
        // The message stopped at the failed update, inside its transaction.
        let _ = conn.execute("ROLLBACK").await;
    }
    match done
        .map_err(|e| format!("cannot write to {table}: {e}"))?
        .rows_affected()
    {
        1 => Ok(format!("wrote a row of {table} and rolled it back")),
        n => Err(format!("writing one row of {table} changed {n}")),
    }
}

/// The role is refused what is not its tenant's: the control plane (from the admin
/// database, in every mode), other tenants' slices (`others`), and anything outside its own
/// slice; every relation it can read is read (but for the tables in `read_already`, which
/// the data check read on the same connection).
async fn isolation(
    t: &Target<'_>,
    answers: &Answers,
    others: &[(String, String)],
    conn: &mut PgConnection,
    read_already: &[String],
) -> Result<String, String> {
    match t.isolation {
        Isolation::Database => {
            // Its own database has no control plane; the admin database has, and the role
            // may well be able to connect to it (PUBLIC's CONNECT).
            let admin = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                t.server
                    .connect_as(&t.role, &t.password, None, "pg_catalog"),
            )
            .await;
            let (public,): (bool,) = sqlx::query_as(
                "SELECT has_database_privilege('public', current_database(), 'CONNECT')",
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("cannot read its database's rights: {e}"))?;
            if public {
                return Err(format!(
                    "anyone may connect to {} (PUBLIC has CONNECT)",
                    t.slice
                ));
            }
            if let Ok(Ok(mut admin)) = admin {
                let refused = control_plane(t, &mut admin).await;
                let _ = admin.close().await;
                refused?;
            }
        }
        _ => refused_control(t, &answers.control, conn).await?,
    }
    // Its own attributes and memberships, as it sees them: nothing but the shared group.
    if !answers.powers.is_empty() {
        return Err(answers.powers.join("; "));
    }
    let mut reached = answers.reached.clone();
    let other = others.first().map(|(_, id)| id.as_str());
    reached.extend(read_relations(t, &answers.readable, conn, other, read_already).await?);
    if !reached.is_empty() {
        return Err(format!(
            "{} reaches other tenants' data: {}",
            t.role,
            reached.join(", ")
        ));
    }
    Ok(format!(
        "{} is refused the control plane{}",
        t.role,
        match others.len() {
            0 => String::new(),
            1 => " and another tenant's slice".to_string(),
            n => format!(" and {n} other tenants' slices"),
        }
    ))
}

/// On a connection of the role's to the admin database (a database-mode tenant's, apart
/// from its own): the control plane's schema and tables are refused to it.
async fn control_plane(t: &Target<'_>, conn: &mut PgConnection) -> Result<(), String> {
    let reached: Vec<String> = sqlx::query_scalar(&control_sql("$1"))
        .bind(t.admin_schema_name)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("cannot look at the control plane: {e}"))?;
    refused_control(t, &reached, conn).await
}

/// Refused the control plane: it reaches none of its schema and relations (`reached`, as
/// the catalog says), and reading one of its tables on `conn` is refused.
async fn refused_control(
    t: &Target<'_>,
    reached: &[String],
    conn: &mut PgConnection,
) -> Result<(), String> {
    if !reached.is_empty() {
        return Err(format!(
            "{} can reach the control plane: {}",
            t.role,
            reached.join(", ")
        ));
    }
    let read = conn
        .execute(format!("SELECT 1 FROM {}.roles LIMIT 1", t.admin_schema).as_str())
        .await;
    match read {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Ok(()),
        Err(e) => Err(format!(
            "reading the control plane failed otherwise than refused: {e}"
        )),
        Ok(_) => Err(format!("{} can read the control plane's tables", t.role)),
    }
}

/// Reads every relation the role can read (`readable`, as the catalog says) and says which
/// are not its tenant's alone: one outside its slice; in shared mode, one showing rows of
/// another tenant while the role claims that tenant's id (`other`), or one that reads with
/// its owner's rights.
async fn read_relations(
    t: &Target<'_>,
    readable: &[Readable],
    conn: &mut PgConnection,
    other: Option<&str>,
    read_already: &[String],
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut to_read = Vec::new();
    for (schema, name, kind, has_tenant, invoker) in readable.iter().cloned() {
        if schema != t.schema {
            out.push(format!("{schema}.{name} (outside its slice)"));
        } else if !crate::targets::data::is_plain_ident(&name) {
            continue;
        } else if t.isolation != Isolation::Shared && read_already.contains(&name) {
            // Read by the data check on this same connection: where no tenant's rows are
            // told apart, reading it again proves nothing more.
            continue;
        } else {
            to_read.push((schema, name, kind, has_tenant, invoker));
        }
    }
    if to_read.is_empty() {
        return Ok(out);
    }
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    if let Some(id) = other {
        // Claiming another tenant's id must not show its rows: the role's own tenant wins
        // over the session setting.
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    for (schema, name, kind, has_tenant, invoker) in to_read {
        let what = &name;
        let r = format!("{}.{}", quote(&schema), quote(&name));
        // Read, to prove it can be; in shared mode, for the rows that are not its own.
        let others_only = t.isolation == Isolation::Shared && has_tenant;
        let (n,): (i64,) = if others_only {
            sqlx::query_as(&format!(
                "SELECT count(*) FROM {r} WHERE tenant_id IS DISTINCT FROM $1"
            ))
            .bind(t.tenant_id)
            .fetch_one(&mut *tx)
            .await
        } else {
            sqlx::query_as(&format!(
                "SELECT 0::bigint FROM (SELECT count(*) FROM {r}) AS read"
            ))
            .fetch_one(&mut *tx)
            .await
        }
        .map_err(|e| format!("cannot read {what}: {e}"))?;
        if n > 0 {
            let rows = if n == 1 { "row" } else { "rows" };
            out.push(format!("{n} {rows} of others in {what}"));
        } else if t.isolation == Isolation::Shared && !invoker {
            let kind = match kind.as_str() {
                "m" => "materialized view",
                "f" => "foreign table",
                _ => "view",
            };
            out.push(format!(
                "the {kind} {what}, which reads with its owner's rights"
            ));
        }
    }
    tx.rollback().await.map_err(|e| e.to_string())?;
    Ok(out)
}

async fn query_check(
    conn: &mut PgConnection,
    sql: &str,
    timeout_ms: u64,
) -> Result<String, String> {
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    // A number of this tool's own, not tenant text.
    tx.execute(format!("SET LOCAL statement_timeout = {timeout_ms}").as_str())
        .await
        .map_err(|e| e.to_string())?;
    let row = sqlx::query(sql)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| format!("failed: {e}"));
    let _ = tx.rollback().await;
    let first = row?.map(|r| r.try_get::<Option<bool>, _>(0).unwrap_or(None));
    sql_verdict(first)
}

/// How many other slices of its mode a smoke test tries to reach.
const OTHERS: usize = 3;

/// How long the other slices read once serve the smoke tests after: a long-lived process
/// (`watch`) looks again, so a slice purged since is not all they try.
const OTHERS_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

impl PgData {
    /// A few slices of `isolation` but `slug`'s, with their tenants' ids: the first few by
    /// slug, which every tenant's test tries (its own left out), so once there are enough of
    /// them they are read once for the tests of the next minute.
    async fn other_slices(
        &self,
        slug: &Slug,
        isolation: Isolation,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let kept = self
            .others
            .lock()
            .expect("not poisoned")
            .get(&isolation)
            .filter(|(read, _)| read.elapsed() < OTHERS_KEPT)
            .map(|(_, slices)| slices.clone());
        let slices = match kept {
            Some(slices) => slices,
            None => {
                let slices: Vec<(String, String, String)> = sqlx::query_as(&format!(
                    "SELECT s.slug, s.name, r.tenant_id FROM {a}.slices s
                     JOIN {a}.roles r ON r.slug = s.slug
                     WHERE s.isolation = $1 ORDER BY s.slug LIMIT $2",
                    a = self.schema
                ))
                .bind(isolation.as_str())
                .bind(OTHERS as i64 + 1)
                .fetch_all(self.pool().await?)
                .await
                .map_err(ProviderError::sql("read the other slices"))?;
                // Fewer than one more than a test tries: the fleet is still being made, and
                // the next test may find more.
                if slices.len() > OTHERS {
                    self.others
                        .lock()
                        .expect("not poisoned")
                        .insert(isolation, (std::time::Instant::now(), slices.clone()));
                }
                slices
            }
        };
        Ok(slices
            .into_iter()
            .filter(|(other, _, _)| other != slug.as_str())
            .take(OTHERS)
            .map(|(_, name, tenant_id)| (name, tenant_id))
            .collect())
    }
}

#[async_trait::async_trait]
impl Smoke for PgData {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let started = std::time::Instant::now();
        let fail = |why: String| {
            vec![crate::model::health::CheckOutcome::fail(
                "login",
                why,
                started.elapsed(),
            )]
        };
        let slice = match self.recorded_slice(ctx) {
            Ok(Some(s)) => s,
            Ok(None) => return Vec::new(),
            Err(e) => return fail(crate::causes::chain(&e)),
        };
        let (admin, tenant_id, superuser) =
            match (self.pool().await, ctx.tenant_id(), self.superuser().await) {
                (Ok(p), Ok(id), Ok(superuser)) => (p, id, superuser),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    return fail(crate::causes::chain(&e))
                }
            };
        let public_schemas = match self.public_schemas().await {
            Ok(s) => s,
            Err(e) => return fail(crate::causes::chain(&e)),
        };
        let role = self.naming.role(&ctx.tenant.slug);
        let target = crate::targets::data::postgres::smoke::Target {
            server: &self.server,
            admin,
            admin_schema: &self.schema,
            admin_schema_name: self.server.schema_name(),
            group: (slice.isolation == Isolation::Shared).then(|| self.naming.shared_group()),
            tenant_id,
            password: ctx
                .key
                .password(tenant_id, ctx.incarnation, &role, ctx.credentials_version),
            role,
            isolation: slice.isolation,
            slice: slice.name,
            schema: slice.schema,
            seeded: ctx.recorded.contains_key(&Key::new(Kind::SEED)),
            held: ctx.lifecycle != crate::model::lifecycle::Lifecycle::Active,
            superuser,
            public_schemas,
            others: self
                .other_slices(&ctx.tenant.slug, slice.isolation)
                .await
                .map_err(|e| crate::causes::chain(&e)),
        };
        crate::targets::data::postgres::smoke::checks(&target, sql).await
    }
}
