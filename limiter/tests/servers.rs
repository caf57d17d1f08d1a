//! Fleets of real `Call`s sharing one real budget, against server models written apart
//! from the limiter, on a virtual clock: every limiting decision judged by servers with
//! strict and different semantics (a leaky bucket with no burst as nginx's `limit_req`,
//! a token bucket with burst, a fixed window, a sliding log, a concurrency limit, a limit
//! that changes mid-run), with and without announced limits, and measured against each
//! server's own best (the earliest it could have admitted the work, bursts included).

#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mistral_core::limiter::{Admit, Limiter, Place};
use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Action, ApiKey, ApiRequest, Ask, Call, Priority, RetryPolicy, Target};
use mistral_limiter::LocalLimiter;

/// The one model of these runs.
const MODEL: &str = "mistral-small-latest";

fn target() -> Target {
    Target::new(
        "https://api.mistral.ai",
        ApiKey::new("sk-sim").unwrap(),
        false,
    )
    .unwrap()
}

/// A chat call of `prompt_chars` characters with `max_tokens`, as a client makes it.
fn sized_call(
    prompt_chars: usize,
    max_tokens: Option<u32>,
    policy: &RetryPolicy,
    now: Instant,
    seed: u64,
) -> Call {
    let mut request = ChatRequest::new(MODEL, vec![Message::user("x".repeat(prompt_chars))]);
    if let Some(max) = max_tokens {
        request = request.max_tokens(max);
    }
    let api = ApiRequest::chat(&request).unwrap();
    Call::new(&target(), &api, policy, now, seed).unwrap()
}

fn chat_call(policy: &RetryPolicy, now: Instant, seed: u64) -> Call {
    sized_call(2, None, policy, now, seed)
}

/// Notes which callers were woken.
struct Woken {
    caller: usize,
    list: Arc<Mutex<Vec<usize>>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.list.lock().unwrap().push(self.caller);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.list.lock().unwrap().push(self.caller);
    }
}

const MS: u64 = 1_000;
const S: u64 = 1_000_000;

/// How a server limits, in its own words. Times are µs since the run's start.
#[derive(Clone, Debug)]
enum Semantics {
    /// nginx `limit_req` without `burst`: a request sooner than `1/rate` after the last
    /// admitted one is refused; refusals cost nothing.
    Leaky { per_sec: f64 },
    /// A bucket of `capacity`, full at the start, refilled at `per_sec`.
    Bucket { capacity: f64, per_sec: f64 },
    /// `limit` per window; windows start `phase` µs before the run's start.
    Fixed {
        limit: usize,
        window: u64,
        phase: u64,
    },
    /// `limit` in any trailing `window`.
    Sliding { limit: usize, window: u64 },
    /// At most `k` in flight.
    Concurrency { k: usize },
    /// Mistral's 2026 shape: a request bucket and a token bucket per minute, both full at
    /// the start (a minute's worth may go at once), both announced
    /// (`x-ratelimit-{limit,remaining}-{req,tokens}-minute`); a request costs its prompt
    /// and completion tokens.
    Mistral2026 { req_per_min: f64, tok_per_min: f64 },
}

/// A server model: its semantics, a change of its rate at some time, whether it
/// announces its limits (`x-ratelimit-*-req-N-second` on every response).
struct Server {
    semantics: Semantics,
    /// At this time the rate (or the limit, or `k`) is multiplied by the factor.
    change: Option<(u64, f64)>,
    announce: bool,
    latency: (u64, u64),
    /// Time from a send to its arrival at the server (scheduling, network), µs.
    transit: (u64, u64),
    // State.
    last_admit: Option<u64>,
    level: f64,
    tok_level: f64,
    level_at: u64,
    window_start: u64,
    window_count: usize,
    log: VecDeque<u64>,
    in_flight: Vec<u64>,
    admitted: Vec<u64>,
    refused: usize,
    /// When each refusal arrived (for `SIM_TRACE`).
    refused_at: Vec<u64>,
    /// Tokens charged for the requests admitted.
    charged: u64,
}

impl Server {
    fn new(semantics: Semantics, announce: bool) -> Self {
        let (level, tok_level) = match &semantics {
            Semantics::Bucket { capacity, .. } => (*capacity, 0.0),
            Semantics::Mistral2026 {
                req_per_min,
                tok_per_min,
            } => (*req_per_min, *tok_per_min),
            _ => (0.0, 0.0),
        };
        Server {
            semantics,
            change: None,
            announce,
            latency: (20 * MS, 40 * MS),
            transit: (0, 0),
            last_admit: None,
            level,
            tok_level,
            level_at: 0,
            window_start: 0,
            window_count: 0,
            log: VecDeque::new(),
            in_flight: Vec::new(),
            admitted: Vec::new(),
            refused: 0,
            refused_at: Vec::new(),
            charged: 0,
        }
    }

    fn changing(mut self, at: u64, factor: f64) -> Self {
        self.change = Some((at, factor));
        self
    }

    fn latency(mut self, lo: u64, hi: u64) -> Self {
        self.latency = (lo, hi);
        self
    }

    fn transit(mut self, lo: u64, hi: u64) -> Self {
        self.transit = (lo, hi);
        self
    }

    fn factor(&self, t: u64) -> f64 {
        match self.change {
            Some((at, f)) if t >= at => f,
            _ => 1.0,
        }
    }

    /// (limit, window in seconds) as the headers announce it.
    fn announced(&self, t: u64) -> (u64, u64) {
        let f = self.factor(t);
        match &self.semantics {
            Semantics::Leaky { per_sec } => ((per_sec * f).round() as u64, 1),
            Semantics::Bucket { per_sec, .. } => ((per_sec * f * 60.0).round() as u64, 60),
            Semantics::Fixed { limit, window, .. } | Semantics::Sliding { limit, window } => {
                ((*limit as f64 * f).round() as u64, (*window / S).max(1))
            }
            Semantics::Concurrency { k } => ((*k as f64 * f).round() as u64, 1),
            Semantics::Mistral2026 { req_per_min, .. } => ((req_per_min * f).round() as u64, 60),
        }
    }

    /// Admits or refuses a request of `cost` tokens arriving at `t` that would complete
    /// at `done`; returns the admission and what remains after it.
    fn arrive(&mut self, t: u64, done: u64, cost: u64) -> (bool, u64) {
        let f = self.factor(t);
        let (ok, remaining) = match &mut self.semantics {
            Semantics::Mistral2026 {
                req_per_min,
                tok_per_min,
            } => {
                let (rc, tc) = (*req_per_min * f, *tok_per_min * f);
                let dt = (t - self.level_at) as f64 / S as f64;
                self.level = (self.level + dt * rc / 60.0).min(rc);
                self.tok_level = (self.tok_level + dt * tc / 60.0).min(tc);
                self.level_at = t;
                // A request is admitted while both buckets have room (the token bucket
                // may go into debt by the request's completion, as Mistral's counts it
                // at the end).
                let ok = self.level >= 1.0 && self.tok_level >= 1.0;
                if ok {
                    self.level -= 1.0;
                    self.tok_level -= cost as f64;
                }
                (ok, self.level.floor().max(0.0) as u64)
            }
            Semantics::Leaky { per_sec } => {
                let gap = (S as f64 / (*per_sec * f)) as u64;
                let ok = self.last_admit.is_none_or(|last| t >= last + gap);
                if ok {
                    self.last_admit = Some(t);
                }
                (ok, 0)
            }
            Semantics::Bucket { capacity, per_sec } => {
                let rate = *per_sec * f;
                self.level =
                    (self.level + (t - self.level_at) as f64 * rate / S as f64).min(*capacity);
                self.level_at = t;
                let ok = self.level >= 1.0;
                if ok {
                    self.level -= 1.0;
                }
                (ok, self.level.floor() as u64)
            }
            Semantics::Fixed {
                limit,
                window,
                phase,
            } => {
                let limit = (*limit as f64 * f).round() as usize;
                let t = t + *phase;
                if t >= self.window_start + *window {
                    self.window_start = t / *window * *window;
                    self.window_count = 0;
                }
                let ok = self.window_count < limit;
                self.window_count += usize::from(ok);
                (ok, (limit - self.window_count) as u64)
            }
            Semantics::Sliding { limit, window } => {
                let limit = (*limit as f64 * f).round() as usize;
                while self.log.front().is_some_and(|&a| a + *window <= t) {
                    self.log.pop_front();
                }
                let ok = self.log.len() < limit;
                if ok {
                    self.log.push_back(t);
                }
                (ok, (limit - self.log.len()) as u64)
            }
            Semantics::Concurrency { k } => {
                let k = (*k as f64 * f).round() as usize;
                self.in_flight.retain(|&end| end > t);
                let ok = self.in_flight.len() < k;
                if ok {
                    self.in_flight.push(done);
                }
                (ok, (k - self.in_flight.len()) as u64)
            }
        };
        if ok {
            self.admitted.push(t);
            self.charged += cost;
        } else {
            self.refused += 1;
            self.refused_at.push(t);
        }
        (ok, remaining)
    }

    /// The answer to a request admitted (`ok`) or not at `t`, with `remaining` requests
    /// left; `usage` is (prompt, completion) tokens.
    fn response(
        &self,
        t: u64,
        ok: bool,
        remaining: u64,
        usage: (u64, u64),
    ) -> http::Response<Bytes> {
        let mut b = http::Response::builder().status(if ok { 200 } else { 429 });
        if self.announce {
            if let Semantics::Mistral2026 { tok_per_min, .. } = &self.semantics {
                let f = self.factor(t);
                let (limit, _) = self.announced(t);
                let tok_limit = (tok_per_min * f).round() as u64;
                let tok_left = self.tok_level.floor().max(0.0) as u64;
                b = b
                    .header("x-ratelimit-limit-req-minute", limit)
                    .header("x-ratelimit-remaining-req-minute", remaining)
                    .header("x-ratelimit-limit-tokens-minute", tok_limit)
                    .header("x-ratelimit-remaining-tokens-minute", tok_left);
                if ok {
                    b = b.header("x-ratelimit-tokens-query-cost", usage.0 + usage.1);
                }
            } else {
                let (limit, secs) = self.announced(t);
                b = b
                    .header(format!("x-ratelimit-limit-req-{secs}-second"), limit)
                    .header(
                        format!("x-ratelimit-remaining-req-{secs}-second"),
                        remaining,
                    );
            }
        }
        let body = if ok {
            format!(
                r#"{{"id":"x","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
                usage.0,
                usage.1,
                usage.0 + usage.1
            )
        } else if self.announce {
            r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}"#.to_owned()
        } else {
            r#"{"message":"Requests rate limit exceeded"}"#.to_owned()
        };
        b.body(Bytes::from(body)).unwrap()
    }
}

/// What a fleet run measured.
#[derive(Debug)]
struct Outcome {
    calls: usize,
    errors: usize,
    attempts: usize,
    refused: usize,
    makespan: f64,
    first_error: Option<String>,
    admitted: Vec<u64>,
}

impl Outcome {
    fn attempts_per_call(&self) -> f64 {
        self.attempts as f64 / self.calls as f64
    }
}

/// `until` in µs since `epoch`, rounded up (waking early would only poll again).
fn micros_after(epoch: Instant, until: Instant) -> u64 {
    until
        .saturating_duration_since(epoch)
        .as_nanos()
        .div_ceil(1000) as u64
}

enum Pending {
    /// A new call starts (after its caller's pause).
    Start,
    Poll,
    /// Waiting in the limiter's line.
    Admitting(Ask, Place),
    Arrive(mistral_core::AttemptId),
    Answer(mistral_core::AttemptId, http::Response<Bytes>),
}

/// What a group's requests are made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sizes {
    /// A two-character prompt, a 5-token answer.
    Tiny,
    /// Prompts of 200 to 3,200 characters; `max_tokens` unset on half (300 on the
    /// others); answers of 40 to 180 tokens (about 110), which the client cannot know.
    Varied,
}

impl Sizes {
    /// (prompt characters, max_tokens, the completion the server will produce).
    fn draw(self, rng: &mut fastrand::Rng) -> (usize, Option<u32>, u64) {
        match self {
            Sizes::Tiny => (2, None, 5),
            Sizes::Varied => {
                let chars = rng.usize(200..=3_200);
                let max = rng.bool().then_some(300);
                let completion = rng.u64(40..=180).min(max.map_or(u64::MAX, u64::from));
                (chars, max, completion)
            }
        }
    }

    /// The prompt tokens the server counts for `chars` characters (about 4.2 a token,
    /// and a few for the chat template).
    fn prompt_tokens(chars: usize) -> u64 {
        (chars as f64 / 4.2).ceil() as u64 + 7
    }
}

/// One group of callers of a fleet: how many, their class, how many calls in all, how
/// long each caller pauses between its calls, and what its requests are made of.
#[derive(Debug, Clone, Copy)]
struct Group {
    callers: usize,
    priority: Priority,
    calls: usize,
    think: u64,
    sizes: Sizes,
}

/// What one group's calls saw.
#[derive(Debug, Default)]
struct GroupOutcome {
    /// From each call's start to its first attempt's send, µs.
    waits: Vec<u64>,
    /// When each call ended, µs.
    done: Vec<u64>,
    errors: usize,
}

/// `calls` chat calls from `callers` callers (each makes calls one after another), every
/// call a real `Call` with the default policy, all sharing one `LocalLimiter`.
fn run(server: &mut Server, callers: usize, calls: usize, seed: u64) -> Outcome {
    let group = Group {
        callers,
        priority: Priority::Default,
        calls,
        think: 0,
        sizes: Sizes::Tiny,
    };
    run_groups(server, &[group], seed).0
}

/// One caller's call in flight, and what its request will cost at the server.
struct Caller {
    at: u64,
    call: Call,
    pending: Pending,
    usage: (u64, u64),
}

/// The groups' calls, every one a real `Call` of its group's class, all sharing one
/// `LocalLimiter` (driven as the clients drive it: polled with a waker, woken or told
/// when to poll again); the fleet's outcome and each group's.
fn run_groups(server: &mut Server, groups: &[Group], seed: u64) -> (Outcome, Vec<GroupOutcome>) {
    let epoch = Instant::now();
    let at = |us: u64| epoch + Duration::from_micros(us);
    let limiter = LocalLimiter::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let policies: Vec<RetryPolicy> = groups
        .iter()
        .map(|g| RetryPolicy {
            priority: g.priority,
            ..RetryPolicy::default()
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let calls: usize = groups.iter().map(|g| g.calls).sum();
    let mut started = vec![0usize; groups.len()];
    let mut outcomes: Vec<GroupOutcome> = groups.iter().map(|_| GroupOutcome::default()).collect();
    let new_call = |g: usize, begin: u64, seed: u64, rng: &mut fastrand::Rng| {
        let (chars, max, completion) = groups[g].sizes.draw(rng);
        let call = sized_call(chars, max, &policies[g], at(begin), seed);
        (call, (Sizes::prompt_tokens(chars), completion))
    };
    // Per caller: its group, when its call started, whether it has sent yet.
    let mut owner = Vec::new();
    let mut fleet: Vec<Option<Caller>> = Vec::new();
    let mut wakers = Vec::new();
    let mut call_start = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for _ in 0..group.callers {
            let i = fleet.len();
            owner.push(g);
            call_start.push((0u64, false));
            wakers.push(Waker::from(Arc::new(Woken {
                caller: i,
                list: Arc::clone(&woken),
            })));
            fleet.push((started[g] < group.calls).then(|| {
                started[g] += 1;
                let (call, usage) = new_call(g, 0, seed + i as u64, &mut rng);
                Caller {
                    at: 0,
                    call,
                    pending: Pending::Poll,
                    usage,
                }
            }));
        }
    }
    let (mut errors, mut attempts, mut done, mut last_done) = (0, 0, 0, 0u64);
    let mut first_error = None;
    let mut steps = 0u64;
    while done < calls {
        steps += 1;
        assert!(steps < 50_000_000, "the fleet never finished");
        let i = (0..fleet.len())
            .filter(|&i| fleet[i].is_some())
            .min_by_key(|&i| fleet[i].as_ref().unwrap().at)
            .expect("callers left");
        let g = owner[i];
        let Caller {
            at: t,
            mut call,
            pending,
            usage,
        } = fleet[i].take().unwrap();
        assert!(t < 3_600 * S, "virtual time ran past an hour");
        let now = at(t);
        let mut admitting = None;
        match pending {
            Pending::Answer(id, response) => {
                call.handle(now, id, mistral_core::Outcome::Response(response))
            }
            Pending::Arrive(id) => {
                let latency = rng.u64(server.latency.0..=server.latency.1);
                let (ok, remaining) = server.arrive(t, t + latency, usage.0 + usage.1);
                let response = server.response(t, ok, remaining, usage);
                fleet[i] = Some(Caller {
                    at: t + latency,
                    call,
                    pending: Pending::Answer(id, response),
                    usage,
                });
                continue;
            }
            Pending::Start => call_start[i] = (t, false),
            Pending::Poll => {}
            Pending::Admitting(ask, place) => admitting = Some((ask, place)),
        }
        let next = loop {
            if let Some((ask, mut place)) = admitting.take() {
                match limiter.poll_admit(now, &mut place, &ask, &wakers[i]) {
                    Admit::Ready(grant) => {
                        limiter.leave(&mut place);
                        if std::env::var_os("SIM_TRACE_GRANTS").is_some() {
                            eprintln!("{:>9.3} caller {i} -> {grant:?}", t as f64 / S as f64);
                        }
                        call.handle_grant(now, grant);
                    }
                    Admit::Pending { until } => {
                        let when = micros_after(epoch, until).max(t);
                        break Some((when, Pending::Admitting(ask, place)));
                    }
                }
            }
            match call.poll(now) {
                Action::Reserve(ask) => admitting = Some((ask, Place::new())),
                Action::Report(report) => {
                    limiter.report(now, &report);
                    if std::env::var_os("SIM_TRACE").is_some() {
                        let b = limiter.budget(MODEL).unwrap();
                        eprintln!(
                            "{:>9.3} {:?} seq {:?} rem {:?} tat {:.3} obs {} out {} rate {:.2} max {:.2} rec {} streak {} pause {:.3} ep {} share {:.3}",
                            t as f64 / S as f64,
                            report.verdict,
                            report.ticket.map(|t| t.seq),
                            report.limits.requests().and_then(|q| q.remaining),
                            b.req_tat_us as f64 / S as f64,
                            b.obs_seq,
                            b.out,
                            b.rate,
                            b.max_rate,
                            b.recovering,
                            b.streak,
                            b.pause_until_us as f64 / S as f64,
                            b.epoch,
                            b.share,
                        );
                    }
                }
                Action::Wait { until, .. } => {
                    break Some((micros_after(epoch, until).max(t), Pending::Poll));
                }
                Action::Send(attempt) => {
                    attempts += 1;
                    if !call_start[i].1 {
                        call_start[i].1 = true;
                        outcomes[g].waits.push(t - call_start[i].0);
                    }
                    if server.transit.1 > 0 {
                        let transit = rng.u64(server.transit.0..=server.transit.1);
                        break Some((t + transit, Pending::Arrive(attempt.id)));
                    }
                    let latency = rng.u64(server.latency.0..=server.latency.1);
                    let (ok, remaining) = server.arrive(t, t + latency, usage.0 + usage.1);
                    if std::env::var_os("SIM_TRACE_GRANTS").is_some() {
                        eprintln!("{:>9.3} caller {i} SEND ok={ok}", t as f64 / S as f64);
                    }
                    let response = server.response(t, ok, remaining, usage);
                    break Some((t + latency, Pending::Answer(attempt.id, response)));
                }
                Action::Done(result) => {
                    done += 1;
                    last_done = last_done.max(t);
                    outcomes[g].done.push(t);
                    if let Err(e) = result {
                        errors += 1;
                        outcomes[g].errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                    break None;
                }
            }
        };
        fleet[i] = match next {
            Some((when, pending)) => Some(Caller {
                at: when,
                call,
                pending,
                usage,
            }),
            None if started[g] < groups[g].calls => {
                started[g] += 1;
                let begin = t + groups[g].think;
                let (call, usage) =
                    new_call(g, begin, seed + (i * 100_003 + started[g]) as u64, &mut rng);
                Some(Caller {
                    at: begin,
                    call,
                    pending: Pending::Start,
                    usage,
                })
            }
            None => None,
        };
        // Callers woken by the limiter poll again now.
        for j in std::mem::take(&mut *woken.lock().unwrap()) {
            if let Some(c) = fleet[j].as_mut()
                && matches!(c.pending, Pending::Admitting(..))
                && c.at > t
            {
                c.at = t;
            }
        }
    }
    if let Some(b) = limiter.budget(MODEL) {
        assert_eq!(b.out, 0, "every admission answered: {b:?}");
    }
    let outcome = Outcome {
        calls,
        errors,
        attempts,
        refused: server.refused,
        makespan: last_done as f64 / S as f64,
        first_error,
        admitted: server.admitted.clone(),
    };
    (outcome, outcomes)
}

/// The server's own best makespan for `calls` calls, seconds: the earliest it admits the
/// last one (bursts included, unlimited callers), plus the mean latency.
fn best(semantics: &Semantics, calls: usize, latency: f64) -> f64 {
    let n = calls as f64;
    let last_admit = match semantics {
        Semantics::Leaky { per_sec } => (n - 1.0) / per_sec,
        Semantics::Bucket { capacity, per_sec } => ((n - capacity) / per_sec).max(0.0),
        Semantics::Fixed {
            limit,
            window,
            phase,
        } => {
            let first = (*window - phase % *window) as f64 / S as f64;
            if calls <= *limit {
                0.0
            } else {
                first + ((calls - 1) / limit - 1) as f64 * (*window as f64 / S as f64)
            }
        }
        Semantics::Sliding { limit, window } => {
            ((calls - 1) / limit) as f64 * (*window as f64 / S as f64)
        }
        Semantics::Concurrency { k } => ((calls - 1) / k) as f64 * latency,
        Semantics::Mistral2026 { req_per_min, .. } => {
            ((n - req_per_min) * 60.0 / req_per_min).max(0.0)
        }
    };
    last_admit + latency
}

/// The server's best for a workload whose tokens are `tokens` in all, under Mistral's
/// 2026 shape: the later of the request bucket's and the token bucket's (each full at
/// the start, refilled per minute), plus the mean latency.
fn best_2026(req_per_min: f64, tok_per_min: f64, calls: usize, tokens: u64, latency: f64) -> f64 {
    let by_requests = ((calls as f64 - req_per_min) * 60.0 / req_per_min).max(0.0);
    let by_tokens = ((tokens as f64 - tok_per_min) * 60.0 / tok_per_min).max(0.0);
    by_requests.max(by_tokens) + latency
}

fn check(
    name: &str,
    server: Server,
    callers: usize,
    calls: usize,
    min_goodput: f64,
    max_attempts: f64,
) -> Outcome {
    let semantics = server.semantics.clone();
    let latency = (server.latency.0 + server.latency.1) as f64 / 2.0 / S as f64;
    let mut server = server;
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let out = run(&mut server, callers, calls, seed);
    let best = best(&semantics, calls, latency);
    let goodput = best / out.makespan;
    if std::env::var("SIM_TRACE").is_ok() {
        // Admitted (and refused) per 250 ms, to see the shape of a run.
        let slot = 250 * MS;
        let end = out.admitted.iter().max().copied().unwrap_or(0) / slot + 1;
        let line: Vec<String> = (0..end)
            .map(|i| {
                let a = out.admitted.iter().filter(|&&t| t / slot == i).count();
                let r = server.refused_at.iter().filter(|&&t| t / slot == i).count();
                if r > 0 {
                    format!("{a}/{r}x")
                } else {
                    a.to_string()
                }
            })
            .collect();
        eprintln!("{name} {callers}: {}", line.join(" "));
        if std::env::var("SIM_TRACE").is_ok_and(|v| v == "2") {
            let mut events: Vec<(u64, bool)> = out.admitted.iter().map(|&t| (t, true)).collect();
            events.extend(server.refused_at.iter().map(|&t| (t, false)));
            events.sort();
            let first: Vec<String> = events
                .iter()
                .take(40)
                .map(|(t, ok)| format!("{}{}", t / MS, if *ok { "" } else { "x" }))
                .collect();
            eprintln!("  first arrivals (ms): {}", first.join(" "));
        }
    }
    eprintln!(
        "{name:<44} {callers:>3} callers: {:>7.2} s (best {best:>6.2} s, {goodput:.2}), \
         {:.3} attempts/call, {} refused, {} errors",
        out.makespan,
        out.attempts_per_call(),
        out.refused,
        out.errors
    );
    assert_eq!(out.errors, 0, "{name}: {:?}", out.first_error);
    assert!(
        goodput >= min_goodput,
        "{name}: {:.2} s against the server's best {best:.2} s ({goodput:.2})",
        out.makespan
    );
    assert!(
        out.attempts_per_call() <= max_attempts,
        "{name}: {:.3} attempts per call",
        out.attempts_per_call()
    );
    out
}

fn leaky(per_sec: f64) -> Semantics {
    Semantics::Leaky { per_sec }
}

#[test]
fn unknown_limits_are_learned_under_every_semantics() {
    // (name, semantics, latency) — the server announces nothing.
    let cases: Vec<(&str, Semantics, (u64, u64))> = vec![
        (
            "leaky bucket 10/s, no burst",
            leaky(10.0),
            (20 * MS, 40 * MS),
        ),
        // SIM_ONLY
        ("leaky bucket 2/s, no burst", leaky(2.0), (20 * MS, 40 * MS)),
        (
            "leaky bucket 50/s, no burst",
            leaky(50.0),
            (20 * MS, 40 * MS),
        ),
        (
            "token bucket 20 burst, 10/s",
            Semantics::Bucket {
                capacity: 20.0,
                per_sec: 10.0,
            },
            (20 * MS, 40 * MS),
        ),
        (
            "fixed window 20 per 2 s",
            Semantics::Fixed {
                limit: 20,
                window: 2 * S,
                phase: 0,
            },
            (20 * MS, 40 * MS),
        ),
        (
            "fixed window 100 per 2 s",
            Semantics::Fixed {
                limit: 100,
                window: 2 * S,
                phase: 0,
            },
            (20 * MS, 40 * MS),
        ),
        (
            "sliding log 20 per 2 s",
            Semantics::Sliding {
                limit: 20,
                window: 2 * S,
            },
            (20 * MS, 40 * MS),
        ),
        (
            "sliding log 40 per 1 s, fast",
            Semantics::Sliding {
                limit: 40,
                window: S,
            },
            (2 * MS, 10 * MS),
        ),
        (
            "4 in flight, 0.5 s each",
            Semantics::Concurrency { k: 4 },
            (500 * MS, 500 * MS),
        ),
    ];
    let only_case = std::env::var("SIM_CASE").ok();
    for (name, semantics, latency) in cases {
        if only_case
            .as_ref()
            .is_some_and(|c| !name.contains(c.as_str()))
        {
            continue;
        }
        let only: Option<usize> = std::env::var("SIM_CALLERS")
            .ok()
            .and_then(|v| v.parse().ok());
        let calls: usize = std::env::var("SIM_CALLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(150);
        for callers in [1, 8, 32]
            .into_iter()
            .chain(only.filter(|o| ![1, 8, 32].contains(o)))
            .filter(|c| only.is_none_or(|o| o == *c))
        {
            let latency = std::env::var("SIM_LATENCY_US")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(latency, |l| (l, 2 * l));
            let server = Server::new(semantics.clone(), false).latency(latency.0, latency.1);
            // One caller is bound by its own latency, not by the server.
            // Bounds well below what this code does (see the printed figures and the
            // bench): a regression guard, not the targets.
            let (goodput, attempts) = if callers == 1 { (0.0, 1.3) } else { (0.3, 1.3) };
            check(name, server, callers, calls, goodput, attempts);
        }
    }
}

#[test]
fn announced_limits_are_used_fully_bursts_included() {
    let cases: Vec<(&str, Semantics)> = vec![
        (
            "token bucket 50 burst, 50/min",
            Semantics::Bucket {
                capacity: 50.0,
                per_sec: 50.0 / 60.0,
            },
        ),
        (
            "fixed window 50 per 60 s",
            Semantics::Fixed {
                limit: 50,
                window: 60 * S,
                phase: 0,
            },
        ),
        (
            "fixed window 50 per 60 s, started 0.5 s into a window",
            Semantics::Fixed {
                limit: 50,
                window: 60 * S,
                phase: 500 * MS,
            },
        ),
        (
            "sliding log 50 per 60 s",
            Semantics::Sliding {
                limit: 50,
                window: 60 * S,
            },
        ),
    ];
    let only_case = std::env::var("SIM_CASE").ok();
    for (name, semantics) in cases {
        if only_case
            .as_ref()
            .is_some_and(|c| !name.contains(c.as_str()))
        {
            continue;
        }
        let server = Server::new(semantics, true);
        check(name, server, 16, 120, 0.85, 1.15);
    }
    // Short windows, many callers, fast answers (the fleet tests' shapes); the last
    // ones with requests that reach the server up to 50 ms after they leave (a loaded
    // machine, a network), so that pacing at the announced rate is not enough.
    let fleet: Vec<(&str, Semantics, usize, u64)> = vec![
        (
            "fixed window 100 per 2 s, fast",
            Semantics::Fixed {
                limit: 100,
                window: 2 * S,
                phase: 0,
            },
            256,
            0,
        ),
        (
            "sliding log 40 per 2 s, fast",
            Semantics::Sliding {
                limit: 40,
                window: 2 * S,
            },
            64,
            0,
        ),
        (
            "sliding log 30 per 2 s, 16 callers, fast, 0-50 ms transit",
            Semantics::Sliding {
                limit: 30,
                window: 2 * S,
            },
            16,
            50,
        ),
        (
            "fixed window 100 per 2 s, fast, 0-50 ms transit",
            Semantics::Fixed {
                limit: 100,
                window: 2 * S,
                phase: 0,
            },
            256,
            50,
        ),
    ];
    for (name, semantics, callers, transit_ms) in fleet {
        if only_case
            .as_ref()
            .is_some_and(|c| !name.contains(c.as_str()))
        {
            continue;
        }
        let server = Server::new(semantics, true)
            .latency(2 * MS, 10 * MS)
            .transit(0, transit_ms * MS);
        // A sliding log gives capacity back one window after each admission; right after
        // a spent window comes round, the answers of a burst that raced the log's expiry
        // can show room that is gone when the next callers arrive (about 1.04 to 1.08
        // attempts per call in these fast cases).
        check(name, server, callers, 500, 0.6, 1.10);
    }
}

#[test]
fn a_limit_that_changes_mid_run_is_followed_both_ways() {
    for factor in [2.0, 0.5] {
        let name = format!("leaky 10/s, x{factor} at 5 s");
        let server = Server::new(leaky(10.0), false).changing(5 * S, factor);
        let out = check(&name, server, 32, 200, 0.0, 1.6);
        // After the change (and 5 s to adapt), the admissions run at ≥ 0.8 of the new
        // rate until the work runs out.
        let new_rate = 10.0 * factor;
        let after: Vec<u64> = out
            .admitted
            .iter()
            .copied()
            .filter(|&t| t >= 10 * S)
            .collect();
        assert!(
            after.len() > 10,
            "{name}: {} admitted after 10 s",
            after.len()
        );
        let span = (after[after.len() - 1] - after[0]) as f64 / S as f64;
        let rate = (after.len() - 1) as f64 / span;
        eprintln!("  after the change: {rate:.2}/s of {new_rate}/s");
        assert!(
            rate >= 0.6 * new_rate,
            "{name}: {rate:.2}/s after the change"
        );
    }
}

#[test]
fn a_bucket_that_doubles_unannounced_is_followed() {
    // The bench's S9-doubled: a bucket of 20 (1 s) at 20/s, from 4 s on 40 and 40/s;
    // nothing announced.
    let server = Server::new(
        Semantics::Bucket {
            capacity: 20.0,
            per_sec: 20.0,
        },
        false,
    )
    .changing(4 * S, 2.0);
    let lat = std::env::var("SIM_LATENCY_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(20 * MS);
    let server = server.latency(lat, 2 * lat);
    let callers = std::env::var("SIM_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let out = check(
        "bucket 20/s, x2 at 4 s (S9)",
        server,
        callers,
        320,
        0.0,
        1.3,
    );
    // The server's best is 8.5 s; the official SDK's backoff takes about 10 s.
    let last = out.admitted.iter().copied().max().unwrap_or(0);
    assert!(last < 16 * S, "{} s", last as f64 / S as f64);
}

#[test]
fn two_429s_without_headers_then_success_never_lose_the_call() {
    for refusals in 1..=8 {
        // A gateway that refuses the first `refusals` requests, whatever their spacing.
        let limiter = LocalLimiter::new();
        let waker = Waker::from(Arc::new(Woken {
            caller: 0,
            list: Arc::default(),
        }));
        let epoch = Instant::now();
        let mut call = chat_call(&RetryPolicy::default(), epoch, 3);
        let mut t = 0u64;
        let mut sent = 0;
        let mut steps = 0;
        let result = loop {
            steps += 1;
            assert!(steps < 100_000, "{refusals} refusals: the call never ended");
            let now = epoch + Duration::from_micros(t);
            let action = call.poll(now);
            if steps > 99_980 {
                eprintln!("{t}: {action:?}");
            }
            match action {
                Action::Reserve(ask) => {
                    let mut place = Place::new();
                    loop {
                        let now = epoch + Duration::from_micros(t);
                        match limiter.poll_admit(now, &mut place, &ask, &waker) {
                            Admit::Ready(grant) => break call.handle_grant(now, grant),
                            Admit::Pending { until } => t = t.max(micros_after(epoch, until)),
                        }
                    }
                }
                Action::Report(r) => limiter.report(now, &r),
                Action::Wait { until, .. } => t = t.max(micros_after(epoch, until)),
                Action::Send(attempt) => {
                    sent += 1;
                    let server = Server::new(leaky(1000.0), false);
                    let response = server.response(t, sent > refusals, 0, (5, 5));
                    t += 30 * MS;
                    call.handle(
                        epoch + Duration::from_micros(t),
                        attempt.id,
                        mistral_core::Outcome::Response(response),
                    );
                }
                Action::Done(result) => break result,
            }
        };
        assert!(
            result.is_ok(),
            "{refusals} refusals: {}",
            result.unwrap_err()
        );
        assert_eq!(sent, refusals + 1, "attempts after {refusals} refusals");
        // The call's own full-jitter backoff (0.5 s doubling, capped at 30 s) sums to at
        // most 91.5 s over 8 refusals; the budget's pauses never add to it much.
        assert!(
            t < 120 * S,
            "{refusals} refusals took {:.1} s",
            t as f64 / S as f64
        );
    }
}

fn percentile(values: &[u64], p: f64) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A batch backlog (64 callers, never idle) and a person (one call a second) on one
/// saturated budget, judged by strict servers: the interactive calls wait about one
/// pacing interval, not the batch queue's length; with the same calls all of one class
/// (FIFO) they wait behind the queue. Nothing is lost and the limit holds.
#[test]
fn interactive_calls_go_before_a_batch_backlog() {
    let period = 100 * MS;
    // The bound on the interactive p99 wait: one pacing interval (and a little for the
    // confirmations) where the rate is steady; where a window must come round after a
    // refusal (a sliding log), that round; a learned rate books at most a second ahead
    // (a higher lane a period further than a lower one), so there is no long queue to
    // jump, and an interactive call waits at most that second.
    let cases: Vec<(&str, Semantics, bool, u64)> = vec![
        (
            "leaky bucket 10/s, no burst, announced",
            leaky(10.0),
            true,
            // Two pacing units (the issue's bound: or 0.5 s, the larger).
            500 * MS,
        ),
        (
            "sliding log 20 per 2 s, announced",
            Semantics::Sliding {
                limit: 20,
                window: 2 * S,
            },
            true,
            2 * S,
        ),
        (
            "leaky bucket 10/s, no burst, unknown",
            leaky(10.0),
            false,
            1_200 * MS,
        ),
    ];
    for (name, semantics, announce, bound) in cases {
        let mut waits = Vec::new();
        for prioritized in [true, false] {
            let mut server = Server::new(semantics.clone(), announce);
            let batch = Group {
                callers: 64,
                priority: Priority::Batch,
                calls: 400,
                think: 0,
                sizes: Sizes::Tiny,
            };
            let person = Group {
                callers: 1,
                priority: if prioritized {
                    Priority::Interactive
                } else {
                    Priority::Batch
                },
                calls: 20,
                think: S,
                sizes: Sizes::Tiny,
            };
            let (out, groups) = run_groups(&mut server, &[batch, person], 11);
            assert_eq!(out.errors, 0, "{name}: {:?}", out.first_error);
            // The first call starts with the budget (while the first answer is awaited).
            let later = &groups[1].waits[1..];
            let p50 = percentile(later, 0.5);
            let p99 = percentile(later, 0.99);
            eprintln!(
                "{name:<42} {}: interactive wait p50 {:.3} s p99 {:.3} s, batch done at {:.1} s, \
                 {:.3} attempts/call, {} refused",
                if prioritized {
                    "priorities"
                } else {
                    "FIFO      "
                },
                p50 as f64 / S as f64,
                p99 as f64 / S as f64,
                groups[0].done.iter().max().copied().unwrap_or(0) as f64 / S as f64,
                out.attempts_per_call(),
                out.refused,
            );
            assert!(
                out.attempts_per_call() <= 1.1,
                "{name}: {:.3} attempts per call",
                out.attempts_per_call()
            );
            waits.push((p50, p99));
        }
        let (with, fifo) = (waits[0], waits[1]);
        assert!(
            with.1 <= bound,
            "{name}: interactive p99 wait {} µs",
            with.1
        );
        assert!(
            !announce || fifo.1 >= 3 * with.1.max(period / 10),
            "{name}: FIFO should wait behind the queue: {fifo:?} against {with:?}"
        );
    }
}

/// Interactive callers that keep the budget busy on their own do not starve the batch:
/// it keeps about its reserved share (a tenth).
#[test]
fn a_saturating_higher_class_leaves_the_batch_its_reserved_share() {
    let mut server = Server::new(leaky(10.0), true);
    let interactive = Group {
        callers: 32,
        priority: Priority::Interactive,
        calls: 300,
        think: 0,
        sizes: Sizes::Tiny,
    };
    let batch = Group {
        callers: 32,
        priority: Priority::Batch,
        calls: 300,
        think: 0,
        sizes: Sizes::Tiny,
    };
    let (out, groups) = run_groups(&mut server, &[interactive, batch], 5);
    assert_eq!(out.errors, 0, "{:?}", out.first_error);
    // While the interactive calls last, the batch's share of what was done.
    let end = groups[0].done.iter().max().copied().unwrap();
    let batch_done = groups[1].done.iter().filter(|&&t| t <= end).count();
    let share = batch_done as f64 / (batch_done + groups[0].done.len()) as f64;
    eprintln!(
        "saturating interactive: batch share {share:.3} until {:.1} s, {:.3} attempts/call, {} refused",
        end as f64 / S as f64,
        out.attempts_per_call(),
        out.refused
    );
    assert!((0.07..0.3).contains(&share), "batch share {share:.3}");
    assert!(out.attempts_per_call() <= 1.05);
}

/// Mistral's 2026 limits as they are announced (a request and a token bucket per minute,
/// full at the start), prompts of every size, `max_tokens` unset on half, answers the
/// client cannot know in advance: the budget is spent as fast as the server's own best
/// (its burst included), with no 429, whatever the number of callers.
#[test]
fn mistral_2026_buckets_are_used_fully_with_prompts_of_every_size() {
    let (req_per_min, tok_per_min) = (600.0, 15_000.0);
    for callers in [1, 8, 64] {
        let calls = if callers == 1 { 30 } else { 60 };
        let mut server = Server::new(
            Semantics::Mistral2026 {
                req_per_min,
                tok_per_min,
            },
            true,
        )
        .latency(300 * MS, 900 * MS);
        let group = Group {
            callers,
            priority: Priority::Default,
            calls,
            think: 0,
            sizes: Sizes::Varied,
        };
        // The same draws as the run's (one rng, same seed): the tokens the server charges.
        let (out, _) = run_groups(&mut server, &[group], 21);
        let tokens: u64 = server.charged;
        let best = best_2026(req_per_min, tok_per_min, calls, tokens, 0.6);
        let goodput = best / out.makespan;
        eprintln!(
            "2026 buckets, {callers:>2} callers, {calls} calls, {tokens} tokens: {:.1} s \
             (best {best:.1} s, {goodput:.2}), {:.3} attempts/call, {} refused",
            out.makespan,
            out.attempts_per_call(),
            out.refused,
        );
        assert_eq!(out.errors, 0, "{:?}", out.first_error);
        assert!(
            out.attempts_per_call() <= 1.05,
            "{:.3}",
            out.attempts_per_call()
        );
        if callers > 1 {
            // Bounds below what this code does (the bench has the numbers): a guard.
            assert!(goodput >= 0.85, "{callers} callers: {goodput:.2}");
        }
    }
}
