//! What a shared store does while it cannot be reached: pace locally, conservatively,
//! from where the store left off; and what it brings back when the store returns.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use mistral_core::limiter::local::MAX_BUDGETS;
use mistral_core::limiter::{BudgetState, Budgets, LimiterConfig, LocalLimiter, Source};
use mistral_core::{Ask, Grant, Limiter, Report};

/// The stand-in of one shared store: the last state the store returned for each model
/// (and when), and while the store is down an in-process limiter started from those
/// states at a capped share.
pub(crate) struct Fallback {
    store: &'static str,
    config: LimiterConfig,
    share_cap_ppm: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The latest state the store returned per model, and when it did.
    known: HashMap<String, (BudgetState, Instant)>,
    /// Set while the store is down: since when, and the stand-in (its clock at 0 µs
    /// when it was made).
    local: Option<(Instant, LocalLimiter)>,
}

/// Keeps at most [`MAX_BUDGETS`] known states (the oldest answers go first), so a store
/// used for ever new models does not grow this process's memory without bound.
fn bound(known: &mut HashMap<String, (BudgetState, Instant)>) {
    if known.len() <= MAX_BUDGETS {
        return;
    }
    let mut by_age: Vec<(Instant, String)> =
        known.iter().map(|(m, (_, at))| (*at, m.clone())).collect();
    by_age.sort_unstable();
    let excess = known.len() - MAX_BUDGETS;
    for (_, model) in by_age.into_iter().take(excess) {
        known.remove(&model);
    }
}

impl Fallback {
    pub(crate) fn new(store: &'static str, config: LimiterConfig, share_cap_ppm: u64) -> Self {
        Self {
            store,
            config,
            share_cap_ppm,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes what the store answered for `model`, and that it answers.
    pub(crate) fn up(&self, model: &str, state: &BudgetState) {
        let mut inner = self.inner();
        inner
            .known
            .insert(model.to_owned(), (*state, Instant::now()));
        bound(&mut inner.known);
        if let Some((since, _)) = inner.local.take() {
            tracing::info!(
                store = self.store,
                down_for_ms = since.elapsed().as_millis() as u64,
                "the shared limiter's store is back; pacing through it again"
            );
        }
    }

    /// Notes the states a store holds now (without ending an outage: the caller's
    /// operation may still fail).
    pub(crate) fn note<'a>(&self, states: impl IntoIterator<Item = (&'a String, &'a BudgetState)>) {
        let mut inner = self.inner();
        let now = Instant::now();
        for (model, state) in states {
            inner.known.insert(model.clone(), (*state, now));
        }
        bound(&mut inner.known);
    }

    /// `true` while the stand-in paces (the store failed and has not answered since).
    pub(crate) fn is_down(&self) -> bool {
        self.inner().local.is_some()
    }

    /// What this process knows of every budget, on the store's clock, for a store that
    /// lost its states or comes back after an outage: the last state the store returned,
    /// joined with what the stand-in booked since (moved onto the store's clock), with
    /// the share the store last had (see `BudgetState::rejoined` for how it is merged). `store_now_us` is the store's time now, when known; otherwise it is
    /// estimated from the last answer (its time plus the time since).
    pub(crate) fn rejoin_states(&self, store_now_us: Option<u64>) -> Vec<(String, BudgetState)> {
        let inner = self.inner();
        let now = Instant::now();
        inner
            .known
            .iter()
            .filter(|(_, (s, _))| s.source != Source::Unknown)
            .map(|(model, (state, at))| {
                let since = u64::try_from(now.duration_since(*at).as_micros()).unwrap_or(0);
                let store_now = store_now_us.unwrap_or(state.seen_us.saturating_add(since));
                let mut best = *state;
                if let Some((made, local)) = &inner.local
                    && let Some(booked) = local.budget(model)
                {
                    let local_now =
                        u64::try_from(now.duration_since(*made).as_micros()).unwrap_or(0);
                    best = best.joined(&booked.rebased(local_now, store_now));
                    // The stand-in's share is its cap, not what the store had.
                    best.share_ppm = state.share_ppm;
                }
                (model.clone(), best)
            })
            .collect()
    }

    /// The share a stand-in paces at (what a process hands back when it rejoins).
    pub(crate) fn share_cap_ppm(&self) -> u64 {
        self.share_cap_ppm
    }

    /// The store failed: reserves in the stand-in (made, and the outage logged, at the
    /// first failure).
    pub(crate) fn reserve(&self, error: &dyn fmt::Display, now: Instant, ask: &Ask) -> Grant {
        self.with_local(error, |local| local.reserve(now, ask))
    }

    /// The store failed: reports to the stand-in.
    pub(crate) fn report(&self, error: &dyn fmt::Display, now: Instant, report: &Report) {
        self.with_local(error, |local| local.report(now, report));
    }

    fn with_local<R>(&self, error: &dyn fmt::Display, f: impl FnOnce(&LocalLimiter) -> R) -> R {
        let mut guard = self.inner();
        let Inner { known, local } = &mut *guard;
        if local.is_some() {
            tracing::debug!(store = self.store, %error, "shared limiter store still down");
        } else {
            tracing::warn!(
                store = self.store,
                %error,
                share_ppm = self.share_cap_ppm,
                "the shared limiter's store failed; pacing in-process at a reduced share of \
                 the known limits, from the last known state, until it is back"
            );
        }
        let (_, local) = local.get_or_insert_with(|| {
            // The last states the store returned, moved onto the stand-in's clock (0 µs
            // now): what the store had booked ahead stays booked, so the stand-in does
            // not admit a second time what the store already admitted.
            let made = Instant::now();
            let states = known
                .iter()
                .map(|(model, (s, at))| {
                    let since = u64::try_from(made.duration_since(*at).as_micros()).unwrap_or(0);
                    let local = s.rebased(s.seen_us.saturating_add(since), 0);
                    (model.clone(), own_share_start(local, self.share_cap_ppm))
                })
                .collect();
            let budgets = Budgets::from_states(self.config.clone(), states)
                .with_share_cap(self.share_cap_ppm);
            let local = LocalLimiter::from_budgets(budgets);
            (made, local)
        });
        f(local)
    }
}

/// A stand-in's first slot: the shared schedule's next free one belongs to the whole
/// fleet, and every process falling back at once would take it. A process pacing at
/// `cap` of the limit takes the last of the next `1 / cap` slots instead (the next
/// request slot plus the period at `cap` less the period at the store's share), so the
/// stand-ins of a fleet falling back together do not each take the same slot.
fn own_share_start(mut s: BudgetState, cap: u64) -> BudgetState {
    if s.req_base_ns > 0 && cap > 0 && s.share_ppm > cap {
        let per_us = |share: u64| u128::from(s.req_base_ns) * 1_000 / u128::from(share);
        let extra = per_us(cap).saturating_sub(per_us(s.share_ppm));
        let extra = u64::try_from(extra).unwrap_or(u64::MAX);
        s.req_tat_us = s.req_tat_us.max(s.seen_us).saturating_add(extra);
    }
    s
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("share_cap_ppm", &self.share_cap_ppm)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_states_are_bounded_newest_kept() {
        let fallback = Fallback::new("test", LimiterConfig::default(), 250_000);
        for i in 0..(MAX_BUDGETS + 50) {
            fallback.up(&format!("m{i}"), &BudgetState::default());
        }
        let inner = fallback.inner();
        assert_eq!(inner.known.len(), MAX_BUDGETS);
        assert!(inner.known.contains_key(&format!("m{}", MAX_BUDGETS + 49)));
    }
}
