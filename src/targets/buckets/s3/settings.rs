//! A bucket's settings read back as the attributes `bucket::desired` asks for, and written
//! from them, one S3 call per setting.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, Tag, Tagging, Transition, TransitionStorageClass,
};
use aws_sdk_s3::Client;
use serde_json::{json, Map, Value};

use crate::clients::s3::client::{code, error};
use crate::model::attrs::Attrs;
use crate::targets::buckets as bucket;
use crate::targets::provider::{Owner, ProviderError};

/// The statement a suspended tenant's bucket policy carries, found again by its id.
pub const SUSPEND_SID: &str = "TenantReconcileSuspended";

/// What refresh reads of one existing bucket, and whose its mark says it is. `None` when it
/// vanished meanwhile.
pub async fn read(
    client: &Client,
    name: &str,
    app_principal: &str,
) -> Result<Option<(Attrs, Owner)>, ProviderError> {
    let (encryption, public_access, versioning, lifecycle, tags, access) = tokio::join!(
        read_encryption(client, name),
        read_public_access(client, name),
        read_versioning(client, name),
        read_lifecycle(client, name),
        read_tags(client, name),
        read_access(client, name, app_principal),
    );
    let (tags, owner) = match tags {
        Ok((tags, mark)) => (Ok(tags), Owner::from_text(mark.as_deref())),
        Err(Gone) => return Ok(None),
    };
    let mut attrs = Attrs::new();
    for (field, value) in [
        ("encryption", encryption),
        ("public_access", public_access),
        ("versioning", versioning),
        ("lifecycle", lifecycle),
        ("tags", tags),
        ("access", access),
    ] {
        match value {
            Ok(v) => {
                attrs.insert(field, v);
            }
            Err(Gone) => return Ok(None),
        }
    }
    Ok(Some((attrs, owner)))
}

/// The bucket was deleted between listing and reading it.
struct Gone;

type Read = Result<Value, Gone>;

/// Sorts a settings read: the "not configured" code gives `absent`; a missing bucket is
/// [`Gone`]; any other failure is shown as the setting's value, so the plan says what could
/// not be read instead of failing the whole refresh.
fn outcome<T, E>(
    result: Result<T, aws_sdk_s3::error::SdkError<E>>,
    not_configured: &str,
    absent: Value,
    present: impl FnOnce(T) -> Value,
) -> Read
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    match result {
        Ok(out) => Ok(present(out)),
        Err(e) => match code(&e).as_deref() {
            Some("NoSuchBucket") | Some("404") => Err(Gone),
            Some(c) if c == not_configured => Ok(absent),
            other => Ok(json!(format!(
                "unreadable ({})",
                other.unwrap_or("no answer")
            ))),
        },
    }
}

async fn read_encryption(client: &Client, name: &str) -> Read {
    let r = client.get_bucket_encryption().bucket(name).send().await;
    outcome(
        r,
        "ServerSideEncryptionConfigurationNotFoundError",
        json!("none"),
        |out| {
            let default = out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default());
            json!(match default {
                Some(d) => match (d.sse_algorithm().as_str(), d.kms_master_key_id()) {
                    ("aws:kms", Some(key)) => format!("aws:kms {key}"),
                    (alg, _) => alg.to_string(),
                },
                None => "none".to_string(),
            })
        },
    )
}

async fn read_public_access(client: &Client, name: &str) -> Read {
    let r = client.get_public_access_block().bucket(name).send().await;
    outcome(
        r,
        "NoSuchPublicAccessBlockConfiguration",
        json!("open"),
        |out| {
            let c = out.public_access_block_configuration();
            let switches = [
                ("block_public_acls", c.and_then(|c| c.block_public_acls())),
                ("ignore_public_acls", c.and_then(|c| c.ignore_public_acls())),
                (
                    "block_public_policy",
                    c.and_then(|c| c.block_public_policy()),
                ),
                (
                    "restrict_public_buckets",
                    c.and_then(|c| c.restrict_public_buckets()),
                ),
            ];
            let off: Vec<&str> = switches
                .iter()
                .filter(|(_, on)| *on != Some(true))
                .map(|(name, _)| *name)
                .collect();
            json!(match off.len() {
                0 => bucket::PUBLIC_ACCESS_BLOCKED.to_string(),
                4 => "open".to_string(),
                _ => format!("partly open ({} off)", off.join(", ")),
            })
        },
    )
}

async fn read_versioning(client: &Client, name: &str) -> Read {
    let r = client.get_bucket_versioning().bucket(name).send().await;
    outcome(r, "", json!(bucket::VERSIONING_OFF), |out| {
        json!(match out.status() {
            Some(BucketVersioningStatus::Enabled) => bucket::VERSIONING_ON,
            // Never enabled, or suspended: new objects get no versions either way.
            _ => bucket::VERSIONING_OFF,
        })
    })
}

async fn read_lifecycle(client: &Client, name: &str) -> Read {
    let r = client
        .get_bucket_lifecycle_configuration()
        .bucket(name)
        .send()
        .await;
    outcome(r, "NoSuchLifecycleConfiguration", json!([]), |out| {
        json!(describe_rules(out.rules()))
    })
}

/// Live lifecycle rules in the sentences `bucket::lifecycle` uses, so rules we wrote read
/// the same and anything else stands out in the plan.
fn describe_rules(rules: &[LifecycleRule]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        let id = r.id().unwrap_or("(no id)");
        let whole_bucket = r.filter().is_none_or(|f| {
            f.prefix().unwrap_or("").is_empty() && f.tag().is_none() && f.and().is_none()
        });
        if r.status() != &ExpirationStatus::Enabled {
            out.push(format!("rule {id}: disabled"));
            continue;
        }
        if !whole_bucket {
            out.push(format!("rule {id}: applies to part of the bucket"));
            continue;
        }
        let mut known = false;
        if let Some(days) = r
            .noncurrent_version_expiration()
            .and_then(|n| n.noncurrent_days())
        {
            out.push(bucket::expire_noncurrent(days.max(0) as u32));
            known = true;
        }
        for t in r.transitions() {
            if let (Some(days), Some(class)) = (t.days(), t.storage_class()) {
                out.push(bucket::transition(days.max(0) as u32, class.as_str()));
                known = true;
            }
        }
        if let Some(days) = r.expiration().and_then(|e| e.days()) {
            out.push(format!("expire objects after {days} days"));
            known = true;
        }
        if !known {
            out.push(format!("rule {id}: not a rule tenant-reconcile writes"));
        }
    }
    out.sort();
    out
}

/// Whose the bucket is, when this account has a bucket of that name; `None` when it has
/// none (or cannot read it: another account's, which CreateBucket then reports).
pub async fn existing_owner(client: &Client, name: &str) -> Result<Option<Owner>, ProviderError> {
    match client.get_bucket_tagging().bucket(name).send().await {
        Ok(out) => Ok(Some(Owner::from_text(
            out.tag_set()
                .iter()
                .find(|t| t.key() == bucket::STATE_TAG)
                .map(|t| t.value()),
        ))),
        Err(e) => match code(&e).as_deref() {
            Some("NoSuchTagSet") => Ok(Some(Owner::Unmarked)),
            Some("NoSuchBucket") | Some("404") | Some("AccessDenied") | Some("403") => Ok(None),
            _ => Err(error("GetBucketTagging", name, e)),
        },
    }
}

/// Our tags, and the mark of ownership (the state tag) when there is one.
async fn read_tags(client: &Client, name: &str) -> Result<(Value, Option<String>), Gone> {
    let r = client.get_bucket_tagging().bucket(name).send().await;
    let mut mark = None;
    let tags = outcome(r, "NoSuchTagSet", json!({}), |out| {
        mark = out
            .tag_set()
            .iter()
            .find(|t| t.key() == bucket::STATE_TAG)
            .map(|t| t.value().to_string());
        let tags: Map<String, Value> = out
            .tag_set()
            .iter()
            .filter(|t| bucket::TAG_KEYS.contains(&t.key()))
            .map(|t| (t.key().to_string(), json!(t.value())))
            .collect();
        Value::Object(tags)
    })?;
    Ok((tags, mark))
}

async fn read_access(client: &Client, name: &str, app_principal: &str) -> Read {
    let r = client.get_bucket_policy().bucket(name).send().await;
    outcome(r, "NoSuchBucketPolicy", json!(bucket::ACCESS_OPEN), |out| {
        let ours: Option<Value> = out
            .policy()
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|p| statements(&p).into_iter().find(is_ours));
        json!(match ours {
            None => bucket::ACCESS_OPEN.to_string(),
            // Ours as written now, or for another principal (app_principal changed, or the
            // statement was edited by hand): then it is written again.
            Some(s) if denies(&s, app_principal) => bucket::ACCESS_DENIED.to_string(),
            Some(_) => format!("{} (for another principal)", bucket::ACCESS_DENIED),
        })
    })
}

/// Whether a statement denies `principal`. Stores may hand `*` back as `{"AWS": "*"}`
/// and a single principal as a list, so both shapes are read.
fn denies(statement: &Value, principal: &str) -> bool {
    let named: Vec<&str> = match statement.get("Principal") {
        Some(Value::String(p)) => vec![p.as_str()],
        Some(Value::Object(m)) => match m.get("AWS") {
            Some(Value::String(p)) => vec![p.as_str()],
            Some(Value::Array(ps)) => ps.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    statement.get("Effect").and_then(Value::as_str) == Some("Deny") && named == [principal]
}

fn statements(policy: &Value) -> Vec<Value> {
    match policy.get("Statement") {
        Some(Value::Array(s)) => s.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn is_ours(statement: &Value) -> bool {
    statement.get("Sid").and_then(Value::as_str) == Some(SUSPEND_SID)
}

/// Where a setting is written, and by whom it is read.
pub struct Target<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub app_principal: &'a str,
    /// Created by this very step: it has no tags or policy of anyone else's to keep.
    pub new: bool,
    /// The mark of ownership, written as the state tag with the others.
    pub mark: &'a str,
}

/// Writes one setting. Called for each field a change names (all of them for a new bucket).
pub async fn write(to: &Target<'_>, field: &str, attrs: &Attrs) -> Result<(), ProviderError> {
    let (client, name) = (to.client, to.bucket);
    match field {
        "encryption" => write_encryption(client, name, attrs.str("encryption")).await,
        "public_access" => write_public_access(client, name).await,
        "versioning" => write_versioning(client, name, attrs.str("versioning")).await,
        "lifecycle" => write_lifecycle(client, name, attrs.get("lifecycle")).await,
        "tags" => write_tags(client, name, attrs.get("tags"), to.mark, to.new).await,
        "access" => write_access(client, name, attrs.str("access"), to.app_principal).await,
        // name and location are the bucket itself; a change to them is a new bucket.
        _ => Ok(()),
    }
}

/// The fields of a freshly created bucket that already read as asked, so creating one
/// does not send calls that change nothing.
pub fn default_of_new_bucket(field: &str, attrs: &Attrs) -> bool {
    match field {
        "versioning" => attrs.str("versioning") == bucket::VERSIONING_OFF,
        "lifecycle" => attrs
            .get("lifecycle")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty),
        "access" => attrs.str("access") == bucket::ACCESS_OPEN,
        "name" | "location" => true,
        _ => false,
    }
}

async fn write_encryption(client: &Client, name: &str, wanted: &str) -> Result<(), ProviderError> {
    let (algorithm, key) = match wanted.split_once(' ') {
        Some((alg, key)) => (alg, Some(key)),
        None => (wanted, None),
    };
    let default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::from(algorithm))
        .set_kms_master_key_id(key.map(str::to_string))
        .build()
        .map_err(build_error)?;
    let config = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(default)
                .bucket_key_enabled(key.is_some())
                .build(),
        )
        .build()
        .map_err(build_error)?;
    client
        .put_bucket_encryption()
        .bucket(name)
        .server_side_encryption_configuration(config)
        .send()
        .await
        .map(drop)
        .map_err(|e| error("PutBucketEncryption", name, e))
}

async fn write_public_access(client: &Client, name: &str) -> Result<(), ProviderError> {
    let config = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    client
        .put_public_access_block()
        .bucket(name)
        .public_access_block_configuration(config)
        .send()
        .await
        .map(drop)
        .map_err(|e| error("PutPublicAccessBlock", name, e))
}

async fn write_versioning(client: &Client, name: &str, wanted: &str) -> Result<(), ProviderError> {
    // A bucket that was ever versioned can only be suspended, never unversioned again.
    let status = if wanted == bucket::VERSIONING_ON {
        BucketVersioningStatus::Enabled
    } else {
        BucketVersioningStatus::Suspended
    };
    client
        .put_bucket_versioning()
        .bucket(name)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(status)
                .build(),
        )
        .send()
        .await
        .map(drop)
        .map_err(|e| error("PutBucketVersioning", name, e))
}

async fn write_lifecycle(
    client: &Client,
    name: &str,
    wanted: Option<&Value>,
) -> Result<(), ProviderError> {
    let sentences: Vec<&str> = wanted
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if sentences.is_empty() {
        return client
            .delete_bucket_lifecycle()
            .bucket(name)
            .send()
            .await
            .map(drop)
            .map_err(|e| error("DeleteBucketLifecycle", name, e));
    }
    let mut rules = Vec::new();
    for sentence in sentences {
        rules.push(rule(sentence)?);
    }
    let config = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .map_err(build_error)?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(config)
        .send()
        .await
        .map(drop)
        .map_err(|e| error("PutBucketLifecycleConfiguration", name, e))
}

/// The S3 rule for one of `bucket::lifecycle`'s sentences (the plan's attributes are the
/// whole truth, so a saved plan applies exactly what it shows).
fn rule(sentence: &str) -> Result<LifecycleRule, ProviderError> {
    let whole_bucket = LifecycleRuleFilter::builder().prefix("").build();
    let unknown = || ProviderError::Unplanned(format!("unknown lifecycle rule {sentence:?}"));
    let builder = LifecycleRule::builder()
        .status(ExpirationStatus::Enabled)
        .filter(whole_bucket);
    let built = match bucket::parse_rule(sentence).ok_or_else(unknown)? {
        bucket::Rule::ExpireNoncurrent { days } => builder
            .id(format!("expire-noncurrent-{days}d"))
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(days as i32)
                    .build(),
            ),
        bucket::Rule::Transition { days, class } => builder
            .id(format!("{}-{days}d", class.to_lowercase()))
            .transitions(
                Transition::builder()
                    .days(days as i32)
                    .storage_class(TransitionStorageClass::from(class.as_str()))
                    .build(),
            ),
    };
    built.build().map_err(build_error)
}

async fn write_tags(
    client: &Client,
    name: &str,
    wanted: Option<&Value>,
    mark: &str,
    new: bool,
) -> Result<(), ProviderError> {
    // S3 only replaces the whole set: ours are set, everyone else's kept (a bucket made
    // by this very step has none).
    let mut merged = Map::new();
    if !new {
        match client.get_bucket_tagging().bucket(name).send().await {
            Ok(out) => merged.extend(
                out.tag_set()
                    .iter()
                    .filter(|t| !bucket::TAG_KEYS.contains(&t.key()))
                    .map(|t| (t.key().to_string(), json!(t.value()))),
            ),
            Err(e) if code(&e).as_deref() == Some("NoSuchTagSet") => {}
            Err(e) => return Err(error("GetBucketTagging", name, e)),
        }
    }
    if let Some(ours) = wanted.and_then(Value::as_object) {
        merged.extend(ours.clone());
    }
    merged.insert(bucket::STATE_TAG.to_string(), json!(mark));
    let mut tags = Vec::new();
    for (key, value) in &merged {
        tags.push(
            Tag::builder()
                .key(key)
                .value(value.as_str().unwrap_or_default())
                .build()
                .map_err(build_error)?,
        );
    }
    let tagging = Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(build_error)?;
    client
        .put_bucket_tagging()
        .bucket(name)
        .tagging(tagging)
        .send()
        .await
        .map(drop)
        .map_err(|e| error("PutBucketTagging", name, e))
}

/// Suspending adds our deny statement to whatever policy the bucket has; resuming takes
/// only ours out again, so statements others put there survive both.
pub async fn write_access(
    client: &Client,
    name: &str,
    wanted: &str,
    app_principal: &str,
) -> Result<(), ProviderError> {
    let current = match client.get_bucket_policy().bucket(name).send().await {
        Ok(out) => out
            .policy()
            .and_then(|p| serde_json::from_str::<Value>(p).ok()),
        Err(e) if code(&e).as_deref() == Some("NoSuchBucketPolicy") => None,
        Err(e) => return Err(error("GetBucketPolicy", name, e)),
    };
    let mut kept: Vec<Value> = current
        .as_ref()
        .map(statements)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !is_ours(s))
        .collect();
    if wanted == bucket::ACCESS_DENIED {
        kept.push(suspend_statement(name, app_principal));
    }
    if kept.is_empty() {
        return client
            .delete_bucket_policy()
            .bucket(name)
            .send()
            .await
            .map(drop)
            .map_err(|e| error("DeleteBucketPolicy", name, e));
    }
    let policy = json!({ "Version": "2012-10-17", "Statement": kept });
    client
        .put_bucket_policy()
        .bucket(name)
        .policy(policy.to_string())
        .send()
        .await
        .map(drop)
        .map_err(|e| error("PutBucketPolicy", name, e))
}

fn suspend_statement(name: &str, app_principal: &str) -> Value {
    let principal = if app_principal == "*" {
        json!("*")
    } else {
        json!({ "AWS": app_principal })
    };
    json!({
        "Sid": SUSPEND_SID,
        "Effect": "Deny",
        "Principal": principal,
        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
        "Resource": [format!("arn:aws:s3:::{name}"), format!("arn:aws:s3:::{name}/*")],
    })
}

fn build_error(e: aws_sdk_s3::error::BuildError) -> ProviderError {
    ProviderError::failed("building an S3 request")(e)
}
