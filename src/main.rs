//! The binary: parse arguments, run one command, map the outcome to terraform's exit codes
//! (0 success, 1 error, 2 changes present with `plan --detailed-exitcode`).

mod cli;

#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() {
    cli::closed_pipe::install();
    // Exit codes are terraform's: 2 means "changes present", so a usage error is 1, not
    // clap's usual 2; help and version are 0.
    let cli = cli::Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        if e.use_stderr() {
            if let Some(hint) = cli::spelling_hint(std::env::args().skip(1)) {
                eprintln!("\n  hint: {hint}");
            }
        }
        std::process::exit(if e.use_stderr() { 1 } else { 0 })
    });
    let color = match cli.color {
        cli::ColorWhen::Always => true,
        cli::ColorWhen::Never => false,
        cli::ColorWhen::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
    };
    if let Err(e) = cli::log::init(color) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) if cli::closed_pipe::is_closed_stdout(&e) => cli::closed_pipe::end(),
        Err(e) => {
            cli::report(&e);
            1
        }
    };
    std::process::exit(code);
}
