//! The HTTP side: accept loop, one hyper HTTP/1.1 connection per socket, routing,
//! responses and faults.
//!
//! Each connection keeps a duplicate of its socket so that a handler can kill the
//! connection without answering: the hyper connection future is dropped, and the spare
//! socket is closed with `SO_LINGER` 0 (an RST, [`Fault::Reset`]) or normally (a FIN,
//! [`Fault::Close`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::api::{self, Endpoint};
use super::batch::{self, Batches};
use super::config::{Config, Era, Fault, RateLimitBody};
use super::headers;
use super::limits::{Models, Refusal, SlotGuard, lock};
use super::log::{Entry, Log, Outcome, Source};
use super::rng::{fnv1a, hex32, mix, unit, uuid};

/// Purposes of seeded draws.
const DRAW_CAPACITY: u64 = 1;
const DRAW_FAULT: u64 = 2;
const DRAW_FAULT_KIND: u64 = 3;
const DRAW_ID: u64 = 4;
const DRAW_LATENCY: u64 = 5;

/// State shared by every connection, the background consumer and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub epoch: Instant,
    seq: AtomicU64,
    bg_seq: AtomicU64,
    pub models: Models,
    log: Mutex<Vec<Entry>>,
    dropped: AtomicU64,
    background_share: AtomicU64,
    capacity_rate: AtomicU64,
    headers: AtomicBool,
    queued: Mutex<VecDeque<Fault>>,
    queued_len: AtomicUsize,
    scripted: HashMap<u64, Fault>,
    /// Files and batch jobs (`/v1/files`, `/v1/batch/jobs`).
    batches: Batches,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            models: Models::new(&config),
            epoch: Instant::now(),
            seq: AtomicU64::new(0),
            bg_seq: AtomicU64::new(0),
            log: Mutex::new(Vec::with_capacity(4096)),
            dropped: AtomicU64::new(0),
            background_share: AtomicU64::new(clamp01(config.background_share).to_bits()),
            capacity_rate: AtomicU64::new(clamp01(config.capacity_rate).to_bits()),
            headers: AtomicBool::new(config.headers),
            queued: Mutex::new(VecDeque::new()),
            queued_len: AtomicUsize::new(0),
            scripted: config.faults.iter().copied().collect(),
            batches: Batches::default(),
            config,
        }
    }

    /// Time since the emulator's start.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(crate) fn background_share(&self) -> f64 {
        f64::from_bits(self.background_share.load(Ordering::Relaxed))
    }

    pub(crate) fn set_background_share(&self, share: f64) {
        self.background_share
            .store(clamp01(share).to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn set_capacity_rate(&self, rate: f64) {
        self.capacity_rate
            .store(clamp01(rate).to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn set_headers(&self, on: bool) {
        self.headers.store(on, Ordering::Relaxed);
    }

    pub(crate) fn push_fault(&self, fault: Fault) {
        let mut queue = lock(&self.queued);
        queue.push_back(fault);
        self.queued_len.store(queue.len(), Ordering::Release);
    }

    pub(crate) fn next_background_seq(&self) -> u64 {
        self.bg_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn requests_received(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    fn fault_for(&self, seq: u64) -> Option<Fault> {
        if let Some(&f) = self.scripted.get(&seq) {
            return Some(f);
        }
        if self.queued_len.load(Ordering::Acquire) > 0 {
            let mut queue = lock(&self.queued);
            let fault = queue.pop_front();
            self.queued_len.store(queue.len(), Ordering::Release);
            if fault.is_some() {
                return fault;
            }
        }
        let faults = &self.config.random_faults;
        if !faults.is_empty()
            && self.config.fault_rate > 0.0
            && unit(self.config.seed, DRAW_FAULT, seq) < self.config.fault_rate
        {
            let i = mix(self.config.seed ^ mix(DRAW_FAULT_KIND ^ seq)) % faults.len() as u64;
            return faults.get(i as usize).copied();
        }
        None
    }

    pub(crate) fn record(&self, entry: Entry) {
        let mut log = lock(&self.log);
        if log.len() < self.config.max_log_entries {
            log.push(entry);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Log {
        let entries = lock(&self.log).clone();
        let slots = self.models.all();
        let limits = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.history()))
            .collect();
        let holds = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.holds()))
            .collect();
        Log::from_parts(entries, limits)
            .with_in_flight(holds)
            .with_month_resets(self.models.month_resets())
            .with_dropped(self.dropped.load(Ordering::Relaxed))
    }

    /// The service time of admitted request `seq` ([`Config::latency_ms`] plus its draw
    /// of the jitter).
    fn latency(&self, seq: u64) -> Duration {
        let base = self.config.latency_ms;
        let jitter = self.config.latency_jitter_ms;
        let extra = if jitter == 0 {
            0
        } else {
            (unit(self.config.seed, DRAW_LATENCY, seq) * (jitter as f64 + 1.0)).floor() as u64
        };
        Duration::from_millis(base.saturating_add(extra.min(jitter)))
    }

    fn correlation_id(&self, seq: u64) -> String {
        uuid(self.config.seed ^ DRAW_ID, seq)
    }
}

fn clamp01(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Runs the accept loop on `listener` until the future is dropped.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(shared.clone(), stream));
            }
            // Out of file descriptors or similar: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

const CLOSE: u8 = 1;
const RESET: u8 = 2;

/// Lets a handler kill its own connection.
#[derive(Debug, Default)]
struct ConnControl {
    kill: Notify,
    mode: AtomicU8,
}

impl ConnControl {
    fn kill(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok((stream, spare)) = with_spare(stream) else {
        return;
    };
    let control = Arc::new(ConnControl::default());
    let service = {
        let control = control.clone();
        service_fn(move |req| handle(shared.clone(), control.clone(), req))
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = control.kill.notified() => {}
    }
    // The hyper connection (and its socket) is gone; the spare is the last handle.
    if control.mode.load(Ordering::SeqCst) == RESET
        && let Ok(spare) = TcpStream::from_std(spare)
    {
        let _ = spare.set_zero_linger();
    }
}

fn with_spare(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let spare = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, spare))
}

/// What comes after the last frame of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Finish,
    Stall { after: u32, hold: Duration },
    Cut { after: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Gap,
    Stall,
    /// A short pause before a cut, so that hyper flushes what was sent so far.
    Cut,
}

/// A response body: frames sent one by one, optionally spaced, stalled or cut.
#[derive(Debug)]
pub(crate) struct Body {
    frames: VecDeque<Bytes>,
    sent: u32,
    end: End,
    gap: Duration,
    waiting: Waiting,
    gap_done: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    exact: Option<u64>,
    /// The request's place in flight: released when hyper drops the body, after the
    /// last frame has been handed over (or when the connection goes away).
    guard: Option<SlotGuard>,
}

impl Body {
    fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            exact: Some(bytes.len() as u64),
            frames: if bytes.is_empty() {
                VecDeque::new()
            } else {
                VecDeque::from([bytes])
            },
            sent: 0,
            end: End::Finish,
            gap: Duration::ZERO,
            waiting: Waiting::Nothing,
            gap_done: false,
            sleep: None,
            guard: None,
        }
    }

    fn events(events: Vec<Bytes>, gap: Duration) -> Body {
        Body {
            frames: events.into(),
            exact: None,
            sent: 0,
            end: End::Finish,
            gap,
            waiting: Waiting::Nothing,
            gap_done: false,
            sleep: None,
            guard: None,
        }
    }

    /// Applies a stall or cut after `after` frames. A plain body is split in halves and
    /// spoiled after the first half whatever `after` says.
    fn spoil(mut self, fault: Fault, hold: Duration) -> Body {
        let after = match fault {
            Fault::StallAfter(n) | Fault::CutAfter(n) => n,
            _ => return self,
        };
        let after = if self.exact.is_some() {
            if let Some(whole) = self.frames.pop_front() {
                let half = whole.len() / 2;
                self.frames.push_back(whole.slice(..half));
                self.frames.push_back(whole.slice(half..));
            }
            1
        } else {
            after
        };
        self.end = match fault {
            Fault::StallAfter(_) => End::Stall { after, hold },
            _ => End::Cut { after },
        };
        self
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                match std::mem::replace(&mut this.waiting, Waiting::Nothing) {
                    Waiting::Cut => {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "response cut on purpose",
                        ))));
                    }
                    Waiting::Stall => {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "stalled response given up",
                        ))));
                    }
                    Waiting::Gap => this.gap_done = true,
                    Waiting::Nothing => {}
                }
            }
            match this.end {
                End::Stall { after, hold } if this.sent >= after => {
                    this.waiting = Waiting::Stall;
                    this.sleep = Some(Box::pin(tokio::time::sleep(hold)));
                    this.end = End::Finish;
                    this.frames.clear();
                    continue;
                }
                End::Cut { after } if this.sent >= after => {
                    this.waiting = Waiting::Cut;
                    this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(10))));
                    this.end = End::Finish;
                    this.frames.clear();
                    continue;
                }
                _ => {}
            }
            if this.frames.is_empty() {
                this.guard = None;
                return Poll::Ready(None);
            }
            if this.sent > 0 && !this.gap.is_zero() && !this.gap_done {
                this.waiting = Waiting::Gap;
                this.sleep = Some(Box::pin(tokio::time::sleep(this.gap)));
                continue;
            }
            this.gap_done = false;
            if let Some(frame) = this.frames.pop_front() {
                this.sent += 1;
                if this.frames.is_empty() && this.end == End::Finish {
                    // The last frame: the response is handed over whole.
                    this.guard = None;
                }
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.end == End::Finish && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A response under construction.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    content_type: &'static str,
    body: Body,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: Body::full(value.to_string()),
        }
    }

    fn text(status: u16, content_type: &'static str, text: &'static str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type,
            body: Body::full(Bytes::from_static(text.as_bytes())),
        }
    }

    fn header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_string(), value));
        self
    }

    fn into_response(self, correlation_id: &str) -> Response<Body> {
        let mut response = Response::new(self.body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if !correlation_id.is_empty()
            && let Ok(v) = HeaderValue::from_str(correlation_id)
        {
            headers.insert(HeaderName::from_static("mistral-correlation-id"), v);
        }
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(n, v);
            }
        }
        response
    }
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_string())
}

fn unauthorized(era: Era, seed: u64, seq: u64) -> Reply {
    match era {
        Era::Early2025 | Era::Mid2025 => Reply::json(
            401,
            &json!({"message": "Unauthorized", "request_id": hex32(seed ^ DRAW_ID, seq)}),
        )
        .header("www-authenticate", "Key".into()),
        Era::Late2025 | Era::Y2026 => Reply::json(401, &json!({"detail": "Unauthorized"})),
    }
}

fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"object": "error", "message": message, "type": kind, "param": null, "code": code})
}

fn capacity_body(legacy: bool) -> Value {
    if legacy {
        error_body(
            "Service tier capacity exceeded for this model.",
            "invalid_request_error",
            None,
        )
    } else {
        error_body(
            "Service tier capacity exceeded for this model.",
            "service_tier_capacity_exceeded",
            Some("3505"),
        )
    }
}

fn code_1300() -> Value {
    json!({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
           "param": null, "code": "1300", "raw_status_code": 429})
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    shared: Arc<Shared>,
    control: Arc<ConnControl>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(what) = req.uri().path().strip_prefix("/_emulator/") {
        return Ok(inspect(&shared, what).into_response(""));
    }
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let fault = shared.fault_for(seq);
    let mut entry = Entry {
        seq,
        source: Source::Client,
        arrived: shared.now(),
        decided: None,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        model: None,
        key_hash: bearer(&req).map(|k| format!("{:016x}", fnv1a(k.as_bytes()))),
        stream: false,
        tokens: 0,
        status: 0,
        outcome: Outcome::NotFound,
        fault,
        generation: 0,
    };
    let correlation_id = shared.correlation_id(seq);
    if let Some(fault) = fault.filter(|f| f.replaces_response()) {
        let reply = replacing_fault(&shared, &control, fault, seq, entry).await;
        return Ok(reply.into_response(&correlation_id));
    }
    let mut reply = route(&shared, seq, req, &mut entry).await;
    entry.status = reply.status;
    let served = entry.outcome == Outcome::Served;
    shared.record(entry);
    if served {
        let latency = shared.latency(seq);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    match fault {
        Some(Fault::DelayMs(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(f @ (Fault::StallAfter(_) | Fault::CutAfter(_))) => {
            let hold = Duration::from_secs(shared.config.hang_secs);
            reply.body = reply.body.spoil(f, hold);
        }
        _ => {}
    }
    Ok(reply.into_response(&correlation_id))
}

/// `GET /_emulator/{summary,log,timeline}`: the log seen from outside (for a binary).
/// Not numbered, not logged, never faulted, no key needed.
fn inspect(shared: &Shared, what: &str) -> Reply {
    let log = shared.snapshot();
    let value = match what {
        "summary" => json!({
            "total": log.total(),
            "admitted": log.admitted(),
            "status_429": log.count_429(),
            "background_total": log.background_total(),
            "background_admitted": log.background_admitted(),
            "dropped": log.dropped(),
            "violations": log.violations(),
            "max_in_flight": log
                .in_flight_models()
                .map(|m| (m.to_string(), json!(log.max_in_flight(m))))
                .collect::<serde_json::Map<String, Value>>(),
        }),
        "log" => json!({ "entries": log.entries() }),
        "timeline" => json!({ "seconds": log.timeline() }),
        _ => {
            return Reply::json(
                404,
                &json!({"message": "no Route matched with those values"}),
            );
        }
    };
    Reply::json(200, &value)
}

async fn replacing_fault(
    shared: &Shared,
    control: &ConnControl,
    fault: Fault,
    seq: u64,
    mut entry: Entry,
) -> Reply {
    entry.outcome = Outcome::Fault(fault);
    let reply = match fault {
        Fault::Reset | Fault::Close | Fault::Hang => {
            entry.status = 0;
            shared.record(entry);
            if fault == Fault::Hang {
                tokio::time::sleep(Duration::from_secs(shared.config.hang_secs)).await;
            }
            control.kill(if fault == Fault::Reset { RESET } else { CLOSE });
            // The connection task drops this future together with the connection.
            return std::future::pending().await;
        }
        Fault::Http500 => Reply::json(
            500,
            &error_body(
                "Service unavailable.",
                "internal_server_error",
                Some("1000"),
            ),
        ),
        Fault::Http502Html => Reply::text(
            502,
            "text/html",
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
        ),
        Fault::Http503 => Reply::text(
            503,
            "text/plain",
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        Fault::Http504 => Reply::text(
            504,
            "text/html",
            "<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>\n",
        ),
        Fault::MalformedJson => Reply::text(
            200,
            "application/json",
            "{\"id\":\"0123456789abcdef\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"the wi",
        ),
        Fault::Status401 => unauthorized(shared.config.era, shared.config.seed, seq),
        Fault::Status400 => Reply::json(
            400,
            &error_body(
                "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant",
                "invalid_request_message_order",
                Some("3230"),
            ),
        ),
        Fault::Status403 => Reply::json(
            403,
            &json!({"object": "error", "message": "Model not available for this account.",
                    "type": "forbidden", "param": null, "code": "1913", "raw_status_code": 403}),
        ),
        Fault::Status404 => Reply::json(
            404,
            &json!({"message": "no Route matched with those values"}),
        ),
        Fault::Status422 => Reply::json(
            422,
            &json!({"object": "error",
                    "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "unexpected"],
                                            "msg": "Extra inputs are not permitted", "input": true}]},
                    "type": "invalid_request_error", "param": null, "code": null,
                    "raw_status_code": 422}),
        ),
        Fault::Ambiguous429 => {
            Reply::json(429, &json!({"message": "Requests rate limit exceeded"}))
        }
        Fault::Bare1300 => Reply::json(
            429,
            &json!({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
                    "param": null, "code": "1300", "raw_status_code": 429}),
        ),
        Fault::Capacity => Reply::json(429, &capacity_body(shared.config.capacity_legacy_body)),
        Fault::DelayMs(_) | Fault::StallAfter(_) | Fault::CutAfter(_) => Reply::json(
            500,
            &error_body(
                "Service unavailable.",
                "internal_server_error",
                Some("1000"),
            ),
        ),
    };
    entry.status = reply.status;
    shared.record(entry);
    reply
}

async fn route(shared: &Shared, seq: u64, req: Request<Incoming>, entry: &mut Entry) -> Reply {
    let path = req.uri().path();
    if batch::handles(path) {
        return batch_route(shared, seq, req, entry).await;
    }
    let endpoint = Endpoint::from_path(path);
    let known = endpoint.is_some() || path == "/v1/models";
    if !known {
        entry.outcome = Outcome::NotFound;
        return Reply::json(
            404,
            &json!({"message": "no Route matched with those values"}),
        );
    }
    let authorized = bearer(&req).is_some_and(|k| shared.config.keys.contains(&k));
    match (req.method(), endpoint) {
        (&Method::GET, None) => {
            if !authorized {
                entry.outcome = Outcome::Unauthorized;
                return unauthorized(shared.config.era, shared.config.seed, seq);
            }
            entry.outcome = Outcome::Listed;
            Reply::json(200, &models_list(&shared.config))
        }
        (&Method::POST, Some(endpoint)) => {
            if !authorized {
                entry.outcome = Outcome::Unauthorized;
                return unauthorized(shared.config.era, shared.config.seed, seq);
            }
            inference(shared, seq, endpoint, req.into_body(), entry).await
        }
        _ => {
            entry.outcome = Outcome::NotFound;
            Reply::json(405, &json!({"detail": "Method Not Allowed"}))
        }
    }
}

/// `/v1/files` and `/v1/batch/jobs` (see [`batch`]): answered without the limiter.
async fn batch_route(
    shared: &Shared,
    seq: u64,
    req: Request<Incoming>,
    entry: &mut Entry,
) -> Reply {
    if !bearer(&req).is_some_and(|k| shared.config.keys.contains(&k)) {
        entry.outcome = Outcome::Unauthorized;
        return unauthorized(shared.config.era, shared.config.seed, seq);
    }
    entry.outcome = Outcome::Listed;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match read_body(req.into_body(), batch::MAX_UPLOAD_BYTES).await {
        Ok(b) => b,
        Err(status) => {
            return Reply::json(
                status,
                &error_body(
                    "Could not read the request body",
                    "invalid_request_error",
                    None,
                ),
            );
        }
    };
    let answering = batch::Answering {
        seed: shared.config.seed,
        completion_tokens: shared.config.completion_tokens,
        embedding_dim: shared.config.embedding_dim,
    };
    let answer = shared
        .batches
        .route(&method, &path, content_type.as_deref(), &body, answering);
    Reply {
        status: answer.status,
        headers: Vec::new(),
        content_type: answer.content_type,
        body: Body::full(answer.body),
    }
}

fn models_list(config: &Config) -> Value {
    let mut ids: Vec<String> = config.models.keys().cloned().collect();
    if ids.is_empty() {
        ids = [
            "mistral-small-latest",
            "mistral-medium-latest",
            "mistral-large-latest",
            "codestral-latest",
            "mistral-embed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mistralai",
                "capabilities": {"completion_chat": true, "completion_fim": id.contains("codestral"),
                                 "function_calling": true, "fine_tuning": false, "vision": false,
                                 "classification": false},
                "name": id, "description": "Emulated model", "max_context_length": 32768,
                "aliases": [], "deprecation": null, "default_model_temperature": 0.3, "type": "base",
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}

async fn read_body(body: Incoming, max: usize) -> Result<Vec<u8>, u16> {
    let mut body = std::pin::pin!(body);
    let mut buf = Vec::new();
    loop {
        let frame =
            std::future::poll_fn(|cx| hyper::body::Body::poll_frame(body.as_mut(), cx)).await;
        match frame {
            None => return Ok(buf),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > max {
                        return Err(413);
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(400),
        }
    }
}

async fn inference(
    shared: &Shared,
    seq: u64,
    endpoint: Endpoint,
    body: Incoming,
    entry: &mut Entry,
) -> Reply {
    let config = &shared.config;
    entry.outcome = Outcome::Invalid;
    let bytes = match read_body(body, config.max_body_bytes).await {
        Ok(b) => b,
        Err(status) => {
            let message = if status == 413 {
                "Request body too large"
            } else {
                "Could not read the request body"
            };
            return Reply::json(status, &error_body(message, "invalid_request_error", None));
        }
    };
    let parsed = match api::parse(
        endpoint,
        &bytes,
        config.completion_tokens,
        config.embedding_dim,
    ) {
        Ok(p) => p,
        Err(invalid) => {
            entry.model = invalid.model;
            return Reply::json(invalid.status, &invalid.body);
        }
    };
    entry.model = Some(parsed.model.clone());
    entry.stream = parsed.stream;
    if config.strict_models && !config.models.contains_key(&parsed.model) {
        return Reply::json(
            400,
            &error_body(
                &format!("Invalid model: {}", parsed.model),
                "invalid_model",
                Some("1500"),
            ),
        );
    }
    let capacity_rate = f64::from_bits(shared.capacity_rate.load(Ordering::Relaxed));
    if capacity_rate > 0.0 && unit(config.seed, DRAW_CAPACITY, seq) < capacity_rate {
        entry.outcome = Outcome::Capacity;
        return Reply::json(429, &capacity_body(config.capacity_legacy_body));
    }
    let cost = parsed.total_tokens();
    let slot = shared.models.slot(&parsed.model, shared.now());
    let (decision, guard) = slot.admit_held(shared.epoch, cost);
    entry.decided = Some(decision.at);
    entry.generation = decision.generation;
    let send_headers = shared.headers.load(Ordering::Relaxed);
    if let Some(refusal) = decision.refusal {
        entry.outcome = Outcome::RateLimited(refusal);
        let body = match refusal {
            Refusal::Requests | Refusal::Tokens | Refusal::Concurrency => {
                match config.window_body() {
                    RateLimitBody::Gateway => json!({"message": "Requests rate limit exceeded"}),
                    RateLimitBody::Code1300 => code_1300(),
                }
            }
            Refusal::Month | Refusal::ZeroAllowance => code_1300(),
        };
        let mut reply = Reply::json(429, &body);
        if send_headers {
            reply.headers = headers::refused(config.era, &decision.view, refusal);
        }
        if let Some(wait) = decision.retry_in {
            if config.retry_after {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                reply = reply.header("retry-after", secs.to_string());
            }
            if config.retry_after_ms {
                let ms = wait.as_secs_f64() * 1000.0;
                reply = reply.header("retry-after-ms", (ms.ceil().max(1.0) as u64).to_string());
            }
        }
        return reply;
    }
    entry.outcome = Outcome::Served;
    entry.tokens = cost;
    let id = hex32(config.seed, seq);
    let created = unix_now();
    let mut reply = if parsed.stream {
        let mut events: Vec<Bytes> = api::stream_events(&parsed, &id, created)
            .into_iter()
            .map(Bytes::from)
            .collect();
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let gap = Duration::from_millis(config.stream_chunk_delay_ms);
        Reply {
            status: 200,
            headers: Vec::new(),
            content_type: "text/event-stream; charset=utf-8",
            body: Body::events(events, gap),
        }
        .header("cache-control", "no-cache".into())
    } else {
        Reply::json(200, &api::response(&parsed, &id, created))
    };
    if send_headers {
        let mut rate = headers::success(config.era, &decision.view, cost);
        rate.append(&mut reply.headers);
        reply.headers = rate;
    }
    reply.body.guard = guard;
    reply
}

/// Applies [`Config::schedule`] at its times, until the runtime stops.
pub(crate) async fn run_schedule(shared: Arc<Shared>) {
    let mut changes = shared.config.schedule.clone();
    changes.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    for change in changes {
        let at = Duration::from_secs_f64(change.at_secs.clamp(0.0, 1e9));
        let wait = at.saturating_sub(shared.now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Some(factor) = change.limits_factor {
            shared.models.rescale(factor, shared.now());
        }
        if let Some(share) = change.background_share {
            shared.set_background_share(share);
        }
    }
}
