//! What a tenant's message-broker slice should be: a vhost of its own, a user of its own
//! with a password derived from the master key, that user's permissions on that vhost only,
//! and the vhost's limits from the tenant's quotas. The attributes are words, so a plan reads
//! `permissions: "configure=.* write=.* read=.*" → "none"` and the broker target turns them
//! into management API calls. A slot that plugs in (`targets::slot`): its settings, checks,
//! login and target are all here.

pub mod rabbitmq;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::credentials::MasterKey;
use crate::diagnostic::Diagnostic;
use crate::model::attrs::{attrs, Attrs};
use crate::model::kind::{not_counted, KindFacts};
use crate::model::resource::Kind;
use crate::model::tenant::{Status, TenantSpec};
use crate::repo::hcl_file::{block_problem, Spans};
use crate::slug::Slug;
use crate::targets::slot::{OneTarget, Single, TenantInputs};

/// `permissions` of an active tenant's user on its own vhost: everything, there only.
pub const PERMISSIONS_ALL: &str = "configure=.* write=.* read=.*";
/// `permissions` of a suspended or leaving tenant's user: none anywhere.
pub const PERMISSIONS_NONE: &str = "none";
/// A limit the tenant's quotas do not set.
pub const UNLIMITED: &str = "unlimited";
/// A vhost every node runs: the only state a tenant's vhost should be in.
pub const RUNNING: &str = "running";

/// The vhost limits this tool sets, with the attribute each is shown as.
pub const LIMITS: [(&str, &str); 2] = [
    ("max_connections", "max-connections"),
    ("max_queues", "max-queues"),
];

pub fn vhost(config: &RabbitmqConfig, slug: &Slug) -> String {
    format!("{}{}", config.vhost_prefix, slug)
}

pub fn user(config: &RabbitmqConfig, slug: &Slug) -> String {
    format!("{}{}", config.user_prefix, slug)
}

/// The broker user's password. Derived under a name of its own, so it is never the
/// password of the tenant's database role, even when both are called `tenant_acme`.
pub fn password(
    key: &MasterKey,
    tenant_id: &str,
    incarnation: Option<&str>,
    user: &str,
    version: u32,
) -> String {
    key.password(tenant_id, incarnation, &login(user), version)
}

/// The AMQP URL a tenant's application connects with: the config's broker address with the
/// user, password and vhost added, each percent-encoded. It holds a secret.
pub fn amqp_url(config: &RabbitmqConfig, user: &str, password: &str, vhost: &str) -> String {
    let mut url = url::Url::parse(&config.amqp_url).expect("amqp_url is checked when loaded");
    // Neither can fail on a URL with a host, which the check made sure of.
    let _ = url.set_username(user);
    let _ = url.set_password(Some(password));
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().push(vhost);
    }
    url.to_string()
}

/// The permissions as the `permissions` attribute says them.
pub fn permissions_text(configure: &str, write: &str, read: &str) -> String {
    format!("configure={configure} write={write} read={read}")
}

/// A limit's attribute value: the number, or `unlimited`.
pub fn limit_value(n: Option<i64>) -> Value {
    match n {
        Some(n) if n >= 0 => json!(n),
        _ => json!(UNLIMITED),
    }
}

/// Every attribute of a tenant's broker slice but the password's fingerprint, which needs
/// the tenant's id (compile adds it when the id is known).
pub fn desired(
    config: &RabbitmqConfig,
    slug: &Slug,
    status: Status,
    quotas: &std::collections::BTreeMap<String, u64>,
) -> Attrs {
    let permissions = match status {
        Status::Active => PERMISSIONS_ALL,
        Status::Suspended | Status::Deprovisioned => PERMISSIONS_NONE,
    };
    let quota = |name: &str| limit_value(quotas.get(name).map(|&n| n.min(i64::MAX as u64) as i64));
    attrs([
        ("vhost", json!(vhost(config, slug))),
        ("user", json!(user(config, slug))),
        ("permissions", json!(permissions)),
        ("other_vhosts", json!([])),
        ("user_tags", json!([])),
        ("max_connections", quota(&config.connections_quota)),
        ("max_queues", quota(&config.queues_quota)),
        ("state", json!(RUNNING)),
    ])
}

/// Whether a change to `field` makes it another vhost: a vhost cannot be renamed.
pub fn forces_replace(field: &str) -> bool {
    field == "vhost" || field == "user"
}

/// Checks a vhost or user name built from the prefix and a slug: RabbitMQ takes any UTF-8,
/// but these names reach URLs, logs and AMQP URIs, so they stay plain and short.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("is {} characters; use 1 to 255", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!("holds {c:?}"));
    }
    Ok(())
}

/// `rabbit_password_hashing_sha256`: base64 of a 4-byte salt and SHA-256 of salt and
/// password. The hash is computed here and sent instead of the password, so the password
/// itself is never on the wire.
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest([&salt[..], password.as_bytes()].concat());
    base64::engine::general_purpose::STANDARD.encode([&salt[..], &digest[..]].concat())
}

/// Whether a stored hash is `password`'s (under the salt it carries).
pub fn hash_matches(stored: &str, password: &str) -> bool {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(stored) else {
        return false;
    };
    let Some(salt) = bytes.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return false;
    };
    password_hash(password, salt) == stored
}

/// The `rabbitmq` block: how tenant vhosts and users are named and limited. Where the
/// management API is, and the administrator's credentials, come from the environment
/// (the variables named here), never from this file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConfig {
    /// The variable holding the management API's URL (`http://127.0.0.1:15672`).
    #[serde(default = "default_rabbitmq_url_env")]
    pub api_url_env: String,
    /// The variables holding the administrator's user name and password.
    #[serde(default = "default_rabbitmq_user_env")]
    pub api_user_env: String,
    #[serde(default = "default_rabbitmq_password_env")]
    pub api_password_env: String,
    /// Where tenants' applications connect (`amqp://host:5672`, no credentials): the URL
    /// `credentials SLUG` prints and the smoke test connects to.
    #[serde(default = "default_amqp_url")]
    pub amqp_url: String,
    /// A tenant's vhost and user are this prefix and its slug (`tenant_acme`).
    #[serde(default = "default_tenant_prefix")]
    pub vhost_prefix: String,
    #[serde(default = "default_tenant_prefix")]
    pub user_prefix: String,
    /// The quotas of a tenant's plan (or file) that become its vhost's `max-connections`
    /// and `max-queues` limits; a tenant without the quota has no limit.
    #[serde(default = "default_connections_quota")]
    pub connections_quota: String,
    #[serde(default = "default_queues_quota")]
    pub queues_quota: String,
}

impl Default for RabbitmqConfig {
    fn default() -> Self {
        RabbitmqConfig {
            api_url_env: default_rabbitmq_url_env(),
            api_user_env: default_rabbitmq_user_env(),
            api_password_env: default_rabbitmq_password_env(),
            amqp_url: default_amqp_url(),
            vhost_prefix: default_tenant_prefix(),
            user_prefix: default_tenant_prefix(),
            connections_quota: default_connections_quota(),
            queues_quota: default_queues_quota(),
        }
    }
}

fn default_rabbitmq_url_env() -> String {
    "RABBITMQ_API_URL".into()
}

fn default_rabbitmq_user_env() -> String {
    "RABBITMQ_API_USER".into()
}

fn default_rabbitmq_password_env() -> String {
    "RABBITMQ_API_PASSWORD".into()
}

fn default_amqp_url() -> String {
    "amqp://127.0.0.1:5672".into()
}

fn default_tenant_prefix() -> String {
    "tenant_".into()
}

fn default_connections_quota() -> String {
    "broker_connections".into()
}

fn default_queues_quota() -> String {
    "broker_queues".into()
}

/// The `rabbitmq` block's names reach the management API's paths and the broker's own
/// names, so they are kept to plain characters (and percent-encoded besides).
pub fn check(spans: &Spans, mq: &RabbitmqConfig) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "rabbitmq", key, message, hint));
    };
    let plain = |s: &str| {
        s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    for (key, value) in [
        ("vhost_prefix", &mq.vhost_prefix),
        ("user_prefix", &mq.user_prefix),
    ] {
        if !plain(value) {
            problem(
                key,
                format!("{value:?} is not a plain prefix"),
                "use up to 64 letters, digits, '_', '-' and '.', like \"tenant_\"",
            );
        }
    }
    for (key, value) in [
        ("connections_quota", &mq.connections_quota),
        ("queues_quota", &mq.queues_quota),
    ] {
        if !crate::slug::check_name(value) {
            problem(
                key,
                format!("{value:?} is not a quota name"),
                "name a quota of the plans, like \"broker_connections\"",
            );
        }
    }
    for (key, value) in [
        ("api_url_env", &mq.api_url_env),
        ("api_user_env", &mq.api_user_env),
        ("api_password_env", &mq.api_password_env),
    ] {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problem(
                key,
                format!("{value:?} is not an environment variable's name"),
                "name the variable that holds it, like \"RABBITMQ_API_URL\"",
            );
        }
    }
    match url::Url::parse(&mq.amqp_url) {
        Ok(u)
            if matches!(u.scheme(), "amqp" | "amqps")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && matches!(u.path(), "" | "/")
                && u.query().is_none() => {}
        _ => problem(
            "amqp_url",
            format!("{:?} is not a broker address", mq.amqp_url),
            "give amqp:// or amqps://, the host and port only (each tenant's user and vhost are added to it)",
        ),
    }
    problems
}

/// The name a broker user's password is derived under, so it is never the password of the
/// tenant's database role, even when both are called `tenant_acme`.
pub fn login(user: &str) -> String {
    format!("amqp/{user}")
}

/// The broker slot set to RabbitMQ: `targets { broker = "rabbitmq" }` and the `rabbitmq` block.
pub struct Rabbitmq;

pub const SLOT: OneTarget<Rabbitmq> = OneTarget::new();

impl Single for Rabbitmq {
    const KEY: &'static str = "broker";
    const SETTING: &'static str = "targets.broker";
    const IMPLEMENTATION: &'static str = "rabbitmq";
    const KIND: Kind = Kind::VHOST;
    /// The `rabbitmq` block is checked even while the broker is `none`, as it always was:
    /// its URL is the one `credentials` would print.
    const CHECK_UNUSED: bool = true;
    type Settings = RabbitmqConfig;
    type Target = rabbitmq::RabbitMq;

    fn check(spans: &Spans, settings: &mut RabbitmqConfig) -> Vec<Diagnostic> {
        check(spans, settings)
    }

    fn target(settings: &RabbitmqConfig) -> rabbitmq::RabbitMq {
        rabbitmq::RabbitMq::new(settings.clone())
    }

    fn calls(target: &rabbitmq::RabbitMq) -> usize {
        target.calls()
    }

    fn check_tenants(settings: &RabbitmqConfig, tenants: &[TenantSpec]) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for t in tenants {
            for (what, name) in [
                ("vhost", vhost(settings, &t.slug)),
                ("broker user", user(settings, &t.slug)),
            ] {
                if let Err(why) = check_name(&name) {
                    problems.push(
                        Diagnostic::new(&t.file, format!("the {what} name {name:?} {why}"))
                            .locate(&t.source, "slug")
                            .hint("the name is the prefix in the rabbitmq block of tenant-reconcile.hcl and the slug"),
                    );
                }
            }
        }
        problems
    }

    fn attrs(settings: &RabbitmqConfig, tenant: &TenantInputs<'_>) -> Attrs {
        let t = tenant.tenant;
        let mut attrs = desired(settings, &t.slug, t.status, &t.quotas);
        if let Some(fingerprint) = tenant.fingerprint(&login(&user(settings, &t.slug))) {
            attrs.insert("password_fingerprint", json!(fingerprint));
        }
        attrs
    }

    /// Its AMQP URL, with the user, password and vhost in it.
    fn login(
        settings: &RabbitmqConfig,
        _target: &rabbitmq::RabbitMq,
        vhost: &Attrs,
        password: &dyn Fn(&str) -> String,
    ) -> Option<String> {
        let user = vhost.str("user");
        Some(amqp_url(
            settings,
            user,
            &password(&login(user)),
            vhost.str("vhost"),
        ))
    }
}

/// A tenant's vhost, with its user.
const VHOST: KindFacts = KindFacts {
    computed: &["password_fingerprint"],
    resource_of: Some(|a| format!("vhost {} and user {}", a.str("vhost"), a.str("user"))),
    // A user of the tenant's name beside no vhost of ours is found on its own.
    live_name_of: Some(|a| match a.get("vhost") {
        None => format!("broker user {}", a.str("user")),
        Some(_) => format!("vhost {}", a.str("vhost")),
    }),
    holds_of: Some(not_counted),
    purge_turn: Some(3),
    located: true,
    ..KindFacts::plain(Kind::VHOST, "vhost")
};
inventory::submit!(VHOST);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_rabbitmqs() {
        // A hash RabbitMQ 3.10 made itself, of its default user's password "guest".
        let stored = "iSHCgfbXQc5VSormAnKc5gB+W3Xfypwtc1D++bjUyDpi8uYP";
        assert!(hash_matches(stored, "guest"));
        assert!(!hash_matches(stored, "Guest"));
        assert!(!hash_matches("not base64!", "guest"));
        let h = password_hash("s3cret", [1, 2, 3, 4]);
        assert!(hash_matches(&h, "s3cret"));
        assert!(!h.contains("s3cret"));
    }

    #[test]
    fn amqp_urls_encode_every_part() {
        let config = RabbitmqConfig::default();
        assert_eq!(
            amqp_url(&config, "tenant_acme", "p@ss/word", "tenant_acme"),
            "amqp://tenant_acme:p%40ss%2Fword@127.0.0.1:5672/tenant_acme"
        );
        assert_eq!(
            amqp_url(&config, "u", "p", "/"),
            "amqp://u:p@127.0.0.1:5672/%2F"
        );
    }

    #[test]
    fn names_stay_plain() {
        assert_eq!(check_name("tenant_acme-corp"), Ok(()));
        assert!(check_name("").is_err());
        assert!(check_name("a/b").unwrap_err().contains("'/'"));
        assert!(check_name("a%2F").is_err());
        assert!(check_name(&"a".repeat(256)).is_err());
    }
}
