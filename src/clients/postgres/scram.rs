//! SCRAM-SHA-256 password verifiers, computed here so a tenant's password never travels to
//! the server (nor into its statement log): `ALTER ROLE … PASSWORD` receives the verifier,
//! which PostgreSQL stores as it is.
//!
//! The salt is derived from the password, so the same password always gives the same
//! verifier; the data catalog keeps a digest of it, and refresh compares that digest with
//! the role's stored verifier to notice a password changed by hand.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's own default (scram_iterations).
const ITERATIONS: u32 = 4096;

pub fn verifier(password: &str) -> String {
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
