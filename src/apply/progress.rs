//! Progress of a long apply: a bar on a terminal, a line per tenant elsewhere (CI logs).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use super::TenantOutcome;

pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: AtomicUsize,
    done: AtomicUsize,
}

impl Progress {
    /// A bar when stderr is a terminal, otherwise a line per tenant (unless `quiet`).
    pub fn new(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            bar: (terminal && !quiet).then(ProgressBar::hidden),
            lines: !terminal && !quiet,
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    /// Counts out of `total` tenants. Only the first call counts: a runner that applies a
    /// plan's tenants a few at a time (`apply --claim`) counts them out of the whole plan.
    pub fn start(&self, total: usize) {
        if self
            .total
            .compare_exchange(0, total, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tenants {msg}",
                )
                .expect("template is valid"),
            );
        }
    }

    pub fn tenant_done(&self, outcome: &TenantOutcome) {
        if outcome.skipped {
            // Said once for all of them, when the run ends.
            return;
        }
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed);
        let what = match &outcome.error {
            None => format!(
                "{}: done ({} step{})",
                outcome.slug,
                outcome.steps,
                if outcome.steps == 1 { "" } else { "s" }
            ),
            Some(e) if outcome.interrupted => format!("{}: stopped: {e}", outcome.slug),
            Some(e) => format!("{}: FAILED: {e}", outcome.slug),
        };
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if outcome.error.is_some() {
                bar.println(&what);
            }
        } else if self.lines {
            eprintln!("[{done}/{total}] {what}");
        }
    }

    /// A line about the run rather than a tenant (unless `quiet`).
    pub fn note(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.println(line);
        } else if self.lines {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
