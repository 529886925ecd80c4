//! Where log lines and console lines go, and why neither can stop the server.
//!
//! With stdout and stderr piped into a reader that goes away (`serve | tee log`, then Ctrl-C),
//! every write fails with EPIPE. tracing-subscriber reports a failed write with `eprintln!`,
//! which panics on a closed stderr, in whatever task logged: the signal task died (SIGTERM
//! ignored) and tool turns failed. So logs go through a lossy, non-blocking writer: a worker
//! thread writes them to stderr, ignoring write errors, and when the reader stops reading the
//! lines beyond a small buffer are dropped instead of blocking a request. Console lines
//! (the generated key, `viewer listening on ...`) ignore write errors too.

use std::io::Write;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines waiting for a slow reader before further ones are dropped.
const BUFFERED_LINES: usize = 4096;

/// Keeps the log writer's worker; dropping it writes out what is still buffered (for at most
/// about a second), so hold it until the end of `main`.
#[must_use = "logs are lost when the guard is dropped"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// What is logged when `LANG_AGENT_LOG` says nothing: our info lines; the libraries' warnings
/// only (the MCP library logs whole protocol structs at info).
const DEFAULT_FILTER: &str = "info,hyper=warn,reqwest=warn,rmcp=warn";

/// What interactive commands (`chat`, `keys`, `eval`) log when `LANG_AGENT_LOG` says nothing: only
/// what went wrong, so the conversation is not buried in turn lines.
pub const QUIET_FILTER: &str = "warn";

/// Sets up logging to stderr in `format`, filtered by `LANG_AGENT_LOG` (default: info, or
/// warnings only when `quiet`).
pub fn init(format: LogFormat, quiet: bool) -> LogGuard {
    let default = if quiet { QUIET_FILTER } else { DEFAULT_FILTER };
    let filter =
        EnvFilter::try_from_env("LANG_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("lang-agent-log")
        .finish(IgnoreErrors(std::io::stderr()));
    // Logs go to stderr (stdout carries command output such as the one-time key banner), and
    // colours only to a terminal, so journald and log files get plain lines.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
    LogGuard(guard)
}

/// Writes a line to stdout for the operator or a script; a closed stdout is no error.
pub fn console_line(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// Writes a line to stderr (a failure reported on exit); a closed stderr is no error.
pub fn error_line(text: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(text).and_then(|()| err.write_all(b"\n"));
}

/// A writer that reports every write as done: a log line nobody can read is dropped.
struct IgnoreErrors<W>(W);

impl<W: Write> Write for IgnoreErrors<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(self.0.write(buf).unwrap_or(buf.len()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn writes_to_a_closed_pipe_are_dropped_without_an_error() {
        let mut writer = IgnoreErrors(ClosedPipe);
        assert!(writer.write_all(b"a log line\n").is_ok());
        assert!(writer.flush().is_ok());
    }
}
