//! The files of an export as they are written: the sink each target streams into, the
//! manifest that ends it, and the checks that read one again. Beneath the targets, which
//! write into it; [`super::write`] is what asks them to.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::clients::error::ProviderError;

/// Bumped whenever the manifest's shape changes incompatibly.
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

/// What an export holds, written last as `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub slug: String,
    pub tenant_id: String,
    pub exported_at: String,
    /// The last migration applied to the slice, which the tables' shape follows.
    pub schema_version: String,
    pub tables: Vec<TableFile>,
    pub objects: Vec<ObjectFile>,
    /// Other files a target wrote: a broker vhost's definitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<OtherFile>,
}

impl Manifest {
    /// Every file the manifest names (tables, then objects), with the sha256 it gives.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tables
            .iter()
            .map(|t| (t.file.as_str(), t.sha256.as_str()))
            .chain(
                self.objects
                    .iter()
                    .map(|o| (o.file.as_str(), o.sha256.as_str())),
            )
            .chain(
                self.other
                    .iter()
                    .map(|o| (o.file.as_str(), o.sha256.as_str())),
            )
    }
}

/// A file that is neither a table nor an object: what it is, in words.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OtherFile {
    pub what: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// The retired resource it came from (`schema t_acme`), for one a replace left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableFile {
    pub table: String,
    pub file: String,
    pub rows: u64,
    pub sha256: String,
    /// The retired resource it came from (`schema t_acme`), for one a replace left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectFile {
    pub key: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// The retired resource it came from (`bucket acme-old`), for one a replace left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

/// Where an export's files go: a folder of its own. Targets add files through it.
pub struct ExportSink {
    dir: PathBuf,
    tables: Mutex<Vec<TableFile>>,
    objects: Mutex<Vec<ObjectFile>>,
    other: Mutex<Vec<OtherFile>>,
    /// While a retired resource is written: the folder its files go in, and what it is.
    retired: Mutex<Option<(String, String)>>,
}

/// One file being written: bytes go to disk and into its digest as they come.
pub struct ExportFile {
    /// Buffered: a table arrives a row at a time, and each unbuffered write of a tokio file
    /// is a trip to a blocking thread.
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: PathBuf,
    rel: String,
    hasher: Sha256,
    size: u64,
}

impl ExportFile {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ProviderError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .await
            .map_err(ProviderError::io(format!("write {}", self.path.display())))
    }

    async fn finish(mut self) -> Result<(String, u64, String), ProviderError> {
        self.file
            .flush()
            .await
            .map_err(ProviderError::io(format!("write {}", self.path.display())))?;
        self.file
            .get_ref()
            .sync_all()
            .await
            .map_err(ProviderError::io(format!("write {}", self.path.display())))?;
        Ok((self.rel, self.size, hex::encode(self.hasher.finalize())))
    }
}

impl ExportSink {
    /// A sink writing into `dir`, which must not hold an export already.
    pub fn create(dir: &Path) -> Result<ExportSink, ProviderError> {
        // A tenant's data, readable by the operator only (and so its every file below).
        crate::private_files::own_dir(dir)
            .map_err(ProviderError::io(format!("create {}", dir.display())))?;
        Ok(ExportSink {
            dir: dir.to_path_buf(),
            tables: Mutex::default(),
            objects: Mutex::default(),
            other: Mutex::default(),
            retired: Mutex::default(),
        })
    }

    /// Writes what follows as the files of the retired resource `what`, under `folder`
    /// (`None`: the tenant's current resources again). Targets write as they always do.
    pub fn set_retired(&self, retired: Option<(String, String)>) {
        *self.retired.lock().expect("not poisoned") = retired;
    }

    /// The retired resource being written, if any.
    fn retired_now(&self) -> Option<String> {
        self.retired
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|(_, what)| what.clone())
    }

    /// Starts a file at `rel` inside the export. `rel` is built by the caller from checked
    /// names (tables) or escaped (object keys, see [`object_path`]); it may not climb out.
    pub async fn file(&self, rel: &str) -> Result<ExportFile, ProviderError> {
        let inside = Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !inside || rel.is_empty() {
            return Err(ProviderError::Refused(format!(
                "{rel:?} is not a path inside the export"
            )));
        }
        let rel = match &*self.retired.lock().expect("not poisoned") {
            Some((folder, _)) => format!("{folder}/{rel}"),
            None => rel.to_string(),
        };
        let path = self.dir.join(&rel);
        if let Some(parent) = path.parent() {
            crate::private_files::create_dir_all(parent)
                .map_err(ProviderError::io(format!("create {}", parent.display())))?;
        }
        // Never over a file written before: two object keys that map to one path (`A` and
        // `a` on a case-insensitive disk) fail the export rather than lose an object.
        let file = tokio::fs::OpenOptions::from(crate::private_files::options())
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(ProviderError::io(format!("create {}", path.display())))?;
        Ok(ExportFile {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            path,
            rel,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub async fn finish_table(
        &self,
        table: &str,
        file: ExportFile,
        rows: u64,
    ) -> Result<(), ProviderError> {
        let (rel, _, sha256) = file.finish().await?;
        let retired = self.retired_now();
        self.tables.lock().expect("not poisoned").push(TableFile {
            table: table.to_string(),
            file: rel,
            rows,
            sha256,
            retired,
        });
        Ok(())
    }

    pub async fn finish_object(&self, key: &str, file: ExportFile) -> Result<(), ProviderError> {
        let (rel, size, sha256) = file.finish().await?;
        let retired = self.retired_now();
        self.objects.lock().expect("not poisoned").push(ObjectFile {
            key: key.to_string(),
            file: rel,
            size,
            sha256,
            retired,
        });
        Ok(())
    }

    pub async fn finish_file(&self, what: &str, file: ExportFile) -> Result<(), ProviderError> {
        let (rel, size, sha256) = file.finish().await?;
        let retired = self.retired_now();
        self.other.lock().expect("not poisoned").push(OtherFile {
            what: what.to_string(),
            file: rel,
            size,
            sha256,
            retired,
        });
        Ok(())
    }

    /// Writes `manifest.json` (last, so an export with a manifest is a whole one) and
    /// returns it with its own sha256.
    pub fn write_manifest(
        self,
        slug: &str,
        tenant_id: &str,
        schema_version: &str,
    ) -> Result<(Manifest, String), ProviderError> {
        let mut tables = self.tables.into_inner().expect("not poisoned");
        let mut objects = self.objects.into_inner().expect("not poisoned");
        tables.sort_by(|a, b| a.file.cmp(&b.file));
        objects.sort_by(|a, b| a.file.cmp(&b.file));
        let mut other = self.other.into_inner().expect("not poisoned");
        other.sort_by(|a, b| a.file.cmp(&b.file));
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            slug: slug.to_string(),
            tenant_id: tenant_id.to_string(),
            exported_at: crate::model::lifecycle::now(),
            schema_version: schema_version.to_string(),
            tables,
            objects,
            other,
        };
        let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
        let path = self.dir.join(MANIFEST_FILE);
        crate::private_files::write_atomic(&path, text.as_bytes())
            .map_err(ProviderError::io(format!("write {}", path.display())))?;
        Ok((manifest, hex::encode(Sha256::digest(text.as_bytes()))))
    }
}

/// Appends one CSV record as PostgreSQL's `COPY … CSV` writes it, so every target's files
/// read the same way: a field is quoted when it holds a comma, a quote or a line break, or
/// is empty text; NULL (`None`) is an empty field without quotes, so it stays apart from
/// empty text. (A CSV library writes the two alike.)
pub fn push_csv_record<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = Option<&'a str>>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match field {
            None => {}
            Some(text) if text.is_empty() || text.contains([',', '"', '\n', '\r']) => {
                out.push(b'"');
                out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
                out.push(b'"');
            }
            Some(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
    out.push(b'\n');
}

/// Where an object's copy goes: under `objects/`, its key with every character outside
/// `[A-Za-z0-9._-]` and `/` percent-escaped, and `.`/`..` segments escaped too, so any key
/// becomes a path inside the export (the manifest keeps the key as it was).
pub fn object_path(key: &str) -> String {
    let mut out = String::from("objects/");
    for (i, segment) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let escaped: String = segment
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
                b'.' if segment != "." && segment != ".." => ".".to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        out.push_str(if escaped.is_empty() { "%" } else { &escaped });
    }
    out
}

/// Checks an export against its manifest: every file is there with the size and sha256 the
/// manifest gives. Returns what did not match.
pub fn verify(dir: &Path) -> Result<Vec<String>, ProviderError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(ProviderError::io(format!("read {}", path.display())))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(ProviderError::failed(format!("read {}", path.display())))?;
    let mut problems = Vec::new();
    for (file, sha256) in manifest.files() {
        match hash_file(&dir.join(file)) {
            Ok(found) if found == sha256 => {}
            Ok(found) => problems.push(format!("{file}: sha256 {found}, manifest {sha256}")),
            Err(e) => problems.push(format!("{file}: {e}")),
        }
    }
    Ok(problems)
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The names an export `name` set aside may take, in the order to try them: `name.<now>`,
/// then `name.<now>.2`, `.3`, … as many as it takes, since two offboardings of one tenant
/// can come within the same second (a run killed and run again).
pub(crate) fn aside_names(name: &str) -> impl Iterator<Item = String> {
    let base = format!(
        "{name}.{}",
        crate::model::lifecycle::now().replace([':', '-'], "")
    );
    std::iter::once(base.clone()).chain((2u32..).map(move |n| format!("{base}.{n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_keeps_null_apart_from_empty_text_as_postgres_does() {
        let mut out = Vec::new();
        push_csv_record(
            &mut out,
            [Some("plain"), None, Some(""), Some("a,\"b\"\nc")],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,,\"\",\"a,\"\"b\"\"\nc\"\n"
        );
    }

    #[test]
    fn any_object_key_becomes_a_path_inside_the_export() {
        assert_eq!(
            object_path("reports/2026/q1.pdf"),
            "objects/reports/2026/q1.pdf"
        );
        assert_eq!(
            object_path("../../etc/passwd"),
            "objects/%2E%2E/%2E%2E/etc/passwd"
        );
        assert_eq!(object_path("/abs//x"), "objects/%/abs/%/x");
        assert_eq!(object_path("a b?c"), "objects/a%20b%3Fc");
        for key in ["..", ".", "a/../b", "/", "x/"] {
            let p = object_path(key);
            assert!(
                Path::new(&p)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
                "{key:?} → {p:?}"
            );
        }
    }
}
