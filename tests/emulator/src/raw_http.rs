//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, for tests that must see
//! the wire as it is: a reset is an error, a cut or stalled body is an incomplete
//! [`Response`], headers are kept in order and case.
//!
//! ```no_run
//! use mistral_emulator::raw_http;
//! let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
//! let response = raw_http::post("http://127.0.0.1:8080", Some("key"), "/v1/chat/completions", &body)?;
//! assert_eq!(response.status, 200);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// A response as read from the socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header pairs in the order received (names lowercased).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), as far as it arrived.
    pub body: Vec<u8>,
    /// The body arrived whole (Content-Length reached, last chunk seen, or EOF for a body
    /// delimited by the connection's end).
    pub complete: bool,
    /// What stopped the body early (EOF, reset, timeout).
    pub error: Option<io::ErrorKind>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header whose name starts with `prefix` (case-insensitive).
    pub fn headers_with_prefix(&self, prefix: &str) -> Vec<(&str, &str)> {
        let prefix = prefix.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `data:` payloads of an SSE body, in order (`[DONE]` included).
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|event| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .map(|d| d.trim().to_string())
            })
            .collect()
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

/// `host:port` of an `http://host:port[/...]` URL.
fn authority(url: &str) -> io::Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an http URL: {url}"),
        )
    })?;
    Ok(rest.split('/').next().unwrap_or(rest).to_string())
}

impl Connection {
    /// Connects to `http://host:port`, with a 10 s read timeout.
    pub fn open(url: &str) -> io::Result<Connection> {
        let host = authority(url)?;
        let stream = TcpStream::connect(&host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Connection {
            stream,
            host,
            buf: Vec::new(),
        })
    }

    /// Sets the read timeout (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Sends one request.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn exactly(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        while self.buf.len() < n {
            let read = self.fill();
            if !matches!(read, Ok(n) if n > 0) {
                // Keep what arrived: a cut or stalled body is still worth looking at.
                out.append(&mut self.buf);
                return Err(read
                    .err()
                    .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into()));
            }
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }

    /// Reads one response. Errors before the status line and headers are errors (a reset
    /// or close without answer gives `ConnectionReset` or `UnexpectedEof`); errors in
    /// the body give an incomplete [`Response`].
    pub fn receive(&mut self) -> io::Result<Response> {
        let status_line = self.line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let mut response = Response {
            status,
            ..Response::default()
        };
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                response
                    .headers
                    .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length = response
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        let result = if status == 204 || status == 304 {
            Ok(())
        } else if chunked {
            self.chunked(&mut response.body)
        } else if let Some(n) = length {
            self.exactly(n, &mut response.body)
        } else {
            self.until_eof(&mut response.body)
        };
        match result {
            Ok(()) => response.complete = true,
            Err(e) => response.error = Some(e.kind()),
        }
        Ok(response)
    }

    fn chunked(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let line = self.line()?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(());
            }
            self.exactly(size, out)?;
            self.line()?;
        }
    }

    fn until_eof(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            out.append(&mut self.buf);
            if self.fill()? == 0 {
                out.append(&mut self.buf);
                return Ok(());
            }
        }
    }

    /// Sends a request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send(method, path, headers, body)?;
        self.receive()
    }

    /// POSTs JSON with an optional Bearer key.
    pub fn post(&mut self, key: Option<&str>, path: &str, body: &Value) -> io::Result<Response> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.request("POST", path, &headers, body.to_string().as_bytes())
    }
}

/// One request on a fresh connection.
pub fn request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    Connection::open(url)?.request(method, path, headers, body)
}

/// POSTs JSON with an optional Bearer key on a fresh connection.
pub fn post(url: &str, key: Option<&str>, path: &str, body: &Value) -> io::Result<Response> {
    Connection::open(url)?.post(key, path, body)
}

/// GETs `path` with an optional Bearer key on a fresh connection.
pub fn get(url: &str, key: Option<&str>, path: &str) -> io::Result<Response> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    request(url, "GET", path, &headers, b"")
}
