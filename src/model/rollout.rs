//! A rollout: a change to the inputs tenants share (a plan file, a template, a migration)
//! going out to the tenants it reaches in waves, as the state records it. The policy that
//! makes the waves is the config's (`repo/rollout_policy.rs`); the decisions are
//! `rollout/`'s.

use serde::{Deserialize, Serialize};

/// A rollout as the state's header records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// `r1`, `r2`, …: numbered by the state in the order they started.
    pub id: String,
    /// The commit whose shared inputs the tenants ran on before it.
    pub from: String,
    /// The commit whose shared inputs it takes them to. A new commit changing the shared
    /// inputs while it is in flight becomes its `to` (a fix goes out the same way).
    pub to: String,
    /// The shared input files changed between `from` and `to`.
    pub files: Vec<String>,
    pub waves: Vec<Wave>,
    /// The wave reached: its tenants and every earlier wave's plan from `to`.
    pub wave: usize,
    pub status: Status,
    pub started_at: String,
    pub updated_at: String,
    /// Why it halted, while it is halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// How many times it halted: each halt is an event of its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub halts: u32,
    /// Tenants an abort left on a migration of `to`: a migration is never undone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_migrations: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    /// Paused by `rollout pause`: no tenant is taken further until `rollout resume`.
    Paused,
    /// Stopped by its halt rule: no tenant is taken further until `rollout resume`.
    Halted,
    /// Called off by `rollout abort`: every tenant plans from `from` again.
    Aborted,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Halted => "halted",
            Status::Aborted => "aborted",
            Status::Completed => "completed",
        }
    }

    /// Running, paused or halted: tenants are still split between `from` and `to`.
    pub fn in_flight(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Halted)
    }
}

/// One wave of a rollout: its tenants, fixed when the rollout starts, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub name: String,
    pub tenants: Vec<String>,
    /// Tenants of the rollout mid-change at once, at most, while this wave is reached.
    pub max_parallel: usize,
    /// How long the wave runs, its tenants applied and their smoke tests passed, before the
    /// next wave starts.
    pub bake_seconds: u64,
    /// More failures than this halt the rollout.
    pub max_failures: FailureLimit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<String>,
    /// When every tenant of it was applied and passed its smoke tests: its bake starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    /// Its tenants whose change failed since it was reached (or resumed), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<WaveFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveFailure {
    pub slug: String,
    pub error: String,
}

/// How many of a wave's tenants may fail before the rollout halts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureLimit {
    /// More than this many.
    Count(u32),
    /// More than this share of the wave's tenants, in percent.
    Percent(f64),
}

impl FailureLimit {
    /// Whether `failed` of a wave of `size` tenants is more than the limit.
    pub fn exceeded(self, failed: usize, size: usize) -> bool {
        match self {
            FailureLimit::Count(n) => failed > n as usize,
            FailureLimit::Percent(p) => failed as f64 > size as f64 * p / 100.0,
        }
    }

    pub fn describe(self) -> String {
        match self {
            FailureLimit::Count(0) => "any failure".to_string(),
            FailureLimit::Count(n) => format!("more than {n} failures"),
            FailureLimit::Percent(p) => format!("more than {p} % failed"),
        }
    }
}

impl Wave {
    pub fn bake(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.bake_seconds)
    }
}

/// A tenant's part in a rollout, in its own record: each attempt at its change, started
/// and ended, so how many were mid-change at any moment is read from what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRollout {
    /// The rollout's id.
    pub id: String,
    /// The commit its attempts took it to (the rollout's `to` then).
    pub to: String,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// `applied`, `failed`, `interrupted`, or `abandoned` (its run died; closed by the next
    /// run before that one started any tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl TenantRollout {
    /// Whether its last attempt at rollout `id` toward `to` was applied.
    pub fn applied(&self, id: &str, to: &str) -> bool {
        self.id == id
            && self.to == to
            && self
                .attempts
                .last()
                .is_some_and(|a| a.outcome.as_deref() == Some(APPLIED))
    }

    /// Its attempt without an end, if any.
    pub fn open(&mut self) -> Option<&mut Attempt> {
        self.attempts.iter_mut().find(|a| a.ended_at.is_none())
    }
}

pub const APPLIED: &str = "applied";
pub const FAILED: &str = "failed";
pub const INTERRUPTED: &str = "interrupted";
pub const ABANDONED: &str = "abandoned";

/// What a plan says of the rollout, and what its apply records before its first tenant.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// The rollout as it stands once the apply starts (started, retargeted or moved on by
    /// this plan), or the last one, ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The commit whose shared inputs the fleet runs on once the apply starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_rev: Option<String>,
    /// Whether the apply has `rollout` and `inputs_rev` to write: they differ from the
    /// state's.
    #[serde(default)]
    pub writes: bool,
    /// What the plan does with the rollout, a line each, as people read it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub said: Vec<String>,
    /// Tenants of the waves reached whose change waits: the rollout is paused or halted, or
    /// the run is of some tenants only, which cannot count the wave's limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}
