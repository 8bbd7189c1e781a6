//! `templates/`: tera templates for per-tenant files and seed data.
//!
//! - `templates/files/<name>.tera` renders to `<output_dir>/<slug>/<name>` for each tenant
//!   (e.g. a Kubernetes Namespace + ResourceQuota for a GitOps tool to pick up).
//! - `templates/seed.yaml.tera` renders to YAML rows (`table: [ {column: value} ]`) that are
//!   inserted once into a new tenant's data with bound parameters, never as SQL text.
//!
//! Tenant text reaches templates as data; templates should pass it through `json_encode`
//! so a quote in a tenant's name cannot change the structure of what is rendered.
//!
//! Every template, check URLs included, renders through [`engine`]: it sees the context it
//! is given and nothing else. A template comes in with a pull request, whose plan runs
//! beside the pipeline's secrets and is posted as a comment.

use std::collections::HashMap;

use tera::Tera;

use crate::diagnostic::Diagnostic;

pub const FILES_PREFIX: &str = "files/";
pub const SEED_TEMPLATE: &str = "seed.yaml.tera";

pub struct Templates {
    pub tera: Tera,
    /// Output names of the per-tenant files, sorted (`namespace.yaml`).
    pub files: Vec<String>,
    pub has_seed: bool,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("files", &self.files)
            .field("has_seed", &self.has_seed)
            .finish()
    }
}

impl Templates {
    /// Builds the template set from `(name relative to templates/, source)` pairs.
    pub fn build(sources: Vec<(String, String)>) -> Result<Templates, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut tera = engine();
        tera.autoescape_on(vec![]);
        let mut files = Vec::new();
        let mut has_seed = false;
        for (name, source) in sources {
            let file = format!("templates/{name}");
            if let Some(out) = name.strip_prefix(FILES_PREFIX) {
                let Some(out) = out.strip_suffix(".tera") else {
                    problems.push(
                        Diagnostic::new(&file, "per-tenant file templates end in .tera")
                            .hint("name it templates/files/<output name>.tera"),
                    );
                    continue;
                };
                if out.contains('/') || !valid_output_name(out) {
                    problems.push(
                        Diagnostic::new(&file, format!("{out:?} is not a usable file name"))
                            .hint("use letters, digits, `.`, `-` and `_`, no sub-folders"),
                    );
                    continue;
                }
                files.push(out.to_string());
            } else if name == SEED_TEMPLATE {
                has_seed = true;
            } else if !name.ends_with(".tera") {
                continue; // READMEs and the like sit beside templates.
            }
            if let Err(e) = tera.add_raw_template(&name, &source) {
                problems.push(
                    Diagnostic::new(&file, crate::causes::chain(&e))
                        .hint("see the tera template syntax"),
                );
            }
        }
        files.sort();
        if problems.is_empty() {
            Ok(Templates {
                tera,
                files,
                has_seed,
            })
        } else {
            Err(problems)
        }
    }

    pub fn empty() -> Templates {
        Templates {
            tera: engine(),
            files: Vec::new(),
            has_seed: false,
        }
    }
}

/// tera's functions that reach outside the context: `get_env` reads the environment (the
/// master key, a database URL), and `now` and `get_random` would render differently on
/// every run, so a plan could never be empty.
const REFUSED: [&str; 3] = ["get_env", "now", "get_random"];

/// A tera instance whose templates see only the context they are rendered with.
pub fn engine() -> Tera {
    let mut tera = Tera::default();
    for name in REFUSED {
        tera.register_function(name, Refused(name));
    }
    tera
}

/// One of [`REFUSED`], in place of tera's own: calling it fails the render, naming it.
struct Refused(&'static str);

impl tera::Function for Refused {
    fn call(&self, _: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
        Err(tera::Error::msg(format!(
            "{}() is not available to templates: a template sees only the tenant's settings (`tenant`), never the environment, the clock or chance, so that it renders the same on every run",
            self.0
        )))
    }
}

fn valid_output_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
