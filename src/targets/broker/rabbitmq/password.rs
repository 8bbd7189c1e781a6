//! The mark a user's tags carry of its password: which password it was given, and a digest of
//! the hash set, so refresh tells a password changed by hand without the master key.

/// The user tag that records the password a user was given: `tenant-reconcile-password=`
/// its fingerprint, then `;hash=` and a digest of the hash set.
pub(super) const PASSWORD_TAG: &str = "tenant-reconcile-password=";

/// What `password_fingerprint` reads when the user's hash is not the one set here.
pub(super) const CHANGED_OUTSIDE: &str = "(changed outside tenant-reconcile)";

/// The tag recording that `user` was given `password`, whose hash is `hash`.
pub(super) fn password_tag(password: &str, hash: &str) -> String {
    format!(
        "{PASSWORD_TAG}{};hash={}",
        crate::credentials::fingerprint(password),
        hash_digest(hash)
    )
}

pub(super) fn hash_digest(hash: &str) -> String {
    crate::model::digest::sha256_hex(hash)[..16].to_string()
}

/// What a user's tags say of its password: the fingerprint recorded, if the hash it has now
/// is the one that was set with it.
pub(super) fn recorded_password(tags: &[String], hash: &str) -> Option<String> {
    let tag = tags.iter().find_map(|t| t.strip_prefix(PASSWORD_TAG))?;
    let (fingerprint, digest) = tag.split_once(";hash=")?;
    Some(if digest == hash_digest(hash) {
        fingerprint.to_string()
    } else {
        CHANGED_OUTSIDE.to_string()
    })
}
