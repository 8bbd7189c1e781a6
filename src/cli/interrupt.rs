//! Ctrl-C and SIGTERM for the commands that run long (`apply`, `watch`, `events deliver`),
//! taken as terraform takes them: the first asks the command to stop at its next safe point
//! (the token is cancelled), the second stops the process at once. Other commands keep the
//! default: they change nothing, or nothing a kill cannot leave.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// What `apply` says when it is asked to stop.
pub const APPLY: &str = "Stopping: no new tenant starts, the steps under way finish and are recorded, and the hooks still running are stopped (the next apply runs them again, under the same keys).";

/// Starts listening for SIGINT and SIGTERM, and returns the token the first of them cancels.
/// `stopping` is said when it comes; the second makes the process exit at once, with
/// 128 + the signal's number as a shell reports it, after killing the hooks still running.
pub fn listen(stopping: &'static str) -> std::io::Result<CancellationToken> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        anstream::eprintln!(
            "\nInterrupt received. {stopping}\n  Press Ctrl-C again to stop at once."
        );
        cancel.cancel();
        let number = tokio::select! {
            _ = interrupt.recv() => libc::SIGINT,
            _ = terminate.recv() => libc::SIGTERM,
        };
        tenant_reconcile::hooks::kill_running();
        anstream::eprintln!(
            "\nStopped at once. Every step recorded so far stands; run the command again to carry on."
        );
        std::process::exit(128 + number);
    });
    Ok(stop)
}
