//! The emulator's own limiter: one meter per limit, three semantics.
//!
//! This is deliberately independent of `mistral-core`: a test in which the client and
//! the server share their arithmetic proves nothing. Time is a [`Duration`] since the
//! emulator's start (its epoch), taken inside the model's lock so that admissions of one
//! model are totally ordered in time.
//!
//! Admission rule for one request of cost `c` tokens (all checks, then all charges):
//!
//! 1. a zero limit refuses (zero allowance);
//! 2. the monthly counter refuses when already `>= tokens_month`;
//! 3. the request meter refuses when fewer than 1 request is available;
//! 4. the token meter refuses when fewer than 1 token is available ("already
//!    exhausted": a request is never refused for being larger than what is left);
//! 5. otherwise 1 request and `c` tokens are charged (the token meter may go into debt).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use super::config::{Config, EffectiveLimits, Limits, Semantics};

/// Why the limiter refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Refusal {
    /// A limit of the model is zero.
    ZeroAllowance,
    /// The monthly token quota is spent.
    Month,
    /// The request window (or bucket) is spent.
    Requests,
    /// The token window (or bucket) is spent.
    Tokens,
}

/// One limit over one window.
#[derive(Debug)]
pub(crate) struct Meter {
    limit: u64,
    window: Duration,
    state: MeterState,
}

#[derive(Debug)]
enum MeterState {
    Bucket {
        capacity: f64,
        /// Units per nanosecond.
        rate: f64,
        level: f64,
        last: Duration,
    },
    Fixed {
        index: u128,
        used: u64,
    },
    Sliding {
        log: VecDeque<(Duration, u64)>,
        sum: u64,
    },
}

impl Meter {
    pub(crate) fn new(
        semantics: Semantics,
        limit: u64,
        capacity: u64,
        window: Duration,
        now: Duration,
    ) -> Meter {
        let state = match semantics {
            Semantics::Bucket => MeterState::Bucket {
                capacity: capacity as f64,
                rate: limit as f64 / window.as_nanos().max(1) as f64,
                level: capacity as f64,
                last: now,
            },
            Semantics::FixedWindow => MeterState::Fixed {
                index: window_index(now, window),
                used: 0,
            },
            Semantics::SlidingLog => MeterState::Sliding {
                log: VecDeque::new(),
                sum: 0,
            },
        };
        Meter {
            limit,
            window,
            state,
        }
    }

    /// Brings the meter to `now` and returns what is available (may be negative).
    pub(crate) fn available(&mut self, now: Duration) -> f64 {
        let limit = self.limit;
        let window = self.window;
        match &mut self.state {
            MeterState::Bucket {
                capacity,
                rate,
                level,
                last,
            } => {
                if now > *last {
                    let dt = (now - *last).as_nanos() as f64;
                    *level = (*level + dt * *rate).min(*capacity);
                    *last = now;
                }
                *level
            }
            MeterState::Fixed { index, used } => {
                let current = window_index(now, window);
                if current > *index {
                    *index = current;
                    *used = 0;
                }
                limit as f64 - *used as f64
            }
            MeterState::Sliding { log, sum } => {
                while let Some(&(at, cost)) = log.front() {
                    if at + window <= now {
                        log.pop_front();
                        *sum -= cost;
                    } else {
                        break;
                    }
                }
                limit as f64 - *sum as f64
            }
        }
    }

    /// Charges `cost` at `now` (call [`Meter::available`] first).
    pub(crate) fn charge(&mut self, now: Duration, cost: u64) {
        match &mut self.state {
            MeterState::Bucket { level, .. } => *level -= cost as f64,
            MeterState::Fixed { used, .. } => *used = used.saturating_add(cost),
            MeterState::Sliding { log, sum } => {
                if cost > 0 {
                    log.push_back((now, cost));
                    *sum = sum.saturating_add(cost);
                }
            }
        }
    }

    /// Whole units left (after [`Meter::available`]), never below zero.
    pub(crate) fn remaining(&self) -> u64 {
        let left = match &self.state {
            MeterState::Bucket { level, .. } => *level,
            MeterState::Fixed { used, .. } => self.limit as f64 - *used as f64,
            MeterState::Sliding { sum, .. } => self.limit as f64 - *sum as f64,
        };
        if left <= 0.0 { 0 } else { left.floor() as u64 }
    }

    /// How long from `now` until at least `need` units are available (after
    /// [`Meter::available`]). Zero when they already are.
    pub(crate) fn wait_for(&self, now: Duration, need: f64) -> Duration {
        match &self.state {
            MeterState::Bucket { level, rate, .. } => {
                if *level >= need || *rate <= 0.0 {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(((need - *level) / *rate).ceil() as u64)
                }
            }
            MeterState::Fixed { index, used } => {
                if self.limit as f64 - *used as f64 >= need {
                    Duration::ZERO
                } else {
                    boundary_after(*index, self.window).saturating_sub(now)
                }
            }
            MeterState::Sliding { log, sum } => {
                let mut available = self.limit as f64 - *sum as f64;
                let mut wait = Duration::ZERO;
                for &(at, cost) in log {
                    if available >= need {
                        break;
                    }
                    available += cost as f64;
                    wait = (at + self.window).saturating_sub(now);
                }
                wait
            }
        }
    }

    /// How long from `now` until the meter is entirely recovered (the "reset" of the
    /// early-2025 headers).
    pub(crate) fn reset_in(&self, now: Duration) -> Duration {
        match &self.state {
            MeterState::Bucket {
                capacity,
                level,
                rate,
                ..
            } => {
                if *level >= *capacity || *rate <= 0.0 {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(((*capacity - *level) / *rate).ceil() as u64)
                }
            }
            MeterState::Fixed { index, .. } => {
                boundary_after(*index, self.window).saturating_sub(now)
            }
            MeterState::Sliding { log, .. } => log
                .back()
                .map(|&(at, _)| (at + self.window).saturating_sub(now))
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// Index of the fixed window (aligned on the epoch) holding `at`.
pub(crate) fn window_index(at: Duration, window: Duration) -> u128 {
    at.as_nanos() / window.as_nanos().max(1)
}

fn boundary_after(index: u128, window: Duration) -> Duration {
    let nanos = (index + 1).saturating_mul(window.as_nanos().max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// What one meter shows after a decision, for the headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MeterView {
    pub limit: u64,
    pub remaining: u64,
    pub window: Duration,
    pub reset_in: Duration,
}

/// Everything a response's rate-limit headers need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    pub requests: Option<MeterView>,
    pub tokens: Option<MeterView>,
    /// (limit, remaining)
    pub month: Option<(u64, u64)>,
}

/// The limiter's answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decision {
    pub refusal: Option<Refusal>,
    /// When the decision was taken (time since the epoch).
    pub at: Duration,
    /// Which limits generation of the model took it.
    pub generation: u32,
    pub view: View,
    /// Until the refusing meter admits again (window refusals only).
    pub retry_in: Option<Duration>,
}

/// The limits of a model from `since` on (they change with [`crate::Emulator::set_limits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsEpoch {
    /// Generation number (0 for the limits the model started with).
    pub generation: u32,
    /// When these limits took effect (time since the emulator's start).
    pub since: Duration,
    /// The limits.
    pub limits: EffectiveLimits,
}

/// One model's budget.
#[derive(Debug)]
pub(crate) struct ModelState {
    limits: EffectiveLimits,
    generation: u32,
    requests: Option<Meter>,
    tokens: Option<Meter>,
    month_used: u64,
    history: Vec<LimitsEpoch>,
}

impl ModelState {
    fn new(limits: EffectiveLimits, now: Duration) -> ModelState {
        let mut state = ModelState {
            limits: limits.clone(),
            generation: 0,
            requests: None,
            tokens: None,
            month_used: 0,
            history: Vec::new(),
        };
        state.install(limits, now);
        state
    }

    fn install(&mut self, limits: EffectiveLimits, now: Duration) {
        let semantics = limits.semantics;
        self.requests = limits
            .requests
            .map(|n| Meter::new(semantics, n, limits.burst, limits.request_window, now));
        self.tokens = limits
            .tokens
            .map(|n| Meter::new(semantics, n, n, limits.token_window, now));
        if !self.history.is_empty() {
            self.generation += 1;
        }
        self.history.push(LimitsEpoch {
            generation: self.generation,
            since: now,
            limits: limits.clone(),
        });
        self.limits = limits;
    }

    fn view(&self, now: Duration) -> View {
        let meter_view = |m: &Meter| MeterView {
            limit: m.limit,
            remaining: m.remaining(),
            window: m.window,
            reset_in: m.reset_in(now),
        };
        View {
            requests: self.requests.as_ref().map(meter_view),
            tokens: self.tokens.as_ref().map(meter_view),
            month: self
                .limits
                .tokens_month
                .map(|m| (m, m.saturating_sub(self.month_used))),
        }
    }

    /// Decides on one request costing `cost` tokens at `now`.
    pub(crate) fn admit(&mut self, now: Duration, cost: u64) -> Decision {
        let req_available = self.requests.as_mut().map(|m| m.available(now));
        let tok_available = self.tokens.as_mut().map(|m| m.available(now));
        let mut retry_in = None;
        let refusal = if self.limits.is_zero_allowance() {
            Some(Refusal::ZeroAllowance)
        } else if self
            .limits
            .tokens_month
            .is_some_and(|m| self.month_used >= m)
        {
            Some(Refusal::Month)
        } else if req_available.is_some_and(|a| a < 1.0) {
            retry_in = self.requests.as_ref().map(|m| m.wait_for(now, 1.0));
            Some(Refusal::Requests)
        } else if tok_available.is_some_and(|a| a < 1.0) {
            retry_in = self.tokens.as_ref().map(|m| m.wait_for(now, 1.0));
            Some(Refusal::Tokens)
        } else {
            None
        };
        if refusal.is_none() {
            if let Some(m) = self.requests.as_mut() {
                m.charge(now, 1);
            }
            if let Some(m) = self.tokens.as_mut() {
                m.charge(now, cost);
            }
            self.month_used = self.month_used.saturating_add(cost);
        }
        Decision {
            refusal,
            at: now,
            generation: self.generation,
            view: self.view(now),
            retry_in,
        }
    }
}

/// One model's slot in the table; its own short lock.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<ModelState>,
}

impl Slot {
    pub(crate) fn admit(&self, clock: impl Fn() -> Duration, cost: u64) -> Decision {
        let mut state = lock(&self.state);
        // Time is read under the lock so admissions of a model are ordered in time.
        let now = clock();
        state.admit(now, cost)
    }

    pub(crate) fn limits(&self) -> EffectiveLimits {
        lock(&self.state).limits.clone()
    }

    fn set_limits(&self, limits: EffectiveLimits, now: Duration) {
        lock(&self.state).install(limits, now);
    }

    fn reset_month(&self) {
        lock(&self.state).month_used = 0;
    }

    pub(crate) fn history(&self) -> Vec<LimitsEpoch> {
        lock(&self.state).history.clone()
    }
}

/// Every model's budget.
#[derive(Debug)]
pub(crate) struct Models {
    config: Config,
    map: RwLock<HashMap<String, Arc<Slot>>>,
    month_resets: Mutex<Vec<Duration>>,
}

impl Models {
    pub(crate) fn new(config: &Config) -> Models {
        let map = config
            .models
            .iter()
            .map(|(name, limits)| {
                let state = ModelState::new(config.effective(limits), Duration::ZERO);
                (
                    name.clone(),
                    Arc::new(Slot {
                        state: Mutex::new(state),
                    }),
                )
            })
            .collect();
        Models {
            config: config.clone(),
            map: RwLock::new(map),
            month_resets: Mutex::new(Vec::new()),
        }
    }

    /// The slot of `model`, created with the default limits on first sight.
    pub(crate) fn slot(&self, model: &str, now: Duration) -> Arc<Slot> {
        if let Some(slot) = read(&self.map).get(model) {
            return slot.clone();
        }
        let mut map = write(&self.map);
        map.entry(model.to_string())
            .or_insert_with(|| {
                let limits = self.config.effective(self.config.limits_for(model));
                Arc::new(Slot {
                    state: Mutex::new(ModelState::new(limits, now)),
                })
            })
            .clone()
    }

    /// Every model seen or configured so far.
    pub(crate) fn all(&self) -> Vec<(String, Arc<Slot>)> {
        read(&self.map)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Replaces the limits of `model` from `now` on (a tier change); meters start afresh.
    pub(crate) fn set_limits(&self, model: &str, limits: &Limits, now: Duration) {
        let effective = self.config.effective(limits);
        let mut map = write(&self.map);
        match map.get(model) {
            Some(slot) => slot.set_limits(effective, now),
            None => {
                map.insert(
                    model.to_string(),
                    Arc::new(Slot {
                        state: Mutex::new(ModelState::new(effective, now)),
                    }),
                );
            }
        }
    }

    /// Forgets the monthly consumption of every model.
    pub(crate) fn reset_month(&self, now: Duration) {
        let map = read(&self.map);
        lock(&self.month_resets).push(now);
        for slot in map.values() {
            slot.reset_month();
        }
    }

    /// When the month was reset.
    pub(crate) fn month_resets(&self) -> Vec<Duration> {
        lock(&self.month_resets).clone()
    }
}

/// Locks a mutex, going on with the data if a holder panicked (the data is counters).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(semantics: Semantics, requests: u64, burst: u64) -> EffectiveLimits {
        EffectiveLimits {
            semantics,
            requests: Some(requests),
            burst,
            tokens: None,
            tokens_month: None,
            request_window: ms(1000),
            token_window: ms(1000),
        }
    }

    fn admitted_at(state: &mut ModelState, times: &[u64]) -> usize {
        times
            .iter()
            .filter(|&&t| state.admit(ms(t), 1).refusal.is_none())
            .count()
    }

    #[test]
    fn fixed_window_resets_at_boundaries() {
        let mut s = ModelState::new(limits(Semantics::FixedWindow, 3, 3), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 10, 20, 30, 999]), 3);
        let d = s.admit(ms(999), 1);
        assert_eq!(d.refusal, Some(Refusal::Requests));
        assert_eq!(d.retry_in, Some(ms(1)));
        assert_eq!(admitted_at(&mut s, &[1000, 1001, 1002, 1003]), 3);
    }

    #[test]
    fn sliding_log_counts_the_trailing_window() {
        let mut s = ModelState::new(limits(Semantics::SlidingLog, 2, 2), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 500, 900]), 2);
        let d = s.admit(ms(900), 1);
        assert_eq!(d.retry_in, Some(ms(100)));
        // at 1000 the entry of 0 has expired, the one of 500 not yet.
        assert_eq!(admitted_at(&mut s, &[1000, 1001]), 1);
        assert_eq!(admitted_at(&mut s, &[1499]), 0);
        assert_eq!(admitted_at(&mut s, &[1500]), 1);
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut s = ModelState::new(limits(Semantics::Bucket, 10, 5), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 0, 0, 0, 0, 0, 0]), 5);
        let d = s.admit(ms(0), 1);
        let wait = d.retry_in.map(|w| w.as_micros()).unwrap_or(0);
        assert!(wait.abs_diff(100_000) <= 1, "{wait}");
        assert_eq!(admitted_at(&mut s, &[99]), 0);
        assert_eq!(admitted_at(&mut s, &[101, 150, 201]), 2);
    }

    #[test]
    fn tokens_refuse_only_when_exhausted_and_month_caps() {
        let mut l = limits(Semantics::FixedWindow, 100, 100);
        l.tokens = Some(50);
        l.tokens_month = Some(120);
        let mut s = ModelState::new(l, ms(0));
        assert!(s.admit(ms(0), 40).refusal.is_none());
        // 10 left: a request of 30 still passes (charged after), leaving a debt.
        let d = s.admit(ms(1), 30);
        assert!(d.refusal.is_none());
        assert_eq!(d.view.tokens.map(|t| t.remaining), Some(0));
        assert_eq!(s.admit(ms(2), 1).refusal, Some(Refusal::Tokens));
        assert!(s.admit(ms(1000), 45).refusal.is_none());
        // month: 115 used of 120
        assert!(s.admit(ms(2000), 10).refusal.is_none());
        let d = s.admit(ms(3000), 1);
        assert_eq!(d.refusal, Some(Refusal::Month));
        assert_eq!(d.view.month, Some((120, 0)));
    }

    #[test]
    fn zero_allowance_refuses_forever() {
        let mut s = ModelState::new(limits(Semantics::Bucket, 0, 0), ms(0));
        for t in [0, 1000, 100_000] {
            assert_eq!(s.admit(ms(t), 1).refusal, Some(Refusal::ZeroAllowance));
        }
    }

    #[test]
    fn bucket_survives_time_going_backwards() {
        let mut s = ModelState::new(limits(Semantics::Bucket, 10, 1), ms(500));
        assert!(s.admit(ms(500), 1).refusal.is_none());
        assert!(s.admit(ms(100), 1).refusal.is_some());
        assert!(s.admit(ms(600), 1).refusal.is_none());
    }
}
