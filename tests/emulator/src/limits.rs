//! The emulator's own limiter: one meter per limit, four semantics, and a count of the
//! requests in flight.
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
//! 3. the concurrency limit refuses when `concurrency` requests are already in flight;
//! 4. the request meter refuses when fewer than 1 request is available;
//! 5. the token meter refuses when fewer than 1 token is available ("already
//!    exhausted": a request is never refused for being larger than what is left);
//! 6. otherwise 1 request and `c` tokens are charged (the token meter may go into debt)
//!    and, for a request that holds a place ([`Slot::admit_held`]), the in-flight count
//!    goes up until its [`SlotGuard`] is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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
    /// As many requests as the concurrency limit allows are already in flight.
    Concurrency,
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
    /// nginx `limit_req` without burst (see [`Semantics::Leaky`]).
    Leaky {
        /// Milli-units per second.
        rate: u64,
        /// What the admitted requests leave to drain, in milli-units, as of `last`: nginx's
        /// `excess` plus the last admission's own 1000 (its cost × 1000 for tokens). With
        /// no burst nginx stores `excess = 0` and refuses while `0 - rate × ms / 1000 +
        /// 1000 > 0`; here that is `excess - rate × ms / 1000 > 0`, the same test.
        excess: u64,
        /// Millisecond clock of the last admission (`None`: nothing admitted yet).
        last: Option<u64>,
        /// `excess'` of a request arriving at `probe_at` (set by [`Meter::available`]).
        probe: u64,
        probe_at: u64,
    },
}

/// Milli-units per second of `limit` per `window`, as nginx computes `rate` (at least 1).
fn milli_rate(limit: u64, window: Duration) -> u64 {
    let per_sec = u128::from(limit) * 1000 * 1_000_000_000 / window.as_nanos().max(1);
    u64::try_from(per_sec).unwrap_or(u64::MAX).max(1)
}

/// The millisecond clock nginx reads (`ngx_current_msec`): whole milliseconds.
fn msec(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
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
            Semantics::Leaky => MeterState::Leaky {
                rate: milli_rate(limit, window),
                excess: 0,
                last: None,
                probe: 0,
                probe_at: msec(now),
            },
        };
        Meter {
            limit,
            window,
            state,
        }
    }

    /// Changes the limit (and a bucket's capacity) from `now` on, keeping what was spent.
    pub(crate) fn rescale(&mut self, now: Duration, limit: u64, capacity: u64) {
        self.available(now);
        self.limit = limit;
        let window = self.window;
        match &mut self.state {
            MeterState::Bucket {
                capacity: cap,
                rate,
                level,
                ..
            } => {
                *cap = capacity as f64;
                *rate = limit as f64 / window.as_nanos().max(1) as f64;
                *level = level.min(*cap);
            }
            MeterState::Leaky { rate, .. } => *rate = milli_rate(limit, window),
            MeterState::Fixed { .. } | MeterState::Sliding { .. } => {}
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
            MeterState::Leaky {
                rate,
                excess,
                last,
                probe,
                probe_at,
            } => {
                let now_ms = msec(now);
                // nginx: a clock gone backwards counts as no time at all.
                let ms = last.map_or(0, |l| now_ms.saturating_sub(l));
                let drained =
                    u64::try_from(u128::from(*rate) * u128::from(ms) / 1000).unwrap_or(u64::MAX);
                *probe = match last {
                    None => 0,
                    // excess - rate × ms / 1000 + 1000, at least 0; the + 1000 is this
                    // request (a token meter adds its cost at the charge instead).
                    Some(_) => excess.saturating_sub(drained),
                };
                *probe_at = now_ms;
                // The request meter: `probe + 1000 > 0` (burst 0) unless nothing is
                // pending; for tokens the same "already exhausted" rule as elsewhere.
                if *probe == 0 { 1.0 } else { 0.0 }
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
            MeterState::Leaky {
                excess,
                last,
                probe,
                probe_at,
                ..
            } => {
                *excess = probe.saturating_add(cost.saturating_mul(1000));
                *last = Some(*probe_at);
                // As seen right after the charge (for the headers): nothing admissible.
                *probe = *excess;
            }
        }
    }

    /// Whole units left (after [`Meter::available`]), never below zero.
    pub(crate) fn remaining(&self) -> u64 {
        let left = match &self.state {
            MeterState::Bucket { level, .. } => *level,
            MeterState::Fixed { used, .. } => self.limit as f64 - *used as f64,
            MeterState::Sliding { sum, .. } => self.limit as f64 - *sum as f64,
            MeterState::Leaky { probe, .. } => {
                if *probe == 0 {
                    1.0
                } else {
                    0.0
                }
            }
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
            MeterState::Leaky { .. } => self.leaky_drained_in(),
        }
    }

    /// A leaky meter: time until what is pending has drained (whole milliseconds).
    fn leaky_drained_in(&self) -> Duration {
        match &self.state {
            MeterState::Leaky { rate, probe, .. } if *probe > 0 => {
                // The least ms with rate × ms / 1000 >= probe.
                let ms = (u128::from(*probe) * 1000).div_ceil(u128::from((*rate).max(1)));
                Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
            }
            _ => Duration::ZERO,
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
            MeterState::Leaky { .. } => self.leaky_drained_in(),
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
    /// Requests admitted with a place held and not yet released.
    in_flight: u64,
    /// Places released so far (kept up to `max_holds`).
    holds: Vec<InFlight>,
    max_holds: usize,
}

/// One request's place under the concurrency count, from admission to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// When it was admitted (time since the emulator's start).
    pub taken: Duration,
    /// When its response had been handed over whole (or the connection dropped it).
    pub released: Duration,
    /// Limits generation that admitted it.
    pub generation: u32,
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
            in_flight: 0,
            holds: Vec::new(),
            max_holds: 1_000_000,
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

    /// Changes the limits from `now` on, keeping the meters' state (a tier change in the
    /// middle of a window): a new generation.
    fn rescale(&mut self, limits: EffectiveLimits, now: Duration) {
        let same_shape = self.limits.semantics == limits.semantics
            && self.limits.request_window == limits.request_window
            && self.limits.token_window == limits.token_window
            && self.requests.is_some() == limits.requests.is_some()
            && self.tokens.is_some() == limits.tokens.is_some();
        if !same_shape {
            self.install(limits, now);
            return;
        }
        if let (Some(m), Some(n)) = (self.requests.as_mut(), limits.requests) {
            m.rescale(now, n, limits.burst);
        }
        if let (Some(m), Some(n)) = (self.tokens.as_mut(), limits.tokens) {
            m.rescale(now, n, n);
        }
        self.generation += 1;
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

    /// Decides on one request costing `cost` tokens at `now`; an admitted request that
    /// `holds` a place counts as in flight until [`ModelState::release`].
    pub(crate) fn admit(&mut self, now: Duration, cost: u64, holds: bool) -> Decision {
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
        } else if self.limits.concurrency.is_some_and(|k| self.in_flight >= k) {
            Some(Refusal::Concurrency)
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
            if holds {
                self.in_flight += 1;
            }
        }
        Decision {
            refusal,
            at: now,
            generation: self.generation,
            view: self.view(now),
            retry_in,
        }
    }

    fn release(&mut self, taken: Duration, generation: u32, now: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.holds.len() < self.max_holds {
            self.holds.push(InFlight {
                taken,
                released: now,
                generation,
            });
        }
    }
}

/// One model's slot in the table; its own short lock.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<ModelState>,
}

/// A request's place in flight: released (and recorded) when dropped.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    slot: Arc<Slot>,
    epoch: Instant,
    taken: Duration,
    generation: u32,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.slot.state);
        // Read under the lock, as admissions are: releases and admissions are ordered.
        let now = self.epoch.elapsed();
        state.release(self.taken, self.generation, now);
    }
}

impl Slot {
    fn new(state: ModelState) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(state),
        })
    }

    /// Decides on a request that holds no place (the background consumer's).
    pub(crate) fn admit(&self, clock: impl Fn() -> Duration, cost: u64) -> Decision {
        let mut state = lock(&self.state);
        // Time is read under the lock so admissions of a model are ordered in time.
        let now = clock();
        state.admit(now, cost, false)
    }

    /// Decides on a client's request; an admitted one holds its place in flight until
    /// the guard is dropped. `epoch` is the emulator's start (its clock is
    /// `epoch.elapsed()`).
    pub(crate) fn admit_held(
        self: &Arc<Self>,
        epoch: Instant,
        cost: u64,
    ) -> (Decision, Option<SlotGuard>) {
        let mut state = lock(&self.state);
        let now = epoch.elapsed();
        let decision = state.admit(now, cost, true);
        let guard = decision.refusal.is_none().then(|| SlotGuard {
            slot: self.clone(),
            epoch,
            taken: now,
            generation: decision.generation,
        });
        (decision, guard)
    }

    fn rescale(&self, limits: EffectiveLimits, now: Duration) {
        lock(&self.state).rescale(limits, now);
    }

    pub(crate) fn holds(&self) -> Vec<InFlight> {
        lock(&self.state).holds.clone()
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
    /// The factor of the last [`Models::rescale`] (1 at the start).
    factor: Mutex<f64>,
}

impl Models {
    pub(crate) fn new(config: &Config) -> Models {
        let map = config
            .models
            .iter()
            .map(|(name, limits)| {
                let mut state = ModelState::new(config.effective(limits), Duration::ZERO);
                state.max_holds = config.max_log_entries;
                (name.clone(), Slot::new(state))
            })
            .collect();
        Models {
            config: config.clone(),
            map: RwLock::new(map),
            month_resets: Mutex::new(Vec::new()),
            factor: Mutex::new(1.0),
        }
    }

    fn new_state(&self, limits: EffectiveLimits, now: Duration) -> ModelState {
        let mut state = ModelState::new(limits, now);
        state.max_holds = self.config.max_log_entries;
        state
    }

    /// The slot of `model`, created with the default limits on first sight.
    pub(crate) fn slot(&self, model: &str, now: Duration) -> Arc<Slot> {
        if let Some(slot) = read(&self.map).get(model) {
            return slot.clone();
        }
        let mut map = write(&self.map);
        // Read under the map's lock, as `rescale` writes it: no slot misses a change.
        let factor = *lock(&self.factor);
        map.entry(model.to_string())
            .or_insert_with(|| {
                let limits = self
                    .config
                    .effective(self.config.limits_for(model))
                    .scaled(factor);
                Slot::new(self.new_state(limits, now))
            })
            .clone()
    }

    /// Scales every model's limits as configured at the start by `factor` from `now` on,
    /// keeping what the meters have spent (see [`super::config::Change`]); models seen
    /// later start with the scaled limits.
    pub(crate) fn rescale(&self, factor: f64, now: Duration) {
        if !(factor.is_finite() && factor > 0.0) {
            return;
        }
        let slots: Vec<(String, Arc<Slot>)> = {
            let map = write(&self.map);
            *lock(&self.factor) = factor;
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (name, slot) in slots {
            let limits = self
                .config
                .effective(self.config.limits_for(&name))
                .scaled(factor);
            slot.rescale(limits, now);
        }
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
                map.insert(model.to_string(), Slot::new(self.new_state(effective, now)));
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
            concurrency: None,
            request_window: ms(1000),
            token_window: ms(1000),
        }
    }

    fn admitted_at(state: &mut ModelState, times: &[u64]) -> usize {
        times
            .iter()
            .filter(|&&t| state.admit(ms(t), 1, false).refusal.is_none())
            .count()
    }

    #[test]
    fn fixed_window_resets_at_boundaries() {
        let mut s = ModelState::new(limits(Semantics::FixedWindow, 3, 3), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 10, 20, 30, 999]), 3);
        let d = s.admit(ms(999), 1, false);
        assert_eq!(d.refusal, Some(Refusal::Requests));
        assert_eq!(d.retry_in, Some(ms(1)));
        assert_eq!(admitted_at(&mut s, &[1000, 1001, 1002, 1003]), 3);
    }

    #[test]
    fn sliding_log_counts_the_trailing_window() {
        let mut s = ModelState::new(limits(Semantics::SlidingLog, 2, 2), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 500, 900]), 2);
        let d = s.admit(ms(900), 1, false);
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
        let d = s.admit(ms(0), 1, false);
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
        assert!(s.admit(ms(0), 40, false).refusal.is_none());
        // 10 left: a request of 30 still passes (charged after), leaving a debt.
        let d = s.admit(ms(1), 30, false);
        assert!(d.refusal.is_none());
        assert_eq!(d.view.tokens.map(|t| t.remaining), Some(0));
        assert_eq!(s.admit(ms(2), 1, false).refusal, Some(Refusal::Tokens));
        assert!(s.admit(ms(1000), 45, false).refusal.is_none());
        // month: 115 used of 120
        assert!(s.admit(ms(2000), 10, false).refusal.is_none());
        let d = s.admit(ms(3000), 1, false);
        assert_eq!(d.refusal, Some(Refusal::Month));
        assert_eq!(d.view.month, Some((120, 0)));
    }

    #[test]
    fn zero_allowance_refuses_forever() {
        let mut s = ModelState::new(limits(Semantics::Bucket, 0, 0), ms(0));
        for t in [0, 1000, 100_000] {
            assert_eq!(
                s.admit(ms(t), 1, false).refusal,
                Some(Refusal::ZeroAllowance)
            );
        }
    }

    #[test]
    fn bucket_survives_time_going_backwards() {
        let mut s = ModelState::new(limits(Semantics::Bucket, 10, 1), ms(500));
        assert!(s.admit(ms(500), 1, false).refusal.is_none());
        assert!(s.admit(ms(100), 1, false).refusal.is_some());
        assert!(s.admit(ms(600), 1, false).refusal.is_none());
    }

    #[test]
    fn leaky_refuses_sooner_than_one_over_rate_and_refusals_do_not_count() {
        // 10 per second: one every 100 ms.
        let mut s = ModelState::new(limits(Semantics::Leaky, 10, 10), ms(0));
        assert!(
            s.admit(ms(0), 1, false).refusal.is_none(),
            "the first is admitted"
        );
        let d = s.admit(ms(50), 1, false);
        assert_eq!(d.refusal, Some(Refusal::Requests));
        assert_eq!(d.retry_in, Some(ms(50)));
        assert_eq!(d.view.requests.map(|v| v.remaining), Some(0));
        // The refusal at 50 did not move the state: 100 ms after the admitted one is due.
        assert_eq!(admitted_at(&mut s, &[99]), 0);
        assert_eq!(admitted_at(&mut s, &[100]), 1);
        assert_eq!(admitted_at(&mut s, &[150, 199, 200, 250, 300]), 2);
        // A long idle time gives no burst: one, then again 100 ms later.
        assert_eq!(admitted_at(&mut s, &[5000, 5000, 5001, 5099, 5100]), 2);
    }

    #[test]
    fn leaky_matches_nginx_integer_arithmetic() {
        // 3 per second: nginx rate = 3000 milli-requests/s; a request is due when
        // 3000 × ms / 1000 >= 1000, i.e. ms >= 334 (333 gives 999).
        let mut s = ModelState::new(limits(Semantics::Leaky, 3, 3), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 333]), 1);
        assert_eq!(admitted_at(&mut s, &[334]), 1);
        // Sub-millisecond time is not seen: 667.9 ms is 667 on nginx's clock.
        assert!(
            s.admit(Duration::from_micros(667_900), 1, false)
                .refusal
                .is_some()
        );
        assert_eq!(admitted_at(&mut s, &[668]), 1);
        // 30 per minute: 500 milli-requests/s, one every 2 s.
        let mut l = limits(Semantics::Leaky, 30, 30);
        l.request_window = ms(60_000);
        let mut s = ModelState::new(l, ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 1999, 2000, 3999, 4000]), 3);
    }

    #[test]
    fn leaky_tokens_wait_for_the_previous_cost_to_drain() {
        let mut l = limits(Semantics::Leaky, 1000, 1000);
        l.tokens = Some(100); // 100 tokens per second
        let mut s = ModelState::new(l, ms(0));
        assert!(s.admit(ms(0), 20, false).refusal.is_none());
        // 20 tokens drain in 200 ms.
        assert_eq!(s.admit(ms(150), 5, false).refusal, Some(Refusal::Tokens));
        assert!(s.admit(ms(200), 5, false).refusal.is_none());
        assert_eq!(s.admit(ms(249), 5, false).refusal, Some(Refusal::Tokens));
        assert!(s.admit(ms(250), 5, false).refusal.is_none());
    }

    #[test]
    fn concurrency_counts_held_places_until_released() {
        let mut l = limits(Semantics::Bucket, 1000, 1000);
        l.concurrency = Some(2);
        let slot = Slot::new(ModelState::new(l, ms(0)));
        let epoch = Instant::now();
        let (a, ga) = slot.admit_held(epoch, 1);
        let (b, gb) = slot.admit_held(epoch, 1);
        assert!(a.refusal.is_none() && b.refusal.is_none());
        let (c, gc) = slot.admit_held(epoch, 1);
        assert_eq!(c.refusal, Some(Refusal::Concurrency));
        assert!(gc.is_none(), "a refusal holds nothing");
        // A request that holds no place (the background consumer's) is refused as well
        // while the places are taken, and admitted without taking one once they are not.
        let background = slot.admit(|| epoch.elapsed(), 1);
        assert_eq!(background.refusal, Some(Refusal::Concurrency));
        drop(ga);
        assert!(slot.admit(|| epoch.elapsed(), 1).refusal.is_none());
        let (d, gd) = slot.admit_held(epoch, 1);
        assert!(d.refusal.is_none());
        drop((gb, gd));
        let holds = slot.holds();
        assert_eq!(holds.len(), 3);
        assert!(holds.iter().all(|h| h.released >= h.taken));
        assert_eq!(lock(&slot.state).in_flight, 0);
    }

    #[test]
    fn rescale_keeps_what_was_spent() {
        let mut s = ModelState::new(limits(Semantics::FixedWindow, 4, 4), ms(0));
        assert_eq!(admitted_at(&mut s, &[0, 1, 2]), 3);
        // Halved in the middle of the window: 3 already spent of a new limit of 2.
        s.rescale(s.limits.scaled(0.5), ms(10));
        assert_eq!(s.generation, 1);
        assert_eq!(s.limits.requests, Some(2));
        assert_eq!(admitted_at(&mut s, &[20, 999]), 0);
        assert_eq!(admitted_at(&mut s, &[1000, 1001, 1002]), 2);
        // Doubled (of the halved): 4 per window.
        s.rescale(s.limits.scaled(2.0), ms(1500));
        assert_eq!(admitted_at(&mut s, &[1600, 1700, 1800]), 2);
        assert_eq!(s.history.len(), 3);
        // A leaky meter changes its rate only.
        let mut s = ModelState::new(limits(Semantics::Leaky, 10, 10), ms(0));
        assert_eq!(admitted_at(&mut s, &[0]), 1);
        s.rescale(s.limits.scaled(2.0), ms(10));
        assert_eq!(admitted_at(&mut s, &[49, 50, 99, 100]), 2);
    }

    #[test]
    fn scaling_keeps_zero_and_at_least_one() {
        let mut l = limits(Semantics::Bucket, 3, 3);
        l.tokens = Some(0);
        l.concurrency = Some(1);
        l.tokens_month = Some(100);
        let half = l.scaled(0.1);
        assert_eq!(
            (half.requests, half.burst, half.tokens, half.concurrency),
            (Some(1), 1, Some(0), Some(1))
        );
        assert_eq!(half.tokens_month, Some(100));
        assert_eq!(l.scaled(f64::NAN), l);
        assert_eq!(l.scaled(2.0).requests, Some(6));
    }
}
