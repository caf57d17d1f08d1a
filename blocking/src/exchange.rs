//! One HTTP exchange with ureq, and ureq's errors as the core's transport errors.

use mistral_core::request::MAX_RESPONSE_BYTES;
use std::io;

use bytes::Bytes;
use mistral_core::{Attempt, RetryPolicy, TransportError, TransportKind};

/// The response head, the whole body, and for a successful stream (whose body is handed
/// to the core empty) the unread body.
pub(crate) type Exchange = (http::response::Parts, Bytes, Option<ureq::Body>);

/// Performs `attempt`. Each phase of a non-streamed attempt (send, wait for the head,
/// read the body) is bounded by its timeout; a stream attempt only up to its response
/// head (its body is watched by the stream's idle timeout). The per-read bound of a stream (attempt timeout + idle timeout) never fires
/// before those; it ends the reader thread of a stream dropped while stalled (with no
/// attempt timeout, it also bounds each read of the head to the idle timeout).
pub(crate) fn exchange(
    agent: &ureq::Agent,
    policy: &RetryPolicy,
    attempt: &Attempt,
) -> Result<Exchange, TransportError> {
    let request = attempt.request.clone().map(|body| body.to_vec());
    let timeout = attempt.timeout;
    let read_bound = timeout
        .unwrap_or_default()
        .saturating_add(policy.stream_idle_timeout);
    let config = agent.configure_request(request);
    // Phase timeouts rather than a global one: with any timeout on name resolution,
    // ureq resolves on a thread of its own for every request (a clone per call). The
    // resolver's own timeouts bound DNS; the connect timeout is the agent's.
    let config = config
        .timeout_send_request(timeout)
        .timeout_send_body(timeout)
        .timeout_recv_response(timeout);
    let request = match attempt.stream {
        false => config.timeout_recv_body(timeout).build(),
        true => config.timeout_per_read(Some(read_bound)).build(),
    };
    let (head, body) = agent.run(request).map_err(transport_error)?.into_parts();
    if attempt.reads_stream(head.status) {
        return Ok((head, Bytes::new(), Some(body)));
    }
    let body = body
        .into_with_config()
        .limit(MAX_RESPONSE_BYTES as u64)
        .read_to_vec();
    Ok((head, body.map_err(transport_error)?.into(), None))
}

/// Maps a ureq error to a transport error. The message is ureq's own text, which never
/// holds a request header (so never the key).
pub(crate) fn transport_error(error: ureq::Error) -> TransportError {
    use {TransportKind::*, io::ErrorKind as K, ureq::Error as E};
    let kind = match &error {
        E::Timeout(_) => Timeout,
        E::HostNotFound | E::ConnectionFailed | E::ConnectProxyFailed(_) => Connect,
        E::Io(e) => match e.kind() {
            K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable => Connect,
            K::AddrNotAvailable | K::NotFound => Connect,
            K::ConnectionReset | K::ConnectionAborted | K::NotConnected => Reset,
            K::UnexpectedEof | K::BrokenPipe => Reset,
            K::TimedOut | K::WouldBlock => Timeout,
            // rustls reports a failed handshake or a corrupt record as invalid data.
            K::InvalidData => Tls,
            _ => Other,
        },
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => Tls,
        E::Protocol(_) | E::LargeResponseHeader(..) | E::BodyExceedsLimit(_) => Protocol,
        E::TooManyRedirects | E::RedirectFailed => Protocol,
        _ => Other,
    };
    TransportError::new(kind, error.to_string())
}
