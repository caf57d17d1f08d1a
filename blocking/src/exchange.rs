//! One HTTP exchange with ureq, and ureq's errors as the core's transport errors.

use std::io;

use bytes::Bytes;
use mistral_core::{Attempt, RetryPolicy, TransportError, TransportKind};

/// Largest non-streamed body read (a large embeddings batch fits; the default of ureq,
/// 10 MB, may not).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// What came of one attempt that got a response.
pub(crate) enum Exchange {
    /// A whole response, for the call to classify.
    Whole(http::Response<Bytes>),
    /// The head of a successful stream and its unread body.
    Stream(http::response::Parts, ureq::Body),
}

/// Performs `attempt`. A non-streamed attempt is bounded by its timeout as a whole; a
/// stream attempt only up to its response head (its body is watched by the stream's idle
/// timeout). The per-read bound of a stream never fires before those: it only ends the
/// reader thread of a stream that was dropped while stalled.
pub(crate) fn exchange(
    agent: &ureq::Agent,
    policy: &RetryPolicy,
    attempt: &Attempt,
) -> Result<Exchange, TransportError> {
    let request = attempt.request.clone().map(|body| body.to_vec());
    let timeout = attempt.timeout;
    let config = agent.configure_request(request);
    let request = match attempt.stream {
        false => config.timeout_global(timeout).build(),
        true => config
            .timeout_resolve(timeout)
            .timeout_send_request(timeout)
            .timeout_send_body(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(Some(
                timeout
                    .unwrap_or_default()
                    .saturating_add(policy.stream_idle_timeout),
            ))
            .build(),
    };
    let (head, body) = agent.run(request).map_err(transport_error)?.into_parts();
    if attempt.reads_stream(head.status) {
        return Ok(Exchange::Stream(head, body));
    }
    let bytes = body
        .into_with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(transport_error)?;
    Ok(Exchange::Whole(http::Response::from_parts(
        head,
        Bytes::from(bytes),
    )))
}

/// Maps a ureq error to a transport error. The message is ureq's own text, which never
/// holds a request header (so never the key).
pub(crate) fn transport_error(error: ureq::Error) -> TransportError {
    use ureq::Error as E;
    let kind = match &error {
        E::Timeout(_) => TransportKind::Timeout,
        E::HostNotFound | E::ConnectionFailed | E::ConnectProxyFailed(_) => TransportKind::Connect,
        E::Io(e) => io_kind(e),
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => TransportKind::Tls,
        E::Protocol(_)
        | E::LargeResponseHeader(..)
        | E::BodyExceedsLimit(_)
        | E::TooManyRedirects
        | E::RedirectFailed => TransportKind::Protocol,
        _ => TransportKind::Other,
    };
    TransportError::new(kind, error.to_string())
}

fn io_kind(error: &io::Error) -> TransportKind {
    use io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::AddrNotAvailable
        | K::NotFound => TransportKind::Connect,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::UnexpectedEof
        | K::BrokenPipe
        | K::NotConnected => TransportKind::Reset,
        K::TimedOut | K::WouldBlock => TransportKind::Timeout,
        // rustls reports a failed handshake or a corrupt record as invalid data.
        K::InvalidData => TransportKind::Tls,
        _ => TransportKind::Other,
    }
}
