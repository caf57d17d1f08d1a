//! One process's line of callers waiting to be admitted: per budget (model), ordered by
//! priority class, then arrival. Only its head asks the shared budget, for itself and the
//! callers right behind it (one store operation admits as many as fit); the others wait
//! without holding any capacity, and are woken when their turn may have come.
//!
//! [`Line`] is pure: it takes `now`, keeps [`Waker`]s and never sleeps. Whoever holds it
//! (behind a mutex) calls [`Line::poll`] for a caller; an [`Step::Ask`] is a store
//! operation to run, for that caller, whose answer goes to [`Line::finish`] (or, if the
//! store failed, [`Line::abandon`]); a report that may have freed capacity calls
//! [`Line::wake`]. A caller alone for its budget may skip the line: [`Line::lone`] is its
//! store operation, and [`Line::lone_answer`] its grant, or its place at the head when it
//! must wait (the in-process limiter does so: it runs the operation at once).

use std::collections::{BTreeSet, HashMap};
use std::task::Waker;
use std::time::{Duration, Instant};

use mistral_core::limiter::{Place, closed_error};
use mistral_core::{Ask, Grant};

use crate::op::{AdmitAnswer, AdmitOp, Binding, Candidate, Decision, ReportOp};

/// How many callers one store operation may admit at most.
pub const BATCH: usize = 64;

/// A waiter that has not polled for this long past the instant it was told is taken as
/// gone (its caller stopped without leaving the line).
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The longest a caller that is not at the head waits before it polls again (to notice
/// its deadline or a head that went away).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How often a budget's line is gone through (stale waiters dropped, each one's place
/// counted): a caller's poll costs O(log n), not O(n), with n callers waiting.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The longest a store operation may be out before another caller may start one (the
/// caller running it was dropped mid-way).
const OP_STALL: Duration = Duration::from_secs(5);

/// A caller admitted after waiting in line this long is said at WARN (at most once a
/// minute per process, with how many others waited as long since).
pub const LONG_WAIT: Duration = Duration::from_secs(30);

/// A budget's line is summed up at INFO once its head has waited this long.
pub const SUMMARY_AFTER: Duration = Duration::from_secs(1);

/// A budget whose callers queue is summed up at INFO at most this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// How the line asks its budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineConfig {
    /// This process's (limiter instance's) id in the budgets' demand records.
    pub proc_id: u64,
    /// A caller that fits within this long is admitted: about one store round trip plus
    /// a timer's slack.
    pub horizon: Duration,
    /// The longest the head waits before it asks again (capacity freed in another
    /// process is noticed within this long; this process's reports wake it at once).
    pub ask_gap: Duration,
    /// Each lane's reserved share, in millionths.
    pub reserve_ppm: [u64; 3],
}

/// What a caller must do after [`Line::poll`].
#[derive(Debug)]
#[must_use = "a step is the caller's next move"]
pub enum Step {
    /// The answer: hand it to the call.
    Ready(Grant),
    /// Wait until woken, or until `until` at the latest, then poll again.
    Pending {
        /// The latest instant to poll again.
        until: Instant,
    },
    /// Run this store operation for the budget, then hand its answer to
    /// [`Line::finish`] and poll again.
    Ask(Batch),
}

/// A store operation the line asks for: admit the first of one budget's waiters (after
/// the reports that came meanwhile).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The budget.
    pub model: String,
    /// Reports of this process not yet given to the store: run them first.
    pub reports: Vec<ReportOp>,
    /// The operation.
    pub op: AdmitOp,
    /// The waiters, in the order of [`AdmitOp::candidates`].
    ids: Vec<u64>,
    /// The waiter that asked: it polls again after [`Line::finish`], so it is not woken.
    asker: u64,
}

#[derive(Debug)]
struct Waiter {
    joined: Instant,
    model: String,
    key: (u64, u64, u64),
    candidate: Candidate,
    deadline: Option<Instant>,
    waker: Option<Waker>,
    /// Boxed: a grant (with its error) is most of a waiter's size, and only the few
    /// callers just admitted hold one.
    result: Option<Box<Grant>>,
    told: Instant,
    /// Callers ahead of it in its line when last counted (at its arrival, then at every
    /// sweep).
    ahead: u64,
}

#[derive(Debug, Default)]
struct ModelLine {
    /// Waiting callers without an answer: (lane, arrival, id).
    order: BTreeSet<(u64, u64, u64)>,
    /// How many of them per lane.
    counts: [u64; 3],
    /// When the line was last gone through ([`SWEEP_EVERY`]).
    swept: Option<Instant>,
    /// A store operation is out since then.
    asking: Option<Instant>,
    /// The head asks again then (earlier when woken).
    head_at: Option<Instant>,
    /// µs one caller takes at the budget's pace, by its last answer.
    unit_us: u64,
    /// What kept the head waiting at the last answer.
    binding: Binding,
    /// Reports waiting for the next store operation, with when each came.
    reports: Vec<(Instant, ReportOp)>,
    /// When this budget's line was last summed up at INFO.
    said: Option<Instant>,
}

/// A snapshot of one budget's line, for logs and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineView {
    /// Callers waiting, per lane.
    pub waiting: [u64; 3],
    /// When the head asks again.
    pub head_at: Option<Instant>,
    /// What kept the head waiting at the last answer.
    pub binding: Binding,
    /// µs one caller takes at the budget's pace (0: no limit known).
    pub unit_us: u64,
}

/// One process's lines, every budget's (see the module docs).
#[derive(Debug)]
pub struct Line {
    config: LineConfig,
    /// When a long wait was last said at WARN, and the long waits not said since.
    long_waits: (Option<Instant>, u64),
    next: u64,
    waiters: HashMap<u64, Waiter>,
    models: HashMap<String, ModelLine>,
}

impl Line {
    /// An empty line.
    pub fn new(config: LineConfig) -> Self {
        Line {
            config,
            long_waits: (None, 0),
            next: 0,
            waiters: HashMap::new(),
            models: HashMap::new(),
        }
    }

    /// How this line asks.
    pub fn config(&self) -> &LineConfig {
        &self.config
    }

    /// Callers waiting in all lines.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// One budget's line as it is now.
    pub fn view(&self, model: &str) -> LineView {
        let Some(m) = self.models.get(model) else {
            return LineView::default();
        };
        LineView {
            waiting: m.counts,
            head_at: m.head_at,
            binding: m.binding,
            unit_us: m.unit_us,
        }
    }

    /// The budgets that have a line.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The next step of the caller holding `place` (a new place joins the line), at
    /// `now`; `waker` is woken when its turn may have come.
    pub fn poll(&mut self, now: Instant, place: &mut Place, ask: &Ask, waker: &Waker) -> Step {
        let id = match place.id().filter(|id| self.waiters.contains_key(id)) {
            Some(id) => id,
            None => {
                let Some(model) = ask.model.clone() else {
                    return Step::Ready(Grant::Now);
                };
                self.join(now, place, model, ask)
            }
        };
        let waiter = self.waiters.get_mut(&id).expect("joined");
        waiter.told = now;
        if let Some(result) = waiter.result.take() {
            self.remove(id);
            place.take();
            return Step::Ready(*result);
        }
        if waiter.waker.as_ref().is_none_or(|w| !w.will_wake(waker)) {
            waiter.waker = Some(waker.clone());
        }
        let deadline = waiter.deadline;
        let model = waiter.model.clone();
        self.sweep(now, &model);
        let ahead = self.waiters.get(&id).map_or(0, |w| w.ahead);
        let m = self.models.get_mut(&model).expect("a waiter's line");
        if let Some(since) = m.asking {
            if now < since + OP_STALL {
                return Step::Pending {
                    until: now + IDLE_POLL,
                };
            }
            m.asking = None;
        }
        // At the head, or further back by the last count (it only falls between sweeps,
        // as callers ahead are admitted).
        let position = match m.order.first() {
            Some((_, _, first)) if *first != id => ahead.max(1),
            _ => 0,
        };
        let head_at = m.head_at.unwrap_or(now).max(now);
        if position > 0 {
            // Further back: its turn comes after the ones ahead.
            let expected = head_at + Duration::from_micros(m.unit_us.saturating_mul(position));
            if let Some(deadline) = deadline
                && m.unit_us > 0
                && expected > deadline
            {
                let after = expected - now;
                self.remove(id);
                place.take();
                return Step::Ready(Grant::Late { after });
            }
            // It is woken when its turn may have come; until then it only checks its
            // deadline and that the line still moves.
            let until = deadline.map_or(now + IDLE_POLL, |d| d.min(now + IDLE_POLL));
            return Step::Pending {
                until: until.max(now + Duration::from_micros(1)),
            };
        }
        if let Some(deadline) = deadline
            && now >= deadline
        {
            let after = head_at.saturating_duration_since(now);
            self.remove(id);
            place.take();
            return Step::Ready(Grant::Late { after });
        }
        if head_at > now {
            let until = head_at.min(now + IDLE_POLL);
            let until = deadline.map_or(until, |d| until.min(d));
            return Step::Pending { until };
        }
        Step::Ask(self.batch(now, &model, id))
    }

    /// The store operation of a caller alone, when its budget has no line (nobody waits
    /// for it, nothing is out for it) and `place` is new: it need not join a line to be
    /// admitted at once. Run it, then hand its answer to [`Line::lone_answer`]. `None`:
    /// [`Line::poll`] as usual.
    pub fn lone(&self, place: &Place, ask: &Ask) -> Option<AdmitOp> {
        let model = ask.model.as_deref()?;
        if place.id().is_some() || self.models.contains_key(model) {
            return None;
        }
        let candidate = candidate_of(ask);
        let mut waiting = [0; 3];
        waiting[candidate.lane as usize] = 1;
        Some(self.op(waiting, vec![candidate]))
    }

    /// The store operation that asks for `candidates`, `waiting` callers in line by lane.
    fn op(&self, waiting: [u64; 3], candidates: Vec<Candidate>) -> AdmitOp {
        AdmitOp {
            proc_id: self.config.proc_id,
            waiting,
            candidates,
            horizon_us: micros(self.config.horizon),
            late_us: 0,
            ask_gap_us: micros(self.config.ask_gap),
            reserve_ppm: self.config.reserve_ppm,
        }
    }

    /// The answer to `op`, a [`Line::lone`] operation for `ask`, given at `now`: the
    /// caller's grant; or, when it must wait, `None` with the caller in the line as its
    /// head (`place` holds it), as if it had asked from there: [`Line::poll`] tells it
    /// when to poll again, and `waker` is woken when its turn may have come.
    pub fn lone_answer(
        &mut self,
        now: Instant,
        place: &mut Place,
        ask: &Ask,
        op: AdmitOp,
        answer: &AdmitAnswer,
        waker: &Waker,
    ) -> Option<Grant> {
        let model = ask.model.as_deref()?;
        if let Some(grant) = answer.decisions.first().and_then(|d| grant_of(*d, model)) {
            return Some(grant);
        }
        let id = self.join(now, place, model.to_owned(), ask);
        if let Some(w) = self.waiters.get_mut(&id) {
            w.waker = Some(waker.clone());
        }
        let batch = Batch {
            model: model.to_owned(),
            reports: Vec::new(),
            op,
            ids: vec![id],
            asker: id,
        };
        // (Nothing can have come meanwhile: the line is new.)
        let _no_reports = self.finish(now, batch, answer);
        None
    }

    fn join(&mut self, now: Instant, place: &mut Place, model: String, ask: &Ask) -> u64 {
        self.next += 1;
        let id = self.next;
        let candidate = candidate_of(ask);
        let lane = candidate.lane;
        let key = (lane, id, id);
        let m = self.models.entry(model.clone()).or_default();
        if m.order.is_empty() {
            // The first caller of an idle line asks at once.
            m.head_at = None;
        }
        // Those ahead in its lane and the higher ones (O(log n) past them: a lower lane
        // counts the callers of the lanes above, at most the whole line, once).
        let ahead = m.order.range(..key).count() as u64;
        m.order.insert(key);
        m.counts[lane as usize] += 1;
        self.waiters.insert(
            id,
            Waiter {
                joined: now,
                model,
                key,
                candidate,
                deadline: ask.within.and_then(|w| now.checked_add(w)),
                waker: None,
                result: None,
                told: now,
                ahead,
            },
        );
        place.set(id);
        id
    }

    fn batch(&mut self, now: Instant, model: &str, asker: u64) -> Batch {
        let m = self.models.get_mut(model).expect("a line");
        m.asking = Some(now);
        let mut ids: Vec<u64> = m.order.iter().take(BATCH).map(|k| k.2).collect();
        for lane in 0..3 {
            if let Some(first) = m.order.range((lane, 0, 0)..).next()
                && first.0 == lane
                && !ids.contains(&first.2)
            {
                ids.push(first.2);
            }
        }
        let waiting = m.counts;
        ids.sort_by_key(|id| self.waiters[id].key);
        let candidates = ids
            .iter()
            .map(|id| {
                let w = &self.waiters[id];
                let mut c = w.candidate;
                c.within_us = w.deadline.map_or(u64::MAX, |d| {
                    u64::try_from(d.saturating_duration_since(now).as_micros()).unwrap_or(u64::MAX)
                });
                c
            })
            .collect();
        let reports = aged(now, std::mem::take(&mut m.reports));
        Batch {
            model: model.to_owned(),
            reports,
            op: self.op(waiting, candidates),
            ids,
            asker,
        }
    }

    /// The answer to `batch`, given at `now`: admitted callers get their grant and are
    /// woken, the head waits for the capacity it needs (or the next ask). `true` when
    /// reports came meanwhile: the caller keeps the store operation and runs them
    /// ([`Line::take_reports`], then [`Line::end_reports`]).
    #[must_use = "reports that came meanwhile must be run"]
    pub fn finish(&mut self, now: Instant, batch: Batch, answer: &AdmitAnswer) -> bool {
        let Some(m) = self.models.get_mut(&batch.model) else {
            return false;
        };
        let (mut long, mut longest) = (0u64, Duration::ZERO);
        m.unit_us = answer.unit_us;
        m.binding = answer.binding;
        for (id, decision) in batch.ids.iter().zip(&answer.decisions) {
            let Some(w) = self.waiters.get_mut(id) else {
                continue;
            };
            let Some(result) = grant_of(*decision, &batch.model) else {
                continue;
            };
            if m.order.remove(&w.key) {
                m.counts[w.key.0.min(2) as usize] -= 1;
            }
            w.result = Some(Box::new(result));
            if let Some(waker) = w.waker.as_ref().filter(|_| *id != batch.asker) {
                waker.wake_by_ref();
            }
            let waited = now.saturating_duration_since(w.joined);
            if waited >= LONG_WAIT {
                longest = longest.max(waited);
                long += 1;
            }
        }
        let wait = Duration::from_micros(answer.next_in_us).saturating_sub(self.config.horizon);
        m.head_at = Some(now + wait.min(self.config.ask_gap));
        if answer.next_in_us == 0 {
            m.head_at = None;
        }
        // Reports that came meanwhile go with the head's next ask, at once (they may have
        // freed capacity): one store operation carries both. Only with nobody left to ask
        // does this caller run them on their own.
        let pending = !m.reports.is_empty();
        let flush = pending && m.order.is_empty();
        m.asking = flush.then_some(now);
        if pending && !flush {
            m.head_at = Some(now);
        }
        // The head (the caller that asked, or the one after those admitted) learns when to
        // ask again.
        self.wake_first(&batch.model, batch.asker);
        self.say(now, &batch.model, answer, long, longest);
        flush
    }

    /// A report for `model`'s budget, to run at the next store operation: the one out,
    /// if any, takes it when it ends; else, while callers wait, the head's ask, made at
    /// once (one operation, not one for the reports and one for the head: on a slow
    /// store the round trips add up). `true` when neither will: the caller runs one now
    /// (it holds the operation until [`Line::end_reports`]).
    #[must_use = "when true, the caller must run the reports"]
    pub fn add_report(&mut self, now: Instant, model: &str, report: ReportOp) -> bool {
        let m = self.models.entry(model.to_owned()).or_default();
        m.reports.push((now, report));
        if m.asking.is_some_and(|since| now < since + OP_STALL) {
            return false;
        }
        if !m.order.is_empty() {
            self.wake(model, now);
            return false;
        }
        m.asking = Some(now);
        true
    }

    /// The reports waiting for `model`'s next store operation (the caller holds it and
    /// sends it at `now`), each with its age ([`ReportOp::age_us`]).
    pub fn take_reports(&mut self, now: Instant, model: &str) -> Vec<ReportOp> {
        self.models
            .get_mut(model)
            .map(|m| aged(now, std::mem::take(&mut m.reports)))
            .unwrap_or_default()
    }

    /// The reports are run (at `now`): the operation is released, and the head asks
    /// again at once (they may have freed capacity).
    pub fn end_reports(&mut self, now: Instant, model: &str) {
        if let Some(m) = self.models.get_mut(model) {
            m.asking = None;
            if m.order.is_empty() && m.reports.is_empty() {
                self.models.remove(model);
                return;
            }
        }
        self.wake(model, now);
    }

    /// What a store's answer says to a person watching the logs: at INFO, at most every
    /// [`SUMMARY_EVERY`] per budget and once the head has waited [`SUMMARY_AFTER`], that
    /// callers queue (how many per class, what keeps
    /// them, the pace, when the next goes); at WARN, at most once a minute, that callers
    /// were admitted after waiting [`LONG_WAIT`] or more.
    fn say(
        &mut self,
        now: Instant,
        model: &str,
        answer: &AdmitAnswer,
        long: u64,
        longest: Duration,
    ) {
        if long > 0 {
            let (last, others) = &mut self.long_waits;
            if last.is_none_or(|l| now.saturating_duration_since(l) >= Duration::from_secs(60)) {
                tracing::warn!(
                    model,
                    callers = long,
                    longest_s = longest.as_secs_f64(),
                    others_since_last_warning = *others,
                    binding = answer.binding.name(),
                    "mistral: callers waited long in the shared limiter's line"
                );
                *last = Some(now);
                *others = 0;
            } else {
                *others += long;
            }
        }
        let view = self.view(model);
        let queued: u64 = view.waiting.iter().sum();
        let Some(m) = self.models.get(model) else {
            return;
        };
        // Only callers that keep queueing (the head has waited a second) are worth a line.
        let head_since = m
            .order
            .first()
            .and_then(|k| self.waiters.get(&k.2))
            .map(|w| w.joined);
        let Some(m) = self.models.get_mut(model) else {
            return;
        };
        if queued == 0
            || answer.next_in_us == 0
            || head_since.is_none_or(|j| now.saturating_duration_since(j) < SUMMARY_AFTER)
        {
            return;
        }
        if m.said
            .is_some_and(|at| now.saturating_duration_since(at) < SUMMARY_EVERY)
        {
            return;
        }
        m.said = Some(now);
        let per_second = (answer.unit_us > 0).then(|| 1e6 / answer.unit_us as f64);
        tracing::info!(
            model,
            interactive = view.waiting[0],
            default = view.waiting[1],
            batch = view.waiting[2],
            binding = answer.binding.name(),
            calls_per_second = per_second,
            next_in_ms = answer.next_in_us as f64 / 1e3,
            "mistral: callers wait for the shared budget"
        );
    }

    /// The store operation out for `model` was given up (its caller went away): nobody
    /// was admitted by it; the head may ask again after `retry`.
    pub fn abandon(&mut self, now: Instant, model: &str, retry: Duration) {
        if let Some(m) = self.models.get_mut(model) {
            m.asking = None;
            m.head_at = Some(now + retry);
        }
        // The head learns when to ask again (it may have been told to wait for this
        // operation).
        self.wake_first(model, 0);
    }

    /// Something may have freed capacity in `model`'s budget (a report): its head asks
    /// again at once.
    pub fn wake(&mut self, model: &str, now: Instant) {
        if let Some(m) = self.models.get_mut(model) {
            m.head_at = Some(now);
        }
        self.wake_head(model, now);
    }

    /// Every head asks again at once (a store came back).
    pub fn wake_all(&mut self, now: Instant) {
        let models: Vec<String> = self.models.keys().cloned().collect();
        for model in models {
            self.wake(&model, now);
        }
    }

    /// Wakes `model`'s head, unless it is `asker` (who polls again anyway; 0: nobody).
    fn wake_first(&self, model: &str, asker: u64) {
        if let Some(m) = self.models.get(model)
            && let Some((_, _, id)) = m.order.first()
            && *id != asker
            && let Some(waker) = self.waiters.get(id).and_then(|w| w.waker.as_ref())
        {
            waker.wake_by_ref();
        }
    }

    fn wake_head(&mut self, model: &str, now: Instant) {
        let Some(m) = self.models.get(model) else {
            return;
        };
        if m.head_at.is_some_and(|at| at > now) {
            return;
        }
        if let Some((_, _, id)) = m.order.first()
            && let Some(w) = self.waiters.get(id)
            && let Some(waker) = &w.waker
        {
            waker.wake_by_ref();
        }
    }

    /// The caller holding `place` leaves the line (the one behind it, if it was the head,
    /// is woken: a spurious wake is harmless).
    pub fn leave(&mut self, place: &mut Place) {
        if let Some(id) = place.take()
            && let Some(model) = self.remove(id)
            && let Some(m) = self.models.get(&model)
            && let Some((_, _, first)) = m.order.first()
            && let Some(waker) = self.waiters.get(first).and_then(|w| w.waker.as_ref())
        {
            waker.wake_by_ref();
        }
    }

    fn remove(&mut self, id: u64) -> Option<String> {
        let w = self.waiters.remove(&id)?;
        if let Some(m) = self.models.get_mut(&w.model) {
            if m.order.remove(&w.key) {
                m.counts[w.key.0.min(2) as usize] -= 1;
            }
            if m.order.is_empty() && m.asking.is_none() && m.reports.is_empty() {
                self.models.remove(&w.model);
            }
        }
        Some(w.model)
    }

    /// Goes through `model`'s line at most every [`SWEEP_EVERY`]: removes the waiters
    /// that stopped polling (their caller is gone) and counts each one's place.
    fn sweep(&mut self, now: Instant, model: &str) {
        let Some(m) = self.models.get_mut(model) else {
            return;
        };
        if m.swept.is_some_and(|at| now < at + SWEEP_EVERY) {
            return;
        }
        m.swept = Some(now);
        let mut stale = Vec::new();
        let mut ahead = 0;
        for (_, _, id) in &m.order {
            match self.waiters.get_mut(id) {
                Some(w) if now > w.told + IDLE_POLL + STALE_AFTER => stale.push(*id),
                Some(w) => {
                    w.ahead = ahead;
                    ahead += 1;
                }
                None => {}
            }
        }
        for id in stale {
            self.remove(id);
        }
    }
}

/// What `ask` asks of its budget's store, as a candidate.
fn candidate_of(ask: &Ask) -> Candidate {
    Candidate {
        lane: ask.priority.lane().min(2),
        size: ask.size,
        tokens: ask.tokens,
        within_us: ask.within.map_or(u64::MAX, micros),
    }
}

/// A store's decision for a caller of `model`'s budget as its grant (`None`: it waits).
fn grant_of(decision: Decision, model: &str) -> Option<Grant> {
    Some(match decision {
        Decision::Go { wait_us, ticket } => Grant::Go {
            after: Duration::from_micros(wait_us),
            ticket,
        },
        Decision::Late { after_us } => Grant::Late {
            after: Duration::from_micros(after_us),
        },
        Decision::Closed(block) => Grant::Refused(closed_error(block, model)),
        Decision::Wait => return None,
    })
}

/// `reports`, each with how long before `now` it came.
fn aged(now: Instant, reports: Vec<(Instant, ReportOp)>) -> Vec<ReportOp> {
    reports
        .into_iter()
        .map(|(at, report)| ReportOp {
            age_us: micros(now.saturating_duration_since(at)),
            ahead_us: 0,
            ..report
        })
        .collect()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
