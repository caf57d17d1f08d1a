//! Routes: what a request gets, in order: `/_emulator/` inspection, a replacing fault,
//! the path, the key, validation, capacity, the limiter, then the answer (delayed by the
//! service time, spoiled by a modifying fault).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::Body;
use super::replies::{
    Reply, capacity_body, code_1300, error_body, fault_reply, models_list, proxy_429,
    stream_error_event, unauthorized,
};
use super::shared::{DRAW_CAPACITY, Shared};
use super::sockets::{CLOSE, ConnControl, RESET};
use crate::api;
use crate::batch;
use crate::config::{Fault, RateLimitBody};
use crate::headers;
use crate::limits::Refusal;
use crate::log::{Entry, Outcome, Source};
use crate::rng::{fnv1a, hex32, unit};
use crate::work::{Context, Kind, Work};

/// Answers one request on a connection `control` can kill.
pub(super) async fn handle(
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
        user_agent: header_text(&req, http::header::USER_AGENT),
        accept: header_text(&req, http::header::ACCEPT),
        stream: false,
        tokens: 0,
        status: 0,
        outcome: Outcome::NotFound,
        fault,
        generation: 0,
    };
    let correlation_id = shared.correlation_id(seq);
    if let Some(fault) = fault.filter(|f| f.replaces_response()) {
        if matches!(fault, Fault::Reset | Fault::Close | Fault::Hang) {
            // The whole request is read first: the server had it, and may have run it
            // (what a client must not send again without being told).
            let _ = read_body(req.into_body(), shared.config.max_body_bytes).await;
        }
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
        Some(f @ (Fault::StreamError(after) | Fault::StreamErrorEvent(after))) if served => {
            if let Some(event) = stream_error_event(f) {
                reply.body = reply.body.interrupt(after, event);
            }
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

/// A fault that replaces the response: the connection killed or held without an answer,
/// or a canned reply ([`fault_reply`]); logged either way.
async fn replacing_fault(
    shared: &Shared,
    control: &ConnControl,
    fault: Fault,
    seq: u64,
    mut entry: Entry,
) -> Reply {
    entry.outcome = Outcome::Fault(fault);
    let Some(reply) = fault_reply(&shared.config, fault, seq) else {
        entry.status = 0;
        shared.record(entry);
        if fault == Fault::Hang {
            tokio::time::sleep(Duration::from_secs(shared.config.hang_secs)).await;
        }
        control.kill(if fault == Fault::Reset { RESET } else { CLOSE });
        // The connection task drops this future together with the connection.
        return std::future::pending().await;
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
    let endpoint = Kind::from_path(path);
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
            let content_type = header_text(&req, CONTENT_TYPE);
            inference(shared, seq, endpoint, content_type, req.into_body(), entry).await
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
    endpoint: Kind,
    content_type: Option<String>,
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
    let cx = Context {
        config,
        conversations: &shared.conversations,
        files: &shared.batches,
        content_type: content_type.as_deref(),
        seq,
    };
    let parsed = match Work::parse(&endpoint, &bytes, cx) {
        Ok(p) => p,
        Err(invalid) => {
            entry.model = invalid.model;
            return Reply::json(invalid.status, &invalid.body);
        }
    };
    entry.model = Some(parsed.model().to_string());
    entry.stream = parsed.stream();
    if config.strict_models && !config.models.contains_key(parsed.model()) {
        return Reply::json(
            400,
            &error_body(
                &format!("Invalid model: {}", parsed.model()),
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
    let cost = parsed.cost();
    let slot = shared.models.slot(parsed.model(), shared.now());
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
                    RateLimitBody::Proxy => proxy_429(
                        decision
                            .retry_in
                            .map(|w| w.as_secs_f64().ceil().max(1.0) as u64),
                    ),
                }
            }
            Refusal::Month | Refusal::ZeroAllowance => code_1300(),
        };
        let mut reply = Reply::json(429, &body);
        if send_headers {
            reply.headers = headers::refused_in(config.era, parsed.unit(), &decision.view, refusal);
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
    parsed.served(&shared.conversations);
    let id = hex32(config.seed, seq);
    let created = unix_now();
    let mut reply = if let (true, Work::Inference(parsed)) = (parsed.stream(), &parsed) {
        let mut events: Vec<Bytes> = api::stream_events(parsed, &id, created)
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
        Reply::json(200, &parsed.answer(&id, created))
    };
    if send_headers {
        let mut rate = headers::success_in(config.era, parsed.unit(), &decision.view, cost);
        rate.append(&mut reply.headers);
        reply.headers = rate;
    }
    reply.body.guard = guard;
    reply
}

/// A request header as text, if sent and printable.
fn header_text(req: &Request<Incoming>, name: http::header::HeaderName) -> Option<String> {
    Some(req.headers().get(name)?.to_str().ok()?.to_string())
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
