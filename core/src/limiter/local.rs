//! The in-process store: budgets behind one mutex, shared by threads and tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::budget::{BudgetState, Decision, Limits, MAX_EXACT, Reserve};
use super::{Limiter, closed_error};
use crate::action::{Ask, Grant, Report};
use crate::request::Target;

/// Limits per model, and for models with none set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimiterConfig {
    /// Limits for models not listed (`None`: learn each model's from the server).
    pub default: Option<Limits>,
    /// Limits per model id.
    pub models: HashMap<String, Limits>,
}

impl LimiterConfig {
    /// The limits for `model`, if configured.
    pub fn limits_for(&self, model: &str) -> Option<Limits> {
        self.models.get(model).copied().or(self.default)
    }
}

/// Every model's budget, keyed by model id. Pure: time is passed in as microseconds.
///
/// A store that keeps the states elsewhere (a file) rebuilds the budgets around them for
/// one operation: [`Budgets::from_states`], one [`Budgets::reserve`] or
/// [`Budgets::report`], then [`Budgets::into_states`].
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    config: LimiterConfig,
    states: HashMap<String, BudgetState>,
    share_cap_ppm: Option<u64>,
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
            share_cap_ppm: None,
        }
    }

    /// Caps every budget's share of its limit at `cap_ppm` millionths, whatever the
    /// budget learns: a conservative stand-in for a shared store that is unreachable
    /// (a quarter of the limit when a fleet of about four shares it).
    pub fn with_share_cap(mut self, cap_ppm: u64) -> Self {
        self.share_cap_ppm = Some(cap_ppm);
        for state in self.states.values_mut() {
            state.share_ppm = state.share_ppm.min(cap_ppm);
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

    /// Forgets budgets idle for `idle_us` at `now_us` (so a state file does not grow with
    /// every model ever used). A budget closed, paused or holding reservations until later
    /// is kept.
    pub fn forget_idle(&mut self, now_us: u64, idle_us: u64) {
        self.states.retain(|_, s| {
            let last = s
                .seen_us
                .max(s.req_tat_us)
                .max(s.tok_tat_us)
                .max(s.pause_until_us)
                .max(s.block_until_us);
            last.saturating_add(idle_us) > now_us
        });
    }

    fn with_state<R>(
        &mut self,
        now_us: u64,
        model: &str,
        f: impl FnOnce(&mut BudgetState) -> R,
    ) -> R {
        let config = &self.config;
        let state = self
            .states
            .entry(model.to_owned())
            .or_insert_with(|| BudgetState::new(now_us, config.limits_for(model)));
        let cap = self.share_cap_ppm.unwrap_or(u64::MAX);
        state.share_ppm = state.share_ppm.min(cap);
        let r = f(state);
        state.share_ppm = state.share_ppm.min(cap);
        r
    }

    /// Reserves a slot in `model`'s budget: the budget's own [`Decision`].
    pub fn decide(&mut self, now_us: u64, model: &str, ask: &Reserve) -> Decision {
        self.with_state(now_us, model, |s| s.reserve(now_us, ask))
    }

    /// Reserves a slot for `ask`. Calls outside any model's budget go at once.
    pub fn reserve(&mut self, now_us: u64, ask: &Ask) -> Grant {
        let Some(model) = ask.model.as_deref() else {
            return Grant::Now;
        };
        let decision = self.decide(now_us, model, &Reserve::from(ask));
        decision_to_grant(decision, model)
    }

    /// Learns from `report`.
    pub fn report(&mut self, now_us: u64, report: &Report) {
        if let Some(model) = report.model.as_deref() {
            self.with_state(now_us, model, |s| s.report(now_us, report));
        }
    }

    /// The state of `model`'s budget, if it has one yet.
    pub fn get(&self, model: &str) -> Option<&BudgetState> {
        self.states.get(model)
    }
}

/// Turns a budget's decision into a call's grant.
pub fn decision_to_grant(decision: Decision, model: &str) -> Grant {
    match decision {
        Decision::Go { wait_us, ticket } => Grant::Slot {
            after: Duration::from_micros(wait_us),
            ticket,
        },
        Decision::Recheck(us) => Grant::Recheck(Duration::from_micros(us)),
        Decision::Late(us) => Grant::Late {
            after: Duration::from_micros(us),
        },
        Decision::Closed(block) => Grant::Refused(closed_error(block, model)),
    }
}

impl From<&Ask> for Reserve {
    fn from(ask: &Ask) -> Self {
        Reserve {
            tokens: ask.tokens,
            retry: ask.attempt > 1,
            within_us: ask.within.map_or(MAX_EXACT, |d| {
                u64::try_from(d.as_micros())
                    .unwrap_or(MAX_EXACT)
                    .min(MAX_EXACT)
            }),
            confirm_epoch: ask.confirm.map(|t| t.epoch),
        }
    }
}

/// The default limiter: in-process, shared by every clone of a client and by every
/// client handed the same `Arc`, across threads and tasks.
#[derive(Debug, Default)]
pub struct LocalLimiter {
    inner: Mutex<(Option<Instant>, Budgets)>,
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
        Self {
            inner: Mutex::new((None, budgets)),
        }
    }

    /// The process-wide limiter of the budget behind `target` (its base URL and key):
    /// every client built in this process for the same server and key shares it, as
    /// they share the server's budget. Dropped when the last client using it is.
    pub fn shared(target: &Target) -> Arc<LocalLimiter> {
        static REGISTRY: OnceLock<Mutex<HashMap<u64, Weak<LocalLimiter>>>> = OnceLock::new();
        let id = crate::key::fnv1a(
            format!("{}\n{}", target.base_url(), target.key().expose()).as_bytes(),
        );
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(limiter) = map.get(&id).and_then(Weak::upgrade) {
            return limiter;
        }
        let limiter = Arc::new(LocalLimiter::new());
        map.insert(id, Arc::downgrade(&limiter));
        limiter
    }

    /// A copy of `model`'s budget state (for tests and diagnostics).
    pub fn budget(&self, model: &str) -> Option<BudgetState> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.get(model).copied()
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(u64, &mut Budgets) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = *guard.0.get_or_insert(now);
        let now_us =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
        f(now_us, &mut guard.1)
    }
}

impl Limiter for LocalLimiter {
    fn reserve(&self, now: Instant, ask: &Ask) -> Grant {
        self.with(now, |us, b| b.reserve(us, ask))
    }

    fn report(&self, now: Instant, report: &Report) {
        self.with(now, |us, b| b.report(us, report));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;

    #[test]
    fn clients_of_one_key_share_one_limiter_and_others_do_not() {
        let target =
            |url: &str, key: &str| Target::new(url, ApiKey::new(key).unwrap(), false).unwrap();
        let a = LocalLimiter::shared(&target("https://api.mistral.ai", "k1"));
        let b = LocalLimiter::shared(&target("https://api.mistral.ai/", "k1"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = LocalLimiter::shared(&target("https://api.mistral.ai", "k2"));
        assert!(!Arc::ptr_eq(&a, &c));
        let d = LocalLimiter::shared(&target("https://api.eu.mistral.ai", "k1"));
        assert!(!Arc::ptr_eq(&a, &d));
    }
}
