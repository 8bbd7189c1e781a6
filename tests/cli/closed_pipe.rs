//! A reader that stops early (`tenant-reconcile show | head -1`) closes the pipe the output
//! goes to: every command then ends quietly, as `ls` or `git log` do (killed by SIGPIPE), not
//! with a panic and exit 101, nor with an error about the pipe.

use std::os::unix::process::ExitStatusExt;

use crate::support::{text, Repo};

/// Runs `args` with stdout on a pipe whose reading end is already closed.
fn through_a_closed_pipe(repo: &Repo, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    std::process::Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
        .arg("-C")
        .arg(repo.path())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("TENANT_RECONCILE_MASTER_KEY")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn every_printing_command_ends_quietly_on_a_closed_pipe() {
    let repo = Repo::example_with_hooks();
    repo.apply();
    let plan_file = repo.path().join("saved.tfplan");
    for args in [
        &["show"][..],
        &["show", "--json"],
        &["state", "list"],
        &["state", "show", "acme"],
        &["plan"],
        &["plan", "--format", "json"],
        &["plan", "--format", "markdown"],
        &["plan", "--out", plan_file.to_str().unwrap()],
        &["validate"],
        &["check"],
        &["check", "--format", "json"],
        &["credentials", "acme"],
        &["audit"],
        &["audit", "--json"],
        &["events", "list"],
        &["schema", "tenant"],
        &["schema", "config"],
        &["completions", "bash"],
        &["man"],
        &["--help"],
        &["--version"],
        &["apply", "--auto-approve"],
    ] {
        let out = through_a_closed_pipe(&repo, args);
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("error"),
            "{args:?} on a closed pipe said:\n{err}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?} on a closed pipe ended with {:?}:\n{err}",
            out.status
        );
    }
    repo.assert_plan_empty();
}
