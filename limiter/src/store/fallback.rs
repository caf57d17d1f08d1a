//! What a shared store's driver does while the store cannot be reached: admit locally,
//! at a cautious share, from where the store left off; and what it brings back when the
//! store returns. Sans-IO: every method takes `now`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use mistral_core::limiter::LimiterConfig;

use super::StoreOps;
use crate::budget::{BudgetState, Source};
use crate::local::{Budgets, MAX_BUDGETS};
use crate::op::AdmitAnswer;

/// The stand-in of one shared store: the last state the store returned for each model
/// (and when), and while the store is down in-process budgets started from those states
/// at a capped share.
pub struct Fallback {
    store: &'static str,
    config: LimiterConfig,
    share_cap: f64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The latest state the store returned per model, and when it did.
    known: HashMap<String, (BudgetState, Instant)>,
    /// Set while the store is down: since when (the stand-in's clock is 0 µs then),
    /// and the stand-in's budgets.
    local: Option<(Instant, Budgets)>,
}

fn micros_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_micros()).unwrap_or(u64::MAX)
}

impl Fallback {
    /// The stand-in of the store named `store` (in logs), admitting at `share_cap` of
    /// `config`'s (or the learned) limits while the store is down.
    pub fn new(store: &'static str, config: LimiterConfig, share_cap: f64) -> Self {
        Self {
            store,
            config,
            share_cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The share a stand-in admits at.
    pub fn share_cap(&self) -> f64 {
        self.share_cap
    }

    /// Notes what the store answered for `model` at `now`, and that it answers (an
    /// outage ends, and is logged as over).
    pub fn up(&self, now: Instant, model: &str, state: &BudgetState) {
        let mut inner = self.inner();
        inner.known.insert(model.to_owned(), (state.clone(), now));
        bound(&mut inner.known);
        if let Some((since, _)) = inner.local.take() {
            tracing::info!(
                store = self.store,
                down_for_ms = micros_between(since, now) / 1_000,
                "the shared limiter's store is back; admitting through it again"
            );
        }
    }

    /// Notes the states a store holds at `now` (without ending an outage).
    pub fn note<'a>(
        &self,
        now: Instant,
        states: impl IntoIterator<Item = (&'a String, &'a BudgetState)>,
    ) {
        let mut inner = self.inner();
        for (model, state) in states {
            inner.known.insert(model.clone(), (state.clone(), now));
        }
        bound(&mut inner.known);
    }

    /// `true` while the stand-in admits (the store failed and has not answered since).
    pub fn is_down(&self) -> bool {
        self.inner().local.is_some()
    }

    /// How many models' states this process keeps (at most [`MAX_BUDGETS`]).
    pub fn known_count(&self) -> usize {
        self.inner().known.len()
    }

    /// What this process knows of `model`'s budget at `now`, on the store's clock: the
    /// last state the store returned, joined with what the stand-in admitted since
    /// (moved onto the store's clock). `store_now_us` is the store's time now, when
    /// known; otherwise estimated from the last answer (its time plus the time since).
    pub fn rejoin_state(
        &self,
        now: Instant,
        model: &str,
        store_now_us: Option<u64>,
    ) -> Option<BudgetState> {
        let inner = self.inner();
        let (state, at) = inner.known.get(model)?;
        if state.source == Source::Unknown {
            return None;
        }
        let since = micros_between(*at, now);
        let store_now = store_now_us.unwrap_or(state.seen_us.saturating_add(since));
        let mut best = state.rebased(state.seen_us.saturating_add(since), store_now);
        if let Some((made, local)) = &inner.local
            && let Some(admitted) = local.get(model)
        {
            let local_now = micros_between(*made, now);
            let share = best.share;
            best = best.joined(&admitted.rebased(local_now, store_now));
            // The stand-in's share is its cap, not what the store had.
            best.share = share;
        }
        best.seen_us = best.seen_us.max(store_now);
        Some(best)
    }

    /// The last state the store returned for `model`, if any.
    pub fn known(&self, model: &str) -> Option<BudgetState> {
        self.inner().known.get(model).map(|(s, _)| s.clone())
    }

    /// Every model this process knows a state of.
    pub fn known_models(&self) -> Vec<String> {
        self.inner().known.keys().cloned().collect()
    }

    /// The store failed with `error`: `ops` run in the stand-in (made, and the outage
    /// logged, at the first failure).
    pub fn run(&self, error: &dyn fmt::Display, now: Instant, ops: &StoreOps) -> AdmitAnswer {
        let mut guard = self.inner();
        let Inner { known, local } = &mut *guard;
        if local.is_some() {
            tracing::debug!(store = self.store, %error, "shared limiter store still down");
        } else {
            tracing::warn!(
                store = self.store,
                %error,
                share = self.share_cap,
                "the shared limiter's store failed; admitting in-process at a reduced share \
                 of the known limits, from the last known state, until it is back"
            );
        }
        let (made, budgets) = local.get_or_insert_with(|| {
            // The last states the store returned, moved onto the stand-in's clock (0 µs
            // now): the level the store had stays, so the stand-in does not admit a
            // second time what the store already admitted.
            let states = known
                .iter()
                .map(|(model, (s, at))| {
                    let since = micros_between(*at, now);
                    let local = s.rebased(s.seen_us.saturating_add(since), 0);
                    (model.clone(), own_share_start(local, self.share_cap))
                })
                .collect();
            let budgets =
                Budgets::from_states(self.config.clone(), states).with_share_cap(self.share_cap);
            (now, budgets)
        });
        let now_us = micros_between(*made, now);
        budgets.with_model(now_us, &ops.model, |s| {
            // A budget first used in the outage is at the cap too, cells and room.
            s.cells_at_share = 1;
            for report in &ops.reports {
                super::learn_one(now_us, s, report);
                // Its share grows back within the operation too: never past the cap.
                s.share = s.share.min(self.share_cap);
            }
            match &ops.admit {
                Some(op) => s.admit(now_us, op),
                None => AdmitAnswer::waiting(0, 0),
            }
        })
    }
}

/// A stand-in's start from the store's last state `s` (on the stand-in's clock), at
/// `cap` of the limits: at that share, its cells hold `cap` of their capacity (a window's
/// worth the server announced, refilled at `cap` of the pace, [`BudgetState`]) and it
/// takes `cap` of the room the server says remains: the level in time is the store's
/// (what the store admitted is not admitted again), and four stand-ins falling back at
/// once burst no more than the budget itself, nor take the same room four times.
///
/// - The capacity the shared budget frees next belongs to the whole fleet, and every
///   process falling back at once would take it: a process admitting at `cap` of the
///   limit takes the last of the next `1 / cap` units instead (its cells' levels moved
///   on by the unit at `cap` less the unit at the store's share).
/// - Nothing is out: the store's count of attempts not answered yet is the fleet's, and
///   would keep a stand-in from reading the room the server says remains as its own;
///   the stand-in counts the attempts it admits.
fn own_share_start(mut s: BudgetState, cap: f64) -> BudgetState {
    if cap > 0.0 && s.share > cap {
        let now = s.seen_us;
        let (rp, tp) = (s.req_period_us(), s.tok_period_us());
        let factor = s.share / cap - 1.0;
        if rp > 0.0 {
            s.req_tat_us = s.req_tat_us.max(now) + (rp * factor) as u64;
        }
        if tp > 0.0 {
            let unit = s.tok_cap.min(s.mean_tokens());
            s.tok_tat_us = s.tok_tat_us.max(now) + (tp * unit * factor) as u64;
        }
    }
    s.out = 0;
    s.share = s.share.min(cap);
    s.with_cells_at_share()
}

/// Keeps at most [`MAX_BUDGETS`] known states (the oldest answers go first).
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

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("store", &self.store)
            .field("share_cap", &self.share_cap)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}
