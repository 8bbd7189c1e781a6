//! `apply --shard K/N`: a deterministic share of the fleet for one of N runners (a CI
//! matrix, a Kubernetes Indexed Job), so that N runners together apply every tenant once.
//!
//! A tenant's share is a hash of its slug alone, never of the fleet: adding or removing a
//! tenant moves no other tenant to another runner, and every runner, on any machine and any
//! version, computes the same shares.

use sha2::{Digest, Sha256};

use crate::slug::Slug;

/// One runner's share: the `index`th (from 1) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Reads `K/N` (1 ≤ K ≤ N).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("{text:?} is not a shard: write K/N, as 2/4 for the second of four");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "shard {text}: K must be from 1 to N (there are N runners, and this is the Kth)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard a Kubernetes Indexed Job gives this pod: `JOB_COMPLETION_INDEX` (from 0)
    /// of `JOB_COMPLETIONS`, when both are set.
    pub fn from_env() -> Option<Result<Shard, String>> {
        let index = std::env::var("JOB_COMPLETION_INDEX").ok()?;
        let count = std::env::var("JOB_COMPLETIONS").ok()?;
        let index = match index.trim().parse::<u32>() {
            Ok(i) => i + 1,
            Err(_) => {
                return Some(Err(format!(
                    "JOB_COMPLETION_INDEX={index:?} is not a number"
                )))
            }
        };
        Some(Shard::parse(&format!("{index}/{}", count.trim())))
    }

    /// Whether `slug` is this shard's.
    pub fn holds(&self, slug: &Slug) -> bool {
        let digest = Sha256::digest(slug.as_str().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_is_in_exactly_one_share() {
        let slugs: Vec<Slug> = (0..1000)
            .map(|i| Slug::parse(&format!("tenant-{i}")).unwrap())
            .collect();
        let shards: Vec<Shard> = (1..=4).map(|k| Shard { index: k, count: 4 }).collect();
        for slug in &slugs {
            assert_eq!(shards.iter().filter(|s| s.holds(slug)).count(), 1);
        }
        // Shares are near even: a hash, not the order of the files.
        for shard in &shards {
            let held = slugs.iter().filter(|s| shard.holds(s)).count();
            assert!((200..300).contains(&held), "{shard}: {held}");
        }
        // And fixed: the same slug is always in the same share.
        let acme = Slug::parse("acme").unwrap();
        let home: Vec<u32> = shards
            .iter()
            .filter(|s| s.holds(&acme))
            .map(|s| s.index)
            .collect();
        assert_eq!(home.len(), 1);
    }

    #[test]
    fn a_shard_is_read_as_k_of_n() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
