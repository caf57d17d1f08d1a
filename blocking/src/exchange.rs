//! One HTTP exchange with ureq, and ureq's errors as the core's transport errors.

use mistral_core::request::MAX_RESPONSE_BYTES;
use std::io::{self, Read};

use bytes::Bytes;
use mistral_core::{Attempt, RetryPolicy, TransportError, TransportKind};

/// What one attempt came to.
pub(crate) enum Exchange {
    /// The response head and the whole body, and for a successful stream (whose body is
    /// handed to the core empty) the unread body.
    Response(http::response::Parts, Bytes, Option<ureq::Body>),
    /// The head came, then the body failed part way: the bytes that arrived and why.
    Cut(http::response::Parts, Bytes, TransportError),
    /// No response.
    Failed(TransportError),
}

/// Size of one read of a non-streamed body.
const READ_SIZE: usize = 16 * 1024;

/// Performs `attempt` within the core's phase bounds: connect
/// ([`Attempt::connect_timeout`]), send (the attempt timeout), the response head
/// ([`Attempt::head_timeout`]) and a non-streamed body ([`Attempt::body_timeout`]). A
/// stream attempt only up to its response head (its body is watched by the stream's idle
/// timeout); the per-read bound of a stream (attempt timeout + idle timeout) never fires
/// before those, and ends the reader thread of a stream dropped while stalled.
pub(crate) fn exchange(agent: &ureq::Agent, policy: &RetryPolicy, attempt: &Attempt) -> Exchange {
    let request = attempt.request.clone().map(|body| body.to_vec());
    let timeout = attempt.timeout;
    let read_bound = timeout
        .unwrap_or_default()
        .saturating_add(policy.stream_idle_timeout);
    let config = agent.configure_request(request);
    // Phase timeouts rather than a global one: with any timeout on name resolution,
    // ureq resolves on a thread of its own for every request (a clone per call). The
    // resolver's own timeouts bound DNS.
    // Set on every request, whoever made the agent: never follow a redirect (the key
    // would go with it), a 4xx/5xx is a response for the core to read.
    let config = config
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(attempt.connect_timeout.or(timeout))
        .timeout_send_request(timeout)
        .timeout_send_body(timeout)
        .timeout_recv_response(attempt.head_timeout.or(timeout));
    let request = match attempt.stream {
        false => config
            .timeout_recv_body(attempt.body_timeout.or(timeout))
            .build(),
        true => config.timeout_per_read(Some(read_bound)).build(),
    };
    let (head, body) = match agent.run(request) {
        Ok(response) => response.into_parts(),
        Err(error) => return Exchange::Failed(transport_error(error)),
    };
    if attempt.reads_stream(head.status) {
        return Exchange::Response(head, Bytes::new(), Some(body));
    }
    // Read by hand to keep what arrived when the body fails part way (the core decides
    // whether a cut body is still an answer).
    let mut reader = body
        .into_with_config()
        .limit(MAX_RESPONSE_BYTES as u64 + 1)
        .reader();
    let mut bytes = Vec::new();
    let mut buf = vec![0; READ_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Exchange::Response(head, bytes.into(), None),
            Ok(n) if bytes.len() + n > MAX_RESPONSE_BYTES => {
                return Exchange::Failed(TransportError::body_too_large());
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let error = transport_error(ureq::Error::from(e));
                if error.message == TransportError::body_too_large().message {
                    return Exchange::Failed(error);
                }
                return Exchange::Cut(head, bytes.into(), error);
            }
        }
    }
}

/// Maps a ureq error to a transport error. The message is ureq's own text, which never
/// holds a request header (so never the key); the core redacts it anyway.
pub(crate) fn transport_error(error: ureq::Error) -> TransportError {
    use {TransportKind::*, io::ErrorKind as K, ureq::Error as E};
    let kind = match &error {
        E::BodyExceedsLimit(_) => return TransportError::body_too_large().with_source(error),
        E::HostNotFound => return TransportError::dns("no address found").with_source(error),
        E::Io(e) if is_dns_failure(e) => {
            return TransportError::dns(e).with_source(error);
        }
        E::Timeout(_) => Timeout,
        E::ConnectionFailed | E::ConnectProxyFailed(_) => Connect,
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
        E::Protocol(_) | E::LargeResponseHeader(..) => Protocol,
        E::TooManyRedirects | E::RedirectFailed => Protocol,
        _ => Other,
    };
    TransportError::new(kind, error.to_string()).with_source(error)
}

/// The resolver's failure, as std reports it (`failed to lookup address information`).
fn is_dns_failure(e: &io::Error) -> bool {
    let text = e.to_string();
    text.contains("lookup address") || text.contains("Name or service not known")
}
