//! A tenant's ACL user as `ACL LIST` prints it, and the record of its password the limits
//! hash keeps beside it.

use std::collections::HashMap;

use crate::model::digest::sha256_hex;
use crate::targets::quotas::PASSWORD_FIELD;

/// What `password_fingerprint` reads when the user's password is not the one set here.
pub(super) const CHANGED_OUTSIDE: &str = "(changed outside tenant-reconcile)";

/// An ACL user as `ACL LIST` writes it, its rules sorted into what they are about.
#[derive(Debug, Default, PartialEq)]
pub(super) struct AclUser {
    pub(super) enabled: bool,
    pub(super) passwords: Vec<String>,
    pub(super) keys: Vec<String>,
    pub(super) channels: Vec<String>,
    pub(super) commands: Vec<String>,
}

impl AclUser {
    /// `user <name> on sanitize-payload #<sha256> %R~p:* ~p:usage:* resetchannels -@all +get`
    /// → its name and rules. A selector, `(…)`, is kept whole with the key patterns: any
    /// is a widening.
    pub(super) fn parse(line: &str) -> Option<(String, AclUser)> {
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
pub(super) fn password_record(fingerprint: &str, acl_hash: &str) -> String {
    format!("{fingerprint};hash={}", &sha256_hex(acl_hash)[..16])
}

/// The fingerprint the hash recorded, if the user's one password is still the one set.
pub(super) fn recorded_password(hash: &HashMap<String, String>, user: &AclUser) -> String {
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
