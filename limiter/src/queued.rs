//! A store whose operations block for their I/O, behind this process's [`Line`]: the
//! [`Limiter`] of the blocking client's file and Redis stores. The store does the I/O
//! ([`StoreIo`]); the line decides who asks it, and when.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use mistral_core::limiter::{Admit, Limiter, LimiterConfig, Place};
use mistral_core::{Ask, Report};

use crate::line::{Line, LineConfig, LineView, Step};
use crate::op::{AdmitAnswer, ReportOp};
use crate::store::StoreOps;

/// One store's I/O, blocking: runs an operation atomically on the shared state (the
/// store's stand-in answers when the store fails) and says when it was done.
pub trait StoreIo: Send + Sync + fmt::Debug {
    /// Runs `ops` (asked at `now`); the answer and the instant it came.
    fn run(&self, now: Instant, ops: &StoreOps) -> (AdmitAnswer, Instant);
}

/// A blocking store behind this process's line of waiting callers (see the module
/// docs).
pub struct Queued<S> {
    line: Mutex<Line>,
    store: S,
}

impl<S: StoreIo> Queued<S> {
    /// `store`, asked by a line configured by `config` (its `proc_id` names this process
    /// in the budgets' demand records).
    pub fn new(store: S, config: LineConfig) -> Self {
        Queued {
            line: Mutex::new(Line::new(config)),
            store,
        }
    }

    /// The line configuration of a shared store for `limits`: this process is
    /// `proc_id`, a caller that fits within `horizon` is admitted, and the head asks
    /// again at least every `ask_gap` (capacity freed in other processes is noticed
    /// within that).
    pub fn line_config(
        limits: &LimiterConfig,
        proc_id: u64,
        horizon: std::time::Duration,
        ask_gap: std::time::Duration,
    ) -> LineConfig {
        LineConfig {
            proc_id,
            horizon,
            ask_gap,
            reserve_ppm: mistral_core::Priority::ALL.map(|p| limits.reserved.get(p)),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, without the line (whoever waited in it is gone with it).
    pub fn into_store(self) -> S {
        self.store
    }

    /// `model`'s line as it is now.
    pub fn line(&self, model: &str) -> LineView {
        self.lock().view(model)
    }

    fn lock(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: StoreIo> Queued<S> {
    /// Runs the reports that waited for `model`'s store operation, which this caller
    /// holds, until none is left; then releases it.
    fn run_reports(&self, mut now: Instant, model: &str) {
        loop {
            let reports = self.lock().take_reports(now, model);
            if reports.is_empty() {
                self.lock().end_reports(now, model);
                return;
            }
            let ops = StoreOps {
                model: model.to_owned(),
                reports,
                admit: None,
            };
            let (_, done) = self.store.run(now, &ops);
            now = now.max(done);
        }
    }
}

impl<S: StoreIo> Limiter for Queued<S> {
    fn poll_admit(&self, now: Instant, place: &mut Place, ask: &Ask, waker: &Waker) -> Admit {
        let mut now = now;
        loop {
            let step = self.lock().poll(now, place, ask, waker);
            match step {
                Step::Ready(grant) => return Admit::Ready(grant),
                Step::Pending { until } => return Admit::Pending { until },
                Step::Ask(mut batch) => {
                    let ops = StoreOps {
                        model: batch.model.clone(),
                        reports: std::mem::take(&mut batch.reports),
                        admit: Some(batch.op.clone()),
                    };
                    let (answer, done) = self.store.run(now, &ops);
                    now = now.max(done);
                    let model = batch.model.clone();
                    if self.lock().finish(now, batch, &answer) {
                        self.run_reports(now, &model);
                    }
                }
            }
        }
    }

    fn leave(&self, place: &mut Place) {
        if place.id().is_some() {
            self.lock().leave(place);
        }
    }

    /// Reports go to the store with the next operation on their budget: at once when
    /// none is out (this caller runs it), else right after the one that is (its caller
    /// runs them), so a slow store takes many reports in one round trip.
    fn report(&self, now: Instant, report: &Report) {
        let Some(model) = report.model.as_deref() else {
            return;
        };
        if self.lock().add_report(now, model, ReportOp::from(report)) {
            self.run_reports(now, model);
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Queued<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}
