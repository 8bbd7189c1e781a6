//! One PostgreSQL server as the postgres targets and state backend reach it: connection
//! options from the config, a lazily opened pool, identifier quoting and retries.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Postgres;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::clients::error::ProviderError;
use crate::clients::postgres::is_plain_ident;
use crate::clients::postgres::PostgresConfig;

/// Attempts per operation when the server fails transiently (restarting, unreachable,
/// serialization conflicts): 0.1 s, 0.2 s, 0.4 s, 0.8 s, 1.6 s apart.
pub(crate) const ATTEMPTS: u32 = 6;

pub struct PgServer {
    options: Result<PgConnectOptions, String>,
    /// The URL as configured, with `PGPASSWORD` when it has no password of its own: what
    /// another server needs to reach this one ([`Self::conninfo_for_peer`]). It may hold a
    /// password: never shown.
    url: Option<String>,
    /// Where the URL came from, for messages that must not show it.
    source: String,
    schema: String,
    max_connections: u32,
    pool: OnceCell<PgPool>,
}

impl PgServer {
    /// Reads the URL now but connects only when first used, so commands that need no
    /// server (validate, plan --no-refresh) never fail for want of one.
    pub fn from_config(config: &PostgresConfig) -> PgServer {
        let (url, source) = match &config.url {
            Some(url) => (
                Some(url.clone()),
                "postgres.url in tenant-reconcile.hcl".to_string(),
            ),
            None => (
                std::env::var(&config.url_env)
                    .ok()
                    .filter(|v| !v.is_empty()),
                format!("the environment variable {}", config.url_env),
            ),
        };
        let peer_url = url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|mut u| {
                match std::env::var("PGPASSWORD") {
                    Ok(pw) if u.password().is_none() && !pw.is_empty() => {
                        let _ = u.set_password(Some(&pw));
                    }
                    _ => {}
                }
                u.to_string()
            });
        let options = match url {
            None => Err(format!(
                "no PostgreSQL server: set {} (e.g. postgres://admin@127.0.0.1:5432/saas)",
                config.url_env
            )),
            Some(url) => PgConnectOptions::from_str(&url)
                .map(|o| {
                    let o = match std::env::var("PGPASSWORD") {
                        // The URL need not hold a password: libpq's variable is honoured.
                        Ok(pw) if !pw.is_empty() => o.password(&pw),
                        _ => o,
                    };
                    // Statements are never logged: a role's password verifier is one.
                    o.application_name("tenant-reconcile")
                        .disable_statement_logging()
                })
                .map_err(|e| format!("the URL in {source} is not a PostgreSQL URL: {e}")),
        };
        PgServer {
            options,
            url: peer_url,
            source,
            schema: config.schema.clone(),
            max_connections: config.max_connections,
            pool: OnceCell::new(),
        }
    }

    /// The admin schema, quoted.
    pub fn schema(&self) -> String {
        quote(&self.schema)
    }

    /// The admin schema's plain name, for binding.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// host:port/database, without user or password.
    pub fn describe(&self) -> String {
        match &self.options {
            Ok(o) => format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("(default)")
            ),
            Err(_) => format!("(no server: {})", self.source),
        }
    }

    /// Where the server is: its host, port and admin database, as the configured URL says.
    pub fn address(&self) -> (String, u16, String) {
        match &self.options {
            Ok(o) => (
                o.get_host().to_string(),
                o.get_port(),
                o.get_database().unwrap_or("postgres").to_string(),
            ),
            Err(_) => ("localhost".into(), 5432, "postgres".into()),
        }
    }

    /// How another server (a subscriber of a tenant's move) connects to `database` here: the
    /// configured URL with that database. It holds the password when the URL or `PGPASSWORD`
    /// has one, so it goes into a statement whose logging is turned off, and nowhere else.
    pub fn conninfo_for_peer(&self, database: &str) -> Result<String, ProviderError> {
        let url = self.url.as_deref().ok_or_else(|| {
            ProviderError::Setting(format!("no URL for the server in {}", self.source))
        })?;
        let mut url = url::Url::parse(url).map_err(|e| {
            ProviderError::Setting(format!("the URL in {} does not parse: {e}", self.source))
        })?;
        url.set_path(&format!("/{database}"));
        Ok(url.to_string())
    }

    fn options(&self) -> Result<&PgConnectOptions, ProviderError> {
        self.options
            .as_ref()
            .map_err(|e| ProviderError::Setting(e.clone()))
    }

    pub async fn pool(&self) -> Result<&PgPool, ProviderError> {
        if let Some(pool) = self.pool.get() {
            return Ok(pool);
        }
        // Fail here, clearly and soon, rather than deep inside the first step: one real
        // connection (retried with backoff), then the pool.
        let options = self.options()?.clone();
        let context = format!("connect to {}", self.describe());
        let first = retry!("connect", async {
            options
                .connect()
                .await
                .map_err(ProviderError::sql(context.clone()))
        })?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            // A connection used a moment ago is handed out as it is: a ping before every
            // statement was a round trip each (a third of a purge's). One idle a while is
            // pinged, and one that broke anyway fails its statement transiently, which
            // every step retries on a new connection.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        // A twin that connected first wins; this pool is dropped.
        Ok(self.pool.get_or_init(|| async move { pool }).await)
    }

    /// A single connection to another database on the same server (a tenant's own).
    pub async fn connect_to(&self, database: &str) -> Result<PgConnection, ProviderError> {
        let options = self.options()?.clone().database(database);
        options.connect().await.map_err(ProviderError::sql(format!(
            "connect to database {database}"
        )))
    }

    /// One connection as a tenant's own role, with its password, to `database` (the admin
    /// database when `None`) with `search_path` set: how the product's code would connect.
    pub async fn connect_as(
        &self,
        role: &str,
        password: &str,
        database: Option<&str>,
        search_path: &str,
    ) -> Result<PgConnection, sqlx::Error> {
        let mut options = self
            .options()
            .map_err(|e| sqlx::Error::Configuration(crate::causes::chain(&e).into()))?
            .clone()
            .username(role)
            .password(password)
            .application_name("tenant-reconcile-check")
            // A check waits for no lock for long: a table held by a migration fails it.
            .options([("search_path", search_path), ("statement_timeout", "10s")]);
        if let Some(db) = database {
            options = options.database(db);
        }
        options.connect().await
    }

    /// A single connection to the admin database, outside the pool: for a session-level
    /// lock that must live exactly as long as this connection.
    pub async fn connect(&self) -> Result<PgConnection, ProviderError> {
        self.options()?
            .connect()
            .await
            .map_err(ProviderError::sql(format!(
                "connect to {}",
                self.describe()
            )))
    }
}

/// `name` double-quoted. Only plain identifiers (checked at validate time, and again here)
/// are ever written into SQL; everything else is a bound parameter.
pub fn quote(name: &str) -> String {
    assert!(
        is_plain_ident(name),
        "identifier {name:?} was not checked before it reached SQL"
    );
    format!("\"{name}\"")
}

/// A connection of `pool` held for a transaction or several statements.
pub async fn connection(pool: &PgPool) -> Result<PoolConnection<Postgres>, ProviderError> {
    pool.acquire().await.map_err(ProviderError::sql("connect"))
}

/// A string literal for the statements that take no parameters (`COMMENT ON … IS`, a batch
/// of several). It is only given text this tool makes or has checked (a mark of ownership,
/// a checked identifier, a slug), and is escaped all the same.
pub fn literal(text: &str) -> String {
    assert!(
        !text.contains('\\') && !text.contains('\0'),
        "literal {text:?} holds a character a mark never has"
    );
    format!("'{}'", text.replace('\'', "''"))
}

/// Evaluates the future expression `$op` again with backoff while it fails transiently.
/// Every step is idempotent, so running one again after a lost connection is safe.
///
/// A macro rather than a function taking a closure: a closure returning a future that
/// borrows its captures defeats the compiler's proof that the caller's future is `Send`.
macro_rules! retry {
    ($what:expr, $op:expr) => {{
        let mut delay = std::time::Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match $op.await {
                Err(e) if attempt < $crate::clients::postgres::server::ATTEMPTS && e.is_transient() => {
                    tracing::warn!(attempt, error = %$crate::causes::chain(&e), "{}: transient failure, retrying in {delay:?}", $what);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retry;
