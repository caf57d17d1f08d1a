//! Live progress of the demo: one indicatif bar per client on a terminal, plain lines
//! otherwise (a pipe, a CI log).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a bar shows next to its count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// 429s the client received (and absorbed) so far.
    pub rate_limited: u64,
    /// Retries so far.
    pub retries: u64,
    /// Errors returned to the caller so far.
    pub errors: u64,
}

impl Live {
    fn message(&self) -> String {
        let mut m = format!(
            "{} × 429 absorbed, {} retries",
            self.rate_limited, self.retries
        );
        if self.errors > 0 {
            m.push_str(&format!(", {} error(s)", self.errors));
        }
        m
    }
}

/// Progress of several clients' bursts.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
    names: Vec<String>,
    totals: Vec<u64>,
    done: Mutex<Vec<u64>>,
}

impl Progress {
    /// Bars for `clients` (`(name, requests)`): drawn on stdout when it is a terminal,
    /// plain lines otherwise.
    pub fn new(clients: &[(&str, u64)]) -> Progress {
        Self::with_terminal(clients, std::io::stdout().is_terminal())
    }

    /// As [`Progress::new`], deciding explicitly between bars and plain lines.
    pub fn with_terminal(clients: &[(&str, u64)], terminal: bool) -> Progress {
        let bars = terminal.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{prefix:>9} [{bar:30.cyan/blue}] {pos:>3}/{len:<3} {elapsed:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bars = clients
                .iter()
                .map(|&(name, total)| {
                    let bar = multi.add(ProgressBar::new(total));
                    bar.set_style(style.clone());
                    bar.set_prefix(name.to_owned());
                    bar.set_message(Live::default().message());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                })
                .collect();
            (multi, bars)
        });
        Progress {
            started: Instant::now(),
            bars,
            names: clients.iter().map(|c| c.0.to_owned()).collect(),
            totals: clients.iter().map(|c| c.1).collect(),
            done: Mutex::new(vec![0; clients.len()]),
        }
    }

    /// `true` when drawing bars (not plain lines).
    pub fn is_terminal(&self) -> bool {
        self.bars.is_some()
    }

    /// Refreshes client `i`'s message with its counters.
    pub fn update(&self, i: usize, live: Live) {
        if let Some((_, bars)) = &self.bars
            && let Some(bar) = bars.get(i)
        {
            bar.set_message(live.message());
        }
    }

    /// One call of client `i` returned (`outcome`: a short description); `live` is the
    /// client's counters now.
    pub fn finished(&self, i: usize, outcome: &str, live: Live) {
        let done = {
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(d) = done.get_mut(i) {
                *d += 1;
            }
            done.get(i).copied().unwrap_or(0)
        };
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.get(i) {
                    bar.set_message(live.message());
                    bar.inc(1);
                }
            }
            None => println!(
                "[{:>5.1} s] {:>8} {:>3}/{:<3} {outcome}",
                self.started.elapsed().as_secs_f64(),
                self.names.get(i).map_or("?", String::as_str),
                done,
                self.totals.get(i).copied().unwrap_or(0),
            ),
        }
    }

    /// Ends the bars (left on screen).
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mode_counts_per_client() {
        let p = Progress::with_terminal(&[("blocking", 2), ("async", 1)], false);
        assert!(!p.is_terminal());
        p.finished(0, "ok", Live::default());
        p.finished(0, "ok", Live::default());
        p.finished(1, "ok", Live::default());
        assert_eq!(*p.done.lock().unwrap(), [2, 1]);
        p.finish();
    }

    #[test]
    fn the_message_names_what_was_absorbed() {
        let live = Live {
            rate_limited: 3,
            retries: 3,
            errors: 1,
        };
        assert_eq!(live.message(), "3 × 429 absorbed, 3 retries, 1 error(s)");
    }
}
