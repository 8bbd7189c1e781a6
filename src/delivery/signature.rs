//! Webhook signatures as the Standard Webhooks specification defines them: the
//! `webhook-signature` header is `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, once
//! per secret (several during a rotation), separated by spaces. A secret is written
//! `whsec_<base64 of its bytes>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing secret's bytes. Its `Debug` shows nothing of them.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// One `whsec_…` secret.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with whsec_")?;
        let bytes = B64
            .decode(encoded)
            .map_err(|_| "a webhook secret is whsec_ and then base64".to_string())?;
        if bytes.len() < 16 {
            return Err("a webhook secret holds at least 16 bytes".into());
        }
        Ok(Secret(bytes))
    }

    /// The secrets of one subscriber: one, or several separated by spaces while a secret is
    /// rotated (receivers accept a message any of them signed).
    pub fn parse_all(text: &str) -> Result<Vec<Secret>, String> {
        let secrets: Vec<Secret> = text
            .split_whitespace()
            .map(Secret::parse)
            .collect::<Result<_, _>>()?;
        if secrets.is_empty() {
            return Err("no webhook secret is set".into());
        }
        Ok(secrets)
    }
}

/// The `webhook-signature` header of a message.
pub fn sign(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&s.0).expect("HMAC takes any key");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries.
    #[test]
    fn signs_as_the_specification_does() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &[secret],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_each_secret() {
        let secrets = Secret::parse_all(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",
        )
        .unwrap();
        let header = sign(&secrets, "id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_%%%").is_err());
        assert!(Secret::parse_all("  ").is_err());
        assert_eq!(format!("{:?}", secrets[0]), "Secret(..)");
    }
}
