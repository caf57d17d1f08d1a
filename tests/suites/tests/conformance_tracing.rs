//! What both clients log: every line emitted while calls fail (a 429 path and a 401)
//! with a known key is captured, at every level down to TRACE, from the clients and from
//! the libraries under them (their `log` records included). No piece of the key may be
//! in any captured line or in any error's `Display` or `Debug`; a 429 must be logged at
//! WARN with its bucket, window, limit, remaining, wait and attempt.
//!
//! One global subscriber serves the whole test binary (so it also sees other threads);
//! the tests take turns.

#[macro_use]
#[path = "conformance/support.rs"]
mod support;

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Error, NoLimiter, RetryPolicy};
use mistral_emulator::{Config, Emulator, Era, Fault, Limits};
use support::{MODEL, leaked_piece};

/// The key the emulator accepts (letters outside hex, so no id or digest matches by
/// chance).
const KEY: &str = "sk-TRACE-SECRET-Qz7Wm3Kp9Xv2Ly";
/// A key it refuses.
const WRONG_KEY: &str = "sk-TRACE-WRONG-Rj4Tn8Hs6Gc1Nu";

/// The target under which ureq-proto hex-dumps every byte it sends and receives at
/// TRACE, request head (and so `Authorization: Bearer <key>`) included.
const UREQ_PROTO_DUMP: &str = "ureq_proto::util";

/// Everything the subscriber wrote.
static CAPTURED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
/// One test at a time: the capture is global.
static SERIAL: Mutex<()> = Mutex::new(());

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the global TRACE subscriber (once; it also turns `log` records into events)
/// and empties what it captured so far.
fn start_capture() -> Arc<Mutex<Vec<u8>>> {
    let buffer = CAPTURED.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init()
            .expect("the only subscriber of this test binary");
        buffer
    });
    lock(buffer).clear();
    Arc::clone(buffer)
}

/// 600 requests a minute with a burst of 1 (2026 headers): after one request the window
/// is spent for 100 ms. Request number 2 (the retry of the measured call) gets an
/// ambiguous 429.
fn emulator() -> Emulator {
    let config = Config {
        keys: vec![KEY.to_owned()],
        era: Era::Y2026,
        window_secs: 60.0,
        faults: vec![(2, Fault::Ambiguous429)],
        ..Config::default()
    };
    Emulator::start(config.model(
        MODEL,
        Limits {
            burst: Some(1),
            ..Limits::new(Some(600), None)
        },
    ))
}

fn chat() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")])
}

/// Two attempts: the spent window's 429, then the ambiguous one ends the call.
fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(2)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .deadline(Some(Duration::from_secs(20)))
}

/// What a run captured and how its two calls failed.
struct Run {
    text: String,
    limited: Error,
    refused: Error,
}

/// A warm-up (spends the window), a call that gets two 429s, a call with a wrong key.
fn run_blocking() -> Run {
    use mistral_blocking::Client;
    let emu = emulator();
    let buffer = start_capture();
    let builder = |key: &str| Client::builder().api_key(key).base_url(emu.url()).seed(1);
    let warm = builder(KEY)
        .limiter(Arc::new(NoLimiter))
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .unwrap();
    warm.chat(chat()).expect("the warm-up is served");
    let client = builder(KEY).retry_policy(policy()).build().unwrap();
    let limited = client.chat(chat()).expect_err("two 429s end the call");
    let wrong = builder(WRONG_KEY).retry_policy(policy()).build().unwrap();
    let refused = wrong.chat(chat()).expect_err("the key is refused");
    // Shows the capture runs at TRACE (`log`'s TRACE records are compiled out: this
    // package turns on mistral-blocking's opt-in `no-wire-trace` feature).
    tracing::trace!(target: "capture", "trace level captured");
    let text = String::from_utf8_lossy(&lock(&buffer)).into_owned();
    Run {
        text,
        limited,
        refused,
    }
}

/// The same with the async client.
fn run_async() -> Run {
    use mistral_async::Client;
    let emu = emulator();
    let buffer = start_capture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let builder = |key: &str| Client::builder().api_key(key).base_url(emu.url()).seed(1);
    let (limited, refused) = runtime.block_on(async {
        let warm = builder(KEY)
            .limiter(Arc::new(NoLimiter))
            .retry_policy(RetryPolicy::no_retries())
            .build()
            .unwrap();
        warm.chat(&chat()).await.expect("the warm-up is served");
        let client = builder(KEY).retry_policy(policy()).build().unwrap();
        let limited = client
            .chat(&chat())
            .await
            .expect_err("two 429s end the call");
        let wrong = builder(WRONG_KEY).retry_policy(policy()).build().unwrap();
        let refused = wrong.chat(&chat()).await.expect_err("the key is refused");
        (limited, refused)
    });
    // Shows the capture runs at TRACE (`log`'s TRACE records are compiled out: this
    // package turns on mistral-blocking's opt-in `no-wire-trace` feature).
    tracing::trace!(target: "capture", "trace level captured");
    let text = String::from_utf8_lossy(&lock(&buffer)).into_owned();
    Run {
        text,
        limited,
        refused,
    }
}

/// The captured lines, less those of `skip` (a target).
fn lines<'a>(text: &'a str, skip: Option<&str>) -> Vec<&'a str> {
    text.lines()
        .filter(|l| skip.is_none_or(|t| !l.contains(&format!(" {t}: "))))
        .collect()
}

/// No piece of either key in the captured lines (less `skip`'s) or in the errors.
fn check_no_key(run: &Run, skip: Option<&str>) {
    let kept = lines(&run.text, skip).join("\n");
    for key in [KEY, WRONG_KEY] {
        if let Some(piece) = leaked_piece(&kept, key) {
            let line = kept.lines().find(|l| l.contains(piece)).unwrap_or_default();
            panic!("a piece of the key ({piece:?}) was logged: {line}");
        }
        for error in [&run.limited, &run.refused] {
            let shown = format!("{error}\n{error:?}");
            assert!(leaked_piece(&shown, key).is_none(), "{shown}");
        }
    }
}

/// The 429s are logged at WARN with what a person needs; the retry and the 401 too.
fn check_lines(run: &Run) {
    let text = &run.text;
    assert!(
        matches!(run.limited, Error::RateLimited { .. }),
        "the 429 path ended with {:?}",
        run.limited
    );
    assert!(
        matches!(run.refused, Error::Unauthorized { .. }),
        "the 401 ended with {:?}",
        run.refused
    );
    let warn = |attempt: &str| {
        text.lines().find(|l| {
            l.contains(" WARN ") && l.contains("mistral: HTTP 429") && l.contains(attempt)
        })
    };
    let first = warn("attempt=1").unwrap_or_else(|| panic!("no WARN line for the 429:\n{text}"));
    for field in [
        "kind=\"window_spent\"",
        "bucket=\"requests\"",
        "window=\"minute\"",
        "limit=Some(600)",
        "remaining=Some(0)",
        "wait_ms=",
        "attempt=1",
        "correlation_id=",
    ] {
        assert!(first.contains(field), "{field} missing from: {first}");
    }
    let second =
        warn("attempt=2").unwrap_or_else(|| panic!("no WARN line for the retry's 429:\n{text}"));
    assert!(second.contains("bucket=\"unknown\""), "{second}");
    assert!(
        text.lines()
            .any(|l| l.contains(" DEBUG ") && l.contains("mistral: retrying")),
        "no DEBUG line for the retry:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("mistral: call failed") && l.contains("401")),
        "no line for the 401:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains(" TRACE ")),
        "nothing captured at TRACE:\n{text}"
    );
}

#[test]
fn blocking_client_logs_no_key_at_any_level() {
    let _turn = lock(&SERIAL);
    let run = run_blocking();
    check_no_key(&run, None);
    check_lines(&run);
}

/// Everything but ureq-proto's byte dump (compiled out here by `no-wire-trace`, which
/// this package turns on; see above): the client's own lines, ureq's, rustls'.
#[test]
fn blocking_client_logs_no_key_outside_the_ureq_proto_dump() {
    let _turn = lock(&SERIAL);
    let run = run_blocking();
    check_no_key(&run, Some(UREQ_PROTO_DUMP));
    check_lines(&run);
}

#[test]
fn async_client_logs_no_key_at_any_level() {
    let _turn = lock(&SERIAL);
    let run = run_async();
    check_no_key(&run, None);
    check_lines(&run);
}

/// The key check finds a key split over lines (as a dump's rows split it).
#[test]
fn a_split_key_is_found() {
    let text = format!("row: ...{}\nrow: {}...", &KEY[..10], &KEY[10..]);
    assert!(leaked_piece(&text, KEY).is_some());
    assert!(leaked_piece("nothing here", KEY).is_none());
}
