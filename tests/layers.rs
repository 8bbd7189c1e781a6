//! The import graph of `src/`: which file uses which, read as Rust (every `use` and every path
//! through `crate::`, `super::` and `self::`), and the circles in it. A file in a circle cannot
//! be changed, tested or moved without the others, so no file may join one.
//!
//! `cargo test --test layers -- --nocapture` prints every circle with its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use syn::visit::Visit;

/// The files in an import circle today. Taking the skeleton apart takes them out, one by one;
/// the test fails when a file joins a circle, and when one listed here has left it (so the
/// list only shrinks).
const IN_A_CIRCLE: &[&str] = &[];

/// A module path, `["targets", "data", "postgres", "data"]`; the crate root is empty.
type Module = Vec<String>;

/// The module a file under `src/` defines.
fn module_of(relative: &Path) -> Module {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Every path a file names, as written (`crate::a::b`, `super::c`), with how many inline
/// modules deep it was written (`super` in a file's `mod tests` is the file's own module).
#[derive(Default)]
struct Named {
    paths: Vec<(usize, Vec<String>)>,
    depth: usize,
}

impl Named {
    fn push(&mut self, path: Vec<String>) {
        if matches!(
            path.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) {
            self.paths.push((self.depth, path));
        }
    }

    /// The paths a `use` tree brings in, each from its root.
    fn expand(&mut self, tree: &syn::UseTree, mut prefix: Vec<String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.expand(&p.tree, prefix);
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.push(prefix);
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.push(prefix);
            }
            syn::UseTree::Glob(_) => self.push(prefix),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.expand(tree, prefix.clone());
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Named {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.expand(&item.tree, Vec::new());
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.depth += 1;
        syn::visit::visit_item_mod(self, item);
        self.depth -= 1;
    }

    // `pub(crate)` and `pub(super)` say who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }
}

/// `path`, written `depth` inline modules deep in the file of `module`, from the crate root.
fn absolute(module: &Module, depth: usize, path: &[String]) -> Option<Module> {
    let mut at = module.clone();
    let mut inline = depth;
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            at.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().map(String::as_str) == Some("super") {
        if inline > 0 {
            inline -= 1;
        } else {
            at.pop()?;
        }
        rest = &rest[1..];
    }
    at.extend(rest.iter().cloned());
    Some(at)
}

/// Every `.rs` file under `dir`, relative to `root`.
fn sources(root: &Path, dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(root, &path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

/// The library's files and, for each, the files it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    // Read at run time, not baked in: clones that share one build folder may reuse a test
    // binary built in another clone, which may be gone.
    let root: std::path::PathBuf = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    // The binary's root is a crate of its own, on top of the library.
    files.retain(|f| f != Path::new("main.rs"));
    let modules: BTreeMap<Module, String> = files
        .iter()
        .map(|f| (module_of(f), f.to_string_lossy().into_owned()))
        .collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut named = Named::default();
        named.visit_file(&parsed);
        let mut uses = BTreeSet::new();
        for (depth, path) in &named.paths {
            let Some(mut target) = absolute(module, *depth, path) else {
                continue;
            };
            // The longest prefix that is a file's module is the file used.
            while !target.is_empty() && !modules.contains_key(&target) {
                target.pop();
            }
            if let Some(used) = modules.get(&target).filter(|used| *used != file) {
                uses.insert(used.clone());
            }
        }
        edges.insert(file.clone(), uses);
    }
    edges
}

/// The import circles: each a set of files that all reach each other, largest first.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut g = DiGraph::<&str, ()>::new();
    let index: BTreeMap<&str, NodeIndex> =
        edges.keys().map(|f| (f.as_str(), g.add_node(f))).collect();
    for (from, uses) in edges {
        for to in uses {
            g.add_edge(index[from.as_str()], index[to.as_str()], ());
        }
    }
    let mut found: Vec<Vec<String>> = tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut files: Vec<String> = c.iter().map(|n| g[*n].to_string()).collect();
            files.sort();
            files
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.len()));
    found
}

#[test]
fn no_file_joins_an_import_circle() {
    let edges = graph();
    let circles = circles(&edges);
    for circle in &circles {
        println!("a circle of {} files: {}", circle.len(), circle.join(" "));
    }
    let now: BTreeSet<&str> = circles.iter().flatten().map(String::as_str).collect();
    let listed: BTreeSet<&str> = IN_A_CIRCLE.iter().copied().collect();
    let joined: Vec<String> = now
        .difference(&listed)
        .map(|file| {
            let into: Vec<&str> = edges[*file]
                .iter()
                .map(String::as_str)
                .filter(|used| now.contains(used))
                .collect();
            format!("{file} (it uses {})", into.join(", "))
        })
        .collect();
    let left: Vec<&str> = listed.difference(&now).copied().collect();
    assert!(
        joined.is_empty(),
        "these files joined an import circle; a module must not use what uses it:\n  {}",
        joined.join("\n  ")
    );
    assert!(
        left.is_empty(),
        "these files are in no import circle now; take them off IN_A_CIRCLE in tests/layers.rs: {}",
        left.join(", ")
    );
}

/// The floor beneath everything: the model's records, and the files they are made of. They
/// use nothing else of the crate.
fn in_the_floor(file: &str) -> bool {
    file.starts_with("model/") || ["slug.rs", "causes.rs"].contains(&file)
}

#[test]
fn the_floor_uses_nothing_above_it() {
    let edges = graph();
    let upward: Vec<String> = edges
        .iter()
        .filter(|(file, _)| in_the_floor(file))
        .flat_map(|(file, uses)| {
            uses.iter()
                .filter(|used| !in_the_floor(used))
                .map(move |used| format!("{file} uses {used}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "the floor must not use what stands on it:\n  {}",
        upward.join("\n  ")
    );
}

/// The placement policy, which targets and clients may use, stands on the floor alone.
#[test]
fn the_placement_policy_uses_only_the_floor() {
    let edges = graph();
    let upward: Vec<String> = edges
        .iter()
        .filter(|(file, _)| file.starts_with("placement/"))
        .flat_map(|(file, uses)| {
            uses.iter()
                .filter(|used| !in_the_floor(used) && !used.starts_with("placement/"))
                .map(move |used| format!("{file} uses {used}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "the placement policy must use the floor only:\n  {}",
        upward.join("\n  ")
    );
}

/// What the targets and the clients may use: the floor, each other, the plumbing every layer
/// shares (a problem's place in a file, the master key, private files), the placement policy
/// (a pure choice over servers and their loads, which uses the floor only), and the two
/// things the engine hands a target to fill (an export's sink, a check's verdict). Never the
/// engine that asks them: loading, compiling, planning, applying, the state.
fn beneath_the_engine(file: &str) -> bool {
    in_the_floor(file)
        || file.starts_with("clients/")
        || file.starts_with("targets/")
        || file.starts_with("placement/")
        || [
            "diagnostic.rs",
            "repo/hcl_file.rs",
            "credentials.rs",
            "private_files.rs",
            "export/sink.rs",
            "smoke/verdicts.rs",
        ]
        .contains(&file)
}

#[test]
fn target_slots_and_clients_use_no_engine() {
    let edges = graph();
    let upward: Vec<String> = edges
        .iter()
        .filter(|(file, _)| file.starts_with("clients/") || file.starts_with("targets/"))
        .flat_map(|(file, uses)| {
            uses.iter()
                .filter(|used| !beneath_the_engine(used))
                .map(move |used| format!("{file} uses {used}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "a target slot or a client must not use the engine above it:\n  {}",
        upward.join("\n  ")
    );
}

/// The clients are what the targets and the state stand on: they use the floor, each other
/// and the private files every write goes through, and nothing that stands on them.
#[test]
fn the_clients_use_no_target() {
    let edges = graph();
    let upward: Vec<String> = edges
        .iter()
        .filter(|(file, _)| file.starts_with("clients/"))
        .flat_map(|(file, uses)| {
            uses.iter()
                .filter(|used| {
                    !(in_the_floor(used)
                        || used.starts_with("clients/")
                        || used.as_str() == "private_files.rs")
                })
                .map(move |used| format!("{file} uses {used}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "a client must not use what stands on it:\n  {}",
        upward.join("\n  ")
    );
}

/// A state backend reaches its server through the clients, never through a target, so a
/// state can move without the targets and a target without the state.
#[test]
fn the_state_uses_no_target() {
    let edges = graph();
    let through: Vec<String> = edges
        .iter()
        .filter(|(file, _)| file.starts_with("state/"))
        .flat_map(|(file, uses)| {
            uses.iter()
                .filter(|used| used.starts_with("targets/") || used.starts_with("export/"))
                .map(move |used| format!("{file} uses {used}"))
        })
        .collect();
    assert!(
        through.is_empty(),
        "a state backend must reach its server through clients/:\n  {}",
        through.join("\n  ")
    );
}

#[test]
fn paths_are_read_from_where_they_are_written() {
    let module: Module = ["targets", "data", "postgres", "data"]
        .map(String::from)
        .to_vec();
    let path = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        absolute(&module, 0, &path("super::server::connection")),
        Some(path("targets::data::postgres::server::connection"))
    );
    // `super` in the file's inline `mod tests` is the file's own module.
    assert_eq!(
        absolute(&module, 1, &path("super::purge_statements")),
        Some(path("targets::data::postgres::data::purge_statements"))
    );
    assert_eq!(
        absolute(&module, 0, &path("crate::slug::Slug")),
        Some(path("slug::Slug"))
    );
    assert_eq!(
        module_of(Path::new("targets/data/postgres/mod.rs")),
        path("targets::data::postgres")
    );
    assert_eq!(module_of(Path::new("lib.rs")), Vec::<String>::new());
}
