//! The request log and the checks tests run on it.
//!
//! Every request the emulator receives is logged once, when its answer is decided, and so
//! is every request of the background consumer ([`Source::Background`]). Limits are
//! organisation-wide, so the budget checks ([`Log::violations`],
//! [`Log::max_admitted_in_any_window`]) count both sources; the counters
//! ([`Log::total`], [`Log::admitted`], [`Log::count_429`], [`Log::count_status`]) count
//! the clients' requests only.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use serde::Serialize;

use super::config::{EffectiveLimits, Fault, Semantics};
use super::limits::{InFlight, LimitsEpoch, Refusal, window_index};

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Source {
    /// A client, over HTTP.
    Client,
    /// The emulator's background consumer (another program of the organisation).
    Background,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Outcome {
    /// Admitted by the limiter and answered (inference endpoints); a modifying fault may
    /// still spoil the delivery ([`Entry::fault`]).
    Served,
    /// Answered without the limiter (`GET /v1/models`).
    Listed,
    /// Refused by the limiter with 429.
    RateLimited(Refusal),
    /// 429 `service_tier_capacity_exceeded` drawn by `capacity_rate`.
    Capacity,
    /// Missing or wrong key: 401.
    Unauthorized,
    /// Refused by validation (400, 413 or 422).
    Invalid,
    /// Unknown path or method (404 / 405).
    NotFound,
    /// A replacing fault answered instead of the emulator.
    Fault(Fault),
}

/// One logged request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// Client requests: the request number (arrival order, 0-based, as used by
    /// [`super::Config::faults`]). Background requests: their own counter.
    pub seq: u64,
    /// Who sent it.
    pub source: Source,
    /// Arrival, as time since the emulator's start.
    pub arrived: Duration,
    /// When the limiter decided on it (admitted or refused), if it was asked.
    pub decided: Option<Duration>,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Requested model, when the body named one.
    pub model: Option<String>,
    /// FNV-1a hash (16 hex digits) of the presented key; never the key itself.
    pub key_hash: Option<String>,
    /// The `User-Agent` header, when sent.
    pub user_agent: Option<String>,
    /// The `Accept` header, when sent.
    pub accept: Option<String>,
    /// Whether a stream was requested.
    pub stream: bool,
    /// Tokens charged to the limits (0 unless admitted).
    pub tokens: u64,
    /// Status sent; 0 when no response was sent (reset, close, hang).
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// The fault applied to it, if any.
    pub fault: Option<Fault>,
    /// Limits generation of the model that decided it.
    pub generation: u32,
}

impl Entry {
    /// True when the limiter admitted it (it counts against the budget).
    pub fn admitted(&self) -> bool {
        self.outcome == Outcome::Served && self.decided.is_some()
    }
}

/// Admitted requests of one second of the emulator's life, for plots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Seconds since the emulator's start.
    pub second: u64,
    /// Client requests admitted.
    pub admitted: usize,
    /// Background requests admitted.
    pub background: usize,
    /// Client requests refused with 429 (rate limits and capacity).
    pub refused: usize,
    /// Client requests that got anything else (faults, 5xx, 4xx).
    pub other: usize,
}

/// A snapshot of the request log, with the limits that were in force.
#[derive(Clone, Debug, Default)]
pub struct Log {
    entries: Vec<Entry>,
    limits: BTreeMap<String, Vec<LimitsEpoch>>,
    in_flight: BTreeMap<String, Vec<InFlight>>,
    month_resets: Vec<Duration>,
    dropped: u64,
}

impl Log {
    /// Builds a log from entries and limits (tests of the checks themselves use this).
    pub fn from_parts(entries: Vec<Entry>, limits: BTreeMap<String, Vec<LimitsEpoch>>) -> Log {
        Log {
            entries,
            limits,
            in_flight: BTreeMap::new(),
            month_resets: Vec::new(),
            dropped: 0,
        }
    }

    /// Adds the places client requests held in flight, per model (released ones only:
    /// a request still in flight when the snapshot was taken is not in it).
    pub fn with_in_flight(mut self, mut in_flight: BTreeMap<String, Vec<InFlight>>) -> Log {
        for list in in_flight.values_mut() {
            list.sort_by_key(|h| (h.taken, h.released));
        }
        self.in_flight = in_flight;
        self
    }

    /// The places client requests of `model` held in flight, by admission time.
    pub fn in_flight(&self, model: &str) -> &[InFlight] {
        self.in_flight.get(model).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The models whose requests held places in flight.
    pub fn in_flight_models(&self) -> impl Iterator<Item = &str> {
        self.in_flight
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(model, _)| model.as_str())
    }

    /// The most client requests of `model` in flight at once (at an admission; a
    /// request released at the very instant another is admitted is not counted).
    pub fn max_in_flight(&self, model: &str) -> usize {
        let mut open: BinaryHeap<Reverse<Duration>> = BinaryHeap::new();
        let mut best = 0;
        for h in self.in_flight(model) {
            while open.peek().is_some_and(|r| r.0 <= h.taken) {
                open.pop();
            }
            open.push(Reverse(h.released));
            best = best.max(open.len());
        }
        best
    }

    /// Adds the instants at which the month was reset (the monthly check restarts there).
    pub fn with_month_resets(mut self, mut resets: Vec<Duration>) -> Log {
        resets.sort();
        self.month_resets = resets;
        self
    }

    /// Records that `dropped` entries were not kept ([`crate::Config::max_log_entries`]).
    pub fn with_dropped(mut self, dropped: u64) -> Log {
        self.dropped = dropped;
        self
    }

    /// Entries not kept because the log was full: when non-zero, the checks only see
    /// the beginning of the run.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every entry, in the order answers were decided.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The limits history of `model` (empty if the model was never seen).
    pub fn limits(&self, model: &str) -> &[LimitsEpoch] {
        self.limits.get(model).map(Vec::as_slice).unwrap_or(&[])
    }

    fn clients(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.source == Source::Client)
    }

    /// Client requests received.
    pub fn total(&self) -> usize {
        self.clients().count()
    }

    /// Client requests admitted by the limiter.
    pub fn admitted(&self) -> usize {
        self.clients().filter(|e| e.admitted()).count()
    }

    /// Client requests admitted for `model`.
    pub fn admitted_for(&self, model: &str) -> usize {
        self.clients()
            .filter(|e| e.admitted() && e.model.as_deref() == Some(model))
            .count()
    }

    /// Background requests attempted.
    pub fn background_total(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.source == Source::Background)
            .count()
    }

    /// Background requests admitted.
    pub fn background_admitted(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.source == Source::Background && e.admitted())
            .count()
    }

    /// Client requests answered 429 (any cause, capacity included).
    pub fn count_429(&self) -> usize {
        self.count_status(429)
    }

    /// Client requests answered with `status` (0: no answer).
    pub fn count_status(&self, status: u16) -> usize {
        self.clients().filter(|e| e.status == status).count()
    }

    /// Client requests refused by the limiter for `refusal`.
    pub fn count_refused(&self, refusal: Refusal) -> usize {
        self.clients()
            .filter(|e| e.outcome == Outcome::RateLimited(refusal))
            .count()
    }

    /// Client requests hit by `fault`.
    pub fn count_fault(&self, fault: Fault) -> usize {
        self.clients().filter(|e| e.fault == Some(fault)).count()
    }

    /// Tokens charged to `model` (clients and background).
    pub fn tokens_charged(&self, model: &str) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.admitted() && e.model.as_deref() == Some(model))
            .map(|e| e.tokens)
            .sum()
    }

    /// Admission instants and costs of `model` (clients and background), sorted, per
    /// limits generation.
    fn admissions(&self, model: &str) -> BTreeMap<u32, Vec<(Duration, u64)>> {
        let mut out: BTreeMap<u32, Vec<(Duration, u64)>> = BTreeMap::new();
        for e in &self.entries {
            if let Some(at) = e.decided.filter(|_| e.admitted())
                && e.model.as_deref() == Some(model)
            {
                out.entry(e.generation).or_default().push((at, e.tokens));
            }
        }
        for list in out.values_mut() {
            list.sort_by_key(|&(at, _)| at);
        }
        out
    }

    /// The most requests of `model` (clients and background) admitted in any interval
    /// `(t - window, t]`.
    pub fn max_admitted_in_any_window(&self, model: &str, window: Duration) -> usize {
        let mut times: Vec<Duration> = self
            .admissions(model)
            .into_values()
            .flatten()
            .map(|(at, _)| at)
            .collect();
        times.sort();
        let mut best = 0;
        let mut start = 0;
        for (i, &t) in times.iter().enumerate() {
            while times[start] + window <= t {
                start += 1;
            }
            best = best.max(i + 1 - start);
        }
        best
    }

    /// Requests of `model` admitted in each fixed window of length `window` aligned on
    /// the emulator's start (index = window number), clients and background.
    pub fn admitted_per_fixed_window(&self, model: &str, window: Duration) -> Vec<usize> {
        let mut counts = Vec::new();
        for (at, _) in self.admissions(model).into_values().flatten() {
            let i = usize::try_from(window_index(at, window)).unwrap_or(usize::MAX);
            if i >= counts.len() {
                if i > 1 << 24 {
                    continue;
                }
                counts.resize(i + 1, 0);
            }
            counts[i] += 1;
        }
        counts
    }

    /// Admitted and refused requests per second (all models).
    pub fn timeline(&self) -> Vec<Second> {
        self.timeline_filtered(|_| true)
    }

    /// Admitted and refused requests per second for one model.
    pub fn timeline_for(&self, model: &str) -> Vec<Second> {
        self.timeline_filtered(|e| e.model.as_deref() == Some(model))
    }

    fn timeline_filtered(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Second> {
        let mut out: Vec<Second> = Vec::new();
        for e in self.entries.iter().filter(|e| keep(e)) {
            let at = e.decided.unwrap_or(e.arrived);
            let s = at.as_secs();
            let i = usize::try_from(s).unwrap_or(usize::MAX);
            if i > 1 << 24 {
                continue;
            }
            while out.len() <= i {
                let second = out.len() as u64;
                out.push(Second {
                    second,
                    ..Second::default()
                });
            }
            let slot = &mut out[i];
            match (e.source, e.admitted()) {
                (Source::Background, true) => slot.background += 1,
                (Source::Background, false) => {}
                (Source::Client, true) => slot.admitted += 1,
                (Source::Client, false) if e.status == 429 => slot.refused += 1,
                (Source::Client, false) => slot.other += 1,
            }
        }
        out
    }

    /// True when some limit was exceeded: see [`Log::violations`].
    pub fn was_any_window_over_limit(&self) -> bool {
        !self.violations().is_empty()
    }

    /// Every request of `model` the server decided on, refused or not, as if it had
    /// been admitted: the server's own rule ([`Log::violations`]) then says whether the
    /// clients ever sent more than the limit, refusals included.
    pub fn attempts_as_admitted(&self, model: &str) -> Log {
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.model.as_deref() == Some(model) && e.decided.is_some())
            .map(|e| Entry {
                outcome: Outcome::Served,
                ..e.clone()
            })
            .collect();
        let limits = [(model.to_owned(), self.limits(model).to_vec())]
            .into_iter()
            .collect();
        Log::from_parts(entries, limits)
    }

    /// Requests of `model` that reached the server in `[from, to)` of its life, and how
    /// many of them were refused with a 429.
    pub fn sent_between(&self, model: &str, from: Duration, to: Duration) -> (usize, usize) {
        let inside: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.model.as_deref() == Some(model) && e.arrived >= from && e.arrived < to)
            .collect();
        let refused = inside.iter().filter(|e| e.status == 429).count();
        (inside.len(), refused)
    }

    /// Every breach of a configured limit found in the log (clients and background
    /// together), checked against each semantics' own rule:
    ///
    /// - [`Semantics::FixedWindow`]: at most `N` admitted per aligned window; tokens:
    ///   a request admitted only while the window's charged tokens were below the limit;
    /// - [`Semantics::SlidingLog`]: at most `N` admitted in any `(t - W, t]`; tokens:
    ///   admitted only while the trailing window's tokens were below the limit;
    /// - [`Semantics::Bucket`]: replaying a bucket (capacity = burst, refill `N / W`,
    ///   starting full) never finds an admission with less than 1 in the bucket; same
    ///   for tokens (capacity = limit, debt allowed after the charge);
    /// - [`Semantics::Leaky`]: on nginx's millisecond clock, each admission comes at
    ///   least `1000 × cost / rate` after the previous one (`rate` in milli-units per
    ///   second as nginx computes it, `cost` the previous admission's: 1 for requests);
    /// - concurrency: at each admission, at most `concurrency` requests in flight, the
    ///   admitted one included (requests of earlier generations still in flight count);
    /// - monthly quota: admitted only while the month's charged tokens were below it;
    /// - zero allowance: nothing admitted at all.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (model, epochs) in &self.limits {
            let admissions = self.admissions(model);
            let mut month_used: u64 = 0;
            let mut next_reset = 0;
            for epoch in epochs {
                let l = &epoch.limits;
                let tag = format!("{model} (generation {})", epoch.generation);
                if let Some(k) = l.concurrency {
                    check_in_flight(&mut out, &tag, self.in_flight(model), epoch.generation, k);
                }
                let Some(list) = admissions.get(&epoch.generation) else {
                    continue;
                };
                if l.is_zero_allowance() && !list.is_empty() {
                    out.push(format!(
                        "{tag}: {} admitted under a zero allowance",
                        list.len()
                    ));
                    continue;
                }
                if let Some(n) = l.requests {
                    let ones: Vec<(Duration, u64)> = list.iter().map(|&(t, _)| (t, 1)).collect();
                    check(
                        &mut out,
                        &tag,
                        "requests",
                        l,
                        n,
                        l.burst,
                        l.request_window,
                        &ones,
                    );
                }
                if let Some(n) = l.tokens {
                    check(&mut out, &tag, "tokens", l, n, n, l.token_window, list);
                }
                // The month runs on across limits changes, until a reset.
                for &(at, cost) in list {
                    while next_reset < self.month_resets.len()
                        && self.month_resets[next_reset] <= at
                    {
                        month_used = 0;
                        next_reset += 1;
                    }
                    if let Some(month) = l.tokens_month
                        && month_used >= month
                    {
                        out.push(format!(
                            "{tag}: admitted at {at:?} with the month spent ({month_used} >= {month})"
                        ));
                    }
                    month_used = month_used.saturating_add(cost);
                }
            }
        }
        out
    }
}

/// Checks one meter's rule over sorted admissions `(instant, cost)`.
#[allow(clippy::too_many_arguments)]
fn check(
    out: &mut Vec<String>,
    tag: &str,
    what: &str,
    limits: &EffectiveLimits,
    limit: u64,
    capacity: u64,
    window: Duration,
    list: &[(Duration, u64)],
) {
    match limits.semantics {
        Semantics::FixedWindow => {
            let mut index = None;
            let mut used: u64 = 0;
            for &(at, cost) in list {
                let i = window_index(at, window);
                if Some(i) != index {
                    index = Some(i);
                    used = 0;
                }
                if used >= limit {
                    out.push(format!(
                        "{tag}: {what} window {i} over its limit {limit} at {at:?} ({used} already charged)"
                    ));
                }
                used = used.saturating_add(cost);
            }
        }
        Semantics::SlidingLog => {
            let mut start = 0;
            let mut sum: u64 = 0;
            for &(at, cost) in list {
                while start < list.len() && list[start].0 + window <= at {
                    sum -= list[start].1;
                    start += 1;
                }
                if sum >= limit {
                    out.push(format!(
                        "{tag}: {what} over {limit} in the window ending {at:?} ({sum} already charged)"
                    ));
                }
                sum = sum.saturating_add(cost);
            }
        }
        Semantics::Leaky => {
            // nginx: rate = N × 1000 / window (milli-units per second), integer ms.
            let rate = (u128::from(limit) * 1_000_000_000_000 / window.as_nanos().max(1)).max(1);
            let mut previous: Option<(u128, u64)> = None;
            for &(at, cost) in list {
                let now = at.as_millis();
                if let Some((last, last_cost)) = previous {
                    // Drained: rate × ms / 1000 >= 1000 × cost (floored division).
                    let ms = now.saturating_sub(last);
                    if rate * ms / 1000 < 1000 * u128::from(last_cost) {
                        out.push(format!(
                            "{tag}: {what} admitted {ms} ms after the previous one at {at:?} \
                             (a leaky bucket of {limit} per {window:?} needs {} ms)",
                            (1_000_000 * u128::from(last_cost)).div_ceil(rate)
                        ));
                    }
                }
                previous = Some((now, cost));
            }
        }
        Semantics::Bucket => {
            let rate = limit as f64 / window.as_nanos().max(1) as f64;
            let capacity = capacity as f64;
            let mut level = capacity;
            let mut last = list.first().map(|&(t, _)| t).unwrap_or_default();
            for &(at, cost) in list {
                let dt = at.saturating_sub(last).as_nanos() as f64;
                level = (level + dt * rate).min(capacity);
                last = at;
                if level < 1.0 - 1e-6 {
                    out.push(format!(
                        "{tag}: {what} bucket held {level:.3} (< 1) at admission at {at:?}"
                    ));
                }
                level -= cost as f64;
            }
        }
    }
}

/// Checks that no admission of `generation` found `limit` or more requests in flight.
fn check_in_flight(
    out: &mut Vec<String>,
    tag: &str,
    holds: &[InFlight],
    generation: u32,
    limit: u64,
) {
    let mut open: BinaryHeap<Reverse<Duration>> = BinaryHeap::new();
    for h in holds {
        while open.peek().is_some_and(|r| r.0 <= h.taken) {
            open.pop();
        }
        open.push(Reverse(h.released));
        if h.generation == generation && open.len() as u64 > limit {
            out.push(format!(
                "{tag}: {} in flight at the admission at {:?} (limit {limit})",
                open.len(),
                h.taken
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(semantics: Semantics, n: u64) -> EffectiveLimits {
        EffectiveLimits {
            semantics,
            requests: Some(n),
            burst: n,
            tokens: None,
            tokens_month: None,
            concurrency: None,
            request_window: Duration::from_secs(1),
            token_window: Duration::from_secs(1),
        }
    }

    fn entry(ms: u64, tokens: u64) -> Entry {
        let at = Duration::from_millis(ms);
        Entry {
            seq: 0,
            source: Source::Client,
            arrived: at,
            decided: Some(at),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            model: Some("m".into()),
            key_hash: None,
            user_agent: None,
            accept: None,
            stream: false,
            tokens,
            status: 200,
            outcome: Outcome::Served,
            fault: None,
            generation: 0,
        }
    }

    fn log(l: EffectiveLimits, times: &[u64]) -> Log {
        let mut map = BTreeMap::new();
        map.insert(
            "m".to_string(),
            vec![LimitsEpoch {
                generation: 0,
                since: Duration::ZERO,
                limits: l,
            }],
        );
        Log::from_parts(times.iter().map(|&t| entry(t, 10)).collect(), map)
    }

    #[test]
    fn fixed_window_check_catches_n_plus_one() {
        let ok = log(limits(Semantics::FixedWindow, 2), &[0, 10, 1000, 1999]);
        assert!(!ok.was_any_window_over_limit(), "{:?}", ok.violations());
        let bad = log(limits(Semantics::FixedWindow, 2), &[0, 10, 999, 1000]);
        assert!(bad.was_any_window_over_limit());
        assert_eq!(
            bad.admitted_per_fixed_window("m", Duration::from_secs(1)),
            [3, 1]
        );
    }

    #[test]
    fn sliding_check_catches_a_straddling_burst() {
        // Legal for fixed windows, illegal for a sliding log.
        let times = [900, 950, 1000, 1050];
        assert!(!log(limits(Semantics::FixedWindow, 2), &times).was_any_window_over_limit());
        let l = log(limits(Semantics::SlidingLog, 2), &times);
        assert!(l.was_any_window_over_limit());
        assert_eq!(l.max_admitted_in_any_window("m", Duration::from_secs(1)), 4);
        let ok = log(limits(Semantics::SlidingLog, 2), &[0, 500, 1000, 1500]);
        assert!(!ok.was_any_window_over_limit(), "{:?}", ok.violations());
    }

    #[test]
    fn bucket_check_replays_the_bucket() {
        let ok = log(limits(Semantics::Bucket, 2), &[0, 0, 500, 1000]);
        assert!(!ok.was_any_window_over_limit(), "{:?}", ok.violations());
        let bad = log(limits(Semantics::Bucket, 2), &[0, 0, 400]);
        assert!(bad.was_any_window_over_limit());
    }

    #[test]
    fn token_and_month_checks() {
        let mut l = limits(Semantics::FixedWindow, 100);
        l.tokens = Some(15);
        // 10 + 10: the second is admitted with 10 < 15 charged; a third is not allowed.
        assert!(!log(l.clone(), &[0, 1]).was_any_window_over_limit());
        assert!(log(l.clone(), &[0, 1, 2]).was_any_window_over_limit());
        l.tokens = None;
        l.tokens_month = Some(20);
        assert!(!log(l.clone(), &[0, 1]).was_any_window_over_limit());
        assert!(log(l.clone(), &[0, 1, 5000]).was_any_window_over_limit());
        l.requests = Some(0);
        assert!(log(l, &[0]).was_any_window_over_limit());
    }

    #[test]
    fn counters_and_timeline() {
        let mut l = log(limits(Semantics::Bucket, 2), &[0, 1500]);
        let mut refused = entry(1600, 0);
        refused.outcome = Outcome::RateLimited(Refusal::Requests);
        refused.status = 429;
        refused.decided = Some(Duration::from_millis(1600));
        l.entries.push(refused);
        assert_eq!(l.total(), 3);
        assert_eq!(l.admitted(), 2);
        assert_eq!(l.count_429(), 1);
        assert_eq!(l.count_refused(Refusal::Requests), 1);
        let t = l.timeline();
        assert_eq!(t.len(), 2);
        assert_eq!((t[1].admitted, t[1].refused), (1, 1));
        assert_eq!(l.tokens_charged("m"), 20);
    }

    #[test]
    fn leaky_check_wants_one_over_rate_between_admissions() {
        // 10 per second: 100 ms apart.
        let ok = log(limits(Semantics::Leaky, 10), &[0, 100, 200, 1000, 1100]);
        assert!(!ok.was_any_window_over_limit(), "{:?}", ok.violations());
        let bad = log(limits(Semantics::Leaky, 10), &[0, 100, 199]);
        assert_eq!(bad.violations().len(), 1, "{:?}", bad.violations());
        // Tokens: 100 per second, 10 a request: 100 ms apart too.
        let mut l = limits(Semantics::Leaky, 1000);
        l.tokens = Some(100);
        assert!(!log(l.clone(), &[0, 100, 200]).was_any_window_over_limit());
        assert!(log(l, &[0, 100, 150]).was_any_window_over_limit());
    }

    #[test]
    fn concurrency_check_counts_overlapping_places() {
        let mut l = limits(Semantics::Bucket, 1000);
        l.concurrency = Some(2);
        let hold = |taken: u64, released: u64| InFlight {
            taken: Duration::from_millis(taken),
            released: Duration::from_millis(released),
            generation: 0,
        };
        let with = |holds: Vec<InFlight>| {
            let mut map = BTreeMap::new();
            map.insert("m".to_string(), holds);
            log(l.clone(), &[]).with_in_flight(map)
        };
        // Two at a time; the third starts just as the first ends.
        let ok = with(vec![hold(0, 100), hold(10, 200), hold(100, 300)]);
        assert!(!ok.was_any_window_over_limit(), "{:?}", ok.violations());
        assert_eq!(ok.max_in_flight("m"), 2);
        let bad = with(vec![hold(0, 100), hold(10, 200), hold(99, 300)]);
        assert!(bad.was_any_window_over_limit());
        assert_eq!(bad.max_in_flight("m"), 3);
    }
}
