//! A migration as loaded from the repo: what a data target applies, in order.

/// One `migrations/NNNN_name.sql` file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Migration {
    /// The numeric prefix, e.g. `0001`. Migrations apply in this order.
    pub version: String,
    pub name: String,
    /// Hex SHA-256 of the file, to notice an applied migration that was edited.
    pub checksum: String,
    pub sql: String,
}

impl Migration {
    pub fn id(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

/// The versions, names and checksums of `migrations`, as three columns: what one statement
/// takes to record them all (`unnest` of three arrays).
pub fn columns<'a>(migrations: &[&'a Migration]) -> [Vec<&'a str>; 3] {
    let column = |f: fn(&'a Migration) -> &'a str| migrations.iter().map(|m| f(m)).collect();
    [
        column(|m| &m.version),
        column(|m| &m.name),
        column(|m| &m.checksum),
    ]
}
