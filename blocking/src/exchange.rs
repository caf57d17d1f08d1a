//! One HTTP exchange with ureq, and ureq's errors as the core's transport errors.

use mistral_core::request::MAX_RESPONSE_BYTES;
use std::cell::Cell;
use std::io::{self, Read};
use std::sync::mpsc;
use std::time::Instant;

use mistral_core::action::reads_stream;
use mistral_core::{Attempt, Delivery, Outcome, TransportError, TransportKind};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Size of one read of a non-streamed body.
const READ_SIZE: usize = 16 * 1024;

/// Performs `attempt`, over by [`Attempt::ends_at`] whatever phase it is in: what came
/// of it, and for a stream whose head the core should see ([`Outcome::StreamHead`]) the
/// unread body.
///
/// A non-streamed attempt runs under a ureq global timeout of what is left of it at the
/// start (one budget across connect, send, head and body), each phase also within its
/// own bound ([`Attempt::phase_limit`]). A stream's global timeout would also end its
/// body, which the stream's idle timeout watches instead: its exchange, up to the
/// response head, runs on a thread of its own that the driver waits for until the end
/// of the attempt (past it, the thread is left to end on its phase bounds and its
/// answer is dropped). The per-read bound of a stream ([`Attempt::stream_read_limit`])
/// never fires before those, and ends the reader thread of a stream dropped while
/// stalled.
///
/// `tracked`: the agent's connections are [`Tracked`] (the agent `build` makes), so how
/// far the request got is known from what was written; otherwise (an agent of the
/// user's) it is judged from ureq's error alone ([`transport_error`]).
pub(crate) fn exchange(
    agent: &ureq::Agent,
    attempt: &Attempt,
    tracked: bool,
) -> (Outcome, Option<ureq::Body>) {
    let start = Instant::now();
    let request = attempt.request.clone().map(|body| body.to_vec());
    let left = attempt.left(start);
    let config = agent.configure_request(request);
    // Set on every request, whoever made the agent: never follow a redirect (the key
    // would go with it), a 4xx/5xx is a response for the core to read.
    let config = config
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(attempt.phase_limit(start, attempt.connect_timeout))
        .timeout_send_request(left)
        .timeout_send_body(left)
        .timeout_recv_response(attempt.phase_limit(start, attempt.head_timeout));
    if attempt.stream {
        let request = config
            .timeout_per_read(attempt.stream_read_limit(start))
            .build();
        return stream_head(agent, request, attempt, tracked);
    }
    let request = config
        .timeout_global(left)
        .timeout_recv_body(attempt.phase_limit(start, attempt.body_timeout))
        .build();
    let (head, body) = match run(agent, request, tracked) {
        Ok(response) => response.into_parts(),
        Err(error) => return (Outcome::Failed(error), None),
    };
    if attempt.reads_stream(head.status) {
        return (Outcome::StreamHead(head), Some(body));
    }
    (read_body(head, body), None)
}

/// A stream attempt up to its response head (or to the end of the body of a refusal),
/// on a thread the driver waits for until the attempt's end.
fn stream_head(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    attempt: &Attempt,
    tracked: bool,
) -> (Outcome, Option<ureq::Body>) {
    let (sender, receiver) = mpsc::sync_channel(1);
    let agent = agent.clone();
    let spawned = std::thread::Builder::new()
        .name("mistral-attempt".into())
        .spawn(move || {
            let answer = match run(&agent, request, tracked) {
                Ok(response) => {
                    let (head, body) = response.into_parts();
                    match reads_stream(true, head.status) {
                        true => (Outcome::StreamHead(head), Some(body)),
                        false => (read_body(head, body), None),
                    }
                }
                Err(error) => (Outcome::Failed(error), None),
            };
            // The driver may have given up: then the answer is dropped here.
            let _ = sender.send(answer);
        });
    if let Err(e) = spawned {
        let message = format!("could not start the attempt thread: {e}");
        return (
            Outcome::Failed(TransportError::new(TransportKind::Other, message)),
            None,
        );
    }
    let answer = match attempt.left(Instant::now()) {
        Some(left) => receiver.recv_timeout(left).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => TransportError::new(
                TransportKind::Timeout,
                format!("no response head within {:.1} s", left.as_secs_f64()),
            ),
            mpsc::RecvTimeoutError::Disconnected => disconnected(),
        }),
        None => receiver.recv().map_err(|_| disconnected()),
    };
    answer.unwrap_or_else(|error| (Outcome::Failed(error), None))
}

fn disconnected() -> TransportError {
    TransportError::new(
        TransportKind::Other,
        "the attempt thread ended without an answer",
    )
}

/// `agent.run(request)`, its failure as a transport error that says how far the request
/// got (from the [`Tracked`] connection when `tracked`, else from ureq's error).
fn run(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    tracked: bool,
) -> Result<http::Response<ureq::Body>, TransportError> {
    WRITTEN.set(Written::Nothing);
    agent.run(request).map_err(|error| {
        let error = transport_error(error);
        match (tracked, WRITTEN.get()) {
            (false, _) => error,
            (true, Written::Whole) => error.with_delivery(Delivery::MaybeDelivered),
            (true, Written::Nothing | Written::Failed) => error.with_delivery(Delivery::NotSent),
        }
    })
}

/// How much of the request the current thread's exchange has handed to its connection
/// (one `agent.run` at a time per thread: ureq connects, writes and reads on the calling
/// thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Nothing yet: a failure now (DNS, connect, TLS handshake, a pooled connection ureq
    /// found closed) left the server without the request.
    Nothing,
    /// Every write so far went out: once ureq reads, the request is whole on the wire.
    Whole,
    /// A write failed: the request is incomplete on the wire, so the server cannot have
    /// run it (ureq stops at the first failure).
    Failed,
}

thread_local! {
    static WRITTEN: Cell<Written> = const { Cell::new(Written::Nothing) };
}

/// The last link of the agent's connector chain: wraps each new connection (after TLS)
/// in a [`Tracked`] one, which notes on the calling thread what the request wrote.
#[derive(Debug)]
pub(crate) struct Tracking;

impl Connector<Box<dyn Transport>> for Tracking {
    type Out = Tracked;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Tracked>, ureq::Error> {
        Ok(chained.map(Tracked))
    }
}

/// A connection that notes whether the request's bytes were written ([`WRITTEN`]),
/// forwarding everything else. It sits above TLS: the handshake's bytes are not the
/// request's.
#[derive(Debug)]
pub(crate) struct Tracked(Box<dyn Transport>);

impl Transport for Tracked {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let sent = self.0.transmit_output(amount, steady(timeout));
        WRITTEN.set(match sent {
            Ok(()) => Written::Whole,
            Err(_) => Written::Failed,
        });
        sent
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.maybe_await_input(steady(timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.await_input(steady(timeout))
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}

/// `timeout` with what is left of it as the core's [`steady_timeout`]: ureq sets the
/// socket's timeout whenever the one it is given changes, and what is left of a phase
/// changes by a few µs from one exchange to the next (three `setsockopt` calls an
/// exchange, where a steady timeout makes none once set).
fn steady(timeout: NextTimeout) -> NextTimeout {
    use ureq::unversioned::transport::time::Duration as Left;
    match timeout.after {
        Left::Exact(left) => NextTimeout {
            after: Left::Exact(mistral_core::steady_timeout(left)),
            ..timeout
        },
        Left::NotHappening => timeout,
    }
}

/// Reads a non-streamed body by hand, to keep what arrived when it fails part way (the
/// core decides whether a cut body is still an answer).
fn read_body(head: http::response::Parts, body: ureq::Body) -> Outcome {
    let mut reader = body
        .into_with_config()
        .limit(MAX_RESPONSE_BYTES as u64 + 1)
        .reader();
    let mut bytes = Vec::new();
    let mut buf = vec![0; READ_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Outcome::Response(http::Response::from_parts(head, bytes.into())),
            Ok(n) if bytes.len() + n > MAX_RESPONSE_BYTES => {
                return Outcome::Failed(TransportError::body_too_large());
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Outcome::Cut {
                    head,
                    partial: bytes.into(),
                    error: transport_error(ureq::Error::from(e)),
                };
            }
        }
    }
}

/// The agent's resolver: ureq's own, always called without a timeout, so that it
/// resolves on the calling thread (with any timeout — the global one included — ureq
/// resolves on a thread of its own for every request). The system resolver's own
/// timeouts bound DNS.
#[derive(Debug, Default)]
pub(crate) struct InlineResolver(DefaultResolver);

impl Resolver for InlineResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let never = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::NotHappening,
            ..timeout
        };
        self.0.resolve(uri, config, never)
    }
}

/// Maps a ureq error to a transport error. The message is ureq's own text, which never
/// holds a request header (so never the key); the core redacts it anyway.
///
/// How far the request got, from the error alone: a timeout names its phase (resolving,
/// connecting, sending: the request is not whole on the wire), a connection or TLS
/// failure comes before the request ([`TransportError::new`]); anything else may come
/// after it was written.
pub(crate) fn transport_error(error: ureq::Error) -> TransportError {
    use {TransportKind::*, io::ErrorKind as K, ureq::Error as E, ureq::Timeout as T};
    if let E::Timeout(T::Resolve | T::Connect | T::SendRequest | T::SendBody) = &error {
        return TransportError::new(Timeout, error.to_string())
            .with_delivery(Delivery::NotSent)
            .with_source(error);
    }
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
