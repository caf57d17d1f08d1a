//! The in-process store: budgets behind one mutex, shared by threads and tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::budget::{BudgetState, Decision, Limits, MAX_EXACT, Reserve};
use super::spec::BudgetId;
use super::{Limiter, closed_error};
use crate::action::{Ask, Grant, Report};
use crate::priority::ReservedShares;
use crate::request::Target;

/// Limits per model, and for models with none set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimiterConfig {
    /// Limits for models not listed (`None`: learn each model's from the server).
    pub default: Option<Limits>,
    /// Limits per model id.
    pub models: HashMap<String, Limits>,
    /// The share of a saturated budget each class below the first keeps (a tenth for
    /// [`crate::Priority::Default`] and [`crate::Priority::Batch`] by default).
    pub reserved: ReservedShares,
}

impl LimiterConfig {
    /// The limits for `model`, if configured.
    pub fn limits_for(&self, model: &str) -> Option<Limits> {
        self.models.get(model).copied().or(self.default)
    }

    /// The configuration as one line, the same for equal configurations (models sorted).
    fn canonical(&self) -> String {
        let mut models: Vec<_> = self.models.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        format!("{:?}|{models:?}|{:?}", self.default, self.reserved)
    }
}

/// How long an in-process budget may sit unused before it is forgotten (a day, as in the
/// file and Redis stores): [`LocalLimiter`] sweeps its budgets at most once a minute.
pub const IDLE_FORGET: Duration = Duration::from_secs(24 * 3600);

/// The most budgets (models) one [`LocalLimiter`] keeps: past it, the budgets unused the
/// longest that hold nothing for later (no booking, pause or block ahead) are forgotten
/// first, so a stream of ever new model names cannot grow memory without bound.
pub const MAX_BUDGETS: usize = 1024;

const SWEEP_EVERY_US: u64 = 60_000_000;

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
        self.states
            .retain(|_, s| last_use_us(s).saturating_add(idle_us) > now_us);
    }

    /// Forgets budgets until at most `max` are left, those last used the longest ago
    /// first, but never one that holds anything after `now_us` (a booking, a pause, a
    /// block): that one is kept even past `max`.
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
        let decision = self.decide(now_us, model, &Reserve::for_ask(ask, &self.config.reserved));
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

/// The latest instant a budget was used or holds something for.
fn last_use_us(s: &BudgetState) -> u64 {
    s.seen_us
        .max(s.req_tat_us)
        .max(s.tok_tat_us)
        .max(s.pause_until_us)
        .max(s.block_until_us)
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
    /// The reservation of `ask` with the default [`ReservedShares`].
    fn from(ask: &Ask) -> Self {
        Reserve::for_ask(ask, &ReservedShares::default())
    }
}

impl Reserve {
    /// The reservation of `ask`, its class keeping its share of `shares`.
    pub fn for_ask(ask: &Ask, shares: &ReservedShares) -> Self {
        Reserve {
            tokens: ask.tokens,
            retry: ask.attempt > 1,
            within_us: ask.within.map_or(MAX_EXACT, |d| {
                u64::try_from(d.as_micros())
                    .unwrap_or(MAX_EXACT)
                    .min(MAX_EXACT)
            }),
            confirm: ask.confirm,
            lane: ask.priority.lane(),
            reserve_ppm: shares.get(ask.priority),
        }
    }
}

/// The default limiter: in-process, shared by every clone of a client and by every
/// client handed the same `Arc`, across threads and tasks.
///
/// Its memory is bounded: one [`BudgetState`] (a few hundred bytes) per model used, budgets
/// unused for [`IDLE_FORGET`] are forgotten (swept at most once a minute), and at most
/// [`MAX_BUDGETS`] are kept beyond those still holding bookings.
#[derive(Debug, Default)]
pub struct LocalLimiter {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: Option<Instant>,
    budgets: Budgets,
    last_sweep_us: u64,
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
            inner: Mutex::new(Inner {
                epoch: None,
                budgets,
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
        static REGISTRY: OnceLock<Mutex<HashMap<u64, Weak<LocalLimiter>>>> = OnceLock::new();
        let scope = match budget {
            Some(budget) => budget.preimage(target.base_url()),
            None => format!("{}\n{}", target.base_url(), target.key().expose()),
        };
        let id = crate::key::fnv1a(format!("{scope}\n{}", config.canonical()).as_bytes());
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
        guard.budgets.get(model).copied()
    }

    /// How many budgets (models) it keeps now.
    pub fn budget_count(&self) -> usize {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.budgets.states().len()
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(u64, &mut Budgets) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let epoch = *inner.epoch.get_or_insert(now);
        let now_us =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
        let r = f(now_us, &mut inner.budgets);
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
    fn reserve(&self, now: Instant, ask: &Ask) -> Grant {
        self.with(now, |us, b| b.reserve(us, ask))
    }

    fn report(&self, now: Instant, report: &Report) {
        self.with(now, |us, b| b.report(us, report));
    }
}

#[cfg(test)]
mod tests {
    // A fixed starting instant; the tests only add to it.
    #![allow(clippy::disallowed_methods)]
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

    #[test]
    fn keys_of_one_budget_id_share_one_limiter_per_base_url_and_limits() {
        let target =
            |url: &str, key: &str| Target::new(url, ApiKey::new(key).unwrap(), false).unwrap();
        let acme = BudgetId::new("acme").unwrap();
        let none = LimiterConfig::default();
        let k1 = LocalLimiter::shared_budget(&target("https://x", "k1"), Some(&acme), &none);
        let k2 = LocalLimiter::shared_budget(&target("https://x/", "k2"), Some(&acme), &none);
        assert!(Arc::ptr_eq(&k1, &k2));
        let own = LocalLimiter::shared_budget(&target("https://x", "k1"), None, &none);
        assert!(!Arc::ptr_eq(&k1, &own));
        let other = BudgetId::new("other").unwrap();
        let o = LocalLimiter::shared_budget(&target("https://x", "k1"), Some(&other), &none);
        assert!(!Arc::ptr_eq(&k1, &o));
        let elsewhere = LocalLimiter::shared_budget(&target("https://y", "k1"), Some(&acme), &none);
        assert!(!Arc::ptr_eq(&k1, &elsewhere));
        let mut limited = LimiterConfig::default();
        limited
            .models
            .insert("m".into(), Limits::requests(5, Duration::from_secs(1)));
        let l1 = LocalLimiter::shared_budget(&target("https://x", "k1"), Some(&acme), &limited);
        let l2 = LocalLimiter::shared_budget(&target("https://x", "k2"), Some(&acme), &limited);
        assert!(Arc::ptr_eq(&l1, &l2));
        assert!(!Arc::ptr_eq(&l1, &k1));
        // The shared limiter paces at the configured limits: 5 per second.
        let t0 = Instant::now();
        let ask = Ask {
            model: Some("m".into()),
            tokens: 1,
            attempt: 1,
            within: None,
            confirm: None,
            priority: crate::Priority::Default,
        };
        let waits: Vec<_> = (0..3)
            .map(|_| match l1.reserve(t0, &ask) {
                Grant::Slot { after, .. } => after,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert!(waits[2] >= Duration::from_millis(300), "{waits:?}");
    }

    fn ask(model: &str) -> Ask {
        Ask {
            model: Some(model.to_owned()),
            tokens: 10,
            attempt: 1,
            within: None,
            confirm: None,
            priority: crate::Priority::Default,
        }
    }

    #[test]
    fn idle_budgets_are_forgotten_and_their_number_is_bounded() {
        let config = LimiterConfig {
            default: Some(Limits::requests(1000, Duration::from_secs(1))),
            ..LimiterConfig::default()
        };
        let limiter = LocalLimiter::with_config(config);
        let t0 = Instant::now();
        for i in 0..(MAX_BUDGETS + 500) {
            let _ = limiter.reserve(t0 + Duration::from_secs(2), &ask(&format!("m{i}")));
        }
        // Bookings at 2 s are still ahead at 2 s: kept past the bound.
        assert_eq!(limiter.budget_count(), MAX_BUDGETS + 500);
        // A minute later none holds anything ahead: the oldest are dropped to the bound.
        let later = t0 + Duration::from_secs(70);
        let _ = limiter.reserve(later, &ask("fresh"));
        assert_eq!(limiter.budget_count(), MAX_BUDGETS);
        assert!(
            limiter.budget("fresh").is_some(),
            "the one just used is kept"
        );
        // A day without use forgets them all, but the one used now.
        let _ = limiter.reserve(later + IDLE_FORGET + Duration::from_secs(61), &ask("now"));
        assert_eq!(limiter.budget_count(), 1);
        assert!(limiter.budget("now").is_some());
    }
}
