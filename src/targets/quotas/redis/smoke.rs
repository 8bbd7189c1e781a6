//! The smoke test: logging in as the tenant and reading its limits.

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::resource::Key;
use crate::targets::provider::{Smoke, StepContext};
use crate::targets::quotas::{login, LIMITS};

use super::RedisQuotas;

#[async_trait]
impl Smoke for RedisQuotas {
    /// Logs in as the tenant's user and reads its limits; a user turned off is not tried.
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(recorded) = ctx.recorded.get(&Key::new(LIMITS)) else {
            return Vec::new();
        };
        if recorded.get("enabled").and_then(Value::as_bool) != Some(true) {
            return Vec::new();
        }
        let started = Instant::now();
        let (key, user) = (recorded.str("key"), recorded.str("user"));
        let verdict = async {
            let password = ctx
                .password(&login(user))
                .map_err(|e| crate::causes::chain(&e))?;
            let url = self.login_url(user, &password)?;
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("{user} cannot log in: {e}"))?;
            let limits: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut con)
                .await
                .map_err(|e| format!("{user} cannot read {key}: {e}"))?;
            let n = limits.keys().filter(|f| !f.starts_with('_')).count();
            Ok(format!("{user} reads {n} limits in {key}"))
        }
        .await;
        vec![crate::model::health::CheckOutcome::of(
            "quotas", started, verdict,
        )]
    }
}
