//! The binary: parse arguments, run one command, map the outcome to terraform's exit codes
//! (0 success, 1 error, 2 changes present with `plan --detailed-exitcode`).

mod cli;

#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() {
    // Exit codes are terraform's: 2 means "changes present", so a usage error is 1, not
    // clap's usual 2; help and version are 0.
    let cli = cli::Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 1 } else { 0 })
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENANT_RECONCILE_LOG").unwrap_or_else(
                |_| {
                    // aws-config warns while it probes for a region or credentials it
                    // then does not find; the error that follows says what is missing.
                    "warn,aws_config=error".into()
                },
            ),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            cli::report(&e);
            1
        }
    };
    std::process::exit(code);
}
