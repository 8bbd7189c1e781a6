//! Log lines on stderr. For a person at a terminal they read as sentences (`warning: data:
//! transient failure, retrying in 100ms (attempt 1, error: …)`), coloured only where the
//! output is coloured; `TENANT_RECONCILE_LOG_FORMAT=json` gives one JSON object a line for
//! machines. Which lines show is `TENANT_RECONCILE_LOG` (an env-filter, `warn` by default).

use std::fmt::{self, Write as _};

use anstyle::{AnsiColor, Style};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

pub const FILTER_ENV: &str = "TENANT_RECONCILE_LOG";
pub const FORMAT_ENV: &str = "TENANT_RECONCILE_LOG_FORMAT";

/// Installs the logger: `color` says whether stderr gets colour (the `--color` flag,
/// `NO_COLOR` and whether it is a terminal, decided by the caller).
pub fn init(color: bool) -> Result<(), String> {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| {
        // aws-config warns while it probes for a region or credentials it then does not
        // find; the error that follows says what is missing. lapin logs every refused AMQP
        // connection as an error of its own, which the smoke test reports as its finding.
        // sqlx warns of a connection that failed its test on the way back to the pool (a
        // server restarting) and passes on the server's notices: the error the product
        // reports says what happened, once.
        "warn,aws_config=error,lapin=off,sqlx=error,sqlx_core=error,sqlx_postgres=error,sqlx_sqlite=error"
            .into()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var(FORMAT_ENV).as_deref() {
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        Ok("text") | Err(_) => builder.event_format(Sentences { color }).init(),
        Ok(other) => {
            return Err(format!(
                "{FORMAT_ENV}={other:?} is not a log format; use text or json"
            ))
        }
    }
    Ok(())
}

/// `level: message (field value, field: value)`, with no timestamps or module paths.
struct Sentences {
    color: bool,
}

impl<S, N> FormatEvent<S, N> for Sentences
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let (word, style) = match *event.metadata().level() {
            Level::ERROR => ("error", AnsiColor::Red.on_default().bold()),
            Level::WARN => ("warning", AnsiColor::Yellow.on_default().bold()),
            Level::INFO => ("info", Style::new().bold()),
            Level::DEBUG => ("debug", Style::new().dimmed()),
            Level::TRACE => ("trace", Style::new().dimmed()),
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        if self.color {
            write!(writer, "{style}{word}:{style:#} ")?;
        } else {
            write!(writer, "{word}: ")?;
        }
        write!(writer, "{}", fields.message)?;
        if !fields.rest.is_empty() {
            write!(writer, " ({})", fields.rest)?;
        }
        writeln!(writer)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.add(field, format_args!("{value:?}"));
    }
}

impl Fields {
    fn add(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if field.name() == "message" {
            let _ = self.message.write_fmt(value);
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push_str(", ");
        }
        let name = field.name().replace('_', " ");
        let _ = write!(self.rest, "{name}: {value}");
    }
}
