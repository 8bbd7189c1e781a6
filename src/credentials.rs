//! Tenant database credentials, derived rather than stored.
//!
//! A tenant's password is HMAC-SHA256(master key, tenant id | role | credentials version),
//! so the same inputs always give the same password and nothing secret needs to be kept:
//! the state holds only a fingerprint, which shows when a password must change (a new
//! master key or a bumped credentials version) without revealing it.

use std::fs;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const MASTER_KEY_ENV: &str = "TENANT_RECONCILE_MASTER_KEY";
/// Shorter keys are refused: the key is the only secret behind every tenant's password.
pub const MIN_KEY_LEN: usize = 32;

#[derive(Clone)]
pub struct MasterKey {
    bytes: Vec<u8>,
    /// Where the key came from (the variable's name or the file's path), for messages.
    source: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no master key: set {MASTER_KEY_ENV} or name a key file with master_key_file in tenant-reconcile.hcl")]
    Missing,
    #[error("the master key from {source_name} is {len} bytes; it must be at least {MIN_KEY_LEN}\n  hint: generate one with `openssl rand -hex 32`")]
    TooShort { source_name: String, len: usize },
    #[error("cannot read the master key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the local master key {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KeyError {
    /// No key is set, or the key file named is not there (a job not given the secret).
    pub fn is_absent(&self) -> bool {
        match self {
            KeyError::Missing => true,
            KeyError::Read { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Where a key may come from, most specific first.
pub struct KeySource<'a> {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// The local target's own key file, generated on first apply when nothing else is set.
    pub local_file: Option<&'a Path>,
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<MasterKey, KeyError> {
        let trimmed = trim_ascii(bytes);
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                source_name: source_name.to_string(),
                len: trimmed.len(),
            });
        }
        Ok(MasterKey {
            bytes: trimmed.to_vec(),
            source: source_name.to_string(),
        })
    }

    /// Finds the key without creating anything; `Ok(None)` when only the local key could
    /// serve and it does not exist yet (plan shows the fingerprint as known after apply).
    pub fn find(src: &KeySource<'_>) -> Result<Option<MasterKey>, KeyError> {
        if let Some(v) = &src.env {
            return MasterKey::from_bytes(v.as_bytes(), MASTER_KEY_ENV).map(Some);
        }
        if let Some(path) = &src.file {
            let bytes = fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            return MasterKey::from_bytes(&bytes, &path.display().to_string()).map(Some);
        }
        match src.local_file {
            Some(path) if path.exists() => {
                // The local target's own key, narrowed if it was ever made more open.
                crate::private_files::tighten(path).map_err(|source| KeyError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let bytes = fs::read(path).map_err(|source| KeyError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                MasterKey::from_bytes(&bytes, &path.display().to_string()).map(Some)
            }
            Some(_) => Ok(None),
            None => Err(KeyError::Missing),
        }
    }

    /// Like [`find`](Self::find), but creates the local key (mode 0600) when it is missing.
    pub fn find_or_create(src: &KeySource<'_>) -> Result<MasterKey, KeyError> {
        if let Some(k) = MasterKey::find(src)? {
            return Ok(k);
        }
        let path = src.local_file.ok_or(KeyError::Missing)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| KeyError::Create {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let key = hex::encode(raw);
        write_private(path, key.as_bytes()).map_err(|source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        MasterKey::from_bytes(key.as_bytes(), &path.display().to_string())
    }

    /// Where the key came from: the environment variable's name or the file's path.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The key's identifier: a one-way value the state records, so a run with another key
    /// (a typo in a CI secret) is refused before it derives a single password. It reveals
    /// nothing of the key, and is not a password: it is derived under its own label.
    pub fn id(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"tenant-reconcile/key-id/v1");
        format!("kid:{}", &hex::encode(mac.finalize().into_bytes())[..16])
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.bytes).expect("HMAC takes any key length")
    }

    /// The password of `role` for the tenant with id `tenant_id`, in the incarnation the
    /// state recorded when it adopted the tenant (`TenantState::incarnation`): a tenant
    /// adopted again gets passwords no one was ever given. Without one, the derivation is
    /// the one every tenant had before incarnations were recorded.
    pub fn password(
        &self,
        tenant_id: &str,
        incarnation: Option<&str>,
        role: &str,
        version: u32,
    ) -> String {
        let mut mac = self.mac();
        mac.update(b"tenant-reconcile/v1\0");
        mac.update(tenant_id.as_bytes());
        mac.update(b"\0");
        mac.update(role.as_bytes());
        mac.update(b"\0");
        mac.update(&version.to_be_bytes());
        if let Some(incarnation) = incarnation {
            // After the version's fixed four bytes, so no other input reads the same.
            mac.update(b"\0incarnation\0");
            mac.update(incarnation.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A short, one-way tag of a password: equal passwords give equal fingerprints.
pub fn fingerprint(password: &str) -> String {
    let digest = Sha256::digest([b"fingerprint\0".as_slice(), password.as_bytes()].concat());
    format!("sha256:{}", &hex::encode(digest)[..16])
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        crate::private_files::create_dir_all(dir)?;
    }
    let mut f = crate::private_files::options()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_stable_and_depends_on_every_input() {
        let k = MasterKey::from_bytes(&[7u8; 32], "test").unwrap();
        let p = k.password("t1", None, "tenant_acme", 1);
        assert_eq!(p, k.password("t1", None, "tenant_acme", 1));
        assert_ne!(p, k.password("t2", None, "tenant_acme", 1));
        assert_ne!(p, k.password("t1", None, "tenant_other", 1));
        assert_ne!(p, k.password("t1", None, "tenant_acme", 2));
        let adopted = k.password("t1", Some("i1"), "tenant_acme", 1);
        assert_ne!(p, adopted);
        assert_ne!(adopted, k.password("t1", Some("i2"), "tenant_acme", 1));
        assert!(!fingerprint(&p).contains(&p[..16]));
    }

    #[test]
    fn the_key_id_tells_keys_apart_and_reveals_neither_key_nor_password() {
        let k = MasterKey::from_bytes(&[7u8; 32], "test").unwrap();
        let other = MasterKey::from_bytes(&[8u8; 32], "test").unwrap();
        assert_eq!(k.id(), k.id());
        assert_ne!(k.id(), other.id());
        assert!(k.id().starts_with("kid:"));
        assert!(!k.password("t1", None, "r", 1).contains(&k.id()[4..]));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            MasterKey::from_bytes(b"short", "x"),
            Err(KeyError::TooShort { .. })
        ));
    }
}
