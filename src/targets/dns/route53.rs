//! The Route53 target: a CNAME per tenant in one hosted zone, through aws-sdk-route53 with
//! the standard AWS chain.
//!
//! Refresh lists the zone's record sets, 300 a call, whatever the number of tenants. A
//! CNAME can have no other record of its name, so the mark of ownership is a TXT record
//! beside it (`_tenant-reconcile.<name>`), as external-dns keeps its own; a record without
//! our mark is someone else's. Each change is one batch (the record and its mark together,
//! all or nothing), and a step is done only once Route53 reports the change `INSYNC`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::config::Region;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;
use serde_json::json;

use crate::clients::s3::client::{aws_error, retry_partition, CountRequests};
use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange};
use crate::model::resource::{Key, Kind};
use crate::targets::dns;
use crate::targets::dns::Route53Config;
use crate::targets::provider::{
    check_ours, desired_of, LiveFleet, Owner, Provider, ProviderError, Purge, RefreshTarget, Smoke,
    StepContext,
};

const ENDPOINT_SETTING: &str = "route53.endpoint or AWS_ENDPOINT_URL_ROUTE_53";

pub struct Route53Dns {
    config: Route53Config,
    client: tokio::sync::OnceCell<Client>,
    calls: Arc<AtomicUsize>,
}

/// One record set as read: its type, TTL and values, names without the final dot.
#[derive(Debug, Clone)]
struct Found {
    kind: String,
    ttl: Option<i64>,
    values: Vec<String>,
}

/// What the zone holds at a tenant's name and its mark's name.
struct AtName {
    record: Option<Found>,
    mark: Option<Found>,
}

fn plain(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A TXT value as Route53 holds it (`"text"`), without its quotes.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

impl AtName {
    fn owner(&self) -> Owner {
        let text = self
            .mark
            .as_ref()
            .filter(|m| m.kind == "TXT")
            .and_then(|m| m.values.first())
            .map(|v| unquote(v).to_string());
        Owner::from_text(text.as_deref())
    }

    fn attrs(&self, name: &str) -> Option<Attrs> {
        let r = self.record.as_ref()?;
        Some(crate::model::attrs::attrs([
            ("name", json!(name)),
            ("type", json!(r.kind)),
            (
                "value",
                json!(r
                    .values
                    .iter()
                    .map(|v| plain(v))
                    .collect::<Vec<_>>()
                    .join(", ")),
            ),
            ("ttl", json!(r.ttl.unwrap_or(0))),
        ]))
    }
}

impl Route53Dns {
    pub fn new(config: Route53Config) -> Route53Dns {
        Route53Dns {
            config,
            client: tokio::sync::OnceCell::new(),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Loaded on first use, so a run that touches no record reads no AWS profile.
    async fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(endpoint) = &self.config.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                let sdk = loader.load().await;
                let mut config = aws_sdk_route53::config::Builder::from(&sdk)
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(6)
                            .with_initial_backoff(Duration::from_millis(200)),
                    )
                    .retry_partition(retry_partition("tenant-reconcile-route53"))
                    .interceptor(CountRequests(self.calls.clone()));
                // Route53 is global: its calls are signed for us-east-1 whatever the profile says.
                if sdk.region().is_none() {
                    config = config.region(Region::new("us-east-1"));
                }
                Client::from_conf(config.build())
            })
            .await;
        Ok(self.client.get().expect("initialised above"))
    }

    fn zone(&self) -> &str {
        &self.config.zone_id
    }

    /// Every record set of the zone, by name and type, a page of 300 at a time.
    async fn list_zone(&self) -> Result<HashMap<(String, String), Found>, ProviderError> {
        let client = self.client().await?;
        let mut out = HashMap::new();
        let mut next: Option<(String, RrType, Option<String>)> = None;
        loop {
            let mut request = client
                .list_resource_record_sets()
                .hosted_zone_id(self.zone())
                .max_items(300);
            if let Some((name, kind, id)) = next.take() {
                request = request
                    .start_record_name(name)
                    .start_record_type(kind)
                    .set_start_record_identifier(id);
            }
            let page = request.send().await.map_err(|e| {
                aws_error(
                    "Route53",
                    ENDPOINT_SETTING,
                    "ListResourceRecordSets",
                    self.zone(),
                    e,
                )
            })?;
            for set in page.resource_record_sets() {
                out.insert(
                    (plain(set.name()), set.r#type().as_str().to_string()),
                    Found {
                        kind: set.r#type().as_str().to_string(),
                        ttl: set.ttl(),
                        values: set
                            .resource_records()
                            .iter()
                            .map(|r| r.value().to_string())
                            .collect(),
                    },
                );
            }
            match (
                page.is_truncated(),
                page.next_record_name(),
                page.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => {
                    next = Some((
                        name.to_string(),
                        kind.clone(),
                        page.next_record_identifier().map(str::to_string),
                    ))
                }
                _ => return Ok(out),
            }
        }
    }

    /// What the zone holds at `name` now (the record of any type, and its mark), read
    /// for one name rather than the zone.
    async fn read(&self, name: &str) -> Result<AtName, ProviderError> {
        let client = self.client().await?;
        let mut found = AtName {
            record: None,
            mark: None,
        };
        let mark_name = dns::mark_name(name);
        // Names sort by their labels reversed, so a name and `_tenant-reconcile.` + name
        // are not neighbours: each is listed from where it starts.
        for (wanted, into_mark) in [(name.to_string(), false), (mark_name.clone(), true)] {
            let page = client
                .list_resource_record_sets()
                .hosted_zone_id(self.zone())
                .start_record_name(&wanted)
                .max_items(10)
                .send()
                .await
                .map_err(|e| {
                    aws_error(
                        "Route53",
                        ENDPOINT_SETTING,
                        "ListResourceRecordSets",
                        &wanted,
                        e,
                    )
                })?;
            let set = page
                .resource_record_sets()
                .iter()
                .filter(|s| plain(s.name()) == wanted)
                // The record itself may be of any type: another type is still someone's.
                .find(|s| !into_mark || s.r#type() == &RrType::Txt);
            let found_set = set.map(|s| Found {
                kind: s.r#type().as_str().to_string(),
                ttl: s.ttl(),
                values: s
                    .resource_records()
                    .iter()
                    .map(|r| r.value().to_string())
                    .collect(),
            });
            if into_mark {
                found.mark = found_set;
            } else {
                found.record = found_set;
            }
        }
        Ok(found)
    }

    fn record_set(
        name: &str,
        kind: RrType,
        ttl: i64,
        values: &[String],
    ) -> Result<ResourceRecordSet, ProviderError> {
        let records = values
            .iter()
            .map(|v| ResourceRecord::builder().value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ProviderError::failed(format!("a record of {name}")))?;
        ResourceRecordSet::builder()
            .name(name)
            .r#type(kind)
            .ttl(ttl)
            .set_resource_records(Some(records))
            .build()
            .map_err(ProviderError::failed(format!("the record set {name}")))
    }

    fn change(action: ChangeAction, set: ResourceRecordSet) -> Result<Change, ProviderError> {
        Change::builder()
            .action(action)
            .resource_record_set(set)
            .build()
            .map_err(ProviderError::failed("a record change"))
    }

    /// The changes that delete what `at` holds at `name`, exactly as it is (Route53
    /// deletes only a record set given as it stands).
    fn deletions(name: &str, at: &AtName) -> Result<Vec<Change>, ProviderError> {
        let mut out = Vec::new();
        for (set_name, found) in [
            (name.to_string(), &at.record),
            (dns::mark_name(name), &at.mark),
        ] {
            if let Some(f) = found {
                out.push(Self::change(
                    ChangeAction::Delete,
                    Self::record_set(
                        &set_name,
                        RrType::from(f.kind.as_str()),
                        f.ttl.unwrap_or(0),
                        &f.values,
                    )?,
                )?);
            }
        }
        Ok(out)
    }

    /// Sends one batch and waits until Route53 says it is in sync on its servers.
    async fn submit(&self, name: &str, changes: Vec<Change>) -> Result<(), ProviderError> {
        if changes.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let batch = ChangeBatch::builder()
            .comment("tenant-reconcile")
            .set_changes(Some(changes))
            .build()
            .map_err(ProviderError::failed(format!("the change of {name}")))?;
        let out = client
            .change_resource_record_sets()
            .hosted_zone_id(self.zone())
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| {
                aws_error(
                    "Route53",
                    ENDPOINT_SETTING,
                    "ChangeResourceRecordSets",
                    name,
                    e,
                )
            })?;
        let Some(info) = out.change_info() else {
            return Ok(());
        };
        let id = info.id().to_string();
        let mut status = info.status().clone();
        let deadline = Instant::now() + self.config.propagation_timeout();
        let mut pause = Duration::from_millis(500);
        while status != ChangeStatus::Insync {
            if Instant::now() >= deadline {
                return Err(ProviderError::TimedOut(format!(
                    "the change of {name} ({id}) was not in sync within {}; the next apply waits for it again",
                    humantime::format_duration(self.config.propagation_timeout())
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
            let got = client
                .get_change()
                .id(&id)
                .send()
                .await
                .map_err(|e| aws_error("Route53", ENDPOINT_SETTING, "GetChange", &id, e))?;
            status = got
                .change_info()
                .map(|c| c.status().clone())
                .unwrap_or(ChangeStatus::Insync);
        }
        Ok(())
    }

    fn mark_set(name: &str, mark: &str, ttl: i64) -> Result<ResourceRecordSet, ProviderError> {
        Self::record_set(
            &dns::mark_name(name),
            RrType::Txt,
            ttl,
            &[format!("\"{mark}\"")],
        )
    }
}

#[async_trait]
impl Provider for Route53Dns {
    fn name(&self) -> &'static str {
        "route53"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::DNS]
    }

    fn forces_replace(&self, _kind: Kind, field: &str) -> bool {
        dns::forces_replace(field)
    }

    fn replace_keeps_old(&self, _kind: Kind) -> bool {
        // The record under the old name goes in the same change batch.
        false
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let wanted = crate::targets::provider::wanting(targets, Kind::DNS);
        if wanted.is_empty() {
            return Ok(());
        }
        let before = self.calls();
        let zone = self.list_zone().await?;
        // Any record of the tenant's name is found, whatever its type: a CNAME cannot share
        // its name, so an A or TXT record there is a conflict too.
        let mut by_name: HashMap<&str, &Found> = HashMap::new();
        for ((name, kind), found) in &zone {
            if kind == "CNAME" || !by_name.contains_key(name.as_str()) {
                by_name.insert(name, found);
            }
        }
        for t in wanted {
            let name = dns::name(&self.config, &t.slug, &t.region);
            let at = AtName {
                record: by_name.get(name.as_str()).map(|f| (*f).clone()),
                mark: zone
                    .get(&(dns::mark_name(&name), "TXT".to_string()))
                    .cloned(),
            };
            if let Some(attrs) = at.attrs(&name) {
                live.insert_owned(&t.slug, Kind::DNS, attrs, at.owner());
            }
        }
        live.calls.push((self.name(), self.calls() - before));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let attrs = &desired_of(change)?.attrs;
        let name = attrs.str("name");
        let ttl = attrs.get("ttl").and_then(|v| v.as_i64()).unwrap_or(300);
        let at = self.read(name).await?;
        let resource = format!("the record {name}");
        if at.record.is_some() || at.mark.is_some() {
            check_ours(ctx, change, &resource, &at.owner())?;
        }
        let mut changes = Vec::new();
        if change.action == Action::Replace {
            // The old name's record goes with its mark, if they are still ours.
            if let Some(old) = ctx
                .recorded
                .get(&change.key)
                .map(|a| a.str("name").to_string())
            {
                let old_at = self.read(&old).await?;
                if old != name
                    && matches!(old_at.owner(), Owner::Marked(ref m) if ctx.mark.claims(m))
                {
                    changes.extend(Self::deletions(&old, &old_at)?);
                }
            }
        }
        // A record of another type, ours (imported): it makes way, in the same batch.
        let other_type = at
            .record
            .as_ref()
            .is_some_and(|r| r.kind != dns::RECORD_TYPE);
        if other_type {
            let record = AtName {
                record: at.record.clone(),
                mark: None,
            };
            changes.extend(Self::deletions(name, &record)?);
        }
        // A CREATE fails if a record appeared since it was read: nothing is overwritten.
        let action = if at.record.is_none() || other_type {
            ChangeAction::Create
        } else {
            ChangeAction::Upsert
        };
        changes.push(Self::change(
            action,
            Self::record_set(name, RrType::Cname, ttl, &[attrs.str("value").to_string()])?,
        )?);
        changes.push(Self::change(
            ChangeAction::Upsert,
            Self::mark_set(name, &ctx.mark.text(), ttl)?,
        )?);
        self.submit(name, changes).await?;
        Ok(Some(attrs.clone()))
    }

    crate::targets::provider::capabilities!(Purge, Smoke);
}

#[async_trait]
impl Purge for Route53Dns {
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let Some(recorded) = ctx.recorded.get(key) else {
            return Ok(());
        };
        let name = recorded.str("name");
        let at = self.read(name).await?;
        if at.record.is_none() && at.mark.is_none() {
            return Ok(());
        }
        check_ours(
            ctx,
            &crate::targets::provider::purge_change(key),
            &format!("the record {name}"),
            &at.owner(),
        )?;
        self.submit(name, Self::deletions(name, &at)?).await
    }
}

#[async_trait]
impl Smoke for Route53Dns {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(recorded) = ctx.recorded.get(&Key::new(Kind::DNS)) else {
            return Vec::new();
        };
        let started = Instant::now();
        let name = recorded.str("name");
        let verdict = match self.read(name).await {
            Err(e) => Err(crate::causes::chain(&e)),
            Ok(at) => match at.attrs(name) {
                Some(live) if live.str("value") == recorded.str("value") => Ok(format!(
                    "{name} points to {} in the zone",
                    recorded.str("value")
                )),
                Some(live) => Err(format!(
                    "{name} points to {}, not {}",
                    live.str("value"),
                    recorded.str("value")
                )),
                None => Err(format!("{name} is not in the zone")),
            },
        };
        vec![crate::model::health::CheckOutcome::of(
            "dns", started, verdict,
        )]
    }
}
