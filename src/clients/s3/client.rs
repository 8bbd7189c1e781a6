//! The S3 connection the bucket target and the s3 state backend share: one SDK config from
//! the standard AWS chain and the `s3` block, a client per region, a count of requests
//! sent, and errors turned into messages that name the call and the bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;

use crate::clients::error::ProviderError;
use crate::clients::s3::S3Config;

/// Attempts per request, counting the first. The SDK retries throttling (503 SlowDown),
/// 5xx responses, timeouts and dropped connections with exponential backoff and jitter.
pub(crate) const MAX_ATTEMPTS: u32 = 6;

/// The retry quota of an AWS client of this tool: none beyond each request's attempts. The
/// SDK's default bucket (500 tokens, 5 a retry and 10 a timeout's, shared process-wide) is
/// made for services that run for days; one apply under load (a slow store answering past
/// `request_timeout`) drained it, and a throttled CreateBucket then failed its tenant at its
/// first attempt. Each request is still bounded by `MAX_ATTEMPTS` and its backoff.
pub(crate) fn retry_partition(service: &'static str) -> aws_sdk_s3::config::retry::RetryPartition {
    use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
    RetryPartition::custom(service)
        .token_bucket(TokenBucket::unlimited())
        .build()
}

pub struct S3Store {
    config: S3Config,
    base: tokio::sync::OnceCell<aws_sdk_s3::Config>,
    clients: Mutex<HashMap<String, Client>>,
    calls: Arc<AtomicUsize>,
}

impl S3Store {
    pub fn new(config: S3Config) -> S3Store {
        S3Store {
            config,
            base: tokio::sync::OnceCell::new(),
            clients: Mutex::new(HashMap::new()),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Requests sent so far, retries included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Loaded on first use, so a run that touches no bucket never reads AWS profiles.
    async fn base(&self) -> Result<&aws_sdk_s3::Config, ProviderError> {
        self.base
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.config.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some(endpoint) = &self.config.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                let sdk = loader.load().await;
                if sdk.region().is_none() {
                    return Err(ProviderError::Setting(
                        "no AWS region is set\n  hint: set region in the s3 block of tenant-reconcile.hcl, or AWS_REGION".into(),
                    ));
                }
                let mut config = aws_sdk_s3::config::Builder::from(&sdk);
                if sdk.endpoint_url().is_some() {
                    // S3-compatible stores (older MinIO, Ceph RGW) refuse the checksums the
                    // SDK adds by default; send them only where S3 requires one.
                    config = config
                        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
                }
                Ok(config
                    .force_path_style(self.config.force_path_style)
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(MAX_ATTEMPTS)
                            .with_initial_backoff(Duration::from_millis(100)),
                    )
                    .retry_partition(retry_partition("tenant-reconcile-s3"))
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_attempt_timeout(self.config.request_timeout())
                            .build(),
                    )
                    .interceptor(CountRequests(self.calls.clone()))
                    .build())
            })
            .await
    }

    /// The client for buckets in `region` ("" for the configured region). A bucket's
    /// requests must be signed for its own region, so each region gets a client.
    pub async fn client(&self, region: &str) -> Result<Client, ProviderError> {
        let base = self.base().await?;
        let mut clients = self
            .clients
            .lock()
            .expect("the client cache is never poisoned");
        if let Some(c) = clients.get(region) {
            return Ok(c.clone());
        }
        let mut config = base.to_builder();
        if !region.is_empty() {
            config = config.region(Region::new(region.to_string()));
        }
        let client = Client::from_conf(config.build());
        clients.insert(region.to_string(), client.clone());
        Ok(client)
    }
}

#[derive(Debug)]
pub struct CountRequests(pub Arc<AtomicUsize>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The error code of a failed call: the service's (`NoSuchBucket`), or the HTTP status for
/// a HEAD request, whose answer has no body to carry a code.
pub fn code<E: ProvideErrorMetadata>(e: &SdkError<E>) -> Option<String> {
    if let Some(code) = e.code() {
        return Some(code.to_string());
    }
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16().to_string()),
        _ => None,
    }
}

/// A failed call as a message naming what was asked: `S3 PutBucketTagging on tenant-acme:
/// AccessDenied: Access Denied`.
pub fn error<E>(call: &str, target: &str, e: SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    aws_error("S3", "s3.endpoint or AWS_ENDPOINT_URL", call, target, e)
}

/// A failed call of any AWS service (`service`: `S3`, `Route53`), with where its endpoint is
/// set for the hint of a call that reached nothing.
pub fn aws_error<E>(
    service: &str,
    endpoint_setting: &str,
    call: &str,
    target: &str,
    e: SdkError<E>,
) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match (e.code(), e.message().filter(|m| !m.is_empty())) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => match &e {
            SdkError::ServiceError(s) => format!("HTTP {}", s.raw().status().as_u16()),
            // Connection, timeout and credential problems: the chain of causes says which.
            other => causes(other),
        },
    };
    let hint = if detail.contains("no credentials found")
        || detail.contains("credentials not loaded")
    {
        "\n  hint: no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".to_string()
    } else if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) {
        format!(
            "\n  hint: check the endpoint ({endpoint_setting}) and that the service is reachable"
        )
    } else {
        String::new()
    };
    ProviderError::Service {
        code: e.code().map(str::to_string),
        message: format!("{service} {call} on {target}: {detail}{hint}"),
    }
}

/// An error and its causes, each once, as `a: b: c`. (The SDK's own rendering appends a
/// debug dump of the whole error, which is no message for a person.)
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// An object read whole: its body, its ETag, and when it was last written (the store's
/// clock).
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub etag: String,
    pub modified: Option<std::time::SystemTime>,
}

/// An object, or `None` when there is no such object: for the small objects this tool reads
/// whole (state, locks, manifests).
pub async fn get(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Fetched>, ProviderError> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let etag = out.e_tag().unwrap_or_default().to_string();
            let modified = out
                .last_modified()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok());
            let body = out
                .body
                .collect()
                .await
                .map_err(ProviderError::failed(format!(
                    "S3 GetObject on {bucket}/{key}"
                )))?;
            Ok(Some(Fetched {
                bytes: body.into_bytes().to_vec(),
                etag,
                modified,
            }))
        }
        Err(e) if matches!(code(&e).as_deref(), Some("NoSuchKey")) => Ok(None),
        Err(e) => Err(error("GetObject", &format!("{bucket}/{key}"), e)),
    }
}

/// An object's body, or `None` when there is no such object ([`get`]).
pub async fn get_bytes(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, ProviderError> {
    Ok(get(client, bucket, key).await?.map(|f| f.bytes))
}

/// The keys of `bucket` under `prefix`, a page at a time.
pub async fn keys(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, ProviderError> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| error("ListObjectsV2", bucket, e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    Ok(keys)
}
