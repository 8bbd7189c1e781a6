//! Long text printed as it is made, rather than built whole and printed at the end.

use std::fmt;
use std::io::Write as _;

use tenant_reconcile::plan::Plan;
use tenant_reconcile::render;

/// Prints the plan as terminal text: a fresh apply of 100,000 tenants prints about
/// 250 MB, which is never held at once.
pub fn plan(plan: &Plan) {
    let mut out = Printer::new();
    render::text::write(&mut out, plan);
    out.flush();
}

/// How much text is gathered before it is written.
const CHUNK: usize = 64 * 1024;

/// Gathers text and writes it to stdout in chunks, through one stream that strips colour
/// where stdout is no terminal (its state lasts across writes, so a colour code split
/// between two chunks is still stripped whole). A failed write ends the process as the
/// print macros do (see `closed_pipe`).
struct Printer {
    out: anstream::AutoStream<Box<dyn std::io::Write>>,
    buf: String,
}

impl Printer {
    fn new() -> Printer {
        let choice = anstream::AutoStream::choice(&std::io::stdout());
        // Buffered below the colour stripping, which writes each piece between two colour
        // codes on its own: into stdout's line buffer that was a system call a line, about
        // 60 a tenant of a fresh apply's plan.
        let raw: Box<dyn std::io::Write> = Box::new(std::io::BufWriter::with_capacity(
            CHUNK,
            std::io::stdout().lock(),
        ));
        Printer {
            out: anstream::AutoStream::new(raw, choice),
            buf: String::with_capacity(CHUNK),
        }
    }

    fn write_out(&mut self) {
        if let Err(e) = self.out.write_all(self.buf.as_bytes()) {
            panic!("failed printing to stdout: {e}");
        }
        self.buf.clear();
    }

    fn flush(mut self) {
        self.write_out();
        if let Err(e) = self.out.flush() {
            panic!("failed printing to stdout: {e}");
        }
    }
}

impl fmt::Write for Printer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK {
            self.write_out();
        }
        Ok(())
    }
}
