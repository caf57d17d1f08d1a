//! A hostile HTTP/1.1 server on loopback, written on raw sockets so it can misbehave in
//! ways no well-behaved server library allows: never answer, hang up after reading the
//! request, trickle a body, echo the request (and so the key) back in a body, a header
//! or an event, lie about a body's length, send far too much, redirect.
//!
//! ```no_run
//! use mistral_suites::hostile::{Behaviour, HostileServer};
//! let server = HostileServer::start(Behaviour::Silent)?;
//! // point a client at server.url(); server.requests() counts what arrived.
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How the server answers every request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Reads the request and never sends a byte back (the connection stays open).
    Silent,
    /// Reads the whole request, then hangs up without a byte of answer: closes the
    /// connection (a FIN), or with `reset` resets it (`SO_LINGER` 0, an RST).
    HangUp {
        /// An RST instead of a FIN.
        reset: bool,
    },
    /// Answers each connection's first request with these bytes (keeping it open, as
    /// HTTP/1.1 does), then closes it after `idle`: a pooled connection the server has
    /// closed by the time the client sends its next request on it.
    AnswerThenClose {
        /// The whole response.
        response: Vec<u8>,
        /// How long the connection stays open after the answer.
        idle: Duration,
    },
    /// Sends a 200 head announcing `body`, then the body one byte every `every`.
    Trickle {
        /// The body, sent byte by byte.
        body: Vec<u8>,
        /// The pause between two bytes.
        every: Duration,
    },
    /// Says nothing for `head_after`, then sends a 200 head announcing `body` (of
    /// `content_type`) and the body one byte every `every`: each phase within a bound of
    /// its own, all of them together past an attempt's.
    Slow {
        /// The silence before the head.
        head_after: Duration,
        /// The body's `Content-Type`.
        content_type: &'static str,
        /// The body, sent byte by byte.
        body: Vec<u8>,
        /// The pause between two bytes.
        every: Duration,
    },
    /// Sends these bytes as the whole response.
    Raw(Vec<u8>),
    /// Answers `status` with the request (head and body, so `authorization: Bearer <key>`)
    /// as its body, of type `content_type`.
    Echo {
        /// The status.
        status: u16,
        /// The body's `Content-Type`.
        content_type: &'static str,
        /// Extra header lines (`name: value`), `{auth}` replaced by the request's
        /// `Authorization` value.
        headers: Vec<String>,
    },
    /// A 200 event stream whose first event is `event` with `{auth}` replaced by the
    /// request's `Authorization` value, then `[DONE]`.
    SseEcho {
        /// The event's data.
        event: String,
    },
    /// A 200 JSON `body` whose `Content-Length` says `extra` bytes more than it sends,
    /// after which the connection is closed.
    ShortBody {
        /// What is sent.
        body: String,
        /// Bytes announced but never sent.
        extra: usize,
    },
    /// A 200 JSON head announcing `len` bytes, and as many bytes as the client reads.
    Oversized {
        /// The announced length.
        len: usize,
    },
}

/// A running hostile server. Stops (and closes every connection) when dropped.
#[derive(Debug)]
pub struct HostileServer {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Starts a server on an ephemeral loopback port.
    pub fn start(behaviour: Behaviour) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = (
            Arc::clone(&requests),
            Arc::clone(&stop),
            Arc::clone(&received),
        );
        let acceptor = thread::Builder::new()
            .name("hostile-accept".into())
            .spawn(move || accept(&listener, &behaviour, &shared))?;
        Ok(Self {
            url,
            requests,
            stop,
            received,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The raw requests received so far (heads and bodies).
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

type Shared = (Arc<AtomicUsize>, Arc<AtomicBool>, Arc<Mutex<Vec<Vec<u8>>>>);

fn accept(listener: &TcpListener, behaviour: &Behaviour, shared: &Shared) {
    let mut connections = Vec::new();
    while !shared.1.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let behaviour = behaviour.clone();
                let shared = (
                    Arc::clone(&shared.0),
                    Arc::clone(&shared.1),
                    Arc::clone(&shared.2),
                );
                connections.push(thread::spawn(move || {
                    let _ = serve(stream, &behaviour, &shared);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Sleeps `total` in small steps; `false` when the server is stopping.
fn pause(stop: &AtomicBool, total: Duration) -> bool {
    let step = Duration::from_millis(20);
    let mut left = total;
    while !left.is_zero() {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = left.min(step);
        thread::sleep(now);
        left -= now;
    }
    !stop.load(Ordering::SeqCst)
}

/// Reads one request (head and `Content-Length` body); `None` at the end of the
/// connection or when stopping.
fn read_request(stream: &mut TcpStream, stop: &AtomicBool) -> io::Result<Option<Vec<u8>>> {
    stream.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(Some(buf));
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

fn authorization(request: &[u8]) -> String {
    String::from_utf8_lossy(request)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

fn head(status: u16, content_type: &str, length: usize, extra: &[String]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} Hostile\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn serve(mut stream: TcpStream, behaviour: &Behaviour, shared: &Shared) -> io::Result<()> {
    let (requests, stop, received) = shared;
    stream.set_nodelay(true)?;
    while let Some(request) = read_request(&mut stream, stop)? {
        requests.fetch_add(1, Ordering::SeqCst);
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        let auth = authorization(&request);
        match behaviour {
            Behaviour::Silent => {
                while pause(stop, Duration::from_secs(1)) {}
                return Ok(());
            }
            Behaviour::HangUp { reset } => {
                if *reset {
                    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                }
                return Ok(());
            }
            Behaviour::AnswerThenClose { response, idle } => {
                stream.write_all(response)?;
                pause(stop, *idle);
                return Ok(());
            }
            Behaviour::Trickle { body, every } => {
                stream.write_all(&head(200, "application/json", body.len(), &[]))?;
                for byte in body {
                    if !pause(stop, *every) {
                        return Ok(());
                    }
                    stream.write_all(&[*byte])?;
                }
            }
            Behaviour::Slow {
                head_after,
                content_type,
                body,
                every,
            } => {
                if !pause(stop, *head_after) {
                    return Ok(());
                }
                stream.write_all(&head(200, content_type, body.len(), &[]))?;
                for byte in body {
                    if !pause(stop, *every) {
                        return Ok(());
                    }
                    stream.write_all(&[*byte])?;
                }
            }
            Behaviour::Raw(bytes) => stream.write_all(bytes)?,
            Behaviour::Echo {
                status,
                content_type,
                headers,
            } => {
                let headers: Vec<String> =
                    headers.iter().map(|h| h.replace("{auth}", &auth)).collect();
                stream.write_all(&head(*status, content_type, request.len(), &headers))?;
                stream.write_all(&request)?;
            }
            Behaviour::SseEcho { event } => {
                let body = format!(
                    "data: {}\n\ndata: [DONE]\n\n",
                    event.replace("{auth}", &auth)
                );
                stream.write_all(&head(200, "text/event-stream", body.len(), &[]))?;
                stream.write_all(body.as_bytes())?;
            }
            Behaviour::ShortBody { body, extra } => {
                stream.write_all(&head(200, "application/json", body.len() + extra, &[]))?;
                stream.write_all(body.as_bytes())?;
                stream.flush()?;
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            Behaviour::Oversized { len } => {
                stream.write_all(&head(200, "application/json", *len, &[]))?;
                let block = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < *len && !stop.load(Ordering::SeqCst) {
                    let n = block.len().min(len - sent);
                    stream.write_all(&block[..n])?;
                    sent += n;
                }
            }
        }
    }
    Ok(())
}
