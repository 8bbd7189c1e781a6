//! The offboarding's export of every key under a tenant's prefix.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::json;

use crate::model::resource::Key;
use crate::targets::provider::Export;
use crate::targets::provider::{ExportRequest, ProviderError};
use crate::targets::quotas::LIMITS;

use super::{prefix_of, RedisQuotas, PIPELINE};

#[async_trait]
impl Export for RedisQuotas {
    /// Every key of the tenant's, as JSON: a string's text, a hash's fields (ours left
    /// out), another type by its name only.
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        let Some(recorded) = req.recorded.get(&Key::new(LIMITS)) else {
            return Ok(());
        };
        let limits = recorded.str("key");
        let prefix = prefix_of(limits);
        let mut out = BTreeMap::new();
        let keys = self.keys_under(prefix).await?;
        // Two round trips a thousand keys: their types, then what each holds.
        for chunk in keys.chunks(PIPELINE) {
            let mut types = redis::pipe();
            for key in chunk {
                types.cmd("TYPE").arg(key);
            }
            let kinds: Vec<String> = self.pipeline("reading the keys' types", &types).await?;
            let mut reads = redis::pipe();
            for (key, kind) in chunk.iter().zip(&kinds) {
                match kind.as_str() {
                    "string" => reads.cmd("GET").arg(key),
                    "hash" => reads.cmd("HGETALL").arg(key),
                    // Another type is exported by its name only; nothing to read.
                    _ => reads.cmd("PING"),
                };
            }
            let values: Vec<redis::Value> = self.pipeline("reading the keys", &reads).await?;
            let unreadable = |key: &str, e: redis::ParsingError| {
                ProviderError::failed(format!("Redis at {}: reading {key}", self.server()))(e)
            };
            for ((key, kind), value) in chunk.iter().zip(&kinds).zip(values) {
                let value = match kind.as_str() {
                    "string" => json!(redis::from_redis_value::<Option<String>>(value)
                        .map_err(|e| unreadable(key, e))?),
                    "hash" => {
                        let fields: BTreeMap<String, String> =
                            redis::from_redis_value(value).map_err(|e| unreadable(key, e))?;
                        json!(fields
                            .into_iter()
                            .filter(|(f, _)| !f.starts_with('_'))
                            .collect::<BTreeMap<_, _>>())
                    }
                    // Gone since it was listed.
                    "none" => continue,
                    other => json!({ "type": other }),
                };
                out.insert(key.clone(), value);
            }
        }
        let text = serde_json::to_vec_pretty(&out).expect("JSON serializes");
        let mut file = req.sink.file("quotas/redis.json").await?;
        file.write(&text).await?;
        req.sink
            .finish_file(&format!("the keys under {prefix}"), file)
            .await
    }
}
