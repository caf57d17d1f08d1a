//! Every fault kind, seen on the wire.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::{CHAT, chat};
use mistral_emulator::raw_http::{Connection, Response};
use mistral_emulator::{Config, Emulator, Era, Fault, Outcome};
use serde_json::json;

fn emulator() -> Emulator {
    Emulator::start(Config {
        hang_secs: 2,
        ..Config::default()
    })
}

fn send(emu: &Emulator, body: &serde_json::Value) -> std::io::Result<Response> {
    let mut conn = Connection::open(&emu.url())?;
    conn.set_timeout(Some(Duration::from_millis(600)))?;
    conn.post(Some(emu.key()), CHAT, body)
}

fn with_fault(emu: &Emulator, fault: Fault) -> std::io::Result<Response> {
    emu.push_fault(fault);
    send(emu, &chat("m", "hello"))
}

fn streaming() -> serde_json::Value {
    let mut body = chat("m", "hello");
    body["stream"] = json!(true);
    body
}

#[test]
fn server_errors_have_their_bodies() {
    let emu = emulator();
    let r = with_fault(&emu, Fault::Http500).unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.json().unwrap()["code"], "1000");
    assert_eq!(r.json().unwrap()["type"], "internal_server_error");
    let r = with_fault(&emu, Fault::Http502Html).unwrap();
    assert_eq!(r.status, 502);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(r.text().starts_with("<html>") && r.json().is_none());
    let r = with_fault(&emu, Fault::Http503).unwrap();
    assert_eq!(r.status, 503);
    assert!(r.json().is_none());
    let r = with_fault(&emu, Fault::Http504).unwrap();
    assert_eq!(r.status, 504);
    assert!(r.text().contains("Gateway Time-out"));
    // None of them was charged to a limit.
    let log = emu.log();
    assert_eq!(log.admitted(), 0);
    assert_eq!(log.count_fault(Fault::Http500), 1);
    assert!(
        log.entries()
            .iter()
            .all(|e| matches!(e.outcome, Outcome::Fault(_)))
    );
}

#[test]
fn status_fixtures() {
    let emu = Emulator::start(Config {
        era: Era::Mid2025,
        ..Config::default()
    });
    let r = with_fault(&emu, Fault::Status401).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Key"));
    let r = with_fault(&emu, Fault::Status400).unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["code"].clone()),
        (400, json!("3230"))
    );
    let r = with_fault(&emu, Fault::Status403).unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["code"].clone()),
        (403, json!("1913"))
    );
    let r = with_fault(&emu, Fault::Status404).unwrap();
    assert_eq!(r.status, 404);
    let r = with_fault(&emu, Fault::Status422).unwrap();
    assert_eq!(r.status, 422);
    assert!(r.json().unwrap()["message"]["detail"].is_array());
    let r = with_fault(&emu, Fault::Ambiguous429).unwrap();
    assert_eq!(r.status, 429);
    assert!(r.headers_with_prefix("x-ratelimit").is_empty());
    let r = with_fault(&emu, Fault::Capacity).unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["code"].clone()),
        (429, json!("3505"))
    );
}

#[test]
fn reset_closes_the_connection_with_an_rst() {
    let emu = emulator();
    let err = with_fault(&emu, Fault::Reset).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let err = with_fault(&emu, Fault::Close).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    // The emulator goes on serving.
    assert_eq!(send(&emu, &chat("m", "x")).unwrap().status, 200);
    let log = emu.log();
    assert_eq!(log.count_status(0), 2);
    assert_eq!(log.count_fault(Fault::Reset), 1);
}

#[test]
fn hang_never_answers() {
    let emu = emulator();
    let t0 = Instant::now();
    let err = with_fault(&emu, Fault::Hang).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(550));
    assert_eq!(emu.log().count_fault(Fault::Hang), 1);
}

#[test]
fn stream_stalls_after_n_chunks() {
    let emu = emulator();
    emu.push_fault(Fault::StallAfter(2));
    let r = send(&emu, &streaming()).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert!(
        matches!(r.error, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{:?}",
        r.error
    );
    assert_eq!(r.sse_data().len(), 2);
    assert!(!r.text().contains("[DONE]"));
    // A stalled stream was admitted and charged.
    assert_eq!(emu.log().admitted(), 1);
}

#[test]
fn stream_cut_midway_has_no_done() {
    let emu = emulator();
    emu.push_fault(Fault::CutAfter(3));
    let r = send(&emu, &streaming()).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert_eq!(r.sse_data().len(), 3);
    assert!(!r.text().contains("[DONE]"));
    // A plain body cut in the middle is shorter than its Content-Length.
    let r = with_fault(&emu, Fault::CutAfter(0)).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    let length: usize = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(r.body.len() < length);
}

#[test]
fn gateway_forms_and_errors_inside_a_stream() {
    let emu = emulator();
    let r = with_fault(&emu, Fault::Proxy429).unwrap();
    assert_eq!(r.status, 429);
    let body = r.json().unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["retry_after"], 1);
    let r = with_fault(&emu, Fault::SpendingCap).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json().unwrap()["error"]["type"], "budget_exceeded");
    assert_eq!(
        emu.log().admitted(),
        0,
        "a gateway's refusal is not charged"
    );
    // A stream served, then an error event after 2 events, no [DONE].
    emu.push_fault(Fault::StreamError(2));
    let r = send(&emu, &streaming()).unwrap();
    assert_eq!(r.status, 200);
    let data = r.sse_data();
    assert_eq!(data.len(), 3, "{data:?}");
    assert!(data[2].contains("rate_limit_error"), "{data:?}");
    assert!(!r.text().contains("[DONE]"));
    emu.push_fault(Fault::StreamErrorEvent(1));
    let r = send(&emu, &streaming()).unwrap();
    assert!(r.text().contains("event: error\ndata: {"), "{}", r.text());
    assert!(r.text().contains("\"1300\""));
    assert_eq!(
        emu.log().admitted(),
        2,
        "the streams were served and charged"
    );
    // A plain response is served whole.
    let r = with_fault(&emu, Fault::StreamError(0)).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json().unwrap()["choices"].is_array());
}

#[test]
fn malformed_json_with_200() {
    let emu = emulator();
    let r = with_fault(&emu, Fault::MalformedJson).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(r.json().is_none());
    assert!(r.text().starts_with('{'));
}

#[test]
fn slow_response_is_delayed_then_served() {
    let emu = emulator();
    let t0 = Instant::now();
    emu.push_fault(Fault::DelayMs(300));
    let mut conn = Connection::open(&emu.url()).unwrap();
    let r = conn.post(Some(emu.key()), CHAT, &chat("m", "x")).unwrap();
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn stream_chunks_can_be_spaced() {
    let emu = Emulator::start(Config {
        stream_chunk_delay_ms: 20,
        completion_tokens: 5,
        ..Config::default()
    });
    let t0 = Instant::now();
    let r = send(&emu, &streaming()).unwrap();
    assert!(r.complete);
    assert_eq!(r.sse_data().len(), 1 + 5 + 1);
    assert!(t0.elapsed() >= Duration::from_millis(120));
}

#[test]
fn scripted_faults_hit_their_request_numbers() {
    let emu = Emulator::start(Config {
        faults: vec![(1, Fault::Http500), (3, Fault::Http503)],
        ..Config::default()
    });
    let mut conn = Connection::open(&emu.url()).unwrap();
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            conn.post(Some(emu.key()), CHAT, &chat("m", "x"))
                .unwrap()
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 500, 200, 503, 200]);
}

#[test]
fn random_faults_follow_the_rate_and_the_seed() {
    let statuses = |seed| {
        let emu = Emulator::start(Config {
            fault_rate: 0.2,
            random_faults: vec![Fault::Http502Html, Fault::Http503],
            seed,
            ..Config::default()
        });
        let mut conn = Connection::open(&emu.url()).unwrap();
        (0..200)
            .map(|_| {
                conn.post(Some(emu.key()), CHAT, &chat("m", "x"))
                    .unwrap()
                    .status
            })
            .collect::<Vec<u16>>()
    };
    let a = statuses(5);
    let faults = a.iter().filter(|&&s| s != 200).count();
    assert!((20..=60).contains(&faults), "{faults}");
    assert!(a.contains(&502) && a.contains(&503));
    assert_eq!(a, statuses(5));
}
