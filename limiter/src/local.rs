//! The in-process limiter: every model's budget and the line of callers waiting for it,
//! behind one mutex, shared by threads and tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use mistral_core::limiter::{Admit, BudgetId, Limiter, LimiterConfig, Place};
use mistral_core::{Ask, Report, Target};

use crate::budget::BudgetState;
use crate::line::{Line, LineConfig, LineView, Step};
use crate::op::{AdmitAnswer, AdmitOp, ReportOp};

/// How long an in-process budget may sit unused before it is forgotten (a day, as in the
/// file and Redis stores): budgets are swept at most once a minute.
pub const IDLE_FORGET: Duration = Duration::from_secs(24 * 3600);

/// The most budgets (models) one [`Budgets`] keeps: past it, the budgets unused the
/// longest that hold nothing for later (no level, pause or block ahead) are forgotten
/// first, so a stream of ever new model names cannot grow memory without bound.
pub const MAX_BUDGETS: usize = 1024;

const SWEEP_EVERY_US: u64 = 60_000_000;

/// The horizon of an in-process limiter: a caller that fits within this long is
/// admitted and waits out the rest (a timer's slack: a sleep ends up to a millisecond
/// late, and the capacity must not be lost to it).
pub const LOCAL_HORIZON: Duration = Duration::from_millis(2);

/// Every model's budget, keyed by model id. Pure: time is passed in as microseconds.
///
/// A store that keeps the states elsewhere (a file) rebuilds the budgets around them for
/// one operation: [`Budgets::from_states`], its operations, then
/// [`Budgets::into_states`].
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    config: LimiterConfig,
    states: HashMap<String, BudgetState>,
    share_cap: Option<f64>,
}

impl Budgets {
    /// Budgets with `config`.
    pub fn new(config: LimiterConfig) -> Self {
        Self::from_states(config, HashMap::new())
    }

    /// Budgets with `config` around states kept elsewhere (a model without a state gets
    /// a new one, with its configured limits, when first used).
    pub fn from_states(config: LimiterConfig, states: HashMap<String, BudgetState>) -> Self {
        Self {
            config,
            states,
            share_cap: None,
        }
    }

    /// Caps every budget's share of its limits at `cap` (0 to 1), whatever the budget
    /// learns: a conservative stand-in for a shared store that is unreachable.
    pub fn with_share_cap(mut self, cap: f64) -> Self {
        self.share_cap = Some(cap);
        for state in self.states.values_mut() {
            state.share = state.share.min(cap);
        }
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Every budget's state, by model.
    pub fn states(&self) -> &HashMap<String, BudgetState> {
        &self.states
    }

    /// The states, to store them back.
    pub fn into_states(self) -> HashMap<String, BudgetState> {
        self.states
    }

    /// The state of `model`'s budget, if it has one yet.
    pub fn get(&self, model: &str) -> Option<&BudgetState> {
        self.states.get(model)
    }

    /// Forgets budgets idle for `idle_us` at `now_us`. A budget closed, paused or
    /// holding a level until later is kept.
    pub fn forget_idle(&mut self, now_us: u64, idle_us: u64) {
        self.states
            .retain(|_, s| last_use_us(s).saturating_add(idle_us) > now_us);
    }

    /// Forgets budgets until at most `max` are left, those last used the longest ago
    /// first, but never one that holds anything after `now_us`.
    pub fn shrink_to(&mut self, now_us: u64, max: usize) {
        if self.states.len() <= max {
            return;
        }
        let mut idle: Vec<(u64, String)> = self
            .states
            .iter()
            .map(|(model, s)| (last_use_us(s), model.clone()))
            .filter(|(last, _)| *last <= now_us)
            .collect();
        idle.sort_unstable();
        let excess = self.states.len() - max;
        for (_, model) in idle.into_iter().take(excess) {
            self.states.remove(&model);
        }
    }

    /// Runs `f` on `model`'s budget (made, with its configured limits, if it has none
    /// yet), its share capped as the budgets are.
    pub fn with_model<R>(
        &mut self,
        now_us: u64,
        model: &str,
        f: impl FnOnce(&mut BudgetState) -> R,
    ) -> R {
        let cap = self.share_cap.unwrap_or(1.0);
        let capped = |state: &mut BudgetState| {
            state.share = state.share.min(cap);
            let r = f(state);
            state.share = state.share.min(cap);
            r
        };
        // Looked up by `&str`: the model's name is copied only for a new budget (this
        // runs for every admission and every report).
        if let Some(state) = self.states.get_mut(model) {
            return capped(state);
        }
        let config = &self.config;
        let state = self
            .states
            .entry(model.to_owned())
            .or_insert_with(|| BudgetState::new(now_us, config.limits_for(model)));
        capped(state)
    }

    /// Admits what `model`'s budget can take of `op` at `now_us`.
    pub fn admit(&mut self, now_us: u64, model: &str, op: &AdmitOp) -> AdmitAnswer {
        self.with_model(now_us, model, |s| s.admit(now_us, op))
    }

    /// Learns from `report` at `now_us`.
    pub fn report(&mut self, now_us: u64, report: &Report) {
        if let Some(model) = report.model.as_deref() {
            let op = ReportOp::from(report);
            self.with_model(now_us, model, |s| s.report(now_us, &op));
        }
    }
}

/// The latest instant a budget was used or holds something for.
fn last_use_us(s: &BudgetState) -> u64 {
    s.seen_us
        .max(s.req_tat_us)
        .max(s.tok_tat_us)
        .max(s.pause_until_us)
        .max(s.block_until_us)
}

/// The default limiter: in-process, shared by every clone of a client and by every
/// client handed the same `Arc`, across threads and tasks (and both clients).
///
/// Its memory is bounded: one [`BudgetState`] (a few hundred bytes) per model used,
/// budgets unused for [`IDLE_FORGET`] are forgotten (swept at most once a minute), at
/// most [`MAX_BUDGETS`] are kept beyond those still holding anything, and a waiting
/// caller costs one entry in the line.
#[derive(Debug)]
pub struct LocalLimiter {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    epoch: Option<Instant>,
    budgets: Budgets,
    line: Line,
    last_sweep_us: u64,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// A limiter that learns every model's limits from the server.
    pub fn new() -> Self {
        Self::with_config(LimiterConfig::default())
    }

    /// A limiter with configured limits.
    pub fn with_config(config: LimiterConfig) -> Self {
        Self::from_budgets(Budgets::new(config))
    }

    /// A limiter around `budgets`. Its clock starts at 0 µs on the first call, so
    /// states carried over from another store should be [`BudgetState::restarted`] at 0.
    pub fn from_budgets(budgets: Budgets) -> Self {
        let reserved = budgets.config().reserved;
        let line = Line::new(LineConfig {
            proc_id: 0,
            horizon: LOCAL_HORIZON,
            ask_gap: Duration::from_secs(1),
            reserve_ppm: mistral_core::Priority::ALL.map(|p| reserved.get(p)),
        });
        Self {
            inner: Mutex::new(Inner {
                epoch: None,
                budgets,
                line,
                last_sweep_us: 0,
            }),
        }
    }

    /// The process-wide limiter of the budget behind `target` (its base URL and key):
    /// every client built in this process for the same server and key shares it, as
    /// they share the server's budget. Dropped when the last client using it is.
    pub fn shared(target: &Target) -> Arc<LocalLimiter> {
        Self::shared_budget(target, None, &LimiterConfig::default())
    }

    /// The process-wide limiter of the budget `budget` names at `target`'s base URL (or,
    /// with `None`, of `target`'s key), with `config`'s limits: every client built in
    /// this process with the same base URL, budget (or key) and limits shares it.
    /// Dropped when the last client using it is.
    pub fn shared_budget(
        target: &Target,
        budget: Option<&BudgetId>,
        config: &LimiterConfig,
    ) -> Arc<LocalLimiter> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<LocalLimiter>>>> = OnceLock::new();
        let scope = match budget {
            Some(budget) => crate::store::budget_store_id(target.base_url(), budget),
            None => crate::store::store_id(target.base_url(), target.key()),
        };
        let id = format!("{scope}\n{}", config.canonical());
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(limiter) = map.get(&id).and_then(Weak::upgrade) {
            return limiter;
        }
        let limiter = Arc::new(LocalLimiter::with_config(config.clone()));
        map.insert(id, Arc::downgrade(&limiter));
        limiter
    }

    /// A copy of `model`'s budget state (for tests and diagnostics).
    pub fn budget(&self, model: &str) -> Option<BudgetState> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.budgets.get(model).cloned()
    }

    /// How many budgets (models) it keeps now.
    pub fn budget_count(&self) -> usize {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.budgets.states().len()
    }

    /// `model`'s line as it is now (for logs and diagnostics).
    pub fn line(&self, model: &str) -> LineView {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.line.view(model)
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(u64, &mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let epoch = *inner.epoch.get_or_insert(now);
        let now_us =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
        let r = f(now_us, inner);
        if now_us.saturating_sub(inner.last_sweep_us) >= SWEEP_EVERY_US {
            inner.last_sweep_us = now_us;
            let idle_us = u64::try_from(IDLE_FORGET.as_micros()).unwrap_or(u64::MAX);
            inner.budgets.forget_idle(now_us, idle_us);
        }
        inner.budgets.shrink_to(now_us, MAX_BUDGETS);
        r
    }
}

impl Limiter for LocalLimiter {
    fn poll_admit(&self, now: Instant, place: &mut Place, ask: &Ask, waker: &Waker) -> Admit {
        self.with(now, |now_us, inner| {
            // A caller alone for its budget asks it directly, without a place in a line
            // (the common case, and a line's bookkeeping is most of an admission's cost).
            if let (Some(model), Some(op)) = (ask.model.as_deref(), inner.line.lone(place, ask)) {
                let answer = inner.budgets.admit(now_us, model, &op);
                if let Some(grant) = inner.line.lone_answer(now, place, ask, op, &answer, waker) {
                    return Admit::Ready(grant);
                }
            }
            loop {
                match inner.line.poll(now, place, ask, waker) {
                    Step::Ready(grant) => return Admit::Ready(grant),
                    Step::Pending { until } => return Admit::Pending { until },
                    Step::Ask(batch) => {
                        let answer = inner.budgets.admit(now_us, &batch.model, &batch.op);
                        // Reports reach these budgets at once: none waits in the line.
                        let _no_reports = inner.line.finish(now, batch, &answer);
                    }
                }
            }
        })
    }

    fn leave(&self, place: &mut Place) {
        if place.id().is_none() {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.line.leave(place);
    }

    fn report(&self, now: Instant, report: &Report) {
        self.with(now, |now_us, inner| {
            inner.budgets.report(now_us, report);
            if let Some(model) = report.model.as_deref() {
                inner.line.wake(model, now);
            }
        });
    }
}
