//! Four OS processes, one budget: the file store and the Redis store, each judged by the
//! emulator's log. The children are this test binary re-run in child mode.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use mistral_emulator::{Config, Era, Limits, Semantics};
use mistral_emulator::{Emulator, Log};

mod children;

const MODEL: &str = "mistral-small-latest";
const CHILD: &str = "MISTRAL_FLEET_CHILD";
const PER_CHILD: usize = 40;

/// The child's work: `PER_CHILD` chat requests from 4 threads through a client whose
/// limiter comes from `MISTRAL_LIMITER`. Does nothing outside child mode.
#[test]
fn child_worker() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let _client = children::chats_from_env(MODEL, 4, PER_CHILD);
}

fn emulator() -> Emulator {
    // 30 per 2 s (15/s), a sliding log; the processes are not told.
    Emulator::start(
        Config {
            era: Era::Late2025,
            semantics: Semantics::SlidingLog,
            window_secs: 2.0,
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(30), None)),
    )
}

fn spawn_children(emu: &Emulator, limiter: &str) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..4)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_worker",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, "1")
                .env("MISTRAL_API_KEY", emu.key())
                .env("MISTRAL_BASE_URL", emu.url())
                .env("MISTRAL_LIMITER", limiter)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn a child")
        })
        .collect()
}

fn judge(name: &str, emu: &Emulator, children: Vec<Child>, start: Instant) -> Log {
    for mut child in children {
        assert!(child.wait().unwrap().success(), "{name}: a child failed");
    }
    let span = start.elapsed();
    let log = emu.log();
    let total = 4 * PER_CHILD;
    eprintln!(
        "{name}: {} admitted in {:.2} s ({:.3} of 15/s), {} 429s, violations {:?}",
        log.admitted_for(MODEL),
        span.as_secs_f64(),
        log.admitted_for(MODEL) as f64 / span.as_secs_f64() / 15.0,
        log.count_429(),
        log.violations()
    );
    assert_eq!(
        log.admitted_for(MODEL),
        total,
        "{name}: every request admitted"
    );
    assert!(log.violations().is_empty(), "{name}");
    // The limit is not configured: learning that the window does not refill costs two
    // refusals, and a 2-s window comes round five times in the run (at most one probe
    // each), with room for a loaded machine's scheduling. Since a learned window's
    // lump is tried after a shut of a quarter of the cycle (0ccbbcf), a sliding log
    // costs a few more: 5-14 measured (6-11 before).
    assert!(log.count_429() <= 16, "{name}: {} 429s", log.count_429());
    log
}

#[test]
fn four_processes_share_the_file_store() {
    let emu = emulator();
    let dir = std::env::temp_dir().join(format!("mistral-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = Instant::now();
    let children = spawn_children(&emu, &format!("file:{}/", dir.display()));
    judge("file store", &emu, children, start);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn four_processes_share_the_redis_store() {
    let Some(redis) = mistral_suites::redis_or_skip("the 4-process Redis fleet") else {
        return;
    };
    let emu = emulator();
    let start = Instant::now();
    let children = spawn_children(&emu, &redis.url());
    judge("redis store", &emu, children, start);
}
