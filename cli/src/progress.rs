//! What a person watches: an indicatif bar on a terminal, plain lines every few seconds
//! otherwise (a pipe, a CI log), nothing with `--quiet`. All of it on stderr.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One moment of a run.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Requests this run is to send.
    pub total: u64,
    /// Requests of the file an earlier run answered (not counted in `total`).
    pub earlier: u64,
    /// Successes written.
    pub succeeded: u64,
    /// Error results written.
    pub failed: u64,
    /// Transient failures (left for a later run).
    pub transient: u64,
    /// Calls in flight.
    pub in_flight: u64,
    /// 429s the client absorbed.
    pub rate_limited: u64,
    /// Retries.
    pub retries: u64,
    /// Time since the start.
    pub elapsed: Duration,
    /// Requests per second the last response's limits allow.
    pub request_limit: Option<f64>,
    /// Tokens per second the last response's limits allow.
    pub token_limit: Option<f64>,
    /// Tokens per request (reported usage, else the estimate).
    pub avg_tokens: f64,
    /// Calls allowed in flight.
    pub concurrency: u64,
}

impl Snapshot {
    /// Results written.
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Requests per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.done() as f64 / secs
        } else {
            0.0
        }
    }

    /// Time left at the budget's rate (requests and tokens, whichever binds), else at the
    /// rate so far.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.total.saturating_sub(self.done() + self.transient) as f64;
        let by_requests = self.request_limit.map(|r| left / r);
        let by_tokens = self.token_limit.map(|r| left * self.avg_tokens / r);
        let secs = match (by_requests, by_tokens) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) if self.rate() > 0.0 => left / self.rate(),
            (None, None) => return None,
        };
        secs.is_finite()
            .then(|| Duration::from_secs_f64(secs.max(0.0)))
    }

    /// How long a run goes before its rate is shown: the first seconds are the burst
    /// the server allows (a window's worth at once), whose rate says nothing of the pace.
    pub const RATE_AFTER: Duration = Duration::from_secs(5);

    /// The rate and the limit, in words: no rate during [`Snapshot::RATE_AFTER`]; a
    /// rate above the limit says it is the server's burst, not a violation.
    fn rate_words(&self) -> String {
        let limit = self.request_limit.map(|l| format!("limit {l:.1}/s"));
        if self.elapsed < Self::RATE_AFTER {
            return match limit {
                Some(limit) => format!("{limit}; rate after {} s", Self::RATE_AFTER.as_secs()),
                None => format!("rate after {} s", Self::RATE_AFTER.as_secs()),
            };
        }
        let rate = self.rate();
        match (self.request_limit, limit) {
            (Some(l), Some(limit)) if rate > l * 1.05 => {
                format!(
                    "{rate:.1}/s ({limit}; above it: the burst the server allowed at the start)"
                )
            }
            (_, Some(limit)) => format!("{rate:.1}/s ({limit})"),
            (_, None) => format!("{rate:.1}/s"),
        }
    }

    /// `done/total done`, counting what an earlier run answered.
    pub fn counts(&self) -> String {
        let (done, total) = (self.earlier + self.done(), self.earlier + self.total);
        match self.earlier {
            0 => format!("{done}/{total} done"),
            earlier => format!("{done}/{total} done ({earlier} by an earlier run)"),
        }
    }

    /// The line shown next to the bar (short enough for one terminal line).
    pub fn message(&self) -> String {
        let mut m = self.rate_words();
        m.push_str(&format!(
            " · {}×429 absorbed · {} retries · {} errors",
            self.rate_limited, self.retries, self.failed
        ));
        if self.transient > 0 {
            m.push_str(&format!(" · {} to retry", self.transient));
        }
        m.push_str(&format!(
            " · {}/{} in flight",
            self.in_flight, self.concurrency
        ));
        if let Some(eta) = self.eta() {
            m.push_str(&format!(" · ETA {}", human(eta)));
        }
        m
    }
}

/// `1h02m`, `3m05s`, `12.3s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 3600.0 {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            ((secs % 3600.0) / 60.0) as u64
        )
    } else if secs >= 60.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!("{secs:.1}s")
    }
}

/// How progress is shown.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_line: Mutex<Option<Instant>>,
    every: Duration,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    /// `earlier` requests of the file were answered by an earlier run: the bar starts
    /// there, out of `earlier + total`.
    pub fn new(total: u64, earlier: u64, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(earlier + total), ProgressDrawTarget::stderr());
            bar.set_position(earlier);
            let style =
                ProgressStyle::with_template("[{bar:30.cyan/blue}] {pos}/{len} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            last_line: Mutex::new(None),
            every: Duration::from_secs(2),
        }
    }

    /// Shows `s`.
    pub fn update(&self, s: &Snapshot) {
        if let Some(bar) = &self.bar {
            bar.set_position(s.earlier + s.done());
            bar.set_message(s.message());
        } else if self.plain {
            let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= self.every) {
                *last = Some(Instant::now());
                eprintln!("{} · {}", s.counts(), s.message());
            }
        }
    }

    /// A bar for following a Batch API job (`done` of `total` requests).
    pub fn job(&self, done: u64, total: u64, status: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!("job {status}"));
        } else if self.plain {
            let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= self.every) {
                *last = Some(Instant::now());
                eprintln!("{done}/{total} done · job {status}");
            }
        }
    }

    /// A line for the user (above the bar when there is one), even when `quiet`.
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, done: u64) -> Snapshot {
        Snapshot {
            total: 124,
            earlier: 0,
            succeeded: done,
            elapsed: Duration::from_secs(secs),
            request_limit: Some(0.5),
            concurrency: 4,
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_opening_burst_is_not_shown_as_a_violation() {
        // 27 answered in 2 s under a limit of 0.5/s: the server's burst.
        let early = at(2, 27).message();
        assert!(early.starts_with("limit 0.5/s; rate after 5 s"), "{early}");
        assert!(!early.contains("13.5/s"), "{early}");
        let later = at(10, 32).message();
        assert!(
            later.starts_with("3.2/s (limit 0.5/s; above it: the burst"),
            "{later}"
        );
        let settled = at(400, 200).message();
        assert!(settled.starts_with("0.5/s (limit 0.5/s)"), "{settled}");
    }

    #[test]
    fn a_resumed_run_counts_what_an_earlier_run_answered() {
        let s = Snapshot {
            earlier: 76,
            total: 48,
            ..at(0, 0)
        };
        assert_eq!(s.counts(), "76/124 done (76 by an earlier run)");
        assert_eq!(at(0, 3).counts(), "3/124 done");
    }
}
