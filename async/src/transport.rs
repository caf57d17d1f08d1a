//! One HTTP exchange with reqwest, and reqwest's errors as the core's transport errors.

use mistral_core::request::MAX_RESPONSE_BYTES;
use std::error::Error;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use mistral_core::{Attempt, AttemptId, Delivery, Outcome, TransportError, TransportKind};

use crate::clock::now;

/// Performs `attempt`, over by [`Attempt::ends_at`] whatever phase it is in: the
/// response head within [`Attempt::head_timeout`] of the start of the exchange (reqwest
/// gives no instant for "request sent", so the connection is inside this bound; the
/// connect timeout itself is the client's, built from the policy's), a non-streamed body
/// within [`Attempt::body_timeout`] of its head, each phase within what is left of the
/// attempt when it starts ([`Attempt::phase_limit`], so the attempt's end bounds them
/// both). What came of it, and for a stream whose head the core should see
/// ([`Outcome::StreamHead`]) the response whose body is still to read.
///
/// One timer serves both phases (reset from the head's bound to the body's): a timer
/// costs a registration in tokio's wheel and its removal, and this runs for every call.
pub(crate) async fn perform(
    http: &reqwest::Client,
    mut attempt: Attempt,
) -> (AttemptId, Outcome, Option<reqwest::Response>) {
    let id = attempt.id;
    let request = std::mem::take(&mut attempt.request);
    let request = match reqwest::Request::try_from(request) {
        Ok(request) => request,
        Err(e) => return (id, Outcome::Failed(transport_error(e)), None),
    };
    let mut timer = Timer::default();
    let head_limit = attempt.phase_limit(now(), attempt.head_timeout);
    let mut response = match timer.within(head_limit, http.execute(request)).await {
        Some(Ok(response)) => response,
        Some(Err(e)) => return (id, Outcome::Failed(transport_error(e)), None),
        None => {
            return (
                id,
                Outcome::Failed(silent("response head", head_limit)),
                None,
            );
        }
    };
    let mut head = http::Response::new(());
    *head.status_mut() = response.status();
    *head.headers_mut() = std::mem::take(response.headers_mut());
    let (head, ()) = head.into_parts();
    if attempt.reads_stream(head.status) {
        return (id, Outcome::StreamHead(head), Some(response));
    }
    let body_limit = attempt.phase_limit(now(), attempt.body_timeout);
    let mut body = BytesMut::new();
    let read = timer
        .within(body_limit, async {
            while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(TransportError::body_too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|| Err(silent("response body", body_limit)));
    let outcome = match read {
        Ok(()) => Outcome::Response(http::Response::from_parts(head, body.freeze())),
        Err(error) => Outcome::Cut {
            head,
            partial: body.freeze(),
            error,
        },
    };
    (id, outcome, None)
}

/// One timer for the phases of an exchange, made at the first phase with a limit.
#[derive(Default)]
struct Timer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer {
    /// `fut`, or `None` when it takes longer than `limit` from now (no limit: never).
    async fn within<F: Future>(&mut self, limit: Option<Duration>, fut: F) -> Option<F::Output> {
        let Some(limit) = limit else {
            return Some(fut.await);
        };
        // (`limit` is at most a century: `phase_limit`; a clock that cannot add it waits
        // as long as it can.)
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

fn silent(what: &str, limit: Option<Duration>) -> TransportError {
    let limit = limit.unwrap_or_default();
    let message = format!("no {what} within {:.1} s", limit.as_secs_f64());
    TransportError::new(TransportKind::Timeout, message)
}

/// Maps a reqwest error to the core's kinds. The message is the error's chain of causes,
/// without the URL (reqwest never puts headers, hence the key, in its errors; the core
/// redacts the message anyway).
///
/// How far the request got: reqwest's connect errors (DNS, TCP, TLS handshake, the
/// connect timeout) and a request hyper gave back unsent (it found the connection closed
/// before writing: `canceled` or `closed`) are [`Delivery::NotSent`]; anything else may
/// come after the request was written ([`Delivery::MaybeDelivered`]).
pub(crate) fn transport_error(err: reqwest::Error) -> TransportError {
    let kind = kind_of(&err);
    let delivery = delivery_of(&err);
    let err = err.without_url();
    let causes = std::iter::successors(Some(&err as &dyn Error), |&e| e.source());
    let message = causes.map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
    if kind == TransportKind::Connect && is_dns_failure(&message) {
        return TransportError::dns(message)
            .with_delivery(delivery)
            .with_source(err);
    }
    TransportError::new(kind, message)
        .with_delivery(delivery)
        .with_source(err)
}

/// Whether the server may have the request of a failed exchange.
fn delivery_of(err: &reqwest::Error) -> Delivery {
    let unsent = |e: &hyper::Error| e.is_canceled() || e.is_closed();
    let hyper =
        std::iter::successors(err.source(), cause).find_map(|e| e.downcast_ref::<hyper::Error>());
    if err.is_connect() || err.is_builder() || hyper.is_some_and(unsent) {
        Delivery::NotSent
    } else {
        Delivery::MaybeDelivered
    }
}

/// The resolver's failure, as hyper-util's resolver reports it.
fn is_dns_failure(message: &str) -> bool {
    message.contains("dns error")
        || message.contains("lookup address")
        || message.contains("Name or service not known")
}

fn kind_of(err: &reqwest::Error) -> TransportKind {
    use io::ErrorKind as Io;
    let causes = || std::iter::successors(err.source(), cause);
    let hyper = causes().find_map(|e| e.downcast_ref::<hyper::Error>());
    let io = causes().filter_map(|e| e.downcast_ref().map(io::Error::kind));
    let io: Vec<Io> = io.collect();
    let closed = |e: &hyper::Error| e.is_incomplete_message() || e.is_closed() || e.is_canceled();
    let reset = |k: &Io| {
        matches!(
            k,
            Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe
        )
    };
    match () {
        _ if err.is_timeout() => TransportKind::Timeout,
        // tokio-rustls reports every TLS failure (certificate, handshake, a peer that does
        // not speak TLS) as invalid data while connecting.
        _ if err.is_connect() && io.contains(&Io::InvalidData) => TransportKind::Tls,
        _ if err.is_connect() => TransportKind::Connect,
        _ if hyper.is_some_and(|e| e.is_parse() || e.is_parse_status()) => TransportKind::Protocol,
        _ if hyper.is_some_and(closed) || io.iter().any(reset) => TransportKind::Reset,
        _ if err.is_body() || err.is_decode() || io.contains(&Io::UnexpectedEof) => {
            TransportKind::Reset
        }
        _ => TransportKind::Other,
    }
}

/// The next cause of `error`, looking into the error an `io::Error` wraps (its `source`
/// skips it).
fn cause<'a>(&error: &&'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match error.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
        None => error.source(),
    }
}
