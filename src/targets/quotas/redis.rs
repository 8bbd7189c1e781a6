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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use super::{forces_replace, login, RedisConfig, LIMITS, MARK_FIELD, PASSWORD_FIELD};
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::digest::sha256_hex;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{capabilities, wanting, Export};
use crate::targets::provider::{
    check_ours, desired_of, purge_change, ExportRequest, LiveFleet, Owner, Provider, ProviderError,
    Purge, RefreshTarget, Smoke, StepContext,
};

/// What `password_fingerprint` reads when the user's password is not the one set here.
const CHANGED_OUTSIDE: &str = "(changed outside tenant-reconcile)";
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

/// An ACL user as `ACL LIST` writes it, its rules sorted into what they are about.
#[derive(Debug, Default, PartialEq)]
struct AclUser {
    enabled: bool,
    passwords: Vec<String>,
    keys: Vec<String>,
    channels: Vec<String>,
    commands: Vec<String>,
}

impl AclUser {
    /// `user <name> on sanitize-payload #<sha256> %R~p:* ~p:usage:* resetchannels -@all +get`
    /// → its name and rules. A selector, `(…)`, is kept whole with the key patterns: any
    /// is a widening.
    fn parse(line: &str) -> Option<(String, AclUser)> {
        let mut words = line.split(' ');
        if words.next()? != "user" {
            return None;
        }
        let name = words.next()?.to_string();
        let mut user = AclUser::default();
        let mut selector: Option<String> = None;
        for word in words {
            if let Some(open) = &mut selector {
                open.push(' ');
                open.push_str(word);
                if word.ends_with(')') {
                    user.keys.extend(selector.take());
                }
                continue;
            }
            match word {
                "on" => user.enabled = true,
                "off" | "resetchannels" | "sanitize-payload" | "skip-sanitize-payload" => {}
                "nopass" => user.passwords.push(word.into()),
                "allkeys" => user.keys.push("~*".into()),
                "allchannels" => user.channels.push("&*".into()),
                _ if word.starts_with('(') && !word.ends_with(')') => selector = Some(word.into()),
                _ if word.starts_with('(') => user.keys.push(word.into()),
                _ if word.starts_with('#') => user.passwords.push(word[1..].into()),
                _ if word.starts_with('&') => user.channels.push(word.into()),
                _ if word.starts_with('+') || word.starts_with('-') => {
                    user.commands.push(word.into())
                }
                _ => user.keys.push(word.into()),
            }
        }
        user.keys.sort();
        user.channels.sort();
        user.commands.sort();
        Some((name, user))
    }
}

/// What the hash records of the password set with it: its fingerprint, and a digest of the
/// SHA-256 Redis keeps.
fn password_record(fingerprint: &str, acl_hash: &str) -> String {
    format!("{fingerprint};hash={}", &sha256_hex(acl_hash)[..16])
}

/// The fingerprint the hash recorded, if the user's one password is still the one set.
fn recorded_password(hash: &HashMap<String, String>, user: &AclUser) -> String {
    let recorded = hash
        .get(PASSWORD_FIELD)
        .and_then(|r| r.split_once(";hash="));
    match (recorded, user.passwords.as_slice()) {
        (Some((fingerprint, digest)), [one]) if digest == &sha256_hex(one)[..16] => {
            fingerprint.to_string()
        }
        _ => CHANGED_OUTSIDE.to_string(),
    }
}

/// The tenant's key prefix, from its limits key (`quota:acme:limits` → `quota:acme:`).
fn prefix_of(limits_key: &str) -> &str {
    limits_key.strip_suffix("limits").unwrap_or(limits_key)
}

/// A limit as the hash holds it: a number, or the text someone wrote.
fn limit(text: &str) -> Value {
    text.parse::<u64>()
        .map_or_else(|_| json!(text), |n| json!(n))
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

    /// Every ACL user, by name.
    async fn users(&self) -> Result<HashMap<String, AclUser>, ProviderError> {
        let lines: Vec<String> = self
            .query("ACL LIST", redis::cmd("ACL").arg("LIST"))
            .await?;
        Ok(lines.iter().filter_map(|l| AclUser::parse(l)).collect())
    }

    /// A tenant's hash and user as they are now.
    async fn read(
        &self,
        key: &str,
        user: &str,
    ) -> Result<(HashMap<String, String>, bool), ProviderError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(key);
        pipe.cmd("ACL").arg("GETUSER").arg(user);
        let (hash, found): (HashMap<String, String>, redis::Value) =
            self.pipeline(&format!("reading {key}"), &pipe).await?;
        Ok((hash, found != redis::Value::Nil))
    }

    /// Who owns a tenant's hash (and the user beside it): its mark, or nobody we know.
    fn owner(hash: &HashMap<String, String>) -> Owner {
        Owner::from_text(hash.get(MARK_FIELD).map(String::as_str))
    }

    fn attrs(
        &self,
        key: &str,
        user_name: &str,
        hash: &HashMap<String, String>,
        user: Option<&AclUser>,
    ) -> Attrs {
        let limits: BTreeMap<&str, Value> = hash
            .iter()
            .filter(|(field, _)| !field.starts_with('_'))
            .map(|(field, value)| (field.as_str(), limit(value)))
            .collect();
        let none = AclUser::default();
        let acl = user.unwrap_or(&none);
        crate::model::attrs::attrs([
            ("key", json!(key)),
            ("limits", json!(limits)),
            // Always its name: a user deleted by hand is an update of the fields below (an
            // empty rule set), not another user.
            ("user", json!(user_name)),
            ("enabled", json!(acl.enabled)),
            ("keys", json!(acl.keys)),
            ("channels", json!(acl.channels)),
            ("commands", json!(acl.commands)),
            ("password_fingerprint", json!(recorded_password(hash, acl))),
        ])
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
        let wanted = wanting(targets, LIMITS);
        if wanted.is_empty() {
            return Ok(());
        }
        let before = self.calls();
        let users = self.users().await?;
        for chunk in wanted.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for t in chunk {
                pipe.cmd("HGETALL").arg(self.config.limits_key(&t.slug));
            }
            let hashes: Vec<HashMap<String, String>> =
                self.pipeline("reading the limits", &pipe).await?;
            for (t, hash) in chunk.iter().zip(hashes) {
                let (key, name) = (self.config.limits_key(&t.slug), self.config.user(&t.slug));
                let user = users.get(&name);
                if hash.is_empty() && user.is_none() {
                    continue;
                }
                let attrs = self.attrs(&key, &name, &hash, user);
                live.insert_owned(&t.slug, LIMITS, attrs, Self::owner(&hash));
            }
        }
        live.calls.push((self.name(), self.calls() - before));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let attrs = &desired_of(change)?.attrs;
        let (key, user) = (attrs.str("key"), attrs.str("user"));
        let (hash, user_there) = self.read(key, user).await?;
        if !hash.is_empty() || user_there {
            let resource = format!("the limits {key} and user {user}");
            check_ours(ctx, change, &resource, &Self::owner(&hash))?;
        }
        let password = ctx.password(&login(user))?;
        let fingerprint = crate::credentials::fingerprint(&password);
        let acl_hash = sha256_hex(&password);
        let enabled = attrs.get("enabled").and_then(Value::as_bool) == Some(true);

        let mut pipe = redis::pipe();
        pipe.atomic();
        // Names changed by the config (a new key or user prefix): what the old names held
        // goes with them, if it was ours. Refresh reads the names the config gives, so this is
        // found here, from the names the state recorded, whatever the change's action.
        if let Some(old) = ctx.recorded.get(&change.key) {
            let (old_key, old_user) = (old.str("key"), old.str("user"));
            if old_key != key || old_user != user {
                let (old_hash, _) = self.read(old_key, old_user).await?;
                if matches!(Self::owner(&old_hash), Owner::Marked(ref m) if ctx.mark.claims(m)) {
                    // The quota service's counters under the old prefix move to the new one
                    // first: the old hash stays marked until the transaction below, so a run
                    // cut off here moves the rest when it is applied again.
                    let (old_prefix, prefix) = (prefix_of(old_key), prefix_of(key));
                    if old_prefix != prefix {
                        for moved in self.keys_under(old_prefix).await? {
                            if moved == old_key {
                                continue;
                            }
                            let to = format!("{prefix}{}", &moved[old_prefix.len()..]);
                            self.query::<()>(
                                &format!("moving {moved}"),
                                redis::cmd("RENAME").arg(&moved).arg(&to),
                            )
                            .await?;
                        }
                    }
                    if old_user != user {
                        pipe.cmd("ACL").arg("DELUSER").arg(old_user).ignore();
                    }
                    if old_key != key {
                        pipe.cmd("DEL").arg(old_key).ignore();
                    }
                }
            }
        }
        pipe.cmd("DEL").arg(key).ignore();
        let hset = pipe.cmd("HSET").arg(key);
        hset.arg(MARK_FIELD).arg(ctx.mark.text());
        hset.arg(PASSWORD_FIELD)
            .arg(password_record(&fingerprint, &acl_hash));
        if let Some(limits) = attrs.get("limits").and_then(Value::as_object) {
            for (name, value) in limits {
                hset.arg(name).arg(value.to_string());
            }
        }
        hset.ignore();
        let setuser = pipe.cmd("ACL").arg("SETUSER").arg(user).arg("reset");
        setuser.arg(if enabled { "on" } else { "off" });
        setuser.arg(format!("#{acl_hash}"));
        let rules = |name: &str| -> Vec<&str> {
            let list = attrs.get(name).and_then(Value::as_array);
            list.into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect()
        };
        setuser.arg(rules("keys"));
        // Rules apply in order: a category taken away (`-@all`) before the commands given.
        let (categories, commands): (Vec<&str>, Vec<&str>) = rules("commands")
            .into_iter()
            .partition(|c| c.starts_with("-@"));
        setuser.arg(categories).arg(commands);
        setuser.arg("resetchannels").ignore();
        if !enabled {
            // A user turned off keeps the connections it has: they are closed in the same
            // transaction, so no run cut short leaves them open.
            pipe.cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(user)
                .ignore();
        }
        self.pipeline::<()>(&format!("writing {key} and the user {user}"), &pipe)
            .await?;
        let mut out = attrs.clone();
        out.insert("password_fingerprint", json!(fingerprint));
        Ok(Some(out))
    }

    capabilities!(Export, Purge, Smoke);
}

#[async_trait]
impl Purge for RedisQuotas {
    /// The user first (its connections go with it), then the tenant's other keys, then the
    /// marked hash last: a purge cut short is found ours and carried on.
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let Some(recorded) = ctx.recorded.get(key) else {
            return Ok(());
        };
        let (limits, user) = (recorded.str("key"), recorded.str("user"));
        let (hash, user_there) = self.read(limits, user).await?;
        if hash.is_empty() {
            // Gone already (the user without its hash is not known to be ours).
            return Ok(());
        }
        check_ours(
            ctx,
            &purge_change(key),
            &format!("the limits {limits} and user {user}"),
            &Self::owner(&hash),
        )?;
        if user_there {
            self.query::<i64>(
                &format!("deleting the user {user}"),
                redis::cmd("ACL").arg("DELUSER").arg(user),
            )
            .await?;
        }
        let prefix = prefix_of(limits);
        let others: Vec<String> = self
            .keys_under(prefix)
            .await?
            .into_iter()
            .filter(|k| k != limits)
            .collect();
        for batch in others.chunks(PIPELINE) {
            self.query::<i64>(
                &format!("deleting the keys under {prefix}"),
                redis::cmd("UNLINK").arg(batch),
            )
            .await?;
        }
        self.query::<i64>(&format!("deleting {limits}"), redis::cmd("DEL").arg(limits))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Export for RedisQuotas {
    /// Every key of the tenant's, as JSON: a string's text, a hash's fields (ours left
    /// out), another type by its name only.
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        let Some(recorded) = req.recorded.get(&Key::new(LIMITS)) else {
            return Ok(());
        };
        let limits = recorded.str("key");
        let prefix = prefix_of(limits);
        let mut out = BTreeMap::new();
        let keys = self.keys_under(prefix).await?;
        // Two round trips a thousand keys: their types, then what each holds.
        for chunk in keys.chunks(PIPELINE) {
            let mut types = redis::pipe();
            for key in chunk {
                types.cmd("TYPE").arg(key);
            }
            let kinds: Vec<String> = self.pipeline("reading the keys' types", &types).await?;
            let mut reads = redis::pipe();
            for (key, kind) in chunk.iter().zip(&kinds) {
                match kind.as_str() {
                    "string" => reads.cmd("GET").arg(key),
                    "hash" => reads.cmd("HGETALL").arg(key),
                    // Another type is exported by its name only; nothing to read.
                    _ => reads.cmd("PING"),
                };
            }
            let values: Vec<redis::Value> = self.pipeline("reading the keys", &reads).await?;
            let unreadable = |key: &str, e: redis::ParsingError| {
                ProviderError::failed(format!("Redis at {}: reading {key}", self.server()))(e)
            };
            for ((key, kind), value) in chunk.iter().zip(&kinds).zip(values) {
                let value = match kind.as_str() {
                    "string" => json!(redis::from_redis_value::<Option<String>>(value)
                        .map_err(|e| unreadable(key, e))?),
                    "hash" => {
                        let fields: BTreeMap<String, String> =
                            redis::from_redis_value(value).map_err(|e| unreadable(key, e))?;
                        json!(fields
                            .into_iter()
                            .filter(|(f, _)| !f.starts_with('_'))
                            .collect::<BTreeMap<_, _>>())
                    }
                    // Gone since it was listed.
                    "none" => continue,
                    other => json!({ "type": other }),
                };
                out.insert(key.clone(), value);
            }
        }
        let text = serde_json::to_vec_pretty(&out).expect("JSON serializes");
        let mut file = req.sink.file("quotas/redis.json").await?;
        file.write(&text).await?;
        req.sink
            .finish_file(&format!("the keys under {prefix}"), file)
            .await
    }
}

#[async_trait]
impl Smoke for RedisQuotas {
    /// Logs in as the tenant's user and reads its limits; a user turned off is not tried.
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(recorded) = ctx.recorded.get(&Key::new(LIMITS)) else {
            return Vec::new();
        };
        if recorded.get("enabled").and_then(Value::as_bool) != Some(true) {
            return Vec::new();
        }
        let started = Instant::now();
        let (key, user) = (recorded.str("key"), recorded.str("user"));
        let verdict = async {
            let password = ctx
                .password(&login(user))
                .map_err(|e| crate::causes::chain(&e))?;
            let url = self.login_url(user, &password)?;
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("{user} cannot log in: {e}"))?;
            let limits: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut con)
                .await
                .map_err(|e| format!("{user} cannot read {key}: {e}"))?;
            let n = limits.keys().filter(|f| !f.starts_with('_')).count();
            Ok(format!("{user} reads {n} limits in {key}"))
        }
        .await;
        vec![crate::model::health::CheckOutcome::of(
            "quotas", started, verdict,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acl_line_is_read_into_its_rules() {
        let (name, user) = AclUser::parse(
            "user tenant_acme off sanitize-payload #abc %R~q:acme:* ~q:acme:usage:* resetchannels -@all +hget +get",
        )
        .unwrap();
        assert_eq!(name, "tenant_acme");
        assert_eq!(
            user,
            AclUser {
                enabled: false,
                passwords: vec!["abc".into()],
                keys: vec!["%R~q:acme:*".into(), "~q:acme:usage:*".into()],
                channels: vec![],
                commands: vec!["+get".into(), "+hget".into(), "-@all".into()],
            }
        );
        // Widened by hand: every key, every channel, a selector of its own.
        let (_, user) =
            AclUser::parse("user x on nopass allkeys allchannels (~other:* +set) +@all").unwrap();
        assert_eq!(user.keys, ["(~other:* +set)", "~*"]);
        assert_eq!(user.channels, ["&*"]);
        assert_eq!(user.passwords, ["nopass"]);
    }

    #[test]
    fn a_password_set_by_hand_is_not_the_recorded_one() {
        let acl_hash = sha256_hex("secret");
        let hash: HashMap<String, String> = [(
            PASSWORD_FIELD.to_string(),
            password_record("sha256:1234", &acl_hash),
        )]
        .into();
        let user = |passwords: &[&str]| AclUser {
            passwords: passwords.iter().map(|p| p.to_string()).collect(),
            ..AclUser::default()
        };
        assert_eq!(recorded_password(&hash, &user(&[&acl_hash])), "sha256:1234");
        let other = sha256_hex("other");
        for passwords in [
            &[other.as_str()][..],
            &[&acl_hash, &other],
            &["nopass"],
            &[],
        ] {
            assert_eq!(recorded_password(&hash, &user(passwords)), CHANGED_OUTSIDE);
        }
    }
}
