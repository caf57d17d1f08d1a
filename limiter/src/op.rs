//! What one store operation takes and gives: the reports to learn from, the callers at
//! the head of a process's line to admit ([`AdmitOp`]), and the budget's answer
//! ([`AdmitAnswer`]). Every store runs the same [`crate::BudgetState`] methods on them,
//! atomically: under a mutex, under a file lock, or as one compare-and-set in Redis.

use std::time::Duration;

use mistral_core::limiter::Block;
use mistral_core::{LimiterSignal, Report, Sizing, Ticket};

/// One caller at the head of a process's line, as the budget sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its lane (priority class): 0 is served first.
    pub lane: u64,
    /// The request's size, for the budget's own token estimate.
    pub size: Sizing,
    /// The fixed-rule estimate of the request's tokens (used while the budget knows no
    /// token limit, and as a floor for requests whose size says nothing).
    pub tokens: u64,
    /// How long it can still wait, µs (`u64::MAX`: no limit).
    pub within_us: u64,
}

/// Admit as many of a process's first waiters as the budget can take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitOp {
    /// The process (limiter instance) asking: its demand record is kept under this id.
    pub proc_id: u64,
    /// How many of this process's callers wait, per lane, the candidates included.
    pub waiting: [u64; 3],
    /// The first waiters, in the order they would be served (lane, then arrival); the
    /// first of each lane is always among them.
    pub candidates: Vec<Candidate>,
    /// A candidate that fits within this long is admitted (it waits out the rest): about
    /// one store round trip plus a timer's slack.
    pub horizon_us: u64,
    /// How long after `now` the candidates admitted may go, at the latest, when their
    /// capacity is there already (0 in-process): a store far away answers a round trip
    /// later, and may run on a `now` behind its clock. Each is charged as of then at the
    /// earliest: a budget left full meanwhile fills no further, and a burst that goes
    /// late must not find the server's bucket emptied by the capacity due after it.
    pub late_us: u64,
    /// The longest this process waits before it asks again (its demand record lasts
    /// that long plus a grace).
    pub ask_gap_us: u64,
    /// The share each lane keeps of a saturated budget while higher lanes wait, in
    /// millionths ([`mistral_core::ReservedShares`]).
    pub reserve_ppm: [u64; 3],
}

/// What the budget decided for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted: it goes after `wait_us` (at most the horizon).
    Go {
        /// µs until the capacity it took is there.
        wait_us: u64,
        /// The admission, for its report.
        ticket: Ticket,
    },
    /// It cannot go within its time: the budget could admit it after about `after_us`.
    Late {
        /// µs until the budget could admit it.
        after_us: u64,
    },
    /// The budget is closed.
    Closed(Block),
    /// Not yet: it keeps its place.
    Wait,
}

/// The budget's answer to an [`AdmitOp`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdmitAnswer {
    /// One decision per candidate, in their order.
    pub decisions: Vec<Decision>,
    /// µs until the first candidate still waiting could fit (0: none waits).
    pub next_in_us: u64,
    /// µs of the budget's time one average request takes at its current pace (0: no
    /// limit known): what a caller further back can expect per caller ahead of it.
    pub unit_us: u64,
    /// What limits the first candidate still waiting, for the logs.
    pub binding: Binding,
}

impl AdmitAnswer {
    /// An answer that admits nobody and asks again after `next_in_us`.
    pub fn waiting(n: usize, next_in_us: u64) -> Self {
        AdmitAnswer {
            decisions: vec![Decision::Wait; n],
            next_in_us,
            unit_us: 0,
            binding: Binding::None,
        }
    }

    /// This answer as it stands `elapsed_us` after it was computed (its trip back from a
    /// store far away): every wait that much shorter, as the capacity each waits for
    /// comes that much sooner. The waits stay measured from a `now` no later than the
    /// store's clock, so a caller that goes when its wait is over never goes before the
    /// capacity it took is there; without this, every caller of a store 200 ms away
    /// would go a round trip after it.
    pub fn aged(mut self, elapsed_us: u64) -> Self {
        for d in &mut self.decisions {
            match d {
                Decision::Go { wait_us, .. } => *wait_us = wait_us.saturating_sub(elapsed_us),
                Decision::Late { after_us } => *after_us = after_us.saturating_sub(elapsed_us),
                Decision::Closed(_) | Decision::Wait => {}
            }
        }
        if self.next_in_us > 0 {
            self.next_in_us = self.next_in_us.saturating_sub(elapsed_us).max(1);
        }
        self
    }
}

/// What keeps the first waiting caller of a budget waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Binding {
    /// Nothing: nobody waits.
    #[default]
    None,
    /// The request limit.
    Requests,
    /// The token limit.
    Tokens,
    /// A pause everyone keeps after a refusal, or until a spent window comes round.
    Pause,
    /// A probe is out: the budget waits for its answer to learn the limits.
    Probe,
    /// Callers of a higher priority class in another process go first.
    Priority,
    /// As many attempts in flight as the server was learned to admit.
    Concurrency,
}

impl Binding {
    /// A short name for the logs.
    pub fn name(self) -> &'static str {
        match self {
            Binding::None => "none",
            Binding::Requests => "requests",
            Binding::Tokens => "tokens",
            Binding::Pause => "pause",
            Binding::Probe => "probe",
            Binding::Priority => "priority",
            Binding::Concurrency => "concurrency",
        }
    }
}

/// What a response signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signal {
    /// An answer that says nothing about the limit (a server error, a transport failure).
    #[default]
    Other,
    /// Served.
    Success,
    /// Refused by a spent window.
    WindowSpent {
        /// How long the server said to wait, µs (0: it did not say).
        wait_us: u64,
        /// The spent window's length, µs (0 for a month).
        window_us: u64,
        /// `true` when the token bucket refused (else the request bucket).
        tokens: bool,
    },
    /// A 429 that did not say which limit.
    RateLimited {
        /// How long the server said to wait, µs (0: it did not say).
        wait_us: u64,
    },
    /// No allowance for the model.
    NoAllowance,
    /// The monthly quota is spent.
    MonthlyQuota,
    /// The real token count of an earlier success (the end of a stream).
    Usage,
}

/// A [`Report`] reduced to what the budget learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportOp {
    /// What happened.
    pub signal: Signal,
    /// The announced request limit of the shortest window (0: none announced).
    pub req_limit: u64,
    /// That window's length in seconds.
    pub req_window_secs: u64,
    /// What the request quota had left, when the response said.
    pub req_remaining: Option<u64>,
    /// The announced token limit of the shortest window (0: none announced).
    pub tok_limit: u64,
    /// That window's length in seconds.
    pub tok_window_secs: u64,
    /// What the token quota had left, when the response said.
    pub tok_remaining: Option<u64>,
    /// The fixed-rule token estimate of the request (charged when there is no ticket).
    pub estimated_tokens: u64,
    /// Tokens the server charged, when known (0 for a refusal).
    pub used_tokens: Option<u64>,
    /// `usage.prompt_tokens`, when the response said.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens`, when the response said.
    pub completion_tokens: Option<u64>,
    /// The request's size.
    pub size: Sizing,
    /// The admission the attempt went on, when the limiter gave one.
    pub ticket: Option<Ticket>,
    /// How long before the store operation carrying it was sent the answer came, µs (0:
    /// at once, as in-process). A store behind a queue or a slow link runs a report
    /// hundreds of milliseconds after the answer: it is learned as of then (never before
    /// the state's latest time, [`crate::store::StoreOps::apply`]), so a `remaining`
    /// does not read as that much later, and the level as that much fuller.
    pub age_us: u64,
    /// How much later than the operation's `now` the answer may have come, at most, µs
    /// (0 with any `age_us`). A store whose clock is known only within a round trip runs
    /// an operation on a `now` that may be that much behind its clock; an answer that
    /// came within that round trip may be newer than the `now`, and its `remaining` is
    /// read as of the latest time it can have come: never earlier than the server counted
    /// it, so the capacity that came back since is never counted twice.
    pub ahead_us: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl From<&Report> for ReportOp {
    fn from(report: &Report) -> Self {
        let pace = |q: Option<&mistral_core::Quota>| match q {
            Some(q) => match (q.limit, q.window.duration()) {
                (Some(limit), Some(window)) if limit > 0 => (limit, window.as_secs().max(1)),
                _ => (0, 0),
            },
            None => (0, 0),
        };
        let (req_limit, req_window_secs) = pace(report.limits.requests());
        // The budget's second cell counts what a request costs: tokens, or an OCR
        // model's pages (`RateLimits::cost`).
        let (tok_limit, tok_window_secs) = pace(report.limits.cost());
        // The budget pauses everyone for a wait the server named; a call's own backoff
        // is its own.
        let hinted = report.server_wait().map_or(0, micros);
        // Exhaustive: the core maps every verdict, a new one included, to what a
        // limiter learns (`Verdict` itself is `#[non_exhaustive]`).
        let signal = match report.verdict.limiter_signal() {
            LimiterSignal::Served => Signal::Success,
            LimiterSignal::WindowSpent { quota } => Signal::WindowSpent {
                wait_us: hinted,
                window_us: micros(quota.window.duration().unwrap_or_default()),
                tokens: quota.bucket != mistral_core::Bucket::Requests,
            },
            LimiterSignal::RateLimited => Signal::RateLimited { wait_us: hinted },
            LimiterSignal::NoAllowance => Signal::NoAllowance,
            LimiterSignal::MonthlyQuota => Signal::MonthlyQuota,
            LimiterSignal::Usage => Signal::Usage,
            LimiterSignal::Nothing => Signal::Other,
        };
        ReportOp {
            signal,
            req_limit,
            req_window_secs,
            req_remaining: report.limits.requests().and_then(|q| q.remaining),
            tok_limit,
            tok_window_secs,
            tok_remaining: report.limits.cost().and_then(|q| q.remaining),
            estimated_tokens: report.estimated_tokens,
            used_tokens: report.used_tokens,
            prompt_tokens: report.usage.map(|u| u.prompt_tokens),
            completion_tokens: report.usage.map(|u| u.completion_tokens),
            size: report.size,
            ticket: report.ticket,
            age_us: 0,
            ahead_us: 0,
        }
    }
}
