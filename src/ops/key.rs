//! The master key checked against the one the state was made with, before anything is
//! derived from it.

use crate::credentials::MasterKey;
use crate::state::State;
use crate::workspace::Workspace;
use crate::Error;

/// Refuses a master key other than the one the state's passwords were derived from: with a
/// wrong key (a typo in a CI secret) every tenant's password would be replaced, and every
/// tenant locked out of its data. A deliberate change (`rotate`) passes, and returns the
/// warning the plan shows.
pub(crate) fn check_key(
    ws: &Workspace,
    state: &State,
    key: Option<&MasterKey>,
    rotate: bool,
) -> Result<Option<String>, Error> {
    let Some(recorded) = state.master_key_id.as_deref() else {
        // A state from before keys were recorded (or rewritten by such a build): the key
        // is tried on one recorded password instead.
        return match key {
            Some(k) if !rotate => check_key_by_fingerprint(state, k).map(|()| None),
            _ => Ok(None),
        };
    };
    match key {
        Some(k) if k.id() == recorded => Ok(None),
        Some(k) if rotate => Ok(Some(format!(
            "the master key changes from {recorded} to {} (from {}): every tenant's role gets a password derived from the new key",
            k.id(),
            k.source()
        ))),
        Some(k) => Err(Error::KeyMismatch {
            recorded: recorded.to_string(),
            found: k.id(),
            from: k.source().to_string(),
        }),
        None => Err(Error::Refused(format!(
            "this state's passwords were derived from the master key {recorded}, and there is no master key here ({} does not exist); nothing was done\n  hint: restore the key file, or set {}",
            ws.local_key_path().display(),
            crate::credentials::MASTER_KEY_ENV
        ))),
    }
}

/// What a plan made without the master key says: what it could not compare, and that
/// apply will need the key. Nothing for a state that has recorded nothing yet.
pub(super) fn keyless_note(state: &State) -> Option<String> {
    if state.tenants.is_empty() {
        return None;
    }
    Some(format!(
        "there is no master key here ({} or master_key_file): the passwords derived from it are not compared, and show as known after apply where they change; apply needs the key{}",
        crate::credentials::MASTER_KEY_ENV,
        state
            .master_key_id
            .as_deref()
            .map(|id| format!(" this state was applied with ({id})"))
            .unwrap_or_default()
    ))
}

/// Whether `key` derives the password the state recorded for some tenant's role.
pub(super) fn check_key_by_fingerprint(state: &State, key: &MasterKey) -> Result<(), Error> {
    let role = crate::desired::Key::new(crate::desired::Kind::ROLE);
    let sample = state.tenants.iter().find_map(|(slug, t)| {
        let attrs = t.resources.get(&role)?;
        let fingerprint = attrs.str("password_fingerprint");
        let version = attrs.get("credentials_version")?.as_u64()?;
        fingerprint.starts_with("sha256:").then_some((
            slug,
            t.tenant_id.as_deref()?,
            t.incarnation.as_deref(),
            attrs.str("name"),
            version,
            fingerprint,
        ))
    });
    let Some((slug, tenant_id, incarnation, name, version, fingerprint)) = sample else {
        return Ok(());
    };
    let derived = crate::credentials::fingerprint(&key.password(
        tenant_id,
        incarnation,
        name,
        version as u32,
    ));
    if derived == fingerprint {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the master key from {} ({}) does not derive the password recorded for {slug}'s role, so it is not the key this state was applied with; nothing was done\n  hint: a wrong key would replace every tenant's password; check the secret, or pass --rotate-master-key to change the key on purpose",
        key.source(),
        key.id()
    )))
}
