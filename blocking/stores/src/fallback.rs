//! What a shared store does while it cannot be reached: pace locally, conservatively.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use mistral_core::limiter::{BudgetState, Budgets, LimiterConfig, LocalLimiter};
use mistral_core::{Ask, Grant, Limiter, Report};

/// The stand-in of one shared store: what the store last taught (each model's limits),
/// and while the store is down an in-process limiter built from it at a capped share.
pub(crate) struct Fallback {
    store: &'static str,
    config: LimiterConfig,
    share_cap_ppm: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The latest state the store returned per model (only its limits are used).
    known: HashMap<String, BudgetState>,
    /// Set while the store is down.
    local: Option<(Instant, LocalLimiter)>,
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
        let learned = |s: &BudgetState| (s.req_base_ns, s.tok_base_ns, s.source, s.share_ppm);
        if inner.known.get(model).map(learned) != Some(learned(state)) {
            inner.known.insert(model.to_owned(), *state);
        }
        if let Some((since, _)) = inner.local.take() {
            tracing::info!(
                store = self.store,
                down_for_ms = since.elapsed().as_millis() as u64,
                "the shared limiter's store is back; pacing through it again"
            );
        }
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
                 the known limits until it is back"
            );
        }
        let (_, local) = local.get_or_insert_with(|| {
            // What the store taught, on the stand-in's clock (which starts at 0).
            let states = known
                .iter()
                .map(|(model, s)| (model.clone(), s.restarted(0)))
                .collect();
            let budgets = Budgets::from_states(self.config.clone(), states)
                .with_share_cap(self.share_cap_ppm);
            (Instant::now(), LocalLimiter::from_budgets(budgets))
        });
        f(local)
    }

    /// `true` while the store is down.
    pub(crate) fn is_down(&self) -> bool {
        self.inner().local.is_some()
    }
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("share_cap_ppm", &self.share_cap_ppm)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}
