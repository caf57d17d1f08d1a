//! One HTTP exchange with reqwest, and reqwest's errors as the core's transport errors.

use mistral_core::request::MAX_RESPONSE_BYTES;
use std::error::Error;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mistral_core::{Attempt, AttemptId, TransportError, TransportKind};

/// What one attempt came to.
pub(crate) enum Exchange {
    /// The response for the call (with an empty body for a stream) and, for a stream,
    /// the response whose body is still to read.
    Response(http::Response<Bytes>, Option<reqwest::Response>),
    /// The head came, then the body failed part way: the bytes that arrived and why.
    Cut(http::response::Parts, Bytes, TransportError),
    /// No response.
    Failed(TransportError),
}

/// Performs `attempt` within the core's phase bounds: the response head within
/// [`Attempt::head_timeout`] of the start of the exchange (reqwest gives no instant for
/// "request sent", so the connection is inside this bound; the connect timeout itself is
/// the client's, built from the policy's), a non-streamed body within
/// [`Attempt::body_timeout`] of its head, everything within the attempt's timeout.
pub(crate) async fn perform(http: &reqwest::Client, mut attempt: Attempt) -> (AttemptId, Exchange) {
    let limit = attempt.timeout.unwrap_or(Duration::MAX); // tokio: MAX is "never"
    let head_limit = attempt.head_timeout.unwrap_or(Duration::MAX);
    let body_limit = attempt.body_timeout.unwrap_or(Duration::MAX);
    let exchange = async {
        let request = std::mem::take(&mut attempt.request);
        let request = match reqwest::Request::try_from(request) {
            Ok(request) => request,
            Err(e) => return Exchange::Failed(transport_error(e)),
        };
        let mut response = match tokio::time::timeout(head_limit, http.execute(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Exchange::Failed(transport_error(e)),
            Err(_) => return Exchange::Failed(silent("response head", head_limit)),
        };
        let mut head = http::Response::new(Bytes::new());
        *head.status_mut() = response.status();
        *head.headers_mut() = std::mem::take(response.headers_mut());
        if attempt.reads_stream(head.status()) {
            return Exchange::Response(head, Some(response));
        }
        let mut body = BytesMut::new();
        let read = tokio::time::timeout(body_limit, async {
            while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(TransportError::body_too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(silent("response body", body_limit)));
        match read {
            Ok(()) => Exchange::Response(head.map(|_| body.freeze()), None),
            Err(e) if e == TransportError::body_too_large() => Exchange::Failed(e),
            Err(e) => Exchange::Cut(head.into_parts().0, body.freeze(), e),
        }
    };
    let result = tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Exchange::Failed(silent("response", limit)));
    (attempt.id, result)
}

fn silent(what: &str, limit: Duration) -> TransportError {
    let message = format!("no {what} within {:.1} s", limit.as_secs_f64());
    TransportError::new(TransportKind::Timeout, message)
}

/// Maps a reqwest error to the core's kinds. The message is the error's chain of causes,
/// without the URL (reqwest never puts headers, hence the key, in its errors; the core
/// redacts the message anyway).
pub(crate) fn transport_error(err: reqwest::Error) -> TransportError {
    let kind = kind_of(&err);
    let err = err.without_url();
    let causes = std::iter::successors(Some(&err as &dyn Error), |&e| e.source());
    let message = causes.map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
    if kind == TransportKind::Connect && is_dns_failure(&message) {
        return TransportError::dns(message).with_source(err);
    }
    TransportError::new(kind, message).with_source(err)
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
