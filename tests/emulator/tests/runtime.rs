//! The emulator from async code, its throughput, and the `mistral-emulator` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{CHAT, chat, post_chat};
use mistral_emulator::raw_http::Connection;
use mistral_emulator::{Config, Emulator, Limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_stops_inside_a_multi_thread_runtime() {
    let emu = Emulator::start(Config::default());
    let (url, key) = (emu.url(), emu.key().to_string());
    let status = tokio::task::spawn_blocking(move || post_chat(&url, &key, "m").status)
        .await
        .unwrap();
    assert_eq!(status, 200);
    drop(emu);
}

#[tokio::test(flavor = "current_thread")]
async fn starts_and_stops_inside_a_current_thread_runtime() {
    let emu = Emulator::start(Config::default());
    let mut stream = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = chat("m", "hi").to_string();
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        emu.key(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(emu);
}

#[test]
fn two_thousand_requests_complete() {
    let emu = Emulator::start(Config {
        default_limits: Limits::new(Some(1_000_000), Some(1_000_000_000)),
        ..Config::default()
    });
    let t0 = Instant::now();
    let per_thread = 500;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut conn = Connection::open(&emu.url()).unwrap();
                let body = chat("m", "hello");
                for _ in 0..per_thread {
                    let r = conn.post(Some(emu.key()), CHAT, &body).unwrap();
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    let elapsed = t0.elapsed();
    let log = emu.log();
    assert_eq!(log.admitted(), 2000);
    eprintln!(
        "2000 requests in {:.3} s: {:.0} requests/s",
        elapsed.as_secs_f64(),
        2000.0 / elapsed.as_secs_f64()
    );
}

#[test]
fn the_binary_prints_its_url_and_key_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mistral-emulator"))
        .args([
            "--port",
            "0",
            "--rpm",
            "1",
            "--window-secs",
            "30",
            "--key",
            "cli-key",
        ])
        .args(["--duration-secs", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url_line = lines.next().unwrap().unwrap();
    let key_line = lines.next().unwrap().unwrap();
    let url = url_line
        .strip_prefix("url: ")
        .expect("url line")
        .to_string();
    assert_eq!(key_line, "key: cli-key");
    let first = post_chat(&url, "cli-key", "m");
    let second = post_chat(&url, "cli-key", "m");
    let summary = mistral_emulator::raw_http::get(&url, None, "/_emulator/summary").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!((first.status, second.status), (200, 429));
    let summary = summary.json().expect("summary json");
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["admitted"], 1);
    assert_eq!(summary["status_429"], 1);
    assert_eq!(summary["violations"], serde_json::json!([]));
    assert_eq!(summary["max_in_flight"], serde_json::json!({"m": 1}));
}

#[test]
fn the_binary_rejects_bad_flags() {
    let status = Command::new(env!("CARGO_BIN_EXE_mistral-emulator"))
        .args(["--era", "1999"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn the_binary_applies_its_schedule() {
    // 1 per fixed 30-s window, tripled at 1 s (the one spent stays spent).
    let mut child = Command::new(env!("CARGO_BIN_EXE_mistral-emulator"))
        .args([
            "--semantics",
            "fixed-window",
            "--rpm",
            "1",
            "--window-secs",
            "30",
        ])
        .args(["--change", "1:x3", "--duration-secs", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = lines.next().unwrap().unwrap();
    let url = url.strip_prefix("url: ").expect("url line").to_string();
    let key = lines.next().unwrap().unwrap();
    let key = key.strip_prefix("key: ").expect("key line").to_string();
    let t0 = Instant::now();
    let first = post_chat(&url, &key, "m");
    let second = post_chat(&url, &key, "m");
    let early = t0.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(1300).saturating_sub(early));
    let third = post_chat(&url, &key, "m");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!((first.status, second.status, third.status), (200, 429, 200));
    assert_eq!(third.header("x-ratelimit-limit-req-30-second"), Some("3"));
    assert_eq!(
        third.header("x-ratelimit-remaining-req-30-second"),
        Some("1")
    );
}
