//! What a shared store's driver does while the store cannot be reached: pace locally,
//! conservatively, from where the store left off; and what it brings back when the store
//! returns. Sans-IO: every method takes `now`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::action::{Ask, Grant, Report};
use crate::limiter::Limiter;
use crate::limiter::budget::{BudgetState, Source};
use crate::limiter::local::{Budgets, LimiterConfig, LocalLimiter, MAX_BUDGETS};

/// The stand-in of one shared store: the last state the store returned for each model
/// (and when), and while the store is down an in-process limiter started from those
/// states at a capped share.
pub struct Fallback {
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

fn micros_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_micros()).unwrap_or(u64::MAX)
}

impl Fallback {
    /// The stand-in of the store named `store` (in logs), pacing at `share_cap_ppm`
    /// millionths of `config`'s (or the learned) limits while the store is down.
    pub fn new(store: &'static str, config: LimiterConfig, share_cap_ppm: u64) -> Self {
        Self {
            store,
            config,
            share_cap_ppm,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes what the store answered for `model` at `now`, and that it answers (an
    /// outage ends, and is logged as over).
    pub fn up(&self, now: Instant, model: &str, state: &BudgetState) {
        let mut inner = self.inner();
        inner.known.insert(model.to_owned(), (*state, now));
        bound(&mut inner.known);
        if let Some((since, _)) = inner.local.take() {
            tracing::info!(
                store = self.store,
                down_for_ms = micros_between(since, now) / 1_000,
                "the shared limiter's store is back; pacing through it again"
            );
        }
    }

    /// Notes the states a store holds at `now` (without ending an outage: the caller's
    /// operation may still fail).
    pub fn note<'a>(
        &self,
        now: Instant,
        states: impl IntoIterator<Item = (&'a String, &'a BudgetState)>,
    ) {
        let mut inner = self.inner();
        for (model, state) in states {
            inner.known.insert(model.clone(), (*state, now));
        }
        bound(&mut inner.known);
    }

    /// `true` while the stand-in paces (the store failed and has not answered since).
    pub fn is_down(&self) -> bool {
        self.inner().local.is_some()
    }

    /// How many models' states this process keeps (at most [`MAX_BUDGETS`]).
    pub fn known_count(&self) -> usize {
        self.inner().known.len()
    }

    /// What this process knows of every budget at `now`, on the store's clock, for a
    /// store that lost its states or comes back after an outage: the last state the store
    /// returned, joined with what the stand-in booked since (moved onto the store's
    /// clock), with the share the store last had (see [`BudgetState::rejoined`] for how it
    /// is merged). `store_now_us` is the store's time now, when known; otherwise it is
    /// estimated from the last answer (its time plus the time since).
    pub fn rejoin_states(
        &self,
        now: Instant,
        store_now_us: Option<u64>,
    ) -> Vec<(String, BudgetState)> {
        let inner = self.inner();
        inner
            .known
            .iter()
            .filter(|(_, (s, _))| s.source != Source::Unknown)
            .map(|(model, (state, at))| {
                let since = micros_between(*at, now);
                let store_now = store_now_us.unwrap_or(state.seen_us.saturating_add(since));
                let mut best = *state;
                if let Some((made, local)) = &inner.local
                    && let Some(booked) = local.budget(model)
                {
                    let local_now = micros_between(*made, now);
                    best = best.joined(&booked.rebased(local_now, store_now));
                    // The stand-in's share is its cap, not what the store had.
                    best.share_ppm = state.share_ppm;
                }
                (model.clone(), best)
            })
            .collect()
    }

    /// The share a stand-in paces at (what a process hands back when it rejoins).
    pub fn share_cap_ppm(&self) -> u64 {
        self.share_cap_ppm
    }

    /// The store failed with `error`: reserves in the stand-in (made, and the outage
    /// logged, at the first failure).
    pub fn reserve(&self, error: &dyn fmt::Display, now: Instant, ask: &Ask) -> Grant {
        self.with_local(error, now, |local| local.reserve(now, ask))
    }

    /// The store failed with `error`: reports to the stand-in.
    pub fn report(&self, error: &dyn fmt::Display, now: Instant, report: &Report) {
        self.with_local(error, now, |local| local.report(now, report));
    }

    fn with_local<R>(
        &self,
        error: &dyn fmt::Display,
        now: Instant,
        f: impl FnOnce(&LocalLimiter) -> R,
    ) -> R {
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
            let states = known
                .iter()
                .map(|(model, (s, at))| {
                    let since = micros_between(*at, now);
                    let local = s.rebased(s.seen_us.saturating_add(since), 0);
                    (model.clone(), own_share_start(local, self.share_cap_ppm))
                })
                .collect();
            let budgets = Budgets::from_states(self.config.clone(), states)
                .with_share_cap(self.share_cap_ppm);
            (now, LocalLimiter::from_budgets(budgets))
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
            .field("store", &self.store)
            .field("share_cap_ppm", &self.share_cap_ppm)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    // A fixed starting instant; the tests only add to it.
    #![allow(clippy::disallowed_methods)]
    use std::time::Duration;

    use super::*;
    use crate::limiter::budget::Limits;

    #[test]
    fn the_known_states_are_bounded_newest_kept() {
        let fallback = Fallback::new("test", LimiterConfig::default(), 250_000);
        let t0 = Instant::now();
        for i in 0..(MAX_BUDGETS + 50) {
            let at = t0 + Duration::from_micros(i as u64);
            fallback.up(at, &format!("m{i}"), &BudgetState::default());
        }
        let inner = fallback.inner();
        assert_eq!(inner.known.len(), MAX_BUDGETS);
        assert!(inner.known.contains_key(&format!("m{}", MAX_BUDGETS + 49)));
        assert!(!inner.known.contains_key("m0"));
    }

    fn ask() -> Ask {
        Ask {
            model: Some("m".into()),
            tokens: 1,
            attempt: 1,
            within: None,
            confirm: None,
            priority: crate::Priority::Default,
        }
    }

    #[test]
    fn a_stand_in_keeps_what_the_store_booked_ahead_and_paces_at_its_share() {
        let fallback = Fallback::new("test", LimiterConfig::default(), 250_000);
        let t0 = Instant::now();
        // The store's budget: 10 per second, booked 500 ms ahead at its time 1 s.
        let mut state = BudgetState::new(
            1_000_000,
            Some(Limits::requests(10, Duration::from_secs(1))),
        );
        for _ in 0..5 {
            let _booked = state.reserve(1_000_000, &crate::limiter::Reserve::new(1));
        }
        fallback.up(t0, "m", &state);
        assert!(!fallback.is_down());
        // 100 ms later the store fails.
        let now = t0 + Duration::from_millis(100);
        let first = fallback.reserve(&"down", now, &ask());
        assert!(fallback.is_down());
        let Grant::Slot { after, .. } = first else {
            panic!("{first:?}")
        };
        // What was booked ahead (500 ms from t0) is still booked.
        assert!(after >= Duration::from_millis(350), "{after:?}");
        // At a quarter share: 400 ms between requests.
        let Grant::Slot { after: next, .. } = fallback.reserve(&"down", now, &ask()) else {
            panic!()
        };
        assert!(
            next >= after + Duration::from_millis(390),
            "{after:?} {next:?}"
        );
        // Rejoining at the store's time 2 s carries those bookings onto its clock.
        let rejoin = fallback.rejoin_states(now, Some(2_000_000));
        assert_eq!(rejoin.len(), 1);
        assert!(
            rejoin[0].1.req_tat_us >= 2_000_000 + 700_000,
            "{:?}",
            rejoin[0].1
        );
        // The store answers again: the outage ends.
        fallback.up(now + Duration::from_secs(1), "m", &state);
        assert!(!fallback.is_down());
    }

    #[test]
    fn unknown_budgets_are_not_rejoined() {
        let fallback = Fallback::new("test", LimiterConfig::default(), 250_000);
        let t0 = Instant::now();
        fallback.note(t0, [(&"m".to_owned(), &BudgetState::default())]);
        assert_eq!(fallback.known_count(), 1);
        assert!(fallback.rejoin_states(t0, None).is_empty());
    }
}
