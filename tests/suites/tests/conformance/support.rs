//! The machinery of the conformance suite: what a scenario is, one runner per client
//! (both return the same [`Observed`]), and the checks every scenario gets.
//!
//! A runner starts an emulator with the scenario's config (or picks a dead port), makes
//! the warm-up calls with a client of its own (they must succeed: they only set the
//! stage, e.g. spend a window, like another program of the organisation; that client has
//! no limiter, so the measured client learns nothing from them but what the server
//! says), queues the scenario's faults, then makes the measured call with a fresh client
//! built with every default but the retry policy, so that its statistics are the call's
//! alone.

#![allow(dead_code, unused_macros)]

use std::net::TcpListener;
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_core::models::{ChatChunk, ChatRequest, EmbeddingRequest, Message, Usage};
use mistral_core::{
    ApiRequest, Ask, Error, Grant, Limiter, NoLimiter, RateLimits, Reply, Report, RetryPolicy,
    Stats, estimate_tokens,
};
use mistral_emulator::{Config, Emulator, Entry, Fault, Log, Source};

/// The model every chat scenario talks to.
pub const MODEL: &str = "mistral-small-latest";
/// The model of the embeddings scenarios.
pub const EMBED_MODEL: &str = "mistral-embed";
/// The path the generic `send` posts to.
pub const CHAT_PATH: &str = "/v1/chat/completions";
/// The unknown field the generic `send` scenario adds to a chat body.
pub const UNKNOWN_FIELD: &str = "unexpected_field";
/// The key the emulator accepts in every scenario (letters outside hex, so that no id or
/// digest in a body contains a piece of it by chance).
pub const GOOD_KEY: &str = "sk-conformance-GOOD-Hx5Rt9Lm2Pw7";
/// Jitter seed of every client (reproducible schedules).
const SEED: u64 = 0xC0FF_EE00;

/// The first piece of `key` found in `text`: the whole key, or any 8 characters of it in a
/// row (a line break, a hex dump's rows or a truncation may split a leaked key).
pub fn leaked_piece<'k>(text: &str, key: &'k str) -> Option<&'k str> {
    let n = key.len().min(8);
    (0..=key.len() - n)
        .map(|i| &key[i..i + n])
        .find(|piece| text.contains(piece))
}

/// Returns `Err(message)` from the enclosing check when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($message:tt)*) => {
        if !$cond {
            return Err(format!($($message)*));
        }
    };
}

/// Which client runs a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `mistral_blocking::Client`.
    Blocking,
    /// `mistral_async::Client`.
    Async,
}

/// What kind of call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `client.chat`.
    Chat,
    /// `client.chat_stream`, read to its end.
    Stream,
    /// `client.embeddings`.
    Embeddings,
    /// `client.send` of a chat body with an [`UNKNOWN_FIELD`].
    SendUnknownField,
    /// `client.send` of a plain chat body, as JSON of the caller's.
    SendChat,
    /// `client.chat_stream`, collected into one response (`collect_response`).
    StreamCollected,
    /// `client.verify_key` (`GET /v1/models`, nothing returned).
    VerifyKey,
}

/// One call: its kind, the length of its prompt and its `max_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Which endpoint.
    pub kind: Kind,
    /// Characters of the one user message (the emulator charges ⌈chars/4⌉ prompt tokens).
    pub prompt_chars: usize,
    /// `max_tokens` (the emulator's completions have 16 tokens unless this cuts them).
    pub max_tokens: Option<u32>,
}

impl Work {
    const fn of(kind: Kind) -> Work {
        Work {
            kind,
            prompt_chars: 5,
            max_tokens: None,
        }
    }

    /// A chat call of a 5-character prompt ("2 + 16 tokens").
    pub const fn chat() -> Work {
        Work::of(Kind::Chat)
    }

    /// A streamed chat call.
    pub const fn stream() -> Work {
        Work::of(Kind::Stream)
    }

    /// An embeddings call of one 5-character input.
    pub const fn embeddings() -> Work {
        Work::of(Kind::Embeddings)
    }

    /// A generic `send` of a chat body with an unknown field.
    pub const fn send_unknown_field() -> Work {
        Work::of(Kind::SendUnknownField)
    }

    /// A generic `send` of a plain chat body.
    pub const fn send_chat() -> Work {
        Work::of(Kind::SendChat)
    }

    /// A streamed chat call collected into one response.
    pub const fn stream_collected() -> Work {
        Work::of(Kind::StreamCollected)
    }

    /// A key check.
    pub const fn verify_key() -> Work {
        Work::of(Kind::VerifyKey)
    }

    /// The same call with a prompt of `chars` characters.
    pub const fn prompt(self, chars: usize) -> Work {
        Work {
            prompt_chars: chars,
            ..self
        }
    }

    /// The same call with `max_tokens`.
    pub const fn max_tokens(self, n: u32) -> Work {
        Work {
            max_tokens: Some(n),
            ..self
        }
    }
}

/// Which key the measured client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// The emulator's own key.
    Emulator,
    /// Another key (refused by the emulator).
    Other(&'static str),
}

/// Where the measured client goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The emulator.
    Emulator,
    /// A loopback port nobody listens on.
    DeadPort,
}

/// A check of a success: `Err` says what is wrong.
pub type GotCheck = fn(&Got) -> Result<(), String>;
/// A check of what was observed: `Err` says what is wrong.
pub type ObservedCheck = fn(&Observed) -> Result<(), String>;

/// The outcome a scenario expects.
#[derive(Clone, Copy)]
pub enum Want {
    /// Success, and the check of what came back.
    Ok(GotCheck),
    /// Failure: what is expected (for the report), and the matcher of the error.
    Err(&'static str, fn(&Error) -> bool),
}

/// What a scenario expects.
#[derive(Clone)]
pub struct Expect {
    /// Success or which error.
    pub outcome: Want,
    /// HTTP attempts of the measured call (counted by the client's statistics).
    pub attempts: RangeInclusive<u32>,
    /// Wall time of the measured call.
    pub time: Range<Duration>,
    /// More checks of what was observed (statistics, the emulator's log).
    pub check: Option<ObservedCheck>,
}

/// One row of the conformance table.
#[derive(Clone)]
pub struct Scenario {
    /// Its name (also the name of its two tests).
    pub name: &'static str,
    /// The emulator's configuration.
    pub config: fn() -> Config,
    /// Calls made first by another client; each must succeed.
    pub warmup: &'static [Work],
    /// Faults queued (FIFO) after the warm-up, before the measured call.
    pub faults: &'static [Fault],
    /// The key of the measured call.
    pub key: Key,
    /// Where the measured call goes.
    pub target: Target,
    /// The measured call.
    pub work: Work,
    /// Changes to [`base_policy`].
    pub policy: fn(RetryPolicy) -> RetryPolicy,
    /// The measured client gets a [`Recorder`] as its limiter (no pacing), so that the
    /// checks see what the client asked and told it; else the client's default limiter.
    pub record_limiter: bool,
    /// What must come of it.
    pub expect: Expect,
}

/// A limiter that admits every call at once and records what it was asked and told.
#[derive(Debug, Default)]
pub struct Recorder {
    asks: std::sync::Mutex<Vec<Ask>>,
    reports: std::sync::Mutex<Vec<Report>>,
}

impl Limiter for Recorder {
    fn poll_admit(
        &self,
        _now: Instant,
        _place: &mut mistral_core::Place,
        ask: &Ask,
        _waker: &std::task::Waker,
    ) -> mistral_core::Admit {
        self.asks.lock().expect("not poisoned").push(ask.clone());
        mistral_core::Admit::Ready(Grant::Now)
    }

    fn leave(&self, _place: &mut mistral_core::Place) {}

    fn report(&self, _now: Instant, report: &Report) {
        self.reports
            .lock()
            .expect("not poisoned")
            .push(report.clone());
    }
}

impl Recorder {
    fn taken(&self) -> (Vec<Ask>, Vec<Report>) {
        (
            std::mem::take(&mut self.asks.lock().expect("not poisoned")),
            std::mem::take(&mut self.reports.lock().expect("not poisoned")),
        )
    }
}

/// The retry policy of every scenario before its tweaks: quick backoff (20 ms base,
/// 200 ms cap) so the suite is fast, generous guards against a hang.
pub fn base_policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(5)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .deadline(Some(Duration::from_secs(20)))
        .attempt_timeout(Some(Duration::from_secs(5)))
        .stream_idle_timeout(Duration::from_secs(3))
}

/// No change to the base policy.
pub fn same(policy: RetryPolicy) -> RetryPolicy {
    policy
}

/// What a successful call gave back, whatever the client and the endpoint.
#[derive(Clone, Debug, Default)]
pub struct Got {
    /// The completion's text (chunks concatenated for a stream).
    pub text: String,
    /// Chunks of a stream, vectors of embeddings, choices of a chat.
    pub items: usize,
    /// The usage reported (for a stream: what the stream says once over).
    pub usage: Option<Usage>,
    /// Stream: index of the first chunk that carried a usage.
    pub usage_first_at: Option<usize>,
    /// Attempts the reply (or the stream's head) says it took.
    pub attempts: u32,
    /// Time the reply says it waited.
    pub waited: Duration,
    /// Rate limits the response announced.
    pub limits: RateLimits,
    /// The response's `mistral-correlation-id`.
    pub correlation_id: Option<String>,
    /// A stream: the tokens it says were used (`used_tokens`).
    pub used_tokens: Option<u64>,
}

/// What running a scenario with one client showed.
#[derive(Debug)]
pub struct Observed {
    /// The client.
    pub driver: Driver,
    /// The measured call's result.
    pub outcome: Result<Got, Error>,
    /// HTTP attempts of the measured call (the client's statistics).
    pub attempts: u32,
    /// Stream chunks handed out before the outcome (also when the stream failed).
    pub chunks: usize,
    /// Wall time of the measured call (a stream: to its end).
    pub elapsed: Duration,
    /// The measured client's statistics.
    pub stats: Stats,
    /// Attempts of the warm-up calls (they come first in the emulator's log).
    pub warmup_attempts: u64,
    /// The emulator's log, after the call.
    pub log: Option<Log>,
    /// The key the measured client presented.
    pub key: String,
    /// The measured client's `Debug` output.
    pub client_debug: String,
    /// A stream that failed: whether it then yielded nothing more (`None`: no stream
    /// failed).
    pub ended_after_error: Option<bool>,
    /// With [`Scenario::record_limiter`]: what the client asked its limiter.
    pub asks: Vec<Ask>,
    /// With [`Scenario::record_limiter`]: what the client reported to its limiter.
    pub reports: Vec<Report>,
}

/// What the measured call showed on its way: stream chunks, a failed stream's end, its
/// wall time.
#[derive(Debug, Default)]
pub struct Seen {
    /// Wall time of the measured call (a stream: to its end).
    pub elapsed: Duration,
    /// Stream chunks handed out before the outcome (also when the stream failed).
    pub chunks: usize,
    /// A stream that failed: whether the next poll said it had ended.
    pub ended_after_error: Option<bool>,
}

impl Observed {
    /// The emulator's log entries of the measured call, in arrival order.
    pub fn measured_entries(&self) -> Vec<&Entry> {
        let mut entries: Vec<&Entry> = self
            .log
            .iter()
            .flat_map(|log| log.entries())
            .filter(|e| e.source == Source::Client && e.seq >= self.warmup_attempts)
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries
    }

    /// The success, or a message saying there was none.
    pub fn got(&self) -> Result<&Got, String> {
        self.outcome
            .as_ref()
            .map_err(|e| format!("no success to check: {e}"))
    }
}

fn prompt_text(chars: usize) -> String {
    "abcd".chars().cycle().take(chars).collect()
}

fn chat_request(work: &Work) -> ChatRequest {
    let request = ChatRequest::new(MODEL, vec![Message::user(prompt_text(work.prompt_chars))]);
    match work.max_tokens {
        Some(n) => request.max_tokens(n),
        None => request,
    }
}

fn embeddings_request(work: &Work) -> EmbeddingRequest {
    EmbeddingRequest::new(EMBED_MODEL, prompt_text(work.prompt_chars))
}

fn unknown_field_request(work: &Work) -> ApiRequest {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt_text(work.prompt_chars)}],
        UNKNOWN_FIELD: true,
    });
    ApiRequest::post_json(CHAT_PATH, &body)
        .expect("a JSON body serializes")
        .for_model(MODEL, estimate_tokens(work.prompt_chars, work.max_tokens))
}

fn got_reply<T>(reply: &Reply<T>, text: String, items: usize, usage: Option<Usage>) -> Got {
    Got {
        text,
        items,
        usage,
        usage_first_at: None,
        attempts: reply.trail.attempts,
        waited: reply.trail.waited,
        limits: reply.limits.clone(),
        correlation_id: reply.correlation_id.clone(),
        used_tokens: None,
    }
}

fn got_stream_head(head: &mistral_core::Reply) -> Got {
    Got {
        attempts: head.trail.attempts,
        waited: head.trail.waited,
        limits: head.limits.clone(),
        correlation_id: head.correlation_id.clone(),
        ..Got::default()
    }
}

fn send_chat_request(work: &Work) -> ApiRequest {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt_text(work.prompt_chars)}],
    });
    ApiRequest::post_json(CHAT_PATH, &body)
        .expect("a JSON body serializes")
        .for_model(MODEL, estimate_tokens(work.prompt_chars, work.max_tokens))
}

/// What a `send` of a chat body got back: the first choice's text, the choices, the usage.
fn got_sent_chat(reply: &Reply<serde_json::Value>) -> Got {
    let value = &reply.value;
    let text = value["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let items = value["choices"].as_array().map_or(0, Vec::len);
    let usage = serde_json::from_value(value["usage"].clone()).ok();
    got_reply(reply, text, items, usage)
}

/// What a collected stream got back, after its head.
fn got_collected(head: Got, response: &mistral_core::models::ChatResponse) -> Got {
    Got {
        text: response.text().unwrap_or_default().to_owned(),
        items: response.choices.len(),
        usage: response.usage.clone(),
        ..head
    }
}

/// Adds one stream chunk to what was got.
fn absorb(got: &mut Got, chunk: &ChatChunk) {
    got.text.push_str(chunk.text().unwrap_or_default());
    if chunk.usage.is_some() && got.usage_first_at.is_none() {
        got.usage_first_at = Some(got.items);
    }
    got.items += 1;
}

/// A `http://127.0.0.1:PORT` where nothing listens.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("its address");
    drop(listener);
    format!("http://{addr}")
}

/// The emulator (or dead port) a scenario runs against.
struct Stage {
    emulator: Option<Emulator>,
    url: String,
    /// The key that works.
    good_key: String,
    /// The key the measured client presents.
    key: String,
}

impl Stage {
    fn new(s: &Scenario) -> Stage {
        let (emulator, url, good_key) = match s.target {
            Target::Emulator => {
                let emulator = Emulator::start((s.config)());
                let url = emulator.url();
                let key = emulator.key().to_owned();
                (Some(emulator), url, key)
            }
            Target::DeadPort => (None, dead_url(), GOOD_KEY.to_owned()),
        };
        let key = match s.key {
            Key::Emulator => good_key.clone(),
            Key::Other(key) => key.to_owned(),
        };
        Stage {
            emulator,
            url,
            good_key,
            key,
        }
    }

    fn push_faults(&self, s: &Scenario) {
        if let Some(emulator) = &self.emulator {
            for &fault in s.faults {
                emulator.push_fault(fault);
            }
        }
    }

    fn observed(
        &self,
        driver: Driver,
        outcome: Result<Got, Error>,
        seen: Seen,
        stats: Stats,
        warmup_attempts: u64,
        client_debug: String,
    ) -> Observed {
        Observed {
            driver,
            attempts: u32::try_from(stats.attempts).unwrap_or(u32::MAX),
            outcome,
            chunks: seen.chunks,
            elapsed: seen.elapsed,
            stats,
            warmup_attempts,
            log: self.emulator.as_ref().map(Emulator::log),
            key: self.key.clone(),
            client_debug,
            ended_after_error: seen.ended_after_error,
            asks: Vec::new(),
            reports: Vec::new(),
        }
    }
}

/// Runs `s` with the blocking client.
pub fn run_blocking(s: &Scenario) -> Observed {
    use mistral_blocking::Client;
    let stage = Stage::new(s);
    let builder = |key: &str, policy: RetryPolicy| {
        Client::builder()
            .api_key(key)
            .base_url(&stage.url)
            .retry_policy(policy)
            .seed(SEED)
    };
    let warm = builder(&stage.good_key, RetryPolicy::no_retries())
        .limiter(Arc::new(NoLimiter))
        .build()
        .expect("the client builds");
    for work in s.warmup {
        if let Err(e) = perform_blocking(&warm, work, &mut Seen::default()) {
            panic!("{}: a warm-up call failed: {e}", s.name);
        }
    }
    stage.push_faults(s);
    let recorder = Arc::new(Recorder::default());
    let mut measured = builder(&stage.key, (s.policy)(base_policy()));
    if s.record_limiter {
        measured = measured.limiter(recorder.clone());
    }
    let client = measured.build().expect("the client builds");
    let mut seen = Seen::default();
    let start = Instant::now();
    let outcome = perform_blocking(&client, &s.work, &mut seen);
    seen.elapsed = start.elapsed();
    let warmup = warm.stats().attempts;
    let mut observed = stage.observed(
        Driver::Blocking,
        outcome,
        seen,
        client.stats(),
        warmup,
        format!("{client:?}"),
    );
    (observed.asks, observed.reports) = recorder.taken();
    observed
}

fn perform_blocking(
    client: &mistral_blocking::Client,
    work: &Work,
    seen: &mut Seen,
) -> Result<Got, Error> {
    match work.kind {
        Kind::Chat => {
            let reply = client.chat(chat_request(work))?;
            let text = reply.text().unwrap_or_default().to_owned();
            Ok(got_reply(
                &reply,
                text,
                reply.choices.len(),
                reply.usage.clone(),
            ))
        }
        Kind::Stream => {
            let mut stream = client.chat_stream(chat_request(work))?;
            let mut got = got_stream_head(stream.head());
            while let Some(chunk) = stream.next() {
                match chunk {
                    Ok(chunk) => absorb(&mut got, &chunk),
                    Err(e) => {
                        seen.ended_after_error = Some(stream.next().is_none());
                        return Err(e);
                    }
                }
                seen.chunks += 1;
            }
            got.usage = stream.usage().cloned();
            got.used_tokens = stream.used_tokens();
            Ok(got)
        }
        Kind::StreamCollected => {
            let stream = client.chat_stream(chat_request(work))?;
            let head = got_stream_head(stream.head());
            Ok(got_collected(head, &stream.collect_response()?))
        }
        Kind::Embeddings => {
            let reply = client.embeddings(embeddings_request(work))?;
            Ok(got_reply(
                &reply,
                String::new(),
                reply.data.len(),
                reply.usage.clone(),
            ))
        }
        Kind::SendUnknownField => {
            let reply = client.send(unknown_field_request(work))?;
            Ok(got_reply(&reply, reply.value.to_string(), 1, None))
        }
        Kind::SendChat => Ok(got_sent_chat(&client.send(send_chat_request(work))?)),
        Kind::VerifyKey => {
            client.verify_key()?;
            Ok(verified(client.stats().attempts))
        }
    }
}

/// What a key check that passed got back: nothing but its attempts (the statistics').
fn verified(attempts: u64) -> Got {
    Got {
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        ..Got::default()
    }
}

/// Runs `s` with the async client, on a current-thread tokio runtime of its own.
pub fn run_async(s: &Scenario) -> Observed {
    use mistral_async::Client;
    let stage = Stage::new(s);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let builder = |key: &str, policy: RetryPolicy| {
        Client::builder()
            .api_key(key)
            .base_url(&stage.url)
            .retry_policy(policy)
            .seed(SEED)
    };
    runtime.block_on(async {
        let warm = builder(&stage.good_key, RetryPolicy::no_retries())
            .limiter(Arc::new(NoLimiter))
            .build()
            .expect("the client builds");
        for work in s.warmup {
            if let Err(e) = perform_async(&warm, work, &mut Seen::default()).await {
                panic!("{}: a warm-up call failed: {e}", s.name);
            }
        }
        stage.push_faults(s);
        let recorder = Arc::new(Recorder::default());
        let mut measured = builder(&stage.key, (s.policy)(base_policy()));
        if s.record_limiter {
            measured = measured.limiter(recorder.clone());
        }
        let client = measured.build().expect("the client builds");
        let mut seen = Seen::default();
        let start = Instant::now();
        let outcome = perform_async(&client, &s.work, &mut seen).await;
        seen.elapsed = start.elapsed();
        let warmup = warm.stats().attempts;
        let mut observed = stage.observed(
            Driver::Async,
            outcome,
            seen,
            client.stats(),
            warmup,
            format!("{client:?}"),
        );
        (observed.asks, observed.reports) = recorder.taken();
        observed
    })
}

async fn perform_async(
    client: &mistral_async::Client,
    work: &Work,
    seen: &mut Seen,
) -> Result<Got, Error> {
    match work.kind {
        Kind::Chat => {
            let reply = client.chat(&chat_request(work)).await?;
            let text = reply.text().unwrap_or_default().to_owned();
            Ok(got_reply(
                &reply,
                text,
                reply.choices.len(),
                reply.usage.clone(),
            ))
        }
        Kind::Stream => {
            let mut stream = client.chat_stream(&chat_request(work)).await?;
            let mut got = got_stream_head(stream.head());
            while let Some(chunk) = stream.next_chunk().await {
                match chunk {
                    Ok(chunk) => absorb(&mut got, &chunk),
                    Err(e) => {
                        seen.ended_after_error = Some(stream.next_chunk().await.is_none());
                        return Err(e);
                    }
                }
                seen.chunks += 1;
            }
            got.usage = stream.usage().cloned();
            got.used_tokens = stream.used_tokens();
            Ok(got)
        }
        Kind::StreamCollected => {
            let stream = client.chat_stream(&chat_request(work)).await?;
            let head = got_stream_head(stream.head());
            Ok(got_collected(head, &stream.collect_response().await?))
        }
        Kind::Embeddings => {
            let reply = client.embeddings(&embeddings_request(work)).await?;
            Ok(got_reply(
                &reply,
                String::new(),
                reply.data.len(),
                reply.usage.clone(),
            ))
        }
        Kind::SendUnknownField => {
            let reply = client.send(unknown_field_request(work)).await?;
            Ok(got_reply(&reply, reply.value.to_string(), 1, None))
        }
        Kind::SendChat => Ok(got_sent_chat(&client.send(send_chat_request(work)).await?)),
        Kind::VerifyKey => {
            client.verify_key().await?;
            Ok(verified(client.stats().attempts))
        }
    }
}

/// Every check of `s` against `o`: the expected outcome, attempts and time, then what
/// holds for every scenario (the attempts the client reports are the attempts it made and
/// the attempts the server saw; the key is in no error and not in the client's `Debug`; a
/// failed stream yields nothing more; a success from the emulator carries its correlation
/// id; every request goes with the client's `User-Agent`, a stream's asking for an event
/// stream; no limit was exceeded), then the scenario's own checks. Returns every failure
/// found.
pub fn verify(s: &Scenario, o: &Observed) -> Vec<String> {
    let mut failures = Vec::new();
    let e = &s.expect;
    match (&e.outcome, &o.outcome) {
        (Want::Ok(check), Ok(got)) => {
            if let Err(why) = check(got) {
                failures.push(format!("the success is not as expected: {why}"));
            }
        }
        (Want::Ok(_), Err(error)) => {
            failures.push(format!(
                "expected success, got an error: {error} ({error:?})"
            ));
        }
        (Want::Err(what, _), Ok(got)) => {
            failures.push(format!("expected {what}, got a success: {got:?}"));
        }
        (Want::Err(what, matches), Err(error)) => {
            if !matches(error) {
                failures.push(format!("expected {what}, got: {error} ({error:?})"));
            }
        }
    }
    if !e.attempts.contains(&o.attempts) {
        failures.push(format!(
            "expected {:?} attempts, made {}",
            e.attempts, o.attempts
        ));
    }
    if !e.time.contains(&o.elapsed) {
        failures.push(format!(
            "expected to take {:?}, took {:?}",
            e.time, o.elapsed
        ));
    }
    let reported = match &o.outcome {
        Ok(got) => Some(got.attempts),
        Err(error) => error.trail().map(|t| t.attempts),
    };
    if let Some(reported) = reported.filter(|&n| n != o.attempts) {
        failures.push(format!(
            "the result says {reported} attempts, the client's statistics {}",
            o.attempts
        ));
    }
    if o.stats.calls != 1 {
        failures.push(format!("{} calls counted, expected 1", o.stats.calls));
    }
    if let Err(error) = &o.outcome {
        let text = format!("{error}\n{error:?}");
        if let Some(piece) = leaked_piece(&text, &o.key) {
            failures.push(format!("the key ({piece:?}) appears in the error: {text}"));
        }
    }
    if let Some(piece) = leaked_piece(&o.client_debug, &o.key) {
        failures.push(format!(
            "the key ({piece:?}) appears in the client's Debug: {}",
            o.client_debug
        ));
    }
    if o.ended_after_error == Some(false) {
        failures.push("the stream yielded again after its error".to_owned());
    }
    if let Ok(got) = &o.outcome
        && s.target == Target::Emulator
        && s.work.kind != Kind::VerifyKey
        && got.correlation_id.as_deref().is_none_or(str::is_empty)
    {
        failures.push("the success does not carry the mistral-correlation-id".to_owned());
    }
    let streamed = matches!(s.work.kind, Kind::Stream | Kind::StreamCollected);
    for entry in o.measured_entries() {
        let agent = entry.user_agent.as_deref().unwrap_or_default();
        if !agent.starts_with("mistral-rs/") {
            failures.push(format!(
                "request {} went with User-Agent {agent:?}",
                entry.seq
            ));
        }
        let accept = entry.accept.as_deref();
        // A replacing fault answers before the body is read: only an admitted request
        // says what its body asked for.
        let unstreamed = entry.admitted() && !entry.stream;
        if streamed && (unstreamed || accept != Some("text/event-stream")) {
            failures.push(format!(
                "stream request {} asked for no stream (stream {}, Accept {accept:?})",
                entry.seq, entry.stream
            ));
        }
    }
    if let Some(log) = &o.log {
        let seen = log.total() as u64;
        let made = o.warmup_attempts + u64::from(o.attempts);
        if seen != made {
            failures.push(format!(
                "the emulator saw {seen} requests, the clients made {made}"
            ));
        }
        let violations = log.violations();
        if !violations.is_empty() {
            failures.push(format!("a limit was exceeded: {violations:?}"));
        }
    }
    if let Some(check) = e.check
        && let Err(why) = check(o)
    {
        failures.push(why);
    }
    failures
}

/// Runs `s` with `driver` and panics with every failed check.
pub fn run_scenario(s: &Scenario, driver: Driver) {
    let o = match driver {
        Driver::Blocking => run_blocking(s),
        Driver::Async => run_async(s),
    };
    let failures = verify(s, &o);
    assert!(
        failures.is_empty(),
        "scenario `{}` with the {:?} client:\n  - {}\nobserved: outcome {:?}, {} attempts, \
         {} chunks, {:?}, stats {:?}",
        s.name,
        driver,
        failures.join("\n  - "),
        o.outcome,
        o.attempts,
        o.chunks,
        o.elapsed,
        o.stats,
    );
}
