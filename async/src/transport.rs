//! One HTTP exchange with reqwest, and reqwest's errors as the core's transport errors.

use mistral_core::request::MAX_RESPONSE_BYTES;
use std::error::Error;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mistral_core::{Attempt, AttemptId, TransportError, TransportKind};

/// What one attempt produced: the response for the call (with an empty body for a stream)
/// and, for a stream, the response whose body is still to read.
pub(crate) type Exchange = (http::Response<Bytes>, Option<reqwest::Response>);

/// Performs `attempt`: sends it and reads the response (the head only for a stream the
/// caller will read), all within the attempt's timeout.
pub(crate) async fn perform(
    http: &reqwest::Client,
    mut attempt: Attempt,
) -> (AttemptId, Result<Exchange, TransportError>) {
    let limit = attempt.timeout.unwrap_or(Duration::MAX); // tokio: MAX is "never"
    let exchange = async {
        let request = std::mem::take(&mut attempt.request);
        let request = reqwest::Request::try_from(request).map_err(transport_error)?;
        let mut response = http.execute(request).await.map_err(transport_error)?;
        let mut head = http::Response::new(Bytes::new());
        *head.status_mut() = response.status();
        *head.headers_mut() = std::mem::take(response.headers_mut());
        if attempt.reads_stream(head.status()) {
            return Ok((head, Some(response)));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                let message = format!(
                    "the response body is larger than {} MiB",
                    MAX_RESPONSE_BYTES >> 20
                );
                return Err(TransportError::new(TransportKind::Other, message));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((head.map(|_| body.freeze()), None))
    };
    let result = tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| {
            let message = format!("no response within {:.1} s", limit.as_secs_f64());
            Err(TransportError::new(TransportKind::Timeout, message))
        });
    (attempt.id, result)
}

/// Maps a reqwest error to the core's kinds. The message is the error's chain of causes,
/// without the URL (reqwest never puts headers, hence the key, in its errors).
pub(crate) fn transport_error(err: reqwest::Error) -> TransportError {
    let kind = kind_of(&err);
    let err = err.without_url();
    let causes = std::iter::successors(Some(&err as &dyn Error), |&e| e.source());
    let message = causes.map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
    TransportError::new(kind, message)
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
