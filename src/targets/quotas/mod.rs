//! The quotas slot (`targets { quotas = "redis" }`): each tenant's effective quotas published
//! where the quota service reads them as it counts consumption, and a login of the tenant's
//! own that reaches only its keys. A slot that plugs in ([`crate::targets::slot`]): nothing
//! outside this folder names it but its line in `targets::PLUGGED`.
//!
//! A tenant gets one resource, `limits`: a hash `<key_prefix><slug>:limits` holding its
//! quotas (with our mark and the record of the password we set, in fields starting with
//! `_`, which no quota name does), and an ACL user `<user_prefix><slug>` that may read its
//! own keys and count in `<key_prefix><slug>:usage:*`, nothing else. Suspension turns the
//! user off and disconnects it.

pub mod redis;

use serde::Deserialize;
use serde_json::json;

use crate::diagnostic::Diagnostic;
use crate::model::attrs::{attrs, Attrs};
use crate::model::kind::{count, KindFacts};
use crate::model::resource::Kind;
use crate::model::tenant::{Status, TenantSpec};
use crate::repo::hcl_file::{block_problem, Spans};
use crate::slug::Slug;
use crate::targets::slot::{OneTarget, Single, TenantInputs};

/// A tenant's limits and the login that reads them.
pub const LIMITS: Kind = Kind::new(95);

const LIMITS_FACTS: KindFacts = KindFacts {
    resource_of: Some(|a| format!("limits {} and user {}", a.str("key"), a.str("user"))),
    live_name_of: Some(|a| format!("limits {}", a.str("key"))),
    holds_of: Some(|a| {
        let limits = a.get("limits").and_then(|l| l.as_object());
        count(limits.map_or(0, |l| l.len()), "limit")
    }),
    purge_turn: Some(3),
    used_through: true,
    computed: &["password_fingerprint"],
    ..KindFacts::plain(LIMITS, "limits")
};
inventory::submit!(LIMITS_FACTS);

/// What a tenant's user may run: read its keys, nothing else. The quota service counts its
/// consumption in `usage:` keys as the server's admin; a tenant that could write them could
/// count itself down (`INCRBY` takes negative numbers) or fill the server. `KEYS` and `SCAN`
/// are left out: key patterns do not filter the names they list.
const COMMANDS: &[&str] = &[
    "+exists", "+get", "+hexists", "+hget", "+hgetall", "+hlen", "+hmget", "+mget", "+ping",
    "+pttl", "+ttl", "+type", "-@all",
];

/// The hash field holding our mark of ownership.
pub const MARK_FIELD: &str = "_managed_by";
/// The hash field recording the password we set: its fingerprint and a digest of its hash.
pub const PASSWORD_FIELD: &str = "_password";

/// The quotas slot set to Redis: `targets { quotas = "redis" }` and the `redis` block.
pub struct Redis;

pub const SLOT: OneTarget<Redis> = OneTarget::new();

impl Single for Redis {
    const KEY: &'static str = "quotas";
    const SETTING: &'static str = "targets.quotas";
    const IMPLEMENTATION: &'static str = "redis";
    const KIND: Kind = LIMITS;
    type Settings = RedisConfig;
    type Target = redis::RedisQuotas;

    fn check(spans: &Spans, settings: &mut RedisConfig) -> Vec<Diagnostic> {
        check(spans, settings)
    }

    fn target(settings: &RedisConfig) -> redis::RedisQuotas {
        redis::RedisQuotas::new(settings.clone())
    }

    fn calls(target: &redis::RedisQuotas) -> usize {
        target.calls()
    }

    fn check_tenants(settings: &RedisConfig, tenants: &[TenantSpec]) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for t in tenants {
            let user = settings.user(&t.slug);
            if user.len() > 128 {
                problems.push(
                    Diagnostic::new(
                        &t.file,
                        format!("the Redis user name {user:?} is {} characters", user.len()),
                    )
                    .locate(&t.source, "slug")
                    .hint("keep user_prefix in the redis block of tenant-reconcile.hcl short: names are at most 128"),
                );
            }
        }
        problems
    }

    fn attrs(settings: &RedisConfig, tenant: &TenantInputs<'_>) -> Attrs {
        let mut attrs = desired(settings, tenant.tenant);
        if let Some(fingerprint) = tenant.fingerprint(&login(&settings.user(&tenant.tenant.slug))) {
            attrs.insert("password_fingerprint", json!(fingerprint));
        }
        attrs
    }

    fn login(
        _settings: &RedisConfig,
        target: &redis::RedisQuotas,
        limits: &Attrs,
        password: &dyn Fn(&str) -> String,
    ) -> Option<String> {
        let user = limits.str("user");
        Some(
            target
                .login_url(user, &password(&login(user)))
                .unwrap_or_else(|why| format!("redis: {why}")),
        )
    }
}

/// The `redis` block. The server's own login, if it needs one, comes in `REDIS_URL`, never
/// in the file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; without it `REDIS_URL`, then `redis://127.0.0.1:6379`.
    #[serde(default)]
    pub url: Option<String>,
    /// What every tenant's keys start with, before its slug and `:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// What a tenant's user is called, before its slug.
    #[serde(default = "default_user_prefix")]
    pub user_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            key_prefix: default_key_prefix(),
            user_prefix: default_user_prefix(),
        }
    }
}

fn default_key_prefix() -> String {
    "quota:".into()
}

fn default_user_prefix() -> String {
    "tenant_".into()
}

impl RedisConfig {
    /// Every key of the tenant starts with this. The slug holds no `:`, so no tenant's
    /// prefix starts another's.
    pub fn prefix(&self, slug: &Slug) -> String {
        format!("{}{slug}:", self.key_prefix)
    }

    pub fn limits_key(&self, slug: &Slug) -> String {
        format!("{}limits", self.prefix(slug))
    }

    pub fn user(&self, slug: &Slug) -> String {
        format!("{}{slug}", self.user_prefix)
    }

    /// The key patterns the tenant's user gets: its own keys, to read. The prefixes hold no
    /// glob character and the key prefix ends in `:` (`check`), so the pattern matches the
    /// tenant's keys only.
    pub fn key_patterns(&self, slug: &Slug) -> Vec<String> {
        vec![format!("%R~{}*", self.prefix(slug))]
    }
}

/// The password a tenant's user gets from `password`, under a name of its own, so it is
/// never another login's.
pub fn login(user: &str) -> String {
    format!("redis/{user}")
}

/// Every attribute of a tenant's limits but the password's fingerprint.
pub fn desired(config: &RedisConfig, tenant: &crate::model::tenant::Effective) -> Attrs {
    attrs([
        ("key", json!(config.limits_key(&tenant.slug))),
        ("limits", json!(tenant.quotas)),
        ("user", json!(config.user(&tenant.slug))),
        ("enabled", json!(tenant.status == Status::Active)),
        ("keys", json!(config.key_patterns(&tenant.slug))),
        ("channels", json!([])),
        ("commands", json!(COMMANDS)),
    ])
}

/// A new key or user is another resource.
pub fn forces_replace(field: &str) -> bool {
    field == "key" || field == "user"
}

/// The `redis` block's checks: prefixes of plain characters, so they are neither glob
/// patterns nor ACL rule syntax, and a URL without a password in it.
pub fn check(spans: &Spans, config: &RedisConfig) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "redis", key, message, hint));
    };
    for (key, value, end) in [
        ("key_prefix", &config.key_prefix, ":"),
        ("user_prefix", &config.user_prefix, ""),
    ] {
        // Not empty: an empty key prefix would give tenant `session` the application's
        // `session:*` keys, and an empty user prefix tenant `default` the default user.
        let plain = !value.is_empty()
            && value.len() <= 64
            && value.ends_with(end)
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'));
        if !plain {
            problem(
                key,
                format!("{value:?} is not a plain prefix"),
                if end.is_empty() {
                    "use 1 to 64 letters, digits, ':', '_', '-' and '.', like \"tenant_\""
                } else {
                    "use 1 to 64 letters, digits, ':', '_', '-' and '.', ending in ':', like \"quota:\""
                },
            );
        }
    }
    if let Some(url) = &config.url {
        if let Err(why) = check_url(url) {
            problem("url", why, "like \"redis://127.0.0.1:6379\"");
        }
    }
    problems
}

/// Why `url` cannot be the server's: a password in it (never echoed), not `redis://` or
/// `rediss://` with a host (a tenant's login is this URL with its user and password put in,
/// which a socket URL cannot take), or a database other than 0 (a tenant's login could not
/// select it).
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("the URL does not read: {e}"))?;
    if parsed.password().is_some() {
        return Err(
            "the URL holds a password; give it in REDIS_URL instead, so it is not in the repo"
                .into(),
        );
    }
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host().is_none() {
        return Err(format!(
            "{url:?} is not a redis:// or rediss:// URL with a host"
        ));
    }
    if !matches!(parsed.path(), "" | "/" | "/0") {
        return Err(format!(
            "{url:?} names a database other than 0, which a tenant's login cannot select"
        ));
    }
    Ok(())
}
