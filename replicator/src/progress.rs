//! Progress of long work (a backup's catch-up, a capture's transfer, a long replay): a bar with
//! its rate and time left when the agent's notes go to a terminal, else a line every few seconds
//! (`TANDEM_PROGRESS_EVERY`, a duration, changes how often).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::time::{Duration, Instant};

/// How often a progress line is written when no bar is drawn.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// What the work counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Events,
    Bytes,
}

impl Unit {
    fn amount(self, n: u64) -> String {
        match self {
            Unit::Events => format!("{n} events"),
            Unit::Bytes => crate::capture::human(n),
        }
    }

    fn rate(self, per_second: f64) -> String {
        match self {
            Unit::Events => format!("{per_second:.0} events/s"),
            Unit::Bytes => format!("{}/s", crate::capture::human(per_second as u64)),
        }
    }
}

/// The line said of work `what` at `done` of `total`, having done `worked` of it in `elapsed`
/// (work that resumed counts its rate from where it resumed). No I/O.
pub fn line(what: &str, done: u64, total: u64, worked: u64, elapsed: Duration, unit: Unit) -> String {
    let share = if total == 0 { 100.0 } else { done.min(total) as f64 * 100.0 / total as f64 };
    let rate = worked as f64 / elapsed.as_secs_f64().max(0.001);
    let left = match total.saturating_sub(done) {
        0 => "done".to_string(),
        _ if rate < 1.0 => "time left unknown".to_string(),
        rest => format!("{} left", humantime::format_duration(Duration::from_secs((rest as f64 / rate).ceil() as u64))),
    };
    let done = match unit {
        Unit::Events => done.to_string(),
        Unit::Bytes => unit.amount(done),
    };
    format!("{what}: {done} of {} ({share:.0}%), {}, {left}", unit.amount(total), unit.rate(rate))
}

/// A line where the agent's notes go (every command has them; not every one logs with `tracing`).
fn say(text: &str) {
    crate::notes::line(&format!("tandem: {text}"));
}

fn line_every() -> Duration {
    std::env::var("TANDEM_PROGRESS_EVERY").ok().and_then(|v| crate::args::parse_duration(&v).ok()).unwrap_or(LINE_EVERY)
}

/// One piece of long work being followed.
pub struct Progress {
    what: String,
    unit: Unit,
    bar: Option<ProgressBar>,
    started: Instant,
    /// Where the count started: the rate counts only what this work did.
    base: u64,
    done: u64,
    total: u64,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    /// Starts following `what`, at `done` of `total`.
    pub fn start(what: &str, done: u64, total: u64, unit: Unit) -> Progress {
        let bar = crate::notes::to_terminal().then(|| {
            let template = match unit {
                Unit::Events => "{msg} [{bar:30}] {pos}/{len} events, {rate}, {eta} left",
                Unit::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes}, {rate}, {eta} left",
            };
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                let style = style
                    .with_key("rate", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&unit.rate(state.per_sec()));
                    })
                    .progress_chars("=> ");
                bar.set_style(style);
            }
            bar.set_message(format!("tandem: {what}"));
            bar.set_position(done);
            bar
        });
        let now = Instant::now();
        let p = Progress {
            what: what.to_string(),
            unit,
            bar,
            started: now,
            base: done,
            done,
            total,
            last_line: now,
            every: line_every(),
        };
        if p.bar.is_none() {
            say(&p.text());
        }
        p
    }

    fn text(&self) -> String {
        line(&self.what, self.done, self.total, self.done.saturating_sub(self.base), self.started.elapsed(), self.unit)
    }

    /// The work has reached `done` of `total` (the total may move, as a primary records on).
    pub fn set(&mut self, done: u64, total: u64) {
        self.done = done;
        self.total = total.max(done);
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.total);
                bar.set_position(done);
            }
            None if self.last_line.elapsed() >= self.every => {
                self.last_line = Instant::now();
                say(&self.text());
            }
            None => {}
        }
    }

    /// The work is over: the bar is cleared, and a last line says how it went.
    pub fn finish(mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let took = self.started.elapsed();
        say(&format!(
            "{}: {} in {}",
            self.what,
            self.unit.amount(self.done.saturating_sub(self.base)),
            humantime::format_duration(Duration::from_millis(took.as_millis() as u64))
        ));
    }
}

/// Work given up half way (an error, a divergence) leaves no bar behind.
impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_how_far_how_fast_and_how_long_is_left() {
        let l = line("catching up backup1", 1_000_000, 2_500_000, 1_000_000, Duration::from_secs(2), Unit::Events);
        assert_eq!(l, "catching up backup1: 1000000 of 2500000 events (40%), 500000 events/s, 3s left");
        let l = line("receiving the capture", 1 << 20, 4 << 20, 1 << 20, Duration::from_secs(1), Unit::Bytes);
        assert_eq!(l, "receiving the capture: 1.0 MiB of 4.0 MiB (25%), 1.0 MiB/s, 3s left");
        // Resumed at 900000: the rate is of the work done since.
        let l = line("x", 1_000_000, 2_000_000, 100_000, Duration::from_secs(1), Unit::Events);
        assert!(l.ends_with("100000 events/s, 10s left"), "{l}");
        assert!(line("x", 5, 5, 5, Duration::from_secs(1), Unit::Events).ends_with("done"));
        assert!(line("x", 0, 5, 0, Duration::from_secs(1), Unit::Events).ends_with("time left unknown"));
    }
}
