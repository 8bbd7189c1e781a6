//! Exports kept in an S3 bucket (`offboarding { export_to = "s3://bucket/prefix" }`): a
//! tenant's export is written locally first (hashed as it is written), then uploaded under
//! `<prefix>/<slug>/`, its manifest last, so an export with a manifest is a whole one there
//! too. The owner downloads it through presigned links (`export-url`), which are never
//! stored.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};

use crate::clients::s3::client::{self, S3Store};
use crate::export::sink::{Manifest, MANIFEST_FILE};
use crate::slug::Slug;
use crate::targets::provider::ProviderError;

/// The claim object: the id of the tenant whose export is under the prefix.
const CLAIM: &str = ".tenant-reconcile-export";

/// SigV4 signs a link for at most seven days.
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct S3Exports {
    store: Arc<S3Store>,
    bucket: String,
    /// Without slashes at either end; may be empty.
    prefix: String,
}

impl S3Exports {
    /// `s3://bucket/prefix` (checked when the config was loaded), or `None` for a folder.
    pub fn parse(store: Arc<S3Store>, export_to: &str) -> Option<S3Exports> {
        let rest = export_to.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some(S3Exports {
            store,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The key of `file` in the tenant's export. The slug is `[a-z0-9-]`, and the files are
    /// the export's own names (`tables/x.csv`, objects %-escaped by `export::sink::object_path`).
    fn key(&self, slug: &Slug, file: &str) -> String {
        match self.prefix.as_str() {
            "" => format!("{slug}/{file}"),
            p => format!("{p}/{slug}/{file}"),
        }
    }

    fn folder(&self, slug: &Slug) -> String {
        self.key(slug, "")
    }

    async fn client(&self) -> Result<aws_sdk_s3::Client, ProviderError> {
        self.store.client("").await
    }

    /// An object's text, or `None` when there is none.
    async fn text(&self, key: &str) -> Result<Option<String>, ProviderError> {
        let bytes = client::get_bytes(&self.client().await?, &self.bucket, key).await?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The manifest of the tenant's export, as written.
    pub async fn manifest(&self, slug: &Slug) -> Result<Option<String>, ProviderError> {
        self.text(&self.key(slug, MANIFEST_FILE)).await
    }

    /// What of the export does not match its manifest: each file read back and hashed.
    pub async fn problems(
        &self,
        slug: &Slug,
        manifest: &Manifest,
    ) -> Result<Vec<String>, ProviderError> {
        let client = self.client().await?;
        let mut problems = Vec::new();
        for (file, sha256) in manifest.files() {
            let key = self.key(slug, file);
            let out = match client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    problems.push(format!(
                        "{file}: {}",
                        crate::causes::chain(&client::error("GetObject", &key, e))
                    ));
                    continue;
                }
            };
            let mut hasher = Sha256::new();
            let mut body = out.body;
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| ProviderError::failed(format!("read s3://{}/{key}", self.bucket))(e))?
            {
                hasher.update(&chunk);
            }
            let found = hex::encode(hasher.finalize());
            if found != sha256 {
                problems.push(format!("{file}: sha256 {found}, manifest {sha256}"));
            }
        }
        Ok(problems)
    }

    /// The keys under the tenant's export prefix.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        client::keys(&self.client().await?, &self.bucket, prefix).await
    }

    /// Deletes the tenant's export and those set aside beside it (`<slug>.<time>/`), each
    /// only where its claim object names `tenant_id`.
    pub async fn remove(&self, slug: &Slug, tenant_id: &str) -> Result<(), ProviderError> {
        let folder = self.folder(slug);
        // `<prefix>/<slug>` without its slash lists the set-aside prefixes too; a key is
        // one of this tenant's when its folder is the slug's or `<slug>.<…>`.
        let base = folder.trim_end_matches('/');
        let keys = self.keys(base).await?;
        let mut folders: Vec<&str> = keys
            .iter()
            .filter_map(|k| Some(&k[..base.len() + k[base.len()..].find('/')? + 1]))
            .filter(|f| *f == folder || f[base.len()..].starts_with('.'))
            .collect();
        folders.dedup();
        let client = self.client().await?;
        for f in folders {
            let claimed = self.text(&format!("{f}{CLAIM}")).await?;
            if claimed.as_deref().map(str::trim) != Some(tenant_id) {
                continue;
            }
            // The claim goes last, so a run stopped midway still knows the rest is ours.
            let mut mine: Vec<&String> = keys.iter().filter(|k| k.starts_with(f)).collect();
            mine.sort_by_key(|k| k.ends_with(CLAIM));
            for key in mine {
                client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .send()
                    .await
                    .map_err(|e| client::error("DeleteObject", &self.bucket, e))?;
            }
        }
        Ok(())
    }

    /// Makes the tenant's prefix its own before an export is uploaded: empty, or claimed by
    /// it already. A whole export there is copied aside first (`<slug>.<time>/`) when the
    /// tenant is exported anew; anything not claimed by it is refused and left as it is.
    pub async fn claim(
        &self,
        slug: &Slug,
        tenant_id: &str,
        anew: bool,
    ) -> Result<(), ProviderError> {
        let folder = self.folder(slug);
        let keys = self.keys(&folder).await?;
        let client = self.client().await?;
        if !keys.is_empty() {
            let claimed = self.text(&self.key(slug, CLAIM)).await?;
            if claimed.as_deref().map(str::trim) != Some(tenant_id) {
                return Err(ProviderError::NotOurs(format!(
                    "s3://{}/{folder} holds objects that are not this tenant's export; they were left as they are\n  hint: move them away, or point offboarding.export_to at a prefix of exports only",
                    self.bucket
                )));
            }
            let whole = keys.iter().any(|k| k.ends_with(MANIFEST_FILE));
            // A prefix no earlier set-aside holds: copying onto one would overwrite it.
            let mut aside = String::new();
            if anew && whole {
                for name in crate::export::sink::aside_names(folder.trim_end_matches('/')) {
                    aside = format!("{name}/");
                    if self.keys(&aside).await?.is_empty() {
                        break;
                    }
                }
            }
            for key in &keys {
                if anew && whole {
                    client
                        .copy_object()
                        .bucket(&self.bucket)
                        .copy_source(format!("{}/{key}", self.bucket))
                        .key(format!("{aside}{}", &key[folder.len()..]))
                        .send()
                        .await
                        .map_err(|e| client::error("CopyObject", &self.bucket, e))?;
                }
                if anew || !whole {
                    client
                        .delete_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .send()
                        .await
                        .map_err(|e| client::error("DeleteObject", &self.bucket, e))?;
                }
            }
        }
        self.put(
            &self.key(slug, CLAIM),
            ByteStream::from(format!("{tenant_id}\n").into_bytes()),
        )
        .await
    }

    async fn put(&self, key: &str, body: ByteStream) -> Result<(), ProviderError> {
        self.client()
            .await?
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map(drop)
            .map_err(|e| client::error("PutObject", &self.bucket, e))
    }

    /// Uploads an export written in `dir`: every file its manifest names, then the
    /// manifest.
    pub async fn upload(
        &self,
        slug: &Slug,
        dir: &Path,
        manifest: &Manifest,
    ) -> Result<(), ProviderError> {
        let files = manifest
            .files()
            .map(|(file, _)| file)
            .chain([MANIFEST_FILE]);
        for file in files {
            let path = dir.join(file);
            // Streamed from the file, not read into memory.
            let body = ByteStream::from_path(&path)
                .await
                .map_err(ProviderError::failed(format!("read {}", path.display())))?;
            self.put(&self.key(slug, file), body).await?;
        }
        Ok(())
    }

    /// Presigned links to every file of the tenant's export, the manifest first, valid for
    /// `lifetime`. Each is a secret: whoever holds it can read the file until it expires.
    pub async fn links(
        &self,
        slug: &Slug,
        manifest: &Manifest,
        lifetime: Duration,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let client = self.client().await?;
        let config = PresigningConfig::expires_in(lifetime)
            .map_err(ProviderError::failed("a link's lifetime"))?;
        let files = std::iter::once(MANIFEST_FILE).chain(manifest.files().map(|(file, _)| file));
        let mut out = Vec::new();
        for file in files {
            let signed = client
                .get_object()
                .bucket(&self.bucket)
                .key(self.key(slug, file))
                .presigned(config.clone())
                .await
                .map_err(|e| client::error("presign GetObject", &self.bucket, e))?;
            out.push((file.to_string(), signed.uri().to_string()));
        }
        Ok(out)
    }
}
