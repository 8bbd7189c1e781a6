//! The refresh: the buckets the credentials own, listed (a call per 1,000), and the six
//! settings of each tenant's bucket that exists, many buckets at once.

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;

use crate::model::attrs::Attrs;
use crate::model::resource::Kind;
use crate::slug::Slug;
use crate::targets::provider::{LiveFleet, Owner, Provider, ProviderError, RefreshTarget};

use super::{settings, S3Buckets};

impl S3Buckets {
    /// Every bucket the credentials own, with its region when the store says.
    pub(super) async fn list_owned(
        &self,
    ) -> Result<HashMap<String, Option<String>>, ProviderError> {
        let client = self.store.client("").await?;
        let mut owned = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_buckets()
                .max_buckets(1000)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| crate::clients::s3::client::error("ListBuckets", "the account", e))?;
            for b in out.buckets() {
                if let Some(name) = b.name() {
                    owned.insert(name.to_string(), b.bucket_region().map(str::to_string));
                }
            }
            match out.continuation_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(owned),
            }
        }
    }

    /// Reads one existing bucket: its region (from the listing, or asked), then settings.
    pub(super) async fn read_bucket(
        &self,
        name: String,
        listed_region: Option<String>,
    ) -> Result<Option<(Attrs, Owner)>, ProviderError> {
        let tenant_regions = self.store.config().tenant_regions;
        let region = match listed_region {
            Some(r) => r,
            None if tenant_regions => {
                let out = self
                    .store
                    .client("")
                    .await?
                    .get_bucket_location()
                    .bucket(&name)
                    .send()
                    .await
                    .map_err(|e| {
                        crate::clients::s3::client::error("GetBucketLocation", &name, e)
                    })?;
                // S3 reports us-east-1 as no constraint at all.
                match out.location_constraint().map(|c| c.as_str()) {
                    None | Some("") => "us-east-1".to_string(),
                    // Buckets made long ago in Ireland answer with the old name.
                    Some("EU") => "eu-west-1".to_string(),
                    Some(r) => r.to_string(),
                }
            }
            None => String::new(),
        };
        let client = self
            .store
            .client(if tenant_regions { &region } else { "" })
            .await?;
        let Some((mut attrs, owner)) =
            settings::read(&client, &name, &self.store.config().app_principal).await?
        else {
            return Ok(None);
        };
        attrs.insert("name", json!(name));
        if tenant_regions {
            attrs.insert("location", json!(region));
        }
        Ok(Some((attrs, owner)))
    }

    pub(super) async fn refresh_fleet(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let before = self.store.calls();
        let owned = self.list_owned().await?;
        let found: Vec<(Slug, String, Option<String>)> = targets
            .iter()
            .filter_map(|t| {
                let name = t.buckets.iter().find(|n| owned.contains_key(*n))?;
                Some((t.slug.clone(), name.clone(), owned[name].clone()))
            })
            .collect();
        let read: Vec<(Slug, Option<(Attrs, Owner)>)> = stream::iter(found)
            .map(|(slug, name, region)| async move {
                Ok::<_, ProviderError>((slug, self.read_bucket(name, region).await?))
            })
            .buffer_unordered(self.store.config().concurrency)
            .try_collect()
            .await?;
        for (slug, found) in read {
            if let Some((attrs, owner)) = found {
                let purging = targets.iter().any(|t| t.slug == slug && t.purge);
                if purging {
                    let what = match self.holdings(&attrs).await {
                        Ok(what) => what,
                        Err(e) => format!("not counted: {}", crate::causes::chain(&e)),
                    };
                    live.holds(&slug, Kind::BUCKET, what);
                }
                live.insert_owned(&slug, Kind::BUCKET, attrs, owner);
            }
        }
        live.calls.push((self.name(), self.store.calls() - before));
        Ok(())
    }
}
