//! The async client's file store: one state file shared by tasks and processes, surviving
//! corruption, degrading when locked too long, and never stalling the runtime while
//! another holder keeps the lock.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mistral_async::stores::{self, AsyncLimiter, FileLimiter, LimiterConfig, LimiterSpec, Limits};
use mistral_async::{ApiKey, Ask, Grant, LocalLimiter};
use mistral_core::limiter::{Decision, Reserve, Source, codec};

const KEY: &str = "sk-TEST-very-secret-key-0123456789";
const BASE: &str = "https://api.mistral.ai";

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mistral-async-stores-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(per_second: u64) -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(per_second, Duration::from_secs(1))),
        models: HashMap::new(),
        ..LimiterConfig::default()
    }
}

fn ask(model: &str) -> Ask {
    Ask {
        model: Some(model.into()),
        tokens: 1,
        attempt: 1,
        within: None,
        confirm: None,
        priority: mistral_core::Priority::Default,
    }
}

fn wait(g: &Grant) -> Duration {
    match g {
        Grant::Now => Duration::ZERO,
        Grant::After(d) | Grant::Slot { after: d, .. } => *d,
        other => panic!("expected a slot, got {other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts the ticks of a 10 ms timer on the current runtime until dropped, and the
/// longest gap between two ticks.
struct Ticker {
    task: tokio::task::JoinHandle<()>,
    longest_gap: Arc<std::sync::Mutex<(u32, Duration)>>,
}

impl Ticker {
    fn start() -> Self {
        let longest_gap = Arc::new(std::sync::Mutex::new((0, Duration::ZERO)));
        let seen = Arc::clone(&longest_gap);
        let task = tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let gap = last.elapsed();
                last = Instant::now();
                let mut s = seen.lock().unwrap();
                s.0 += 1;
                s.1 = s.1.max(gap);
            }
        });
        Self { task, longest_gap }
    }

    /// Ticks so far and the longest gap between two.
    fn stop(self) -> (u32, Duration) {
        self.task.abort();
        *self.longest_gap.lock().unwrap()
    }
}

#[test]
fn the_runtime_keeps_running_while_another_holder_keeps_the_lock() {
    let dir = TempDir::new("held");
    let path = dir.path().join("state");
    let limiter = Arc::new(FileLimiter::at_path(&path, config(1_000_000)).unwrap());
    let rt = runtime();
    // Another holder (a thread with its own open file, as another process would be)
    // keeps the lock for 1 s.
    let holder = File::options().read(true).write(true).open(&path).unwrap();
    holder.lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        holder.unlock().unwrap();
    });
    let started = Instant::now();
    let (grants, (ticks, gap)) = rt.block_on(async {
        let ticker = Ticker::start();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.reserve(Instant::now(), &ask("m")).await })
            })
            .collect();
        let mut grants = Vec::new();
        for task in tasks {
            grants.push(task.await.unwrap());
        }
        (grants, ticker.stop())
    });
    release.join().unwrap();
    let took = started.elapsed();
    // The reservations waited for the lock (not paced in-process: the lock came back
    // within the 2 s timeout) ...
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(!limiter.is_degraded());
    assert!(
        grants.iter().all(|g| matches!(g, Grant::Slot { .. })),
        "{grants:?}"
    );
    // ... while the runtime's timer kept ticking: a worker blocked on the lock for 1 s
    // would leave a gap of about a second.
    eprintln!("{ticks} ticks while the lock was held, longest gap {gap:?}, {took:?} in all");
    assert!(ticks >= 30, "{ticks} ticks in {took:?}");
    assert!(gap < Duration::from_millis(400), "{gap:?}");
}

#[test]
fn tasks_and_limiters_of_one_file_share_one_schedule() {
    let dir = TempDir::new("share");
    let path = dir.path().join("state");
    let rt = runtime();
    let a = Arc::new(FileLimiter::at_path(&path, config(50)).unwrap());
    let b = Arc::new(FileLimiter::at_path(&path, config(50)).unwrap());
    let mut starts: Vec<u64> = rt.block_on(async {
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let limiter = Arc::clone(if i % 2 == 0 { &a } else { &b });
                tokio::spawn(async move {
                    let (d, state) = limiter
                        .reserve_at(None, "m", &Reserve::new(1))
                        .await
                        .unwrap();
                    match d {
                        Decision::Go { wait_us, .. } => state.seen_us + wait_us,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let mut starts = Vec::new();
        for t in tasks {
            starts.push(t.await.unwrap());
        }
        starts
    });
    starts.sort_unstable();
    // 50 per second: 20 ms apart, whichever limiter booked them (a 2 % margin).
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 19_000, "{starts:?}");
    }
}

#[test]
fn a_corrupt_file_resets_to_the_last_known_state_not_a_fresh_one() {
    let dir = TempDir::new("corrupt");
    let path = dir.path().join("state");
    let rt = runtime();
    let limiter = FileLimiter::at_path(&path, config(10)).unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            let _booked = limiter.reserve(Instant::now(), &ask("m")).await;
        }
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() - 9]).unwrap();
        let first = limiter.reserve(Instant::now(), &ask("m")).await;
        assert!(wait(&first) > Duration::ZERO, "{first:?}");
        let states = codec::decode(&std::fs::read(&path).unwrap()).unwrap();
        let state = states["m"];
        assert!(state.share_ppm <= stores::DEGRADED_SHARE_PPM, "{state:?}");
        assert_eq!(state.source, Source::Configured);
        let second = limiter.reserve(Instant::now(), &ask("m")).await;
        assert!(wait(&second) > wait(&first));
    });
}

#[test]
fn a_lock_held_too_long_degrades_to_a_quarter_share_and_recovers() {
    let dir = TempDir::new("locked");
    let path = dir.path().join("state");
    let rt = runtime();
    let limiter = FileLimiter::at_path(&path, config(50))
        .unwrap()
        .with_lock_timeout(Duration::from_millis(30));
    rt.block_on(async {
        let _booked = limiter.reserve(Instant::now(), &ask("m")).await;
        let holder = File::options().read(true).write(true).open(&path).unwrap();
        holder.lock().unwrap();
        let now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(wait(&limiter.reserve(now, &ask("m")).await));
        }
        assert!(limiter.is_degraded());
        // Paced in-process at a quarter of 50/s: about 81 ms apart, never unlimited.
        for w in waits.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                (Duration::from_millis(80)..Duration::from_millis(83)).contains(&gap),
                "{waits:?}"
            );
        }
        holder.unlock().unwrap();
        let before = limiter.budget("m").await.unwrap().unwrap().req_tat_us;
        let _booked = limiter.reserve(Instant::now(), &ask("m")).await;
        assert!(!limiter.is_degraded());
        assert!(limiter.budget("m").await.unwrap().unwrap().req_tat_us > before);
    });
}

#[test]
fn the_spec_builds_the_named_store() {
    let dir = TempDir::new("spec");
    let key = ApiKey::new(KEY).unwrap();
    let rt = runtime();
    let file = stores::limiter_from_spec(
        &LimiterSpec::File(Some(dir.path().to_path_buf())),
        BASE,
        &key,
        config(5),
    )
    .unwrap();
    assert!(format!("{file:?}").contains("FileLimiter"));
    let _booked = rt.block_on(file.reserve(Instant::now(), &ask("m")));
    let expected = dir.path().join(FileLimiter::file_name(BASE, &key));
    assert!(
        expected.exists(),
        "a directory gets the budget's file inside it"
    );
    assert_eq!(
        expected.file_name().unwrap().to_string_lossy(),
        stores::state_file_name(&stores::store_id(BASE, &key))
    );
    let none = stores::limiter_from_spec(&LimiterSpec::None, BASE, &key, config(5)).unwrap();
    assert_eq!(
        rt.block_on(none.reserve(Instant::now(), &ask("m"))),
        Grant::Now
    );
    let local = stores::limiter_from_spec(&LimiterSpec::Local, BASE, &key, config(5)).unwrap();
    assert!(format!("{local:?}").contains("LocalLimiter"));
    // An in-process limiter serves the async client as it is.
    let _: Arc<dyn AsyncLimiter> = Arc::new(LocalLimiter::new());
}

#[cfg(not(feature = "redis"))]
#[test]
fn redis_without_the_feature_is_a_config_error_naming_this_crate() {
    let key = ApiKey::new(KEY).unwrap();
    let spec = LimiterSpec::parse("redis://127.0.0.1:6379").unwrap();
    match stores::limiter_from_spec(&spec, BASE, &key, LimiterConfig::default()) {
        Err(mistral_core::Error::Config(m)) => {
            assert!(m.contains("`redis`") && m.contains("mistral-async"), "{m}");
            assert!(!m.contains("mistral-blocking"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

fn go(d: Decision) -> u64 {
    match d {
        Decision::Go { wait_us, .. } => wait_us,
        other => panic!("expected Go, got {other:?}"),
    }
}

#[test]
fn a_wall_clock_step_neither_stalls_nor_floods() {
    const S: u64 = 1_000_000;
    let dir = TempDir::new("clock");
    let limiter = FileLimiter::at_path(dir.path().join("state"), config(10)).unwrap();
    let rt = runtime();
    let at = |t: u64| {
        go(rt
            .block_on(limiter.reserve_at(Some(t), "m", &Reserve::new(1)))
            .unwrap()
            .0)
    };
    let t0 = 1_750_000_000 * S;
    assert_eq!(at(t0), 0);
    let period = at(t0);
    assert!((101_000..103_000).contains(&period), "{period}");
    // The clock steps back a minute: the next slot keeps its distance (two periods on).
    assert_eq!(at(t0 - 60 * S), 2 * period);
    // It steps forward an hour: one goes at once, the rest stay paced, no burst.
    let later = t0 + 3600 * S;
    let starts: Vec<u64> = (0..30).map(|_| later + at(later)).collect();
    assert_eq!(starts[0], later);
    for w in starts.windows(2) {
        assert_eq!(w[1] - w[0], period);
    }
}

#[test]
fn a_state_file_that_cannot_be_opened_is_named_in_the_error() {
    let dir = TempDir::new("unopenable");
    let path = dir.path().join("a-directory");
    std::fs::create_dir(&path).unwrap();
    let error = FileLimiter::at_path(&path, config(10)).unwrap_err();
    assert!(error.to_string().contains("a-directory"), "{error}");
    let key = ApiKey::new(KEY).unwrap();
    let spec = LimiterSpec::File(Some(dir.path().join("missing-parent-is-made/state")));
    assert!(stores::limiter_from_spec(&spec, BASE, &key, config(10)).is_ok());
}

/// The most starts in any window of `window_us`.
fn max_in_window(starts: &[u64], window_us: u64) -> usize {
    let mut s = starts.to_vec();
    s.sort_unstable();
    let (mut best, mut lo) = (0, 0);
    for hi in 0..s.len() {
        while s[hi] - s[lo] >= window_us {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Starts `count` children of `child_reserves_and_prints_starts` on `path`, `slots` each.
fn spawn_children(count: usize, path: &Path, slots: u32) -> Vec<std::process::Child> {
    let exe = std::env::current_exe().unwrap();
    (0..count)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["child_reserves_and_prints_starts", "--exact", "--nocapture"])
                .env("ASYNC_STORES_TEST_PATH", path)
                .env("ASYNC_STORES_TEST_SLOTS", slots.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Every start the children printed.
fn starts_of(children: Vec<std::process::Child>) -> Vec<u64> {
    let mut all = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{stdout}");
        let before = all.len();
        all.extend(
            stdout
                .lines()
                .filter_map(|l| l.find("START ").map(|at| &l[at + 6..]))
                .map(|n| n.trim().parse::<u64>().unwrap()),
        );
        assert!(all.len() > before, "a child printed no start:\n{stdout}");
    }
    all
}

#[test]
fn real_processes_share_one_budget() {
    let dir = TempDir::new("processes");
    let path = dir.path().join("state");
    let all = starts_of(spawn_children(4, &path, 30));
    assert_eq!(all.len(), 120);
    let max = max_in_window(&all, 1_000_000);
    eprintln!("4 processes, 120 starts: max {max} in any 1 s (limit 50)");
    assert!(max <= 50, "{max} starts in one second, limit 50");
}

/// Four processes, 50 a second: two start, the state file is deleted under them, two
/// more start (and make a new file); then the file is replaced by an empty one. The old
/// ones notice, reopen it and join it with what they know: one budget, not two.
#[test]
fn a_deleted_or_replaced_state_file_is_rejoined_by_every_process() {
    let dir = TempDir::new("deleted");
    let path = dir.path().join("state");
    let mut children = spawn_children(2, &path, 40);
    std::thread::sleep(Duration::from_millis(400));
    std::fs::remove_file(&path).unwrap();
    children.extend(spawn_children(2, &path, 25));
    std::thread::sleep(Duration::from_millis(700));
    let fresh = dir.path().join("fresh");
    std::fs::write(&fresh, b"").unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    let all = starts_of(children);
    let max = max_in_window(&all, 1_000_000);
    eprintln!(
        "deleted and replaced under 4 processes: {} starts, max {max} in any 1 s",
        all.len()
    );
    // The blocking store's test allows the same few slots of slack (a process making a
    // new file takes its first slots before the others join it); two budgets: ~100.
    assert!(max <= 54, "{max} starts in one second, limit 50");
}

/// Child mode of the tests above: `ASYNC_STORES_TEST_SLOTS` slots of a 50/s budget as
/// the async client takes them (reserve, then sleep on tokio's timer until the slot),
/// each slot's start printed.
#[test]
fn child_reserves_and_prints_starts() {
    let Some(path) = std::env::var_os("ASYNC_STORES_TEST_PATH") else {
        return;
    };
    let slots: u32 = std::env::var("ASYNC_STORES_TEST_SLOTS").map_or(30, |s| s.parse().unwrap());
    let limiter = FileLimiter::at_path(path, config(50)).unwrap();
    runtime().block_on(async {
        for _ in 0..slots {
            let (d, state) = limiter
                .reserve_at(None, "m", &Reserve::new(1))
                .await
                .unwrap();
            let wait = go(d);
            println!("START {}", state.seen_us + wait);
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
    });
}

fn headers_report(model: &str, limit: u64, remaining: u64, window: u32) -> mistral_async::Report {
    use mistral_async::{Bucket, Quota, RateLimits, Verdict, Window};
    mistral_async::Report {
        model: Some(model.into()),
        limits: RateLimits {
            quotas: vec![Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(window),
                limit: Some(limit),
                remaining: Some(remaining),
            }],
            ..RateLimits::default()
        },
        verdict: Verdict::Success,
        retry: None,
        estimated_tokens: 1,
        used_tokens: Some(1),
        attempt: 1,
        correlation_id: None,
        ticket: None,
    }
}

#[test]
fn what_one_process_learns_paces_the_others() {
    let dir = TempDir::new("learn");
    let path = dir.path().join("state");
    let a = FileLimiter::at_path(&path, LimiterConfig::default()).unwrap();
    let b = FileLimiter::at_path(&path, LimiterConfig::default()).unwrap();
    runtime().block_on(async {
        // Nothing known: one probe goes, the others re-check.
        assert_eq!(
            wait(&a.reserve(Instant::now(), &ask("m")).await),
            Duration::ZERO
        );
        assert!(matches!(
            b.reserve(Instant::now(), &ask("m")).await,
            Grant::Recheck(_)
        ));
        // The probe's answer, reported through a: 120 per minute, 1 left. b sends that
        // one at once, then paces at one per 0.5 s.
        a.report(Instant::now(), &headers_report("m", 120, 1, 60))
            .await;
        let state = b.budget("m").await.unwrap().unwrap();
        assert_eq!(state.source, Source::Headers);
        let first = wait(&b.reserve(Instant::now(), &ask("m")).await);
        let second = wait(&b.reserve(Instant::now(), &ask("m")).await);
        assert!(
            second - first >= Duration::from_millis(500),
            "{first:?} {second:?}"
        );
    });
}
