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

    /// The line shown next to the bar (short enough for one terminal line).
    pub fn message(&self) -> String {
        let mut m = format!("{:.1}/s", self.rate());
        if let Some(limit) = self.request_limit {
            m.push_str(&format!(" (limit {limit:.1}/s)"));
        }
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
    pub fn new(total: u64, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
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
            bar.set_position(s.done());
            bar.set_message(s.message());
        } else if self.plain {
            let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= self.every) {
                *last = Some(Instant::now());
                eprintln!("{}/{} done · {}", s.done(), s.total, s.message());
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
