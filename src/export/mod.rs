//! A tenant's data written out in a form the customer can load again: a CSV file with a
//! header per table of its slice, a copy of each object of its bucket, and `manifest.json`
//! saying what each file is, how many rows or bytes it holds, and its sha256. What its
//! replaces left behind and kept (an old slice or bucket) is written in the same way under
//! `retired/<name>/`, each file's manifest entry saying which one it came from.
//!
//! Files are streamed: each is written as it is read from its target, hashed on the way,
//! and nothing holds a whole table or object in memory.

pub mod exporter;
pub mod s3;
pub mod sink;

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Kind};
use crate::slug::Slug;
use crate::targets::provider::{ExportRequest, Provider, ProviderError};
use sink::{ExportSink, Manifest};

/// Writes a tenant's export into `dir` (new or empty): each of `sources` streams what it holds
/// of the tenant, then the manifest, last. Returns the manifest and its sha256. The one way an
/// export is made, on demand (`export SLUG`) and when a tenant is offboarded.
pub async fn write(
    dir: &Path,
    sources: &[&dyn Provider],
    slug: &Slug,
    tenant_id: &str,
    recorded: &BTreeMap<Key, Attrs>,
    retired: &[crate::model::retired::Retired],
) -> Result<(Manifest, String), ProviderError> {
    let sink = ExportSink::create(dir)?;
    let req = ExportRequest {
        slug,
        tenant_id,
        recorded,
        sink: &sink,
    };
    for source in sources.iter().filter_map(|s| s.as_export()) {
        source.export(&req).await?;
    }
    for r in retired.iter().filter(|r| !r.is_recorded(recorded)) {
        // Each target reads where the retired one is as it reads a recorded one.
        let at = r.as_recorded(recorded);
        // `retired/schema-t_acme`: the name its key has in plans and the audit.
        let folder = r.address_key().name.unwrap_or_default();
        sink.set_retired(Some((folder, r.resource.clone())));
        let req = ExportRequest {
            recorded: &at,
            ..req
        };
        for source in sources.iter().filter_map(|s| s.as_export()) {
            source.export(&req).await?;
        }
        sink.set_retired(None);
    }
    // The slice's shape, which its files follow, as the state recorded it.
    let schema_version = recorded
        .get(&Key::new(Kind::DATABASE))
        .map(|a| a.str("schema_version").to_string())
        .unwrap_or_default();
    sink.write_manifest(slug.as_str(), tenant_id, &schema_version)
}
