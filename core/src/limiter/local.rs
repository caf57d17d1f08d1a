//! The in-process store: budgets behind one mutex, shared by threads and tasks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::budget::{BudgetState, Decision, Limits};
use super::{Limiter, closed_error};
use crate::action::{Ask, Grant, Report};

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
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    config: LimiterConfig,
    states: HashMap<String, BudgetState>,
}

impl Budgets {
    /// Budgets with `config`.
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            config,
            states: HashMap::new(),
        }
    }

    fn state(&mut self, now_us: u64, model: &str) -> &mut BudgetState {
        let config = &self.config;
        self.states
            .entry(model.to_owned())
            .or_insert_with(|| BudgetState::new(now_us, config.limits_for(model)))
    }

    /// Reserves a slot for `ask`. Calls outside any model's budget go at once.
    pub fn reserve(&mut self, now_us: u64, ask: &Ask) -> Grant {
        let Some(model) = ask.model.as_deref() else {
            return Grant::Now;
        };
        let decision = self
            .state(now_us, model)
            .reserve(now_us, ask.tokens, ask.attempt > 1);
        decision_to_grant(decision, model)
    }

    /// Learns from `report`.
    pub fn report(&mut self, now_us: u64, report: &Report) {
        if let Some(model) = report.model.as_deref() {
            self.state(now_us, model).report(now_us, report);
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
        Decision::Go(0) => Grant::Now,
        Decision::Go(us) => Grant::After(Duration::from_micros(us)),
        Decision::Recheck(us) => Grant::Recheck(Duration::from_micros(us)),
        Decision::Closed(block) => Grant::Refused(closed_error(block, model)),
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
        Self {
            inner: Mutex::new((None, Budgets::new(config))),
        }
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
