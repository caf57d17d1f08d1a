//! An async store behind this process's line of waiting tasks: the [`AsyncLimiter`] of
//! the file and Redis stores. The store does the I/O ([`AsyncStoreIo`]); the line
//! ([`mistral_limiter::Line`]) decides who asks it, and when.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mistral_core::limiter::{LimiterConfig, Place};
use mistral_core::{Ask, Grant, Report};
use mistral_limiter::store::StoreOps;
use mistral_limiter::{AdmitAnswer, Batch, Line, LineConfig, LineView, ReportOp, Step};
use tokio::time::Sleep;

use super::{AsyncLimiter, BoxFuture};
use crate::clock::now;

/// One store's I/O, async: runs an operation atomically on the shared state (the
/// store's stand-in answers when the store fails).
pub(crate) trait AsyncStoreIo: Send + Sync + fmt::Debug {
    /// Runs `ops`, asked at `now`.
    fn run(&self, now: Instant, ops: StoreOps) -> BoxFuture<'_, AdmitAnswer>;
}

/// An async store behind this process's line (see the module docs).
pub(crate) struct AsyncQueued<S> {
    line: Mutex<Line>,
    store: S,
}

impl<S: AsyncStoreIo> AsyncQueued<S> {
    /// `store`, asked by a line for `limits` in which this process is `proc_id`.
    pub(crate) fn new(
        store: S,
        limits: &LimiterConfig,
        proc_id: u64,
        horizon: Duration,
        ask_gap: Duration,
    ) -> Self {
        let config = LineConfig {
            proc_id,
            horizon,
            ask_gap,
            reserve_ppm: mistral_core::Priority::ALL.map(|p| limits.reserved.get(p)),
        };
        AsyncQueued {
            line: Mutex::new(Line::new(config)),
            store,
        }
    }

    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    #[cfg(feature = "redis")]
    pub(crate) fn into_store(self) -> S {
        self.store
    }

    pub(crate) fn line(&self, model: &str) -> LineView {
        lock(&self.line).view(model)
    }

    /// Runs the reports that waited for `model`'s store operation, which this task holds,
    /// until none is left; then releases it (also when the task is dropped meanwhile).
    async fn run_reports(&self, model: &str) {
        let mut held = Held {
            line: &self.line,
            model,
            reports: true,
        };
        loop {
            let reports = lock(&self.line).take_reports(now(), model);
            if reports.is_empty() {
                break;
            }
            let ops = StoreOps {
                model: model.to_owned(),
                reports,
                admit: None,
            };
            self.store.run(now(), ops).await;
        }
        held.reports = false;
        lock(&self.line).end_reports(now(), model);
    }

    async fn admit_inner(&self, ask: &Ask) -> Grant {
        let mut place = InLine {
            line: &self.line,
            place: Place::new(),
        };
        loop {
            let step = Turn {
                line: &self.line,
                place: &mut place.place,
                ask,
                sleep: None,
            }
            .await;
            let mut batch: Batch = match step {
                Turned::Grant(grant) => return grant,
                Turned::Ask(batch) => batch,
            };
            let model = batch.model.clone();
            let held = Held {
                line: &self.line,
                model: &model,
                reports: false,
            };
            let ops = StoreOps {
                model: model.clone(),
                reports: std::mem::take(&mut batch.reports),
                admit: Some(batch.op.clone()),
            };
            let answer = self.store.run(now(), ops).await;
            std::mem::forget(held);
            let flush = lock(&self.line).finish(now(), batch, &answer);
            if flush {
                self.run_reports(&model).await;
            }
        }
    }
}

fn lock(line: &Mutex<Line>) -> MutexGuard<'_, Line> {
    line.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: AsyncStoreIo> AsyncLimiter for AsyncQueued<S> {
    fn admit<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Grant> {
        Box::pin(self.admit_inner(ask))
    }

    /// Reports go to the store with the next operation on their budget: at once when
    /// none is out (this task runs it), else right after the one that is.
    fn report<'a>(&'a self, now: Instant, report: &'a Report) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(model) = report.model.as_deref() else {
                return;
            };
            if lock(&self.line).add_report(now, model, ReportOp::from(report)) {
                self.run_reports(model).await;
            }
        })
    }
}

impl<S: fmt::Debug> fmt::Debug for AsyncQueued<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncQueued")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A task's place in line, given up when dropped.
struct InLine<'a> {
    line: &'a Mutex<Line>,
    place: Place,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if self.place.id().is_some() {
            lock(self.line).leave(&mut self.place);
        }
    }
}

/// A store operation this task holds for `model`, released when the task is dropped
/// before it ends (the next head may ask at once).
struct Held<'a> {
    line: &'a Mutex<Line>,
    model: &'a str,
    reports: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut line = lock(self.line);
        if self.reports {
            line.end_reports(now(), self.model);
        } else {
            line.abandon(now(), self.model, Duration::ZERO);
        }
    }
}

enum Turned {
    Grant(Grant),
    Ask(Batch),
}

/// Waits for this task's turn: resolves with the limiter's answer, or with a store
/// operation to run.
struct Turn<'a, 'b> {
    line: &'a Mutex<Line>,
    place: &'b mut Place,
    ask: &'b Ask,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Future for Turn<'_, '_> {
    type Output = Turned;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turned> {
        let this = &mut *self;
        loop {
            let step = lock(this.line).poll(now(), this.place, this.ask, cx.waker());
            match step {
                Step::Ready(grant) => return Poll::Ready(Turned::Grant(grant)),
                Step::Ask(batch) => return Poll::Ready(Turned::Ask(batch)),
                Step::Pending { until } => {
                    let deadline = tokio::time::Instant::from_std(until);
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    sleep.as_mut().reset(deadline);
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}
