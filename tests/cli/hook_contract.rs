//! What the README promises a hook is what a hook gets: its table of variables, name by
//! name, against the environment a hook sees.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::support::{project_root, Repo};

/// The variables the README's hook table lists, as written there.
fn readme_variables() -> Vec<String> {
    let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
    let hooks = readme
        .split("\n### Hooks\n")
        .nth(1)
        .expect("the README has a Hooks section");
    let section = hooks.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("TENANT_RECONCILE_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_hook_gets_every_variable_the_readme_lists_by_its_full_name() {
    let repo = Repo::example();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    repo.write(
        "hooks/dump.sh",
        "#!/bin/sh\ncat > /dev/null\nenv > hook-env.txt\n",
    );
    std::fs::set_permissions(
        repo.path().join("hooks/dump.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"dump\" {\n  on      = [\"provisioned\"]\n  command = [\"./hooks/dump.sh\"]\n}\n",
    );
    repo.apply();
    let seen: BTreeMap<String, String> = std::fs::read_to_string(repo.path().join("hook-env.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("TENANT_RECONCILE_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut listed = readme_variables();
    listed.sort();
    assert_eq!(
        listed,
        seen.keys().cloned().collect::<Vec<_>>(),
        "the README's hook variables are not what a hook gets"
    );
    assert_eq!(seen["TENANT_RECONCILE_HOOK"], "dump");
    assert_eq!(seen["TENANT_RECONCILE_MOMENT"], "provisioned");
    assert_eq!(seen["TENANT_RECONCILE_TENANT_SLUG"], "acme");
    assert_eq!(seen["TENANT_RECONCILE_ATTEMPT"], "1");
    repo.assert_plan_empty();
}
