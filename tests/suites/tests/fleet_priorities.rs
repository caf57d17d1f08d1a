//! Priority classes across a fleet, judged by the emulator's log: three batch processes
//! keep about 250 calls queued on one saturated budget while an interactive process sends
//! one call a second; through the Redis store, the file store, and in one process with
//! 512 tasks. The interactive calls wait about one pacing interval (not the batch queue),
//! the batch keeps the rest, the limit holds, nothing is lost. The children are this test
//! binary re-run in child mode.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mistral_emulator::{Config, Era, Limits, Semantics};
use mistral_emulator::{Emulator, Log};

const MODEL: &str = "mistral-small-latest";
const CHILD: &str = "MISTRAL_PRIORITY_CHILD";
/// The processes' budget: 20 requests per second, no burst (one pacing interval is
/// 50 ms); the one process's: 40 per second.
const RATE: u64 = 20;
const RATE_ONE_PROCESS: u64 = 40;
/// Batch threads per batch process (three processes: 258 calls queued).
const BATCH_THREADS: usize = 86;
/// Batch tasks in the one process.
const BATCH_TASKS: usize = 512;
/// How long the batch callers start new calls (the queue then drains).
const BATCH_FOR: Duration = Duration::from_secs(4);
/// Interactive calls, one a second, from 1.5 s in.
const INTERACTIVE_CALLS: usize = 4;
const INTERACTIVE_FROM: Duration = Duration::from_millis(1_500);

fn request() -> mistral_core::models::ChatRequest {
    mistral_core::models::ChatRequest::new(
        MODEL,
        vec![mistral_core::models::Message::user("hello")],
    )
    .max_tokens(8)
}

/// The child's work (nothing outside child mode): `batch` keeps `BATCH_THREADS` calls
/// queued for `BATCH_FOR`; `interactive` sends one call a second and prints each call's
/// time in ms. Both print `done <calls>` and fail on any error.
#[test]
fn child_worker() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    let (priority, threads) = match role.as_str() {
        "batch" => (mistral_blocking::Priority::Batch, BATCH_THREADS),
        _ => (mistral_blocking::Priority::Interactive, 1),
    };
    let client = mistral_blocking::ClientBuilder::from_env()
        .priority(priority)
        .build()
        .expect("client from the environment");
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                if priority == mistral_blocking::Priority::Batch {
                    while start.elapsed() < BATCH_FOR {
                        client.chat(request()).expect("batch call");
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                } else {
                    std::thread::sleep(INTERACTIVE_FROM);
                    for _ in 0..INTERACTIVE_CALLS {
                        let t = Instant::now();
                        client.chat(request()).expect("interactive call");
                        println!("call_ms {}", t.elapsed().as_millis());
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
                    }
                }
            });
        }
    });
    let stats = client.stats().limiter_of(priority);
    println!(
        "done {} queued {} at_once {}",
        done.into_inner(),
        stats.queued,
        stats.admitted_at_once
    );
}

fn emulator(rate: u64) -> Emulator {
    Emulator::start(
        Config {
            era: Era::Y2026,
            semantics: Semantics::Leaky,
            window_secs: 1.0,
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(rate), None)),
    )
}

fn spawn(emu: &Emulator, limiter: &str, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_worker",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, role)
        .env("MISTRAL_API_KEY", emu.key())
        .env("MISTRAL_BASE_URL", emu.url())
        .env("MISTRAL_LIMITER", limiter)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a child")
}

/// What one child printed.
fn output(child: Child) -> (Vec<u64>, usize, u64) {
    let out = child.wait_with_output().expect("child output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "a child failed:\n{text}");
    let calls_ms = text
        .lines()
        .filter_map(|l| l.split_once("call_ms ").map(|(_, rest)| rest))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    let done = text
        .lines()
        .find_map(|l| l.split_once("done ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no done line in:\n{text}"));
    let mut words = done.split_whitespace();
    let n = words.next().unwrap().parse().unwrap();
    let queued = words.nth(1).unwrap().parse().unwrap();
    (calls_ms, n, queued)
}

/// The verdict on one run at `rate` with `queued` batch callers: every interactive call
/// within a few intervals (generous for a loaded machine; behind the queue it would wait
/// `queued` intervals), the batch kept the rest of the budget, the limit held.
fn judge(
    name: &str,
    (rate, queued): (u64, usize),
    log: &Log,
    interactive_ms: &[u64],
    batch_done: usize,
    span: Duration,
) {
    let interval = Duration::from_secs(1) / rate as u32;
    let fifo = interval * queued as u32;
    let bound = (interval * 6).max(fifo / 8);
    let worst = interactive_ms.iter().copied().max().unwrap_or(u64::MAX);
    let admitted = log.admitted_for(MODEL);
    eprintln!(
        "{name}: interactive calls {interactive_ms:?} ms (worst {worst}, bound {bound:?}, \
         FIFO {fifo:?}), batch {batch_done} calls, {admitted} admitted in {:.1} s ({:.2} of \
         {rate}/s), {} 429s, violations {:?}",
        span.as_secs_f64(),
        admitted as f64 / span.as_secs_f64() / rate as f64,
        log.count_429(),
        log.violations(),
    );
    assert_eq!(interactive_ms.len(), INTERACTIVE_CALLS, "{name}");
    assert!(
        Duration::from_millis(worst) <= bound,
        "{name}: an interactive call took {worst} ms"
    );
    // The batch had the rest: at least half the budget while it ran (its reserved share
    // is a tenth; the interactive calls take one a second of ten).
    let batch_floor = (BATCH_FOR.as_secs_f64() * rate as f64 * 0.5) as usize;
    assert!(
        batch_done >= batch_floor,
        "{name}: batch {batch_done} < {batch_floor}"
    );
    assert!(
        log.violations().is_empty(),
        "{name}: {:?}",
        log.violations()
    );
    assert!(
        log.count_429() <= admitted / 20,
        "{name}: {} 429s",
        log.count_429()
    );
}

fn run_processes(name: &str, limiter: &str) {
    let emu = emulator(RATE);
    let start = Instant::now();
    let batch: Vec<Child> = (0..3).map(|_| spawn(&emu, limiter, "batch")).collect();
    let person = spawn(&emu, limiter, "interactive");
    let (interactive_ms, _, _) = output(person);
    let mut batch_done = 0;
    for child in batch {
        let (_, done, queued) = output(child);
        assert!(queued > 0, "{name}: the batch never queued");
        batch_done += done;
    }
    let queued = 3 * BATCH_THREADS;
    judge(
        name,
        (RATE, queued),
        &emu.log(),
        &interactive_ms,
        batch_done,
        start.elapsed(),
    );
}

#[test]
fn four_processes_through_the_file_store() {
    let dir = std::env::temp_dir().join(format!("mistral-prio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    run_processes("file store", &format!("file:{}/", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn four_processes_through_the_redis_store() {
    let Some(redis) = mistral_suites::redis_or_skip("priorities through Redis") else {
        return;
    };
    run_processes("redis store", &redis.url());
}

/// One process, the async client, 512 batch tasks and one interactive task on one
/// in-process budget.
#[test]
fn one_process_with_512_tasks() {
    let emu = emulator(RATE_ONE_PROCESS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let (interactive_ms, batch_done) = rt.block_on(async {
        let client = |p| {
            mistral_async::Client::builder()
                .api_key(emu.key())
                .base_url(emu.url())
                .priority(p)
                .build()
                .unwrap()
        };
        let batch = client(mistral_async::Priority::Batch);
        let person = client(mistral_async::Priority::Interactive);
        let tasks: Vec<_> = (0..BATCH_TASKS)
            .map(|_| {
                let batch = batch.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while start.elapsed() < BATCH_FOR {
                        batch.chat(request()).await.expect("batch call");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        tokio::time::sleep(INTERACTIVE_FROM).await;
        let mut interactive_ms = Vec::new();
        for _ in 0..INTERACTIVE_CALLS {
            let t = Instant::now();
            person.chat(request()).await.expect("interactive call");
            interactive_ms.push(t.elapsed().as_millis() as u64);
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
        }
        let mut done = 0;
        for task in tasks {
            done += task.await.unwrap();
        }
        let queued = batch
            .stats()
            .limiter_of(mistral_async::Priority::Batch)
            .queued;
        assert!(queued > 0, "the batch never queued");
        assert_eq!(
            person
                .stats()
                .limiter_of(mistral_async::Priority::Batch)
                .queued,
            0,
            "the interactive client's calls are counted in their own class"
        );
        (interactive_ms, done)
    });
    judge(
        "512 tasks",
        (RATE_ONE_PROCESS, BATCH_TASKS),
        &emu.log(),
        &interactive_ms,
        batch_done,
        start.elapsed(),
    );
}
