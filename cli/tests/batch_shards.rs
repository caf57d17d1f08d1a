//! Three `mistral batch run --shard K/3` processes sharing one budget through a real
//! redis-server (`MISTRAL_LIMITER=redis://…`), and through the file store.
//! The Redis test runs when `MISTRAL_TEST_REDIS=1` (`cargo xtask test` sets it).

mod common;

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mistral_emulator::Limits;

const MODEL: &str = "mistral-small-latest";

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<Redis> {
    if std::env::var("MISTRAL_TEST_REDIS").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: set MISTRAL_TEST_REDIS=1 (and MISTRAL_TEST_REDIS_SERVER) for the Redis test"
        );
        return None;
    }
    let server =
        std::env::var("MISTRAL_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(&server)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("MISTRAL_TEST_REDIS=1 but {server} does not start: {e}"));
    let redis = Redis(child, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(redis)
}

/// Three shards of one file, three processes, one store: every id answered once, no
/// window of the emulator over its limit.
fn three_shards(name: &str, limiter: &str) {
    let _heavy = heavy();
    let limit = 100;
    let emu = emulator(MODEL, Limits::new(Some(limit), Some(10_000_000)));
    let dir = temp_dir(name);
    let input = dir.join("in.jsonl");
    let n = 900;
    let expected = chat_input(&input, n, MODEL);
    let started = Instant::now();
    let children: Vec<_> = (1..=3)
        .map(|k| {
            let output = dir.join(format!("out-{k}.jsonl"));
            let mut cmd = batch_command(&emu, &input, &output, &["--shard", &format!("{k}/3")]);
            cmd.env("MISTRAL_LIMITER", limiter);
            (output, cmd.spawn().unwrap())
        })
        .collect();
    let mut all = HashSet::new();
    let mut per_shard = Vec::new();
    for (output, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let (values, counts) = results(&output);
        assert!(counts.values().all(|c| *c == 1));
        per_shard.push(values.len());
        for id in counts.into_keys() {
            assert!(all.insert(id), "an id in two shards");
        }
    }
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(all, expected);
    let log = emu.log();
    eprintln!(
        "{name}: 3 shards {per_shard:?} of {n} at {limit}/s in {wall:.1} s ({:.2} of the limit), {} × 429",
        n as f64 / wall / limit as f64,
        log.count_429()
    );
    assert_eq!(log.admitted(), n);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    assert!(
        per_shard.iter().all(|s| *s > n / 6),
        "unbalanced shards {per_shard:?}"
    );
}

#[test]
fn three_shards_share_one_budget_through_redis() {
    let Some(redis) = start_redis() else { return };
    three_shards("shards-redis", &format!("redis://127.0.0.1:{}/", redis.1));
}

#[test]
fn three_shards_share_one_budget_through_the_file_store() {
    let dir = temp_dir("shards-file-store");
    three_shards("shards-file", &format!("file:{}/", dir.display()));
}
