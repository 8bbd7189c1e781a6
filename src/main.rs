//! The binary: parse arguments, run one command, map the outcome to terraform's exit codes
//! (0 success, 1 error, 2 changes present with `plan --detailed-exitcode`).

mod cli;

use clap::Parser;
use tenant_reconcile::diagnostic::Diagnostics;
use tenant_reconcile::repo::LoadError;

// A plan of a large fleet allocates and frees hundreds of thousands of small maps and
// strings; mimalloc does that markedly faster than the system allocator (see README,
// Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENANT_RECONCILE_LOG")
                .unwrap_or_else(|_| "warn".into()),
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
            let style = anstyle::AnsiColor::Red.on_default().bold();
            match diagnostics(&e) {
                Some(d) => {
                    for problem in &d.0 {
                        anstream::eprintln!("{style}error:{style:#} {problem}");
                    }
                    let n = d.len();
                    anstream::eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
                }
                None => anstream::eprintln!("{style}error:{style:#} {}", chain(&e)),
            }
            1
        }
    };
    std::process::exit(code);
}

/// The problems in the input files, when that is what the error is.
fn diagnostics(e: &anyhow::Error) -> Option<&Diagnostics> {
    match e.downcast_ref::<tenant_reconcile::Error>() {
        Some(tenant_reconcile::Error::Invalid(d)) => Some(d),
        Some(tenant_reconcile::Error::Load(LoadError::Invalid(d))) => Some(d),
        _ => match e.downcast_ref::<LoadError>() {
            Some(LoadError::Invalid(d)) => Some(d),
            _ => e.downcast_ref::<Diagnostics>(),
        },
    }
}

/// The error and its causes, skipping causes whose text the parent already includes.
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let s = cause.to_string();
        if !out.contains(&s) {
            out.push_str(&format!(": {s}"));
        }
    }
    out
}
