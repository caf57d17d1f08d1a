//! The server's own best: the earliest time a server, with its own semantics and
//! limits, could have answered a whole workload. Every row of the bench is measured
//! against it (not against requests ÷ rate, which hides an unused burst and a
//! window's reset).
//!
//! A small simulator of each server semantics, written apart from both the client's
//! limiter (`mistral-core`) and the emulator's meters: requests are admitted in order,
//! each at the earliest instant every limit admits it, which is optimal for these
//! rules (admitting sooner never leaves less room for a later request). The rules are
//! those the emulator and nginx enforce:
//!
//! - [`Rule::Bucket`]: starts full (`capacity`), refills at `per_sec`, admits while at
//!   least 1 unit is left, then charges the cost (debt allowed: a request is never
//!   refused for being larger than what is left);
//! - [`Rule::FixedWindow`]: at most `limit` per window, windows aligned on the server's
//!   start, a fresh counter at each boundary;
//! - [`Rule::SlidingLog`]: at most `limit` in any trailing window (an admission at `t`
//!   frees its room at `t + window`);
//! - [`Rule::Leaky`]: a leaky bucket without burst (nginx `limit_req` by default): one
//!   admission per `1 ÷ per_sec`, the first at once;
//! - [`Rule::InFlight`]: at most `k` requests in the server at once, each held for the
//!   server's latency.
//!
//! A limit change ([`Epoch`]) installs fresh meters at its instant, as the emulator's
//! `set_limits` does. The callers bound the requests in flight too (a caller waits for
//! its answer before sending the next), which only matters when the server holds each
//! request for a while.
//!
//! ```
//! use mistral_emulator::best::{Rule, Server};
//!
//! // A bucket of 50 refilled 50 per minute: 50 at once, then one every 1.2 s.
//! let server = Server::steady(Some(Rule::Bucket { capacity: 50.0, per_sec: 50.0 / 60.0 }), None);
//! let best = server.best(&vec![1; 120], 16, 0.0);
//! assert!((best.makespan_s() - 84.0).abs() < 1e-6);
//! ```

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{Config, Semantics};

/// How one limit is enforced (requests or tokens).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// A token bucket: starts full at `capacity`, refilled at `per_sec`.
    Bucket {
        /// Most units held (the burst).
        capacity: f64,
        /// Units refilled per second.
        per_sec: f64,
    },
    /// At most `limit` per window, windows aligned on the server's start.
    FixedWindow {
        /// Units per window.
        limit: f64,
        /// The window, seconds.
        window_s: f64,
    },
    /// At most `limit` in any trailing window.
    SlidingLog {
        /// Units per window.
        limit: f64,
        /// The window, seconds.
        window_s: f64,
    },
    /// A leaky bucket without burst: one request per `1 ÷ per_sec`.
    Leaky {
        /// Requests per second.
        per_sec: f64,
    },
    /// At most `k` requests in flight.
    InFlight {
        /// Requests in flight at most.
        k: usize,
    },
}

impl Rule {
    /// The long-run rate this rule admits, units per second (`latency_s`: how long the
    /// server holds a request, for [`Rule::InFlight`]).
    pub fn rate(&self, latency_s: f64) -> f64 {
        match *self {
            Rule::Bucket { per_sec, .. } | Rule::Leaky { per_sec } => per_sec,
            Rule::FixedWindow { limit, window_s } | Rule::SlidingLog { limit, window_s } => {
                limit / window_s.max(1e-9)
            }
            Rule::InFlight { k } => k as f64 / latency_s.max(1e-9),
        }
    }

    /// The rule scaled to a share of its rate (a background consumer takes the rest):
    /// a bucket keeps its capacity, a window keeps its length.
    pub fn share(&self, share: f64) -> Rule {
        let s = share.clamp(0.0, 1.0);
        match *self {
            Rule::Bucket { capacity, per_sec } => Rule::Bucket {
                capacity,
                per_sec: per_sec * s,
            },
            Rule::FixedWindow { limit, window_s } => Rule::FixedWindow {
                limit: (limit * s).floor(),
                window_s,
            },
            Rule::SlidingLog { limit, window_s } => Rule::SlidingLog {
                limit: (limit * s).floor(),
                window_s,
            },
            Rule::Leaky { per_sec } => Rule::Leaky {
                per_sec: per_sec * s,
            },
            Rule::InFlight { k } => Rule::InFlight {
                k: ((k as f64 * s).floor() as usize).max(1),
            },
        }
    }

    /// In words, for the report.
    pub fn describe(&self) -> String {
        match *self {
            Rule::Bucket { capacity, per_sec } => {
                format!("bucket of {capacity:.0} refilled {per_sec:.3}/s")
            }
            Rule::FixedWindow { limit, window_s } => {
                format!("fixed window of {limit:.0} per {window_s} s")
            }
            Rule::SlidingLog { limit, window_s } => {
                format!("sliding log of {limit:.0} per {window_s} s")
            }
            Rule::Leaky { per_sec } => format!("leaky bucket {per_sec}/s without burst"),
            Rule::InFlight { k } => format!("at most {k} in flight"),
        }
    }
}

/// The limits in force from `since_s` on (seconds after the server's start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// When these limits took effect (fresh meters), seconds after the server's start.
    pub since_s: f64,
    /// The request limit (cost 1 per request).
    pub requests: Option<Rule>,
    /// The token limit (cost: the request's tokens).
    pub tokens: Option<Rule>,
    /// At most this many requests in flight (held for the server's latency).
    pub in_flight: Option<usize>,
    /// The meters go on from their state at `since_s` with the new rules (a background
    /// consumer's share changed), instead of starting afresh (new limits installed).
    #[serde(default)]
    pub keep_state: bool,
}

/// A server: its limits over time and how long it holds a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// The limits, in order of `since_s` (the first from 0).
    pub epochs: Vec<Epoch>,
    /// How long the server holds each admitted request, seconds (0: instant answers).
    pub latency_s: f64,
}

/// The server's best for a workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// When request `i` (in workload order) is answered at the earliest, seconds after
    /// the run's start.
    pub answered_s: Vec<f64>,
}

impl Best {
    /// The earliest instant the whole workload is answered (0 for none).
    pub fn makespan_s(&self) -> f64 {
        self.answered_s.iter().copied().fold(0.0, f64::max)
    }

    /// The earliest instant `n` requests are answered (the first `n` of the workload).
    pub fn of_first(&self, n: usize) -> f64 {
        self.answered_s.iter().take(n).copied().fold(0.0, f64::max)
    }
}

/// One meter's state in the simulation.
#[derive(Clone, Debug)]
enum Meter {
    Bucket {
        capacity: f64,
        per_sec: f64,
        level: f64,
        last: f64,
    },
    Fixed {
        limit: f64,
        window_s: f64,
        index: i64,
        used: f64,
    },
    Sliding {
        limit: f64,
        window_s: f64,
        log: VecDeque<(f64, f64)>,
        sum: f64,
    },
    Leaky {
        interval: f64,
        next: f64,
    },
    /// Concurrency is kept by the simulation across epochs; this holds `k`.
    InFlight {
        k: usize,
    },
}

impl Meter {
    fn new(rule: Rule, since: f64) -> Meter {
        match rule {
            Rule::Bucket { capacity, per_sec } => Meter::Bucket {
                capacity,
                per_sec,
                level: capacity,
                last: since,
            },
            Rule::FixedWindow { limit, window_s } => Meter::Fixed {
                limit,
                window_s,
                index: (since / window_s).floor() as i64,
                used: 0.0,
            },
            Rule::SlidingLog { limit, window_s } => Meter::Sliding {
                limit,
                window_s,
                log: VecDeque::new(),
                sum: 0.0,
            },
            Rule::Leaky { per_sec } => Meter::Leaky {
                interval: if per_sec > 0.0 {
                    1.0 / per_sec
                } else {
                    f64::INFINITY
                },
                next: since,
            },
            Rule::InFlight { k } => Meter::InFlight { k: k.max(1) },
        }
    }

    /// The earliest instant `>= t` at which this meter admits one request
    /// (`f64::INFINITY`: never).
    fn earliest(&self, t: f64) -> f64 {
        match self {
            Meter::Bucket {
                capacity,
                per_sec,
                level,
                last,
            } => {
                let now_level = (level + (t - last).max(0.0) * per_sec).min(*capacity);
                if now_level >= 1.0 - 1e-9 {
                    t
                } else if *per_sec <= 0.0 || *capacity < 1.0 {
                    f64::INFINITY
                } else {
                    t + (1.0 - now_level) / per_sec
                }
            }
            Meter::Fixed {
                limit,
                window_s,
                index,
                used,
            } => {
                if *limit < 1.0 {
                    return f64::INFINITY;
                }
                let at = (t / window_s).floor() as i64;
                if at > *index || limit - used >= 1.0 {
                    t
                } else {
                    (*index + 1) as f64 * window_s
                }
            }
            Meter::Sliding {
                limit,
                window_s,
                log,
                sum,
            } => {
                if *limit < 1.0 {
                    return f64::INFINITY;
                }
                let mut available = limit - sum;
                let mut at = t;
                for &(when, cost) in log {
                    if available >= 1.0 {
                        break;
                    }
                    if when + window_s > t {
                        at = when + window_s;
                    }
                    available += cost;
                }
                at.max(t)
            }
            Meter::Leaky { next, .. } => next.max(t),
            Meter::InFlight { .. } => t,
        }
    }

    /// Charges `cost` at `t` (an instant [`Meter::earliest`] allowed).
    fn charge(&mut self, t: f64, cost: f64) {
        match self {
            Meter::Bucket {
                capacity,
                per_sec,
                level,
                last,
            } => {
                *level = (*level + (t - *last).max(0.0) * *per_sec).min(*capacity) - cost;
                *last = t.max(*last);
            }
            Meter::Fixed {
                window_s,
                index,
                used,
                ..
            } => {
                let at = (t / *window_s).floor() as i64;
                if at > *index {
                    *index = at;
                    *used = 0.0;
                }
                *used += cost;
            }
            Meter::Sliding {
                window_s, log, sum, ..
            } => {
                while let Some(&(when, c)) = log.front() {
                    if when + *window_s <= t {
                        log.pop_front();
                        *sum -= c;
                    } else {
                        break;
                    }
                }
                log.push_back((t, cost));
                *sum += cost;
            }
            Meter::Leaky { interval, next } => *next = t + *interval,
            Meter::InFlight { .. } => {}
        }
    }

    fn in_flight(&self) -> Option<usize> {
        match self {
            Meter::InFlight { k } => Some(*k),
            _ => None,
        }
    }
}

struct Meters {
    requests: Option<Meter>,
    tokens: Option<Meter>,
    in_flight: Option<usize>,
}

impl Meters {
    fn of(epoch: &Epoch) -> Meters {
        Meters {
            requests: epoch.requests.map(|r| Meter::new(r, epoch.since_s)),
            tokens: epoch.tokens.map(|r| Meter::new(r, epoch.since_s)),
            in_flight: epoch.in_flight,
        }
    }

    /// These (new) meters, going on from `old`'s state at `at` where both follow the
    /// same rule.
    fn carried_from(mut self, old: Meters, at: f64) -> Meters {
        self.requests = carry(self.requests, old.requests, at);
        self.tokens = carry(self.tokens, old.tokens, at);
        self
    }

    fn in_flight(&self) -> Option<usize> {
        [&self.requests, &self.tokens]
            .into_iter()
            .flatten()
            .filter_map(Meter::in_flight)
            .chain(self.in_flight)
            .min()
    }
}

/// `new` with the state of `old` at `at` (same rule family), else `new` as it is.
fn carry(new: Option<Meter>, old: Option<Meter>, at: f64) -> Option<Meter> {
    let (new, old) = match (new, old) {
        (Some(new), Some(old)) => (new, old),
        (new, _) => return new,
    };
    Some(match (new, old) {
        (
            Meter::Bucket {
                capacity, per_sec, ..
            },
            Meter::Bucket {
                capacity: old_capacity,
                per_sec: old_rate,
                level,
                last,
            },
        ) => Meter::Bucket {
            capacity,
            per_sec,
            level: (level + (at - last).max(0.0) * old_rate)
                .min(old_capacity)
                .min(capacity),
            last: at.max(last),
        },
        (
            Meter::Fixed {
                limit, window_s, ..
            },
            Meter::Fixed { index, used, .. },
        ) => Meter::Fixed {
            limit,
            window_s,
            index,
            used,
        },
        (
            Meter::Sliding {
                limit, window_s, ..
            },
            Meter::Sliding { log, sum, .. },
        ) => Meter::Sliding {
            limit,
            window_s,
            log,
            sum,
        },
        (Meter::Leaky { interval, .. }, Meter::Leaky { next, .. }) => {
            Meter::Leaky { interval, next }
        }
        (new, _) => new,
    })
}

impl Server {
    /// A server whose limits never change, answering at once.
    pub fn steady(requests: Option<Rule>, tokens: Option<Rule>) -> Server {
        Server {
            epochs: vec![Epoch {
                since_s: 0.0,
                requests,
                tokens,
                in_flight: None,
                keep_state: false,
            }],
            latency_s: 0.0,
        }
    }

    /// The same server holding each request `latency_s` seconds.
    pub fn with_latency(mut self, latency_s: f64) -> Server {
        self.latency_s = latency_s.max(0.0);
        self
    }

    /// The same server with at most `k` requests in flight in every epoch.
    pub fn with_in_flight(mut self, k: Option<usize>) -> Server {
        for e in &mut self.epochs {
            e.in_flight = k;
        }
        self
    }

    /// The same server with the limits replaced at `since_s` (fresh meters; the
    /// concurrency limit of the last epoch kept).
    pub fn then(mut self, since_s: f64, requests: Option<Rule>, tokens: Option<Rule>) -> Server {
        let in_flight = self.epochs.last().and_then(|e| e.in_flight);
        self.epochs.push(Epoch {
            since_s,
            requests,
            tokens,
            in_flight,
            keep_state: false,
        });
        self
    }

    /// The rules the emulator runs with `config` for `model`, a background consumer's
    /// share taken off (its rate; a bucket keeps its burst), its concurrency limit and
    /// service time (`latency_ms`; the jitter is not counted).
    pub fn of_emulator(config: &Config, model: &str) -> Server {
        let limits = config.effective(config.limits_for(model));
        let left = 1.0 - config.background_share.clamp(0.0, 1.0);
        let rule = |n: u64, capacity: u64, window_s: f64| -> Rule {
            let rule = match limits.semantics {
                Semantics::Bucket => Rule::Bucket {
                    capacity: capacity as f64,
                    per_sec: n as f64 / window_s,
                },
                Semantics::FixedWindow => Rule::FixedWindow {
                    limit: n as f64,
                    window_s,
                },
                Semantics::SlidingLog => Rule::SlidingLog {
                    limit: n as f64,
                    window_s,
                },
                Semantics::Leaky => Rule::Leaky {
                    per_sec: n as f64 / window_s,
                },
            };
            if left < 1.0 { rule.share(left) } else { rule }
        };
        let requests = limits
            .requests
            .map(|n| rule(n, limits.burst, limits.request_window.as_secs_f64()));
        let tokens = limits
            .tokens
            .map(|n| rule(n, n, limits.token_window.as_secs_f64()));
        Server::steady(requests, tokens)
            .with_in_flight(limits.concurrency.map(|k| k as usize))
            .with_latency(config.latency_ms as f64 / 1000.0)
    }

    /// The long-run request rate of the last epoch (per second), over every limit that
    /// binds a request of `tokens` tokens.
    pub fn final_rate(&self, tokens: u64) -> Option<f64> {
        let epoch = self.epochs.last()?;
        let by_requests = match (
            epoch.requests.map(|r| r.rate(self.latency_s)),
            epoch.in_flight,
        ) {
            (r, None) => r,
            (None, Some(k)) => Some(k as f64 / self.latency_s.max(1e-9)),
            (Some(r), Some(k)) => Some(r.min(k as f64 / self.latency_s.max(1e-9))),
        };
        let by_tokens = epoch
            .tokens
            .map(|r| r.rate(self.latency_s) / tokens.max(1) as f64);
        match (by_requests, by_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// In words, for the report.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for e in &self.epochs {
            let mut p = Vec::new();
            if let Some(r) = e.requests {
                p.push(format!("requests: {}", r.describe()));
            }
            if let Some(r) = e.tokens {
                p.push(format!("tokens: {}", r.describe()));
            }
            if let Some(k) = e.in_flight {
                p.push(format!("at most {k} in flight"));
            }
            let text = if p.is_empty() {
                "no limit".to_owned()
            } else {
                p.join(", ")
            };
            if e.since_s > 0.0 {
                parts.push(format!("from {:.1} s: {text}", e.since_s));
            } else {
                parts.push(text);
            }
        }
        if self.latency_s > 0.0 {
            parts.push(format!("{} s per request", self.latency_s));
        }
        parts.join("; ")
    }

    /// The earliest answers for requests costing `costs` tokens each, sent in order by
    /// `callers` callers from `start_s` seconds after the server's start (the run's
    /// start; fixed windows stay aligned on the server's). Instants are returned from
    /// the run's start.
    pub fn best(&self, costs: &[u64], callers: usize, start_s: f64) -> Best {
        let callers = callers.max(1);
        let mut epoch_at = 0;
        let mut meters = self.epochs.first().map(Meters::of);
        // Answer instants of the requests still in flight (only when latency > 0).
        let mut in_flight: Vec<f64> = Vec::new();
        let mut lower = start_s.max(0.0);
        let mut answered = Vec::with_capacity(costs.len());
        for &cost in costs {
            let mut t = lower;
            let admitted = loop {
                // Switch to a later epoch whose start has come.
                while let Some(next) = self.epochs.get(epoch_at + 1)
                    && next.since_s <= t
                {
                    epoch_at += 1;
                    let fresh = Meters::of(next);
                    meters = Some(match (next.keep_state, meters.take()) {
                        (true, Some(old)) => fresh.carried_from(old, next.since_s),
                        _ => fresh,
                    });
                }
                let Some(m) = meters.as_ref() else {
                    break t;
                };
                // Concurrency: the server's k and the callers.
                let k = m.in_flight().map_or(callers, |k| k.min(callers));
                if self.latency_s > 0.0 {
                    in_flight.retain(|&end| end > t);
                    if in_flight.len() >= k {
                        let mut ends = in_flight.clone();
                        ends.sort_by(f64::total_cmp);
                        t = ends[in_flight.len() - k];
                        continue;
                    }
                }
                let a = m.requests.as_ref().map_or(t, |r| r.earliest(t));
                let b = m.tokens.as_ref().map_or(t, |r| r.earliest(t));
                let candidate = a.max(b);
                if !candidate.is_finite() {
                    // Never admitted under these limits: wait for the next epoch, if any.
                    match self.epochs.get(epoch_at + 1) {
                        Some(next) => {
                            t = next.since_s;
                            continue;
                        }
                        None => break f64::INFINITY,
                    }
                }
                if let Some(next) = self.epochs.get(epoch_at + 1)
                    && candidate >= next.since_s
                {
                    t = next.since_s;
                    continue;
                }
                if candidate > t {
                    t = candidate;
                    continue;
                }
                break t;
            };
            if !admitted.is_finite() {
                answered.push(f64::INFINITY);
                continue;
            }
            if let Some(m) = meters.as_mut() {
                if let Some(r) = m.requests.as_mut() {
                    r.charge(admitted, 1.0);
                }
                if let Some(r) = m.tokens.as_mut() {
                    r.charge(admitted, cost as f64);
                }
            }
            let end = admitted + self.latency_s;
            if self.latency_s > 0.0 {
                in_flight.push(end);
            }
            lower = admitted;
            answered.push(end - start_s.max(0.0));
        }
        Best {
            answered_s: answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn a_bucket_of_50_refilled_50_a_minute_answers_120_in_84_s() {
        // 50 at once, then 70 more at 1.2 s each.
        let s = Server::steady(
            Some(Rule::Bucket {
                capacity: 50.0,
                per_sec: 50.0 / 60.0,
            }),
            None,
        );
        let best = s.best(&[1; 120], 16, 0.0);
        assert!(close(best.makespan_s(), 84.0), "{}", best.makespan_s());
        assert!(close(best.of_first(50), 0.0));
        assert!(close(best.of_first(51), 1.2));
    }

    #[test]
    fn a_fixed_window_of_50_a_minute_answers_120_in_three_windows() {
        let s = Server::steady(
            Some(Rule::FixedWindow {
                limit: 50.0,
                window_s: 60.0,
            }),
            None,
        );
        assert!(close(s.best(&[1; 120], 16, 0.0).makespan_s(), 120.0));
        // Starting 0.5 s into the first window: the third opens 119.5 s later.
        assert!(close(s.best(&[1; 120], 16, 0.5).makespan_s(), 119.5));
        // 100 fit two windows: the second opens at 60 s.
        assert!(close(s.best(&[1; 100], 16, 0.0).makespan_s(), 60.0));
    }

    #[test]
    fn a_fixed_window_of_120_per_10_s_answers_400_at_30_s() {
        let s = Server::steady(
            Some(Rule::FixedWindow {
                limit: 120.0,
                window_s: 10.0,
            }),
            None,
        );
        assert!(close(s.best(&[1; 400], 64, 0.0).makespan_s(), 30.0));
    }

    #[test]
    fn a_sliding_log_frees_room_a_window_after_each_admission() {
        let s = Server::steady(
            Some(Rule::SlidingLog {
                limit: 50.0,
                window_s: 60.0,
            }),
            None,
        );
        // All 50 at 0; the next 50 at 60; the last 20 at 120.
        assert!(close(s.best(&[1; 120], 16, 0.0).makespan_s(), 120.0));
        assert!(close(s.best(&[1; 51], 16, 0.0).makespan_s(), 60.0));
    }

    #[test]
    fn a_leaky_bucket_of_10_a_second_answers_100_in_9_9_s() {
        let s = Server::steady(Some(Rule::Leaky { per_sec: 10.0 }), None);
        assert!(close(s.best(&[1; 100], 32, 0.0).makespan_s(), 9.9));
        // The same as a bucket of 1.
        let b = Server::steady(
            Some(Rule::Bucket {
                capacity: 1.0,
                per_sec: 10.0,
            }),
            None,
        );
        assert!(close(b.best(&[1; 100], 32, 0.0).makespan_s(), 9.9));
    }

    #[test]
    fn four_in_flight_at_half_a_second_answer_100_in_12_5_s() {
        let s = Server::steady(Some(Rule::InFlight { k: 4 }), None).with_latency(0.5);
        assert!(close(s.best(&[1; 100], 32, 0.0).makespan_s(), 12.5));
        // Two callers are the bound then: 50 rounds.
        assert!(close(s.best(&[1; 100], 2, 0.0).makespan_s(), 25.0));
        assert!(close(s.final_rate(1).unwrap(), 8.0));
    }

    #[test]
    fn tokens_bind_when_requests_are_large() {
        // 100 requests/s (bucket of 100) and 1,000 tokens/s (bucket of 1,000);
        // 200 requests of 50 tokens each.
        let s = Server::steady(
            Some(Rule::Bucket {
                capacity: 100.0,
                per_sec: 100.0,
            }),
            Some(Rule::Bucket {
                capacity: 1000.0,
                per_sec: 1000.0,
            }),
        );
        let best = s.best(&[50; 200], 8, 0.0);
        // 20 at 0 (1,000 tokens spent), then each needs 1 token back after a 50-token
        // debt step: request 21 at 0.001 s, then every 0.05 s: 0.001 + 179 × 0.05.
        assert!(close(best.of_first(20), 0.0));
        assert!(
            close(best.makespan_s(), 0.001 + 179.0 * 0.05),
            "{}",
            best.makespan_s()
        );
    }

    #[test]
    fn a_doubled_limit_takes_effect_with_fresh_meters() {
        // 8/s without burst for 5 s, then 16/s (fresh meters, no burst either).
        let s = Server::steady(Some(Rule::Leaky { per_sec: 8.0 }), None).then(
            5.0,
            Some(Rule::Leaky { per_sec: 16.0 }),
            None,
        );
        // 0, 0.125, ..., 4.875 (40 requests), then 5.0, 5.0625, ...: 150 requests end
        // at 5.0 + 109 × 0.0625.
        let best = s.best(&[1; 150], 8, 0.0);
        assert!(close(best.of_first(40), 4.875));
        assert!(close(best.of_first(41), 5.0));
        assert!(
            close(best.makespan_s(), 5.0 + 109.0 * 0.0625),
            "{}",
            best.makespan_s()
        );
        assert!(close(s.final_rate(1).unwrap(), 16.0));
    }

    #[test]
    fn a_background_consumer_starting_mid_run_leaves_the_bucket_as_it_is() {
        // A bucket of 10 refilled 10/s; from 2 s on, half the rate is someone else's.
        let mut s = Server::steady(
            Some(Rule::Bucket {
                capacity: 10.0,
                per_sec: 10.0,
            }),
            None,
        );
        s = s.then(
            2.0,
            Some(Rule::Bucket {
                capacity: 10.0,
                per_sec: 5.0,
            }),
            None,
        );
        let mut kept = s.clone();
        if let Some(e) = kept.epochs.last_mut() {
            e.keep_state = true;
        }
        // 10 at 0, then 10/s: the 30th at 2.0 s; then 5/s: the 40th at 4.0 s.
        assert!(close(kept.best(&[1; 40], 4, 0.0).makespan_s(), 4.0));
        // Fresh meters would give a whole bucket again at 2 s: the 30th to the 39th
        // at 2.0 s, the 40th at 2.2 s.
        assert!(close(s.best(&[1; 40], 4, 0.0).makespan_s(), 2.2));
    }

    #[test]
    fn a_background_share_leaves_the_rest_of_the_rate() {
        let mut config = Config {
            window_secs: 2.0,
            background_share: 0.3,
            ..Config::default()
        }
        .model("m", crate::Limits::new(Some(200), None));
        let s = Server::of_emulator(&config, "m");
        assert!(close(s.final_rate(1).unwrap(), 70.0));
        // The bucket keeps its burst: 200 at once, then 70 per second.
        assert!(close(s.best(&[1; 270], 8, 0.0).makespan_s(), 1.0));
        config.background_share = 0.0;
        config.semantics = Semantics::FixedWindow;
        let s = Server::of_emulator(&config, "m");
        assert_eq!(
            s.epochs[0].requests,
            Some(Rule::FixedWindow {
                limit: 200.0,
                window_s: 2.0
            })
        );
    }

    #[test]
    fn the_emulator_s_leaky_bucket_and_concurrency_limit_are_modelled() {
        let config = Config {
            window_secs: 1.0,
            semantics: Semantics::Leaky,
            latency_ms: 500,
            ..Config::default()
        }
        .model(
            "m",
            crate::Limits {
                concurrency: Some(4),
                ..crate::Limits::new(None, None)
            },
        );
        let s = Server::of_emulator(&config, "m");
        assert!(close(s.best(&[1; 100], 32, 0.0).makespan_s(), 12.5));
        let leaky = Config {
            window_secs: 1.0,
            semantics: Semantics::Leaky,
            ..Config::default()
        }
        .model("m", crate::Limits::new(Some(10), None));
        let s = Server::of_emulator(&leaky, "m");
        assert!(close(s.best(&[1; 100], 32, 0.0).makespan_s(), 9.9));
    }

    #[test]
    fn a_zero_limit_never_answers() {
        let s = Server::steady(Some(Rule::Leaky { per_sec: 0.0 }), None);
        // A leaky bucket of rate 0 admits its first at once and the next never.
        let best = s.best(&[1; 2], 1, 0.0);
        assert!(best.makespan_s().is_infinite());
    }
}
