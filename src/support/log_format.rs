//! The log line format: tracing-subscriber's full format, with the trace id of the invocation
//! being served shown as the outermost span, `invocation{trace_id=…}` (issue 11,
//! docs/tracing.md).
//!
//! That trace id is a task-local ([`in_invocation`]) rather than a real span: a span per request
//! costs the subscriber a slot, a formatted field, and an enter and exit on every poll, on every
//! invocation whether or not anything is logged (about 4,000 instructions, docs/perf/RESULTS.md,
//! issue 12); a task-local costs a pointer swap per poll, and its text is written only when a
//! line is. Lines logged outside an invocation are formatted by tracing-subscriber unchanged.

use std::fmt;
use std::future::Future;

use tokio::task::futures::TaskLocalFuture;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::trace_context::TraceContext;

tokio::task_local! {
    static INVOCATION: TraceContext;
}

/// Runs `future` as the invocation of `trace`: every line it logs carries the trace id.
pub fn in_invocation<F: Future>(
    trace: TraceContext,
    future: F,
) -> TaskLocalFuture<TraceContext, F> {
    INVOCATION.scope(trace, future)
}

/// The trace context of the invocation being served, if any (the handler's, without copying
/// it through the request's extensions).
pub fn current_invocation() -> Option<TraceContext> {
    INVOCATION.try_with(TraceContext::clone).ok()
}

/// Runs `f` (the synchronous part of serving a request) as the invocation of `trace`.
pub fn in_invocation_sync<R>(trace: TraceContext, f: impl FnOnce() -> R) -> R {
    INVOCATION.sync_scope(trace, f)
}

/// The control plane's event format (`main`, and tests that read log lines).
#[derive(Debug)]
pub struct LineFormat {
    full: Format<Full, SystemTime>,
}

impl Default for LineFormat {
    fn default() -> Self {
        LineFormat {
            full: tracing_subscriber::fmt::format().with_target(false),
        }
    }
}

const BOLD: &str = "\x1b[1m";
const DIMMED: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const RESET: &str = "\x1b[0m";

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(trace) = current_invocation() else {
            return self.full.format_event(ctx, writer, event);
        };
        // The layout of `Format<Full>` without the target: time, level, spans from the root, the
        // event's fields.
        let ansi = writer.has_ansi_escapes();
        let (bold, dimmed, italic, reset) = if ansi {
            (BOLD, DIMMED, ITALIC, RESET)
        } else {
            ("", "", "", "")
        };
        write!(writer, "{dimmed}")?;
        SystemTime.format_time(&mut writer)?;
        write!(
            writer,
            "{reset} {} ",
            level(*event.metadata().level(), ansi)
        )?;
        write!(
            writer,
            "{bold}invocation{{{reset}{italic}trace_id{reset}{dimmed}={reset}{}{bold}}}{reset}{dimmed}:{reset}",
            trace.trace_id()
        )?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{bold}{}{reset}", span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{bold}{{{reset}{fields}{bold}}}{reset}")?;
                    }
                }
                write!(writer, "{dimmed}:{reset}")?;
            }
        }
        writer.write_char(' ')?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The level as tracing-subscriber writes it: five columns, coloured on a terminal.
fn level(level: Level, ansi: bool) -> String {
    let colour = match level {
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        Level::ERROR => "\x1b[31m",
    };
    if ansi {
        format!("{colour}{level:>5}{RESET}")
    } else {
        format!("{level:>5}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// What `format` writes for one warning inside a `request{…}` span, inside `in_invocation`
    /// when `trace` is given.
    fn logged(ansi: bool, trace: Option<TraceContext>) -> String {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .event_format(LineFormat::default())
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = || {
                tracing::warn_span!("request", method = "POST").in_scope(|| {
                    tracing::warn!(attempts = 3, "given up");
                })
            };
            match trace {
                Some(trace) => in_invocation_sync(trace, log),
                None => log(),
            }
        });
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    /// Drops the timestamp (the first word), which differs between two lines.
    fn untimed(line: &str) -> &str {
        line.split_once(' ').unwrap().1
    }

    #[test]
    fn an_invocation_line_is_the_full_format_with_the_invocation_span_first() {
        let trace = TraceContext::start(Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let inside = logged(false, Some(trace));
        assert_eq!(
            untimed(&inside),
            " WARN invocation{trace_id=4bf92f3577b34da6a3ce929d0e0e4736}:request{method=\"POST\"}: given up attempts=3\n"
        );
        // Outside an invocation: tracing-subscriber's own line, target omitted.
        let outside = logged(false, None);
        assert_eq!(
            untimed(&outside),
            " WARN request{method=\"POST\"}: given up attempts=3\n"
        );
        assert_eq!(
            untimed(&inside).replace("invocation{trace_id=4bf92f3577b34da6a3ce929d0e0e4736}:", ""),
            untimed(&outside)
        );
    }

    #[test]
    fn on_a_terminal_the_invocation_line_is_coloured_as_the_others() {
        let trace = TraceContext::start(None);
        let inside = logged(true, Some(trace.clone()));
        let outside = logged(true, None);
        let id = trace.trace_id();
        let injected = format!(
            "{BOLD}invocation{{{RESET}{ITALIC}trace_id{RESET}{DIMMED}={RESET}{id}{BOLD}}}{RESET}{DIMMED}:{RESET}"
        );
        assert!(inside.contains(&injected), "{inside:?}");
        assert_eq!(
            untimed(&inside).replace(&injected, ""),
            untimed(&outside),
            "{inside:?} vs {outside:?}"
        );
    }
}
