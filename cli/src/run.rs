//! The online run: every request of the input through the async client (and so through
//! the shared limiter), results appended to the output as they come.
//!
//! Three parts, joined by bounded channels so memory does not grow with the input:
//!
//! - reader threads stream the input, skipping invalid lines, other shards, other
//!   models and the `custom_id`s the output already answers;
//! - per model (budgets of different models are spent in parallel), a reader and a
//!   dispatcher that starts one task per request, at most `concurrency` at a time: a
//!   task holds its permit **until its result line is on disk**, so at most
//!   `concurrency` requests per model are ever sent but not yet recorded (what a crash
//!   can make a rerun send again);
//! - a writer thread appends whole lines and `fsync`s them, a group at a time.
//!
//! Signals: at the first SIGINT (Ctrl-C) or SIGTERM no new request is started; the calls
//! in flight have [`GRACE`] to finish (their results are written), then they are
//! abandoned — nothing written, left for the next run — and the run ends with 130
//! (SIGINT) or 143 (SIGTERM). A second signal exits at once with its own status.
//!
//! The input is read up to the lines the validation pass saw ([`Plan::lines`]): lines
//! appended while the run goes are left for the next run, which validates them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mistral_async::{ApiRequest, Client, Error};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::input::{self, Defaults, Job, fingerprint, in_shard};
use crate::output::{self, Appender, Resumed};
use crate::progress::{Progress, Snapshot};

/// Most requests in flight when chosen automatically.
pub const MAX_AUTO_CONCURRENCY: usize = 256;

/// Request bodies in flight at most, in bytes, when the concurrency is chosen
/// automatically (memory then stays near a few times this, whatever the lines' size).
pub const MAX_AUTO_BODY_BYTES: u64 = 32 << 20;

/// Consecutive transient failures (retries exhausted) after which the run stops.
pub const MAX_TRANSIENT_IN_A_ROW: u64 = 20;

/// How long the calls in flight may still finish after the first SIGINT or SIGTERM,
/// before they are abandoned (left for the next run).
pub const GRACE: Duration = Duration::from_secs(3);

/// A signal that stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C): exit status 130.
    Interrupt,
    /// SIGTERM: exit status 143.
    Terminate,
}

impl Signal {
    /// The exit status of a run it stopped: 128 + the signal's number.
    pub fn exit_status(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// SIGINT and SIGTERM, as a stream of [`Signal`]s (listening from its creation on).
#[derive(Debug)]
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening (from now on, these signals no longer end the process by
    /// themselves); `None` when the handlers cannot be set up.
    pub fn listen() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Signals {
            interrupt: signal(SignalKind::interrupt()).ok()?,
            terminate: signal(SignalKind::terminate()).ok()?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Interrupt,
            _ = self.terminate.recv() => Signal::Terminate,
        }
    }
}

/// What the run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The input file.
    pub input: std::path::PathBuf,
    /// The output file.
    pub output: std::path::PathBuf,
    /// Endpoint and model for lines that do not name them.
    pub defaults: Defaults,
    /// The models of the requests to send, most requests first (one lane each, up to
    /// [`MAX_LANES`]).
    pub models: Vec<String>,
    /// `--concurrency` (per model), or `None` to choose it from the limits.
    pub concurrency: Option<usize>,
    /// Line numbers to skip (invalid lines, with `--skip-invalid`).
    pub skip_lines: Arc<std::collections::HashSet<u64>>,
    /// `--shard K/N` as (K-1, N).
    pub shard: Option<(u64, u64)>,
    /// Requests this run is to send (the shard's valid lines not yet answered).
    pub todo: u64,
    /// Estimated tokens of those requests.
    pub todo_tokens: u64,
    /// Requests of the shard an earlier run answered (the progress counts them).
    pub earlier: u64,
    /// Lines of the input the validation pass read: the run reads no further (lines
    /// appended meanwhile are the next run's).
    pub lines: u64,
    /// `--retry-unknown`: the client sends again a request whose outcome is unknown, and
    /// one still unknown after its attempts is left for a later run (which sends it
    /// again) instead of being written as an error.
    pub retry_unknown: bool,
}

/// Counters shared by the tasks, the writer and the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests whose calls have started.
    pub started: AtomicU64,
    /// Successes written.
    pub succeeded: AtomicU64,
    /// Error results written (per-request permanent errors, unknown outcomes).
    pub failed: AtomicU64,
    /// Of the error results, requests whose outcome is unknown (sent, no answer: the
    /// server may have run them), written as errors rather than sent again.
    pub unknown: AtomicU64,
    /// Requests that failed transiently (retries exhausted): not written.
    pub transient: AtomicU64,
    /// Transient failures since the last success.
    pub transient_in_a_row: AtomicU64,
    /// Tokens the responses reported (`usage.total_tokens`).
    pub tokens_used: AtomicU64,
    /// Responses that reported usage.
    pub with_usage: AtomicU64,
    /// Latency of successful calls, exponentially averaged, in microseconds.
    pub latency_us: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
    /// Calls in flight abandoned after a signal's grace (no result: the next run sends
    /// them again).
    pub abandoned: AtomicU64,
    /// Bytes of the request bodies sent (to size the concurrency by memory).
    pub body_bytes: AtomicU64,
    /// Per model: the requests and tokens per second its last response announced.
    pub limits: Mutex<std::collections::HashMap<String, Rates>>,
}

/// Requests and tokens per second a model's limits allow (`None`: not announced).
pub type Rates = (Option<f64>, Option<f64>);

impl Counters {
    /// Requests and tokens per second over every model seen: budgets of different
    /// models are spent in parallel, so their limits add up.
    pub fn total_limits(&self) -> Rates {
        let limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let sum = |pick: fn(&Rates) -> Option<f64>| {
            limits
                .values()
                .map(pick)
                .try_fold(0.0, |acc, r| r.map(|r| acc + r))
        };
        if limits.is_empty() {
            (None, None)
        } else {
            (sum(|l| l.0), sum(|l| l.1))
        }
    }

    /// The rates `model`'s last response announced.
    pub fn limits_of(&self, model: &str) -> Rates {
        let limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.get(model).copied().unwrap_or((None, None))
    }
}

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A signal (SIGINT, SIGTERM) interrupted it.
    Interrupted(Signal),
    /// A refusal that stops every request (quota, zero allowance, key).
    Fatal(String),
    /// The output could not be written.
    Output(String),
    /// Too many transient failures in a row.
    Failing(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Interrupted(signal) => write!(f, "interrupted ({signal})"),
            Stop::Fatal(m) | Stop::Output(m) | Stop::Failing(m) => f.write_str(m),
        }
    }
}

/// The end of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Why it stopped early, if it did.
    pub stop: Option<Stop>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The counters at the end.
    pub counters: Arc<Counters>,
    /// Concurrency at the end.
    pub concurrency: usize,
}

struct Shared {
    counters: Arc<Counters>,
    /// [`Plan::retry_unknown`].
    retry_unknown: bool,
    stop: Mutex<Option<Stop>>,
    /// Turns `true` once, when the run is to stop: every dispatcher watches it.
    stopped: tokio::sync::watch::Sender<bool>,
    /// Turns `true` once a signal's grace is over: the calls in flight are abandoned.
    abandon: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn stop(&self, why: Stop) {
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if stop.is_none() {
            *stop = Some(why);
        }
        self.stopped.send_replace(true);
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }
}

/// A finished request on its way to the writer, with its permit.
struct Finished {
    line: Option<String>,
    ok: bool,
    /// An error line for a request whose outcome is unknown.
    unknown: bool,
    _permit: OwnedSemaphorePermit,
}

/// The `error.code` of a result line whose request's outcome is unknown (no status: no
/// answer came).
pub const OUTCOME_UNKNOWN_CODE: &str = "outcome_unknown";

/// What a request's failure means for the run.
enum Verdict {
    /// Written as the request's result.
    Result(String),
    /// Written as the request's result: its outcome is unknown (sent, no answer; the
    /// server may have run it), so it is not sent again, now or by a later run.
    Unknown(String),
    /// Stops the run; nothing written.
    Fatal(String),
    /// Left for a later run; nothing written.
    Transient(String),
}

fn judge(custom_id: &str, error: &Error, retry_unknown: bool) -> Verdict {
    match error {
        e if e.is_outcome_unknown() && !retry_unknown => Verdict::Unknown(output::error_line(
            custom_id,
            None,
            Value::Null,
            &format!("{e}; run with --retry-unknown to send such requests again"),
            Some(OUTCOME_UNKNOWN_CODE),
        )),
        Error::BadRequest { .. } | Error::Forbidden { .. } => {
            let response = error.response();
            let body = response
                .map(|r| {
                    serde_json::from_str::<Value>(&r.excerpt)
                        .unwrap_or_else(|_| Value::String(r.excerpt.clone()))
                })
                .unwrap_or(Value::Null);
            let code = response.and_then(|r| r.code.as_deref());
            Verdict::Result(output::error_line(
                custom_id,
                error.status_u16(),
                body,
                &error.to_string(),
                code,
            ))
        }
        Error::MonthlyQuota { .. }
        | Error::NoAllowance { .. }
        | Error::Unauthorized { .. }
        // A wrong base URL: every request would get the same.
        | Error::NotFound { .. }
        | Error::Key(_)
        | Error::Config(_) => Verdict::Fatal(error.to_string()),
        _ => Verdict::Transient(error.to_string()),
    }
}

/// Runs `plan` online. `resumed` is what the output already holds.
pub async fn run(client: Client, plan: Plan, resumed: Resumed, progress: Arc<Progress>) -> Outcome {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        counters: Arc::new(Counters::default()),
        retry_unknown: plan.retry_unknown,
        stop: Mutex::new(None),
        stopped: tokio::sync::watch::Sender::new(false),
        abandon: tokio::sync::watch::Sender::new(false),
    });
    let initial = plan.concurrency.unwrap_or(1).max(1);
    let done = Arc::new(resumed.done);

    // The writer.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Finished>();
    let writer = {
        let shared = shared.clone();
        let path = plan.output.clone();
        std::thread::spawn(move || write_results(&path, done_rx, &shared))
    };

    // Signals: the first SIGINT or SIGTERM starts nothing new and gives the calls in
    // flight GRACE to finish, then abandons them; a second one exits at once (the output
    // is consistent at every moment: whole lines, a torn last one is cut on resume).
    let interrupt = {
        let shared = shared.clone();
        let progress = progress.clone();
        let signals = Signals::listen();
        tokio::spawn(async move {
            let Some(mut signals) = signals else {
                return;
            };
            let first = signals.next().await;
            shared.stop(Stop::Interrupted(first));
            progress.note(&format!(
                "mistral: {first}: no new request is started; the {} call(s) in flight have {} s \
                 to finish, then they are left for the next run (another signal stops at once)",
                shared.counters.in_flight.load(Ordering::Relaxed),
                GRACE.as_secs()
            ));
            let second = tokio::select! {
                signal = signals.next() => Some(signal),
                () = tokio::time::sleep(GRACE) => None,
            };
            let second = match second {
                Some(signal) => signal,
                None => {
                    shared.abandon.send_replace(true);
                    signals.next().await
                }
            };
            progress.note(&format!(
                "mistral: {second} again: stopping at once; what has no result is left for the \
                 next run"
            ));
            std::process::exit(i32::from(second.exit_status()));
        })
    };

    // One lane per model: budgets of different models are spent in parallel, so a file
    // sorted by model must not wait for one model's pace before the next starts. Every
    // lane reads the whole input, so past MAX_LANES the models with the fewest requests
    // share one last lane.
    let mut named: Vec<String> = plan.models.clone();
    let shared_lane = named.len() > MAX_LANES || named.is_empty();
    if shared_lane {
        named.truncate(MAX_LANES - 1);
    }
    let mut lanes: Vec<Arc<Lane>> = named
        .iter()
        .map(|model| Lane::new(Some(model.clone()), initial))
        .collect();
    if shared_lane {
        lanes.push(Lane::new(None, initial));
    }
    let named: Arc<std::collections::HashSet<String>> = Arc::new(named.into_iter().collect());
    let mut readers = Vec::new();
    let mut dispatchers = tokio::task::JoinSet::new();
    for lane in &lanes {
        let (job_tx, job_rx) = tokio::sync::mpsc::channel::<Job>(64);
        let plan = plan.clone();
        let done = done.clone();
        let model = lane.model.clone();
        let named = named.clone();
        readers.push(std::thread::spawn(move || {
            input::for_each_line(&plan.input, |line_no, line| {
                if line_no > plan.lines {
                    // Appended after the validation pass: the next run's.
                    return Ok(false);
                }
                if plan.skip_lines.contains(&line_no) {
                    return Ok(true);
                }
                let Ok(Ok(Some(job))) = line.map(|l| input::parse_line(line_no, l, &plan.defaults))
                else {
                    return Ok(true);
                };
                let mine = match &model {
                    Some(model) => job.model == *model,
                    None => !named.contains(&job.model),
                };
                if !mine
                    || !in_shard(plan.shard, &job.custom_id)
                    || done.contains(&fingerprint(&job.custom_id))
                {
                    return Ok(true);
                }
                Ok(job_tx.blocking_send(job).is_ok())
            })
        }));
        dispatchers.spawn(dispatch(
            lane.clone(),
            job_rx,
            client.clone(),
            shared.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);

    // The display and the concurrency tuner.
    let total_concurrency = |lanes: &[Arc<Lane>]| {
        lanes
            .iter()
            .map(|l| l.concurrency.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let ticker = {
        let shared = shared.clone();
        let client = client.clone();
        let lanes = lanes.clone();
        let auto = plan.concurrency.is_none();
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(200));
            let mut warned = std::collections::HashSet::new();
            loop {
                interval.tick().await;
                warn_of_the_month(&client, &progress, &mut warned);
                let stats = client.stats();
                let c = &shared.counters;
                if auto {
                    let latency = c.latency_us.load(Ordering::Relaxed);
                    let started = c.started.load(Ordering::Relaxed).max(1);
                    let avg_body = (c.body_bytes.load(Ordering::Relaxed) / started).max(1);
                    let by_memory =
                        (MAX_AUTO_BODY_BYTES / avg_body / lanes.len() as u64).max(2) as usize;
                    for lane in &lanes {
                        let rate = match &lane.model {
                            Some(model) => c.limits_of(model).0,
                            None => c.total_limits().0,
                        };
                        let target = auto_concurrency(rate, stats.calls, latency).min(by_memory);
                        let now = lane.concurrency.load(Ordering::Relaxed) as usize;
                        if target > now {
                            lane.semaphore.add_permits(target - now);
                            lane.concurrency.store(target as u64, Ordering::Relaxed);
                        }
                    }
                }
                progress.update(&snapshot(
                    &plan,
                    c,
                    &stats,
                    started,
                    total_concurrency(&lanes),
                ));
            }
        })
    };

    while dispatchers.join_next().await.is_some() {}
    let _ = writer.join();
    for reader in readers {
        let _ = reader.join();
    }
    interrupt.abort();
    ticker.abort();
    let stop = shared
        .stop
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Outcome {
        stop,
        elapsed: started.elapsed(),
        counters: shared.counters.clone(),
        concurrency: total_concurrency(&lanes) as usize,
    }
}

/// Most lanes (each reads the whole input).
pub const MAX_LANES: usize = 8;

/// The requests of one model: its own calls in flight, tuned to its own limits.
#[derive(Debug)]
struct Lane {
    /// The model, or `None` for every model without a lane of its own.
    model: Option<String>,
    semaphore: Arc<Semaphore>,
    concurrency: AtomicU64,
}

impl Lane {
    fn new(model: Option<String>, permits: usize) -> Arc<Lane> {
        Arc::new(Lane {
            model,
            semaphore: Arc::new(Semaphore::new(permits)),
            concurrency: AtomicU64::new(permits as u64),
        })
    }
}

/// Starts one task per request of the lane, at most its concurrency at a time, until
/// its input ends or the run stops; returns when its tasks have ended.
async fn dispatch(
    lane: Arc<Lane>,
    mut job_rx: tokio::sync::mpsc::Receiver<Job>,
    client: Client,
    shared: Arc<Shared>,
    done_tx: std::sync::mpsc::Sender<Finished>,
) {
    let mut stopped = shared.stopped.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = lane.semaphore.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let job = tokio::select! {
            job = job_rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        if shared.is_stopped() {
            break;
        }
        let client = client.clone();
        let shared = shared.clone();
        let done_tx = done_tx.clone();
        tasks.spawn(async move {
            if let Some(finished) = call(&client, job, &shared, permit).await {
                let _ = done_tx.send(finished);
            }
        });
        // Reap finished tasks without waiting.
        while tasks.try_join_next().is_some() {}
    }
    drop(job_rx);
    // The calls in flight finish, unless a signal's grace ends first: then they are
    // abandoned (dropped: no result, their permits freed), for the next run.
    let mut abandon = shared.abandon.subscribe();
    let abandoned = async {
        // The watch's guard must not live across an await of this task.
        let _ = abandon.wait_for(|a| *a).await.map(drop);
    };
    tokio::pin!(abandoned);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() {
                break;
            },
            () = &mut abandoned => {
                tasks.abort_all();
                while let Some(joined) = tasks.join_next().await {
                    if joined.is_err_and(|e| e.is_cancelled()) {
                        shared.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                    }
                }
                break;
            }
        }
    }
}

/// Enough calls in flight to keep the announced request rate busy over the observed
/// latency (twice over, for scheduling noise), between 2 and [`MAX_AUTO_CONCURRENCY`];
/// 8 until a limit is known.
/// Says once per budget, above the progress (even with `--quiet`), that its monthly
/// quota will run out within a day at the rate this run spends it (the client's
/// forecast: [`mistral_async::Client::forecast`]; the library says it at WARN, which this
/// command does not log).
fn warn_of_the_month(
    client: &Client,
    progress: &Progress,
    warned: &mut std::collections::HashSet<String>,
) {
    use mistral_async::mistral_core::forecast::{ALARM_WITHIN, RunsOut, human};
    for forecast in client.forecasts() {
        let Some(month) = forecast.month() else {
            continue;
        };
        let RunsOut::In(left) = month.runs_out else {
            continue;
        };
        if left < ALARM_WITHIN && warned.insert(forecast.model.clone()) {
            progress.note(&format!(
                "mistral: warning: the monthly quota of {} will run out in {} at this rate \
                 ({} tokens left, {:.0} a second; it renews {})",
                forecast.model,
                human(left),
                month.remaining.unwrap_or(0),
                month.rate.unwrap_or(0.0),
                month.resets
            ));
        }
    }
}

fn auto_concurrency(rate: Option<f64>, calls: u64, latency_us: u64) -> usize {
    let Some(rate) = rate else {
        return if calls > 0 { 8 } else { 1 };
    };
    let latency = (latency_us as f64 / 1e6).max(0.02);
    ((rate * latency * 2.0).ceil() as usize + 2).clamp(2, MAX_AUTO_CONCURRENCY)
}

/// Requests per second the limits allow (the pace window of the request bucket).
pub fn request_rate(limits: &mistral_async::RateLimits) -> Option<f64> {
    per_second(limits.requests()?)
}

/// Tokens per second the limits allow.
pub fn token_rate(limits: &mistral_async::RateLimits) -> Option<f64> {
    per_second(limits.tokens()?)
}

fn per_second(quota: &mistral_async::Quota) -> Option<f64> {
    let window = quota.window.duration()?.as_secs_f64();
    let limit = quota.limit? as f64;
    (window > 0.0).then_some(limit / window)
}

fn snapshot(
    plan: &Plan,
    c: &Counters,
    stats: &mistral_async::Stats,
    started: Instant,
    concurrency: u64,
) -> Snapshot {
    let (request_limit, token_limit) = c.total_limits();
    let with_usage = c.with_usage.load(Ordering::Relaxed);
    let avg_tokens = if with_usage > 0 {
        c.tokens_used.load(Ordering::Relaxed) as f64 / with_usage as f64
    } else if plan.todo > 0 {
        plan.todo_tokens as f64 / plan.todo as f64
    } else {
        0.0
    };
    Snapshot {
        total: plan.todo,
        earlier: plan.earlier,
        succeeded: c.succeeded.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        transient: c.transient.load(Ordering::Relaxed),
        in_flight: c.in_flight.load(Ordering::Relaxed),
        rate_limited: stats.rate_limited.total(),
        retries: stats.retries,
        elapsed: started.elapsed(),
        request_limit,
        token_limit,
        avg_tokens,
        concurrency,
    }
}

async fn call(
    client: &Client,
    job: Job,
    shared: &Shared,
    permit: OwnedSemaphorePermit,
) -> Option<Finished> {
    let c = &shared.counters;
    c.started.fetch_add(1, Ordering::Relaxed);
    let in_flight = InFlight::count(&c.in_flight);
    let request = ApiRequest::post_json(job.endpoint.path(), &job.body)
        .map(|r| r.for_model(job.model.clone(), job.estimate));
    let began = Instant::now();
    let result = match request {
        Ok(request) => {
            let bytes = request.body.as_ref().map_or(0, |b| b.len() as u64);
            c.body_bytes.fetch_add(bytes, Ordering::Relaxed);
            client.send(request).await
        }
        Err(e) => Err(e),
    };
    drop(in_flight);
    match result {
        Ok(reply) => {
            // The exchange itself: the time spent waiting for the limiter or a backoff
            // is not latency (counting it would feed concurrency back into itself).
            let micros = began
                .elapsed()
                .saturating_sub(reply.trail.waited)
                .as_micros() as u64;
            let old = c.latency_us.load(Ordering::Relaxed);
            let new = if old == 0 {
                micros
            } else {
                (old * 7 + micros) / 8
            };
            c.latency_us.store(new, Ordering::Relaxed);
            c.transient_in_a_row.store(0, Ordering::Relaxed);
            let announced = (request_rate(&reply.limits), token_rate(&reply.limits));
            if announced != (None, None) {
                let mut limits = c.limits.lock().unwrap_or_else(|e| e.into_inner());
                if limits.get(&job.model) != Some(&announced) {
                    limits.insert(job.model.clone(), announced);
                }
            }
            if let Some(tokens) = reply
                .value
                .pointer("/usage/total_tokens")
                .and_then(Value::as_u64)
            {
                c.tokens_used.fetch_add(tokens, Ordering::Relaxed);
                c.with_usage.fetch_add(1, Ordering::Relaxed);
            }
            Some(Finished {
                line: Some(output::success_line(&job.custom_id, 200, reply.value)),
                ok: true,
                unknown: false,
                _permit: permit,
            })
        }
        Err(error) => match judge(&job.custom_id, &error, shared.retry_unknown) {
            Verdict::Result(line) => Some(Finished {
                line: Some(line),
                ok: false,
                unknown: false,
                _permit: permit,
            }),
            Verdict::Unknown(line) => Some(Finished {
                line: Some(line),
                ok: false,
                unknown: true,
                _permit: permit,
            }),
            Verdict::Fatal(message) => {
                shared.stop(Stop::Fatal(message));
                None
            }
            Verdict::Transient(message) => {
                c.transient.fetch_add(1, Ordering::Relaxed);
                let in_a_row = c.transient_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if in_a_row >= MAX_TRANSIENT_IN_A_ROW {
                    shared.stop(Stop::Failing(format!(
                        "{in_a_row} requests in a row failed after every retry; the last: {message}"
                    )));
                }
                None
            }
        },
    }
}

/// One call in the count of calls in flight, for as long as it lives (an abandoned
/// call's task is dropped mid-call: it leaves the count too).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn count(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The writer thread: appends what arrives, a group at a time, each group `fsync`ed
/// before its permits are released and its requests counted as done.
fn write_results(path: &std::path::Path, rx: std::sync::mpsc::Receiver<Finished>, shared: &Shared) {
    let mut appender = match Appender::open(path) {
        Ok(a) => Some(a),
        Err(e) => {
            shared.stop(Stop::Output(e));
            None
        }
    };
    let mut buf = Vec::with_capacity(1 << 16);
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < 1024 {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let Some(out) = appender.as_mut() else {
            continue;
        };
        buf.clear();
        for finished in &group {
            if let Some(line) = &finished.line {
                buf.extend_from_slice(line.as_bytes());
            }
        }
        let before = out.len();
        match out.append(&buf) {
            Ok(()) => {
                let c = &shared.counters;
                for finished in &group {
                    if finished.ok {
                        c.succeeded.fetch_add(1, Ordering::Relaxed);
                    } else {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if finished.unknown {
                        c.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                // No half line stays behind when the file can be cut back.
                out.cut_back(before);
                shared.stop(Stop::Output(e));
                appender = None;
            }
        }
    }
}
