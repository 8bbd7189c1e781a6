//! The repo's ordered SQL migrations, applied to every tenant's data slice.

use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;

pub use crate::model::migration::Migration;

pub fn parse(file: &str, file_name: &str, sql: String) -> Result<Migration, Diagnostic> {
    let stem = file_name.strip_suffix(".sql").unwrap_or(file_name);
    let (version, name) = stem.split_once('_').unwrap_or((stem, ""));
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit()) || name.is_empty() {
        return Err(
            Diagnostic::new(file, "migration files are named NNNN_description.sql").hint(
                "e.g. migrations/0002_add_invoices.sql; they apply in the order of their number",
            ),
        );
    }
    let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
    Ok(Migration {
        version: version.to_string(),
        name: name.to_string(),
        checksum,
        sql,
    })
}
