//! How far an export has got, with its speed, on stderr.
//!
//! On a terminal this is an `indicatif` bar with rows/s. Redirected to a file or a CI log, a
//! redrawn bar is noise, so it becomes a plain line every few seconds instead.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    display: Display,
    done: u64,
    total: u64,
    started: Instant,
}

enum Display {
    Bar(ProgressBar),
    Lines { last: Instant },
    Hidden,
}

impl Progress {
    /// Progress towards `total` rows, shown as fits stderr.
    pub fn new(total: u64) -> Progress {
        let display = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {human_pos}/{human_len} rows  {rate}  eta {eta}",
                )
                .expect("static template")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} rows/s", state.per_sec());
                    },
                ),
            );
            Display::Bar(bar)
        } else {
            Display::Lines {
                last: Instant::now(),
            }
        };
        Progress::with(display, total)
    }

    /// Counts without showing anything (the follower, tests).
    pub fn hidden() -> Progress {
        Progress::with(Display::Hidden, 0)
    }

    fn with(display: Display, total: u64) -> Progress {
        Progress {
            display,
            done: 0,
            total,
            started: Instant::now(),
        }
    }

    /// `rows` more are committed.
    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        // Rows stored while the export runs are exported too: the total grows with them.
        self.total = self.total.max(self.done);
        match &mut self.display {
            Display::Bar(bar) => {
                bar.set_length(self.total);
                bar.set_position(self.done);
            }
            Display::Lines { last } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", self.line());
                }
            }
            Display::Hidden => {}
        }
    }

    /// Rows counted so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Clears the bar (the caller prints its own summary).
    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "export: {}/{} rows ({:.0} rows/s)",
            self.done,
            self.total,
            self.done as f64 / secs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_the_total_follows_rows_added_meanwhile() {
        let mut progress = Progress::with(Display::Hidden, 10);
        progress.advance(4);
        progress.advance(8);
        assert_eq!(progress.done(), 12);
        assert!(
            progress.line().starts_with("export: 12/12 rows ("),
            "{}",
            progress.line()
        );
    }
}
