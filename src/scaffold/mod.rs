//! New files people start from: `init` writes a whole tenant repo (one plan, one tenant, a
//! template, a migration, a `.gitignore` and a commented config) that validates and applies at
//! once on the local target; `new-tenant` writes one tenant file, refused as `validate` would
//! refuse it, so a pull request starts from something right.

use std::path::{Path, PathBuf};

use crate::repo::config::CONFIG_FILE;
use crate::slug::Slug;
use crate::Error;

/// Where the tenant files' JSON Schema is kept in a repo, for editors: `init` writes it,
/// every tenant file it writes points at it, and `schema tenant` makes it again.
pub const SCHEMA_FILE: &str = "tenant.schema.json";

/// The comment yaml-language-server reads to find a file's schema, for a file in `tenants/`.
pub fn schema_comment(depth: usize) -> String {
    format!(
        "# yaml-language-server: $schema={}{SCHEMA_FILE}\n",
        "../".repeat(depth)
    )
}

/// The files of a new repo, relative to its root.
const FILES: &[(&str, &str)] = &[
    ("plans/standard.hcl", include_str!("plan.hcl")),
    (
        "templates/files/namespace.yaml.tera",
        include_str!("namespace.yaml.tera"),
    ),
    ("templates/seed.yaml.tera", include_str!("seed.yaml.tera")),
    (
        "migrations/0001_create_projects.sql",
        include_str!("migration.sql"),
    ),
    (CONFIG_FILE, include_str!("config.hcl")),
    (".gitignore", include_str!("gitignore")),
];

/// Writes a new tenant repo into `dir` (made if missing), refusing one that holds a repo's
/// files already: nothing is overwritten. Returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let taken: Vec<&str> = ["tenants", "plans", "templates", "migrations", CONFIG_FILE]
        .into_iter()
        .filter(|p| dir.join(p).exists())
        .collect();
    if !taken.is_empty() {
        return Err(Error::Usage(format!(
            "{} already holds {}; nothing was written\n  hint: init makes a new repo; add a tenant to this one with `tenant-reconcile new-tenant SLUG`",
            dir.display(),
            taken.join(", ")
        )));
    }
    let tenant = format!("{}{}", schema_comment(1), include_str!("tenant.yaml"));
    let mut written = Vec::new();
    for (rel, text) in FILES
        .iter()
        .copied()
        .chain([("tenants/example-co.yaml", tenant.as_str())])
    {
        write_new(&dir.join(rel), text)?;
        written.push(PathBuf::from(rel));
    }
    let repo = crate::repo::load(dir).map_err(Error::Load)?;
    let schema = crate::schema::tenant(&repo);
    write_new(&dir.join(SCHEMA_FILE), &schema)?;
    written.push(PathBuf::from(SCHEMA_FILE));
    Ok(written)
}

/// What `new-tenant` is asked for.
pub struct NewTenant<'a> {
    pub slug: &'a str,
    pub name: Option<&'a str>,
    pub plan: &'a str,
    pub owner: &'a str,
    pub region: &'a str,
    pub locale: Option<&'a str>,
    /// The folder under `tenants/` to write it in (`eu` for `tenants/eu/`), if any.
    pub folder: Option<&'a Path>,
}

/// Writes `tenants/<slug>.yaml` into the repo at `root`, then loads the repo with it: a
/// file the loader refuses (a bad or taken slug, an unknown plan, a bad email) is removed
/// again and its problems returned, as `validate` would say them.
pub fn new_tenant(root: &Path, t: &NewTenant<'_>) -> Result<PathBuf, Error> {
    let slug = Slug::parse(t.slug).map_err(|e| {
        Error::Usage(format!(
            "{:?} is not a tenant slug: {e}\n  hint: 3 to 40 of a-z, 0-9 and -, starting with a letter",
            t.slug
        ))
    })?;
    let repo = crate::repo::load(root).map_err(Error::Load)?;
    if let Some(other) = repo.tenants.iter().find(|o| o.slug == slug) {
        return Err(Error::Usage(format!(
            "the slug {slug} is taken by {}; nothing was written",
            other.file
        )));
    }
    let dir = match t.folder {
        Some(folder) => Path::new("tenants").join(folder),
        None => PathBuf::from("tenants"),
    };
    let rel = dir.join(format!("{slug}.yaml"));
    let path = root.join(&rel);
    let mut text = String::new();
    if root.join(SCHEMA_FILE).is_file() {
        text.push_str(&schema_comment(dir.components().count()));
    }
    // Values are written as JSON strings, which YAML reads as they are: no text given
    // here can become YAML structure.
    let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let name = t.name.map(str::to_string).unwrap_or_else(|| title(&slug));
    text.push_str(&format!(
        "slug: {slug}\nname: {}\nplan: {}\nowner:\n  email: {}\nregion: {}\n",
        quoted(&name),
        quoted(t.plan),
        quoted(t.owner),
        quoted(t.region)
    ));
    if let Some(locale) = t.locale {
        text.push_str(&format!("locale: {}\n", quoted(locale)));
    }
    write_new(&path, &text)?;
    if let Err(e) = crate::repo::load(root) {
        let _ = std::fs::remove_file(&path);
        return Err(Error::Load(e));
    }
    Ok(rel)
}

/// `acme-corp` as `Acme Corp`, a name to start from.
fn title(slug: &Slug) -> String {
    slug.as_str()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes a file that must not exist yet, making its folder.
fn write_new(path: &Path, text: &str) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::failed(format!("cannot write {}", path.display()), e);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    /// The rollout block the new config holds commented out reads as a policy once the
    /// comment marks are taken off.
    #[test]
    fn the_commented_rollout_block_is_a_policy() {
        let config = include_str!("config.hcl");
        let start = config
            .find("# rollout {")
            .expect("a commented rollout block");
        let block: String = config[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches('#')))
            .collect();
        let parsed = crate::repo::config::parse(&block).expect("the block reads");
        let waves: Vec<String> = parsed
            .rollout
            .expect("a policy")
            .waves
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(waves, ["canary", "rest"]);
    }
}
