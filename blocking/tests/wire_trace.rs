//! ureq-proto's TRACE dump of the request head (which holds the key) and the warning the
//! client gives when a logger would record it. Without the feature `no-wire-trace` the
//! dump is live: the client must warn once. With it (as when this package is built with
//! mistral-suites, mistral-bench or mistral-demo, which turn it on), nothing of the dump and no warning may appear.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use mistral_blocking::{Client, WIRE_DUMP_TARGET};

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Answers `n` requests with an empty model list.
fn serve(n: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for _ in 0..n {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = r#"{"object":"list","data":[]}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn the_client_warns_once_when_the_wire_dump_would_be_logged() {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    // Forwards `log` records (ureq-proto's) as events, at every level.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Sink(Arc::clone(&sink)))
        .init();
    let url = serve(2);
    let client = Client::builder()
        .api_key("sk-wire-SECRET-Zq8")
        .base_url(url)
        .build()
        .unwrap();
    client.list_models().unwrap();
    client.list_models().unwrap();
    let text = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    let warnings = text
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(WIRE_DUMP_TARGET))
        .count();
    let dumped = text
        .lines()
        .any(|l| l.contains(&format!(" {WIRE_DUMP_TARGET}: ")));
    if log::STATIC_MAX_LEVEL >= log::LevelFilter::Trace {
        // The dump is live (and holds the key): said once, for the first call only.
        assert!(dumped, "no ureq-proto dump at TRACE:\n{text}");
        assert_eq!(warnings, 1, "{text}");
    } else {
        // `no-wire-trace`: compiled out, nothing to warn about.
        assert!(!dumped, "{text}");
        assert_eq!(warnings, 0, "{text}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}
