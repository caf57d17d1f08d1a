//! `mistral batch run` and signals, against the real emulator on loopback: at the first
//! SIGINT or SIGTERM nothing new is sent, the calls in flight get a short grace, the
//! summary says what was done and what is left, the status is 130 or 143; a second
//! signal stops at once; the run resumes where it stopped.

mod common;

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::*;
use mistral_emulator::{Config, Emulator, Era, Limits};

const MODEL: &str = "mistral-small-latest";

/// No request may reach the server later than this after the first signal.
const NOTHING_SENT_AFTER: Duration = Duration::from_secs(5);

/// An emulator whose every answer takes `latency` (the server: 1 s), announcing
/// `per_second` requests a second; and the instant it started (at most a hair after the
/// emulator's own clock started).
fn slow_emulator(latency: Duration, per_second: u64) -> (Emulator, Instant) {
    let config = Config {
        era: Era::Late2025,
        window_secs: 1.0,
        latency_ms: latency.as_millis() as u64,
        ..Config::default()
    }
    .model(MODEL, Limits::new(Some(per_second), Some(10_000_000)));
    let emu = Emulator::start(config);
    (emu, Instant::now())
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

/// Starts a run of `n` requests, 100 in flight (most of them waiting in the shared
/// limiter for their turn), sends `signal` after `after`; the run's
/// output, when the signal was sent (on the emulator's clock, early by at most a hair)
/// and how long the process took to exit after it.
fn run_and_signal(
    emu: &Emulator,
    started: Instant,
    name: &str,
    n: usize,
    signal: &str,
    after: Duration,
) -> (
    Output,
    Duration,
    Duration,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = temp_dir(name);
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    chat_input(&input, n, MODEL);
    let child = batch_command(emu, &input, &output, &["--concurrency", "100"])
        .spawn()
        .expect("the mistral binary starts");
    std::thread::sleep(after);
    let signalled = Instant::now();
    kill(&child, signal);
    let at = signalled - started;
    let out = child.wait_with_output().expect("the run ends");
    (out, at, signalled.elapsed(), input, output)
}

/// The latest arrival in the emulator's log after `at`, if any.
fn latest_after(emu: &Emulator, at: Duration) -> Option<Duration> {
    emu.log()
        .entries()
        .iter()
        .map(|e| e.arrived)
        .filter(|arrived| *arrived > at)
        .max()
        .map(|arrived| arrived - at)
}

fn stops_sending_and_resumes(signal: &str, status: i32) {
    let _heavy = heavy();
    // 10 a second, 1 s each, 100 calls in flight: when the signal comes, ten are being
    // answered and some ninety wait their turn; before, they all went on being sent.
    let (emu, started) = slow_emulator(Duration::from_secs(1), 10);
    let name = format!("signal-{}", signal.to_ascii_lowercase());
    let n = 400;
    let (out, at, exited_after, input, output) = run_and_signal(
        &emu,
        started,
        &name,
        n,
        signal,
        Duration::from_millis(2_500),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(status), "{err}");
    assert!(
        err.contains(&format!("stopped: interrupted (SIG{signal})")),
        "{err}"
    );
    // Nothing reached the server more than 5 s after the signal (before: 31-32 s of
    // sending, 96-122 more requests at this latency).
    let late = latest_after(&emu, at);
    eprintln!("SIG{signal}: last request {late:?} after the signal; exited after {exited_after:?}");
    assert!(
        late.is_none_or(|late| late <= NOTHING_SENT_AFTER),
        "a request arrived {late:?} after SIG{signal}"
    );
    assert!(
        exited_after < Duration::from_secs(8),
        "exited {exited_after:?} after the signal"
    );
    // The summary: what was done and what is left, counted right.
    let s = summary(&out);
    let (succeeded, failed, left) = (
        s["succeeded"].as_u64().unwrap(),
        s["failed"].as_u64().unwrap(),
        s["left"].as_u64().unwrap(),
    );
    assert_eq!(s["todo"].as_u64(), Some(n as u64), "{s}");
    assert_eq!(succeeded + failed + left, n as u64, "{s}");
    assert!(left > 0 && succeeded > 0, "{s}");
    assert!(
        err.contains(&format!("{left} of {n} left for a later run")),
        "{err}"
    );
    let (values, _) = results(&output);
    assert_eq!(values.len() as u64, succeeded + failed, "{s}");
    // The same command finishes the file, each request answered once.
    emu.set_limits(MODEL, Limits::new(Some(1_000), Some(10_000_000)));
    let out = batch(&emu, &input, &output, &["--concurrency", "64"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = (0..n).map(|i| format!("id-{i}")).collect();
    assert_each_once(&output, &expected);
}

#[test]
fn sigint_stops_sending_within_the_grace_and_the_run_resumes() {
    stops_sending_and_resumes("INT", 130);
}

#[test]
fn sigterm_stops_sending_within_the_grace_and_the_run_resumes() {
    stops_sending_and_resumes("TERM", 143);
}

/// Calls that would take a minute: the grace (3 s) is not waited for when a second
/// signal comes.
#[test]
fn a_second_signal_stops_at_once() {
    let _heavy = heavy();
    let (emu, _) = slow_emulator(Duration::from_secs(60), 1_000);
    let dir = temp_dir("signal-twice");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    chat_input(&input, 50, MODEL);
    let child = batch_command(&emu, &input, &output, &["--concurrency", "8"])
        .spawn()
        .expect("the mistral binary starts");
    std::thread::sleep(Duration::from_millis(1_500));
    kill(&child, "INT");
    std::thread::sleep(Duration::from_millis(300));
    let second = Instant::now();
    kill(&child, "INT");
    let out = child.wait_with_output().expect("the run ends");
    let took = second.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after the second signal: {err}"
    );
    assert!(err.contains("again: stopping at once"), "{err}");
    assert!(results(&output).0.is_empty());
}
