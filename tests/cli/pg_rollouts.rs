//! A migration rolled out on Postgres (schema mode), through the real binary: the tenants
//! of later waves keep the old schema until their wave, and an abort leaves them on it while
//! the tenants it reached keep the migration (it is never undone).

use crate::git::{commit, init_committed};
use crate::pg::Pg;
use crate::support::text;

/// Whether `slug`'s role sees an `invoices` table in its own schema.
fn has_invoices(pg: &Pg, slug: &str) -> bool {
    let role = pg.name(slug);
    match pg.query_as(
        &role,
        &pg.db,
        &format!("SELECT count(*) AS n FROM \"{role}\".invoices"),
    ) {
        Ok(_) => true,
        Err(e) if e.contains("does not exist") => false,
        Err(e) => panic!("{slug}: {e}"),
    }
}

#[test]
fn a_migration_reaches_later_waves_only_in_their_turn_and_an_abort_leaves_them_without_it() {
    let pg = Pg::new();
    let repo = pg.repo();
    for f in std::fs::read_dir(repo.path().join("tenants")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let slugs: Vec<String> = (1..=6).map(|i| format!("s-{i:03}")).collect();
    for s in &slugs {
        // The growth plan: a schema each.
        repo.write_tenant(s);
    }
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{}\nrollout {{\n  wave \"canary\" {{\n    tenants = [\"s-001\"]\n    max_parallel = 1\n  }}\n  wave \"rest\" {{\n    max_parallel = 2\n  }}\n}}\n",
            pg.config("")
        ),
    );
    init_committed(&repo, "six schema tenants");
    repo.apply();
    repo.assert_plan_empty();

    repo.write(
        "migrations/0003_create_invoices.sql",
        "CREATE TABLE invoices (id bigserial PRIMARY KEY, amount_cents bigint NOT NULL);\n",
    );
    commit(&repo, "invoices");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("rollout r1 starts"), "{plan}");
    assert!(plan.contains("canary (1 tenant) · then rest (5)"), "{plan}");

    repo.apply_saying("wave 1 of 2 (canary) is done");
    assert!(has_invoices(&pg, "s-001"));
    for s in &slugs[1..] {
        assert!(
            !has_invoices(&pg, s),
            "{s} got the migration before its wave"
        );
    }
    // The next wave is due: the plan says so, and takes the rest to the new schema.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("wave 2 of 2 (rest) starts: 5 tenants"),
        "{plan}"
    );

    // Called off instead: the canary keeps the migration, the rest stay without it.
    let out = repo.run(&["rollout", "abort"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("A migration cannot be undone: s-001 keeps the schema of"),
        "{said}"
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("rollout r1 was aborted"), "{plan}");
    repo.assert_plan_empty();
    repo.apply();
    assert!(has_invoices(&pg, "s-001"));
    for s in &slugs[1..] {
        assert!(
            !has_invoices(&pg, s),
            "{s} got the migration after the abort"
        );
    }
    let status = text(&repo.run(&["rollout", "status"]).stdout);
    assert!(status.contains("Rollout r1: aborted"), "{status}");
    assert!(status.contains("s-001"), "{status}");
    repo.assert_plan_empty();
}
