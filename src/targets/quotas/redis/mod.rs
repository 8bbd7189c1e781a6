//! The Redis target of the quotas slot, through the `redis` crate on one multiplexed
//! connection.
//!
//! Refresh reads every ACL user in one `ACL LIST` and the tenants' limits hashes in
//! pipelines of a thousand, whatever the fleet. A tenant's hash and user are written in one
//! `MULTI`: the hash replaced whole (a limit edited or added by hand is put back), its mark
//! and password record with it, the user reset to exactly its rules, and, when it is turned
//! off, its connections closed. Redis does not roll a `MULTI` back: a command refused inside
//! it fails the step after the ones before it ran, and the next apply, finding the hash
//! marked ours, writes it all again. The password is
//! sent as its SHA-256 (`#…`), so it is never on the wire; the hash records a digest of that
//! hash beside the password's fingerprint, so a password set by hand shows as drift, as
//! RabbitMQ's user tags do.
//!
//! A file per capability, as the other targets have: `refresh`, `apply`, `purge`, `export`,
//! `smoke`, and `acl`, a user as Redis prints it.

mod acl;
mod apply;
mod export;
mod purge;
mod refresh;
mod smoke;

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{forces_replace, RedisConfig, LIMITS};
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::Kind;
use crate::targets::provider::capabilities;
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

/// Hashes read in one pipeline.
const PIPELINE: usize = 1000;

pub struct RedisQuotas {
    config: RedisConfig,
    connection: tokio::sync::OnceCell<MultiplexedConnection>,
    calls: AtomicUsize,
}

impl std::fmt::Debug for RedisQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotas").finish_non_exhaustive()
    }
}

/// The tenant's key prefix, from its limits key (`quota:acme:limits` → `quota:acme:`).
fn prefix_of(limits_key: &str) -> &str {
    limits_key.strip_suffix("limits").unwrap_or(limits_key)
}

impl RedisQuotas {
    pub fn new(config: RedisConfig) -> RedisQuotas {
        RedisQuotas {
            config,
            connection: tokio::sync::OnceCell::new(),
            calls: AtomicUsize::new(0),
        }
    }

    /// Round trips sent so far, for benchmarks.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// The server: the block's `url`, else `REDIS_URL`, else the local default.
    fn url(&self) -> String {
        self.config
            .url
            .clone()
            .or_else(|| std::env::var("REDIS_URL").ok())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
    }

    /// The URL a tenant's application connects with: the server's, with the tenant's user
    /// and password in it. It holds a secret. Refused when the server's URL cannot take them
    /// (a socket URL from `REDIS_URL`), rather than handing out the admin's login.
    pub fn login_url(&self, user: &str, password: &str) -> Result<String, String> {
        let refused = || {
            format!(
                "no login URL for {user}: the server's URL ({}) is not a redis:// or rediss:// URL with a host",
                self.server()
            )
        };
        let mut url = url::Url::parse(&self.url()).map_err(|_| refused())?;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host().is_none() {
            return Err(refused());
        }
        url.set_username(user).map_err(|_| refused())?;
        url.set_password(Some(password)).map_err(|_| refused())?;
        // The admin's own login may also be in the query (`?user=…&pass=…`): none of it stays.
        url.set_query(None);
        Ok(url.to_string())
    }

    /// The server's address without any login in it, for messages.
    fn server(&self) -> String {
        match url::Url::parse(&self.url()) {
            Ok(u) => format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(6379)
            ),
            Err(_) => "the server in REDIS_URL".into(),
        }
    }

    fn failed(&self, doing: &str, e: redis::RedisError) -> ProviderError {
        ProviderError::failed(format!("Redis at {}: {doing}", self.server()))(e)
    }

    /// Connected on first use, so a run that touches no limits needs no server.
    async fn connection(&self) -> Result<MultiplexedConnection, ProviderError> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url().as_str())
                    .map_err(|e| self.failed("the URL", e))?;
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| {
                        ProviderError::Unreachable(format!(
                            "Redis at {} does not answer: {e}\n  hint: start Redis there, or set url in the redis block of tenant-reconcile.hcl (REDIS_URL if it needs a password)",
                            self.server()
                        ))
                    })
            })
            .await?;
        Ok(connection.clone())
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        doing: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, ProviderError> {
        let mut con = self.connection().await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        cmd.query_async(&mut con)
            .await
            .map_err(|e| self.failed(doing, e))
    }

    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        doing: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, ProviderError> {
        let mut con = self.connection().await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        pipe.query_async(&mut con)
            .await
            .map_err(|e| self.failed(doing, e))
    }

    /// The keys under `prefix`, a thousand a call. `SCAN` may give a key twice; deleting or
    /// reading one twice does no harm.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    &format!("listing {prefix}*"),
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            found.extend(keys);
            if next == 0 {
                found.sort();
                found.dedup();
                return Ok(found);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Provider for RedisQuotas {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[LIMITS]
    }

    fn forces_replace(&self, _kind: Kind, field: &str) -> bool {
        forces_replace(field)
    }

    fn replace_keeps_old(&self, _kind: Kind) -> bool {
        // The old key and user go in the same transaction as the new ones are written.
        false
    }
    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        self.refresh_fleet(targets, live).await
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        self.apply_change(ctx, change).await
    }

    capabilities!(Export, Purge, Smoke);
}
