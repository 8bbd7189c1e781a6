//! The `s3` block: where the S3-compatible store is, and how buckets on it are named.

pub mod client;

use serde::Deserialize;

use crate::clients::SettingProblem;

/// The `s3` block: the S3-compatible store tenant buckets (and the s3 state backend) use.
/// Credentials are never here: they come from the standard AWS chain (environment,
/// profile, instance role).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint URL; without it the standard AWS_ENDPOINT_URL, then AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for; without it AWS_REGION or the profile's.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket`), which MinIO and most local stores need.
    #[serde(default)]
    pub force_path_style: bool,
    /// The bucket name pattern: `{prefix}`, `{slug}` and `{region}` are replaced.
    #[serde(default = "default_bucket_name")]
    pub bucket_name: String,
    /// What `{prefix}` stands for in `bucket_name`.
    #[serde(default = "default_bucket_prefix")]
    pub bucket_prefix: String,
    /// Create each bucket in its tenant's region (AWS). Off for stores with one region
    /// (MinIO, R2), where every bucket goes to `region`.
    #[serde(default = "default_true")]
    pub tenant_regions: bool,
    /// Default encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS, with `kms_key_id`).
    #[serde(default = "default_sse")]
    pub encryption: String,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Who a suspended tenant's bucket policy denies: the application's IAM principal
    /// (an ARN), or `*` for everyone (an explicit deny binds administrators too; only the
    /// account's root user can still change the policy).
    #[serde(default = "default_app_principal")]
    pub app_principal: String,
    /// Requests in flight at once while reading the fleet's buckets.
    #[serde(default = "default_s3_concurrency")]
    pub concurrency: usize,
    /// How long one attempt of a request may take before it is abandoned and tried again.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: None,
            force_path_style: false,
            bucket_name: default_bucket_name(),
            bucket_prefix: default_bucket_prefix(),
            tenant_regions: true,
            encryption: default_sse(),
            kms_key_id: None,
            app_principal: default_app_principal(),
            concurrency: default_s3_concurrency(),
            request_timeout: default_request_timeout(),
        }
    }
}

impl S3Config {
    /// What does not hold in the block's own settings; the buckets' names are the bucket
    /// slot's to check (`targets::buckets::check_naming`).
    pub fn problems(&self) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        let mut problem = |key, message: String, hint| {
            problems.push(SettingProblem {
                key,
                message,
                hint: Some(hint),
            })
        };
        if !["AES256", "aws:kms"].contains(&self.encryption.as_str()) {
            problem(
                "encryption",
                format!("unknown encryption {:?}", self.encryption),
                "encryption can be: AES256, aws:kms",
            );
        }
        if self.encryption == "aws:kms" && self.kms_key_id.is_none() {
            problem(
                "encryption",
                "aws:kms encryption needs kms_key_id".into(),
                "set kms_key_id to the key's ARN or alias",
            );
        }
        if !humantime::parse_duration(&self.request_timeout).is_ok_and(|d| !d.is_zero()) {
            problem(
                "request_timeout",
                format!("{:?} is not a duration", self.request_timeout),
                "write it like 30s or 2m",
            );
        }
        if self.concurrency == 0 {
            problem(
                "concurrency",
                "concurrency must be at least 1".into(),
                "it bounds the requests in flight while reading buckets",
            );
        }
        problems
    }

    /// `request_timeout` as a duration (checked when the file is loaded).
    pub fn request_timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.request_timeout)
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// The bucket a tenant gets from the name pattern (checked by `bucket::check_name`).
    pub fn bucket_for(&self, slug: &str, region: &str) -> String {
        self.bucket_name
            .replace("{prefix}", &self.bucket_prefix)
            .replace("{slug}", slug)
            .replace("{region}", region)
    }
}

fn default_bucket_name() -> String {
    "{prefix}-{slug}-{region}".into()
}

fn default_bucket_prefix() -> String {
    "tenant".into()
}

fn default_true() -> bool {
    true
}

fn default_sse() -> String {
    "AES256".into()
}

fn default_app_principal() -> String {
    "*".into()
}

fn default_s3_concurrency() -> usize {
    32
}

fn default_request_timeout() -> String {
    "30s".into()
}
