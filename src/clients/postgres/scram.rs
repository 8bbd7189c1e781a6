//! SCRAM-SHA-256 password verifiers, computed here so a tenant's password never travels to
//! the server (nor into its statement log): `ALTER ROLE … PASSWORD` receives the verifier,
//! which PostgreSQL stores as it is.
//!
//! The salt is derived from the password, so the same password always gives the same
//! verifier; the data catalog keeps a digest of it, and refresh compares that digest with
//! the role's stored verifier to notice a password changed by hand.

use std::num::NonZeroUsize;
use std::sync::{LazyLock, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use lru::LruCache;
use sha2::{Digest, Sha256};

/// PostgreSQL's own default (scram_iterations).
const ITERATIONS: u32 = 4096;

/// How many verifiers are kept: a tenant's is asked for by its role's step, again when its
/// login opens and by its smoke test, all within its turn, and no more tenants than the
/// run's parallelism take their turns at once.
const REMEMBERED: usize = 256;

/// The verifier of `password`. Deriving it is a key derivation of 4,096 rounds (about a
/// millisecond of CPU), so the last ones are remembered, by a digest of the password.
pub fn verifier(password: &str) -> String {
    static RECENT: LazyLock<Mutex<LruCache<[u8; 32], String>>> = LazyLock::new(|| {
        Mutex::new(LruCache::new(
            NonZeroUsize::new(REMEMBERED).expect("not zero"),
        ))
    });
    let key: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    if let Some(v) = RECENT.lock().expect("not poisoned").get(&key) {
        return v.clone();
    }
    // Derived outside the lock: other tenants' lookups do not wait on it.
    let v = derive(password);
    RECENT.lock().expect("not poisoned").put(key, v.clone());
    v
}

fn derive(password: &str) -> String {
    let salt = &Sha256::digest(
        [
            b"tenant-reconcile/scram-salt\0".as_slice(),
            password.as_bytes(),
        ]
        .concat(),
    )[..16];
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, ITERATIONS, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

/// The digest the catalog keeps of a verifier; PostgreSQL computes the same with
/// `encode(sha256(convert_to(rolpassword, 'UTF8')), 'hex')`.
pub fn digest(verifier: &str) -> String {
    hex::encode(Sha256::digest(verifier.as_bytes()))
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_verifier_is_the_derived_one() {
        for p in ["first", "second", "first", "second"] {
            assert_eq!(verifier(p), derive(p), "{p}");
        }
    }

    #[test]
    fn verifier_is_stable_and_well_formed() {
        let v = verifier("secret");
        assert_eq!(v, verifier("secret"));
        assert_ne!(v, verifier("other"));
        let parts: Vec<&str> = v.split('$').collect();
        assert_eq!(parts[0], "SCRAM-SHA-256");
        assert!(parts[1].starts_with("4096:"));
        assert_eq!(parts[2].split(':').count(), 2);
        assert!(!v.contains("secret"));
    }
}
