//! `credentials SLUG`: a tenant's own login, derived again from the master key.

use super::export::refuse_purged;
use super::key::check_key;
use crate::slug::Slug;
use crate::workspace::Workspace;
use crate::Error;

/// A tenant's database login as its target spells it: a connection URL on Postgres, the
/// role and password on the local target. Derived from the master key; never stored.
/// A tenant's login as `credentials` prints it, and why it would not work now.
pub struct Login {
    /// `role=… password=…` or a connection URL, then a line for each plugged slot's login
    /// (the broker's AMQP URL, the Redis URL).
    pub text: String,
    /// Set when the login is refused as things stand (a suspended or leaving tenant).
    pub refused: Option<String>,
}

/// Why a tenant's login is refused in `lifecycle`, if it is.
pub(super) fn refused_because(slug: &Slug, lifecycle: crate::state::Lifecycle) -> Option<String> {
    use crate::state::Lifecycle;
    match lifecycle {
        Lifecycle::Suspended => Some(format!(
            "{slug} is suspended: its login is refused until it is resumed (its file's status: active, then apply)"
        )),
        Lifecycle::Deprovisioning | Lifecycle::Deprovisioned => Some(format!(
            "{slug} is offboarded: its access was revoked, and this login is refused"
        )),
        Lifecycle::Pending | Lifecycle::Provisioning => Some(format!(
            "{slug} is not active yet: its login is held until its smoke tests and gating hooks pass and it becomes active (`tenant-reconcile show` says where it stopped)"
        )),
        _ => None,
    }
}

pub async fn credentials(ws: &Workspace, slug: &Slug) -> Result<Login, Error> {
    let state = ws.backend().load().await?;
    let Some(t) = state.tenants.get(slug.as_str()) else {
        let has_file = ws.repo.tenants.iter().any(|t| &t.slug == slug);
        return Err(Error::Usage(if has_file {
            format!("{slug} has no recorded state yet: apply it first")
        } else {
            format!("there is no tenant {slug}: no tenants/{slug}.yaml and nothing recorded")
        }));
    };
    refuse_purged(slug, t)?;
    let key = ws.find_key()?;
    // A wrong key would print a password that does not log in.
    check_key(ws, &state, key.as_ref(), false)?;
    let (Some(tenant_id), Some(key)) = (t.tenant_id.as_deref(), key) else {
        return Err(Error::Usage(format!(
            "{slug} has no login yet: apply it first"
        )));
    };
    let incarnation = t.incarnation.as_deref();
    let password_of =
        |login: &str| key.password(tenant_id, incarnation, login, t.credentials_version);
    // The server its data was placed on, when the config names several.
    let placed = crate::desired::placement::recorded_server(Some(t))
        .and_then(|name| {
            ws.repo
                .config
                .servers
                .iter()
                .find(|s| s.placement.name == name)
        })
        .map(|s| crate::clients::postgres::PgServer::from_config(&s.connection));
    // The data slot's login first, then each plugged slot's (the broker's AMQP URL), a line
    // each.
    let data = crate::targets::data::login(
        &ws.repo.config.targets.data,
        placed.as_ref().unwrap_or(ws.postgres()),
        &crate::targets::data::Naming::from(&ws.repo.config.postgres),
        slug,
        &t.resources,
        &password_of,
    );
    let logins = ws
        .repo
        .config
        .plugged
        .iter()
        .filter_map(|p| p.login(&t.resources, &password_of))
        .fold(String::new(), |text, line| format!("{text}\n{line}"));
    Ok(Login {
        text: data + &logins,
        refused: refused_because(slug, t.lifecycle),
    })
}
