//! The async client's Redis store against a real `redis-server` on loopback: many tasks
//! share one connection and a slow Redis stalls neither them nor the runtime; limiters
//! (processes) through one Redis share one budget, and the compare-and-set round keeps it
//! one under concurrent changes; an outage degrades to a quarter share and recovers; a
//! Redis restarted empty is rejoined without giving the same capacity twice.
//!
//! Admissions are timed in real time with bounds generous enough for a loaded machine.
//!
//! Skipped (loudly) when `redis-server` is not installed, unless `CI` is set;
//! `MISTRAL_TEST_REDIS_SERVER` names the binary.

#![cfg(feature = "redis")]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mistral_async::stores::{self, AsyncLimiter, LimiterConfig, LimiterSpec, Limits, RedisLimiter};
use mistral_async::stores::{Ask, Grant};
use mistral_async::{ApiKey, Priority};
use mistral_core::{Sizing, Ticket};
use mistral_limiter::store::{StoreOps, codec};
use mistral_limiter::{BudgetState, Source};

const KEY: &str = "sk-TEST-very-secret-key-0123456789";
const BASE: &str = "https://api.mistral.ai";

/// A `redis-server` on a free loopback port, without persistence, killed on drop.
struct RedisServer {
    bin: String,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let bin = std::env::var("MISTRAL_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let found = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let ci = std::env::var("CI").is_ok_and(|v| {
                !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false")
            });
            assert!(
                !ci,
                "`{bin}` not found and CI is set: install redis-server or set \
                 MISTRAL_TEST_REDIS_SERVER"
            );
            eprintln!(
                "\n*** SKIP: `{bin}` not found; the async Redis store tests did not run. ***\n"
            );
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mistral-async-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut server = RedisServer {
            bin,
            port,
            dir,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback TCP proxy to `port` that delays every chunk Redis sends back by `delay`
/// from when it arrived (latency: replies pipelined behind each other are not delayed
/// once each). Plain threads, so the runtime under test is not the proxy's.
fn delaying_proxy(port: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut up_read, mut up_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up_read, &mut up_write);
                let _ = up_write.shutdown(Shutdown::Write);
            });
            let queue = Arc::new((
                std::sync::Mutex::new(VecDeque::new()),
                std::sync::Condvar::new(),
            ));
            let (reader_queue, mut down_read) = (Arc::clone(&queue), server);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = down_read.read(&mut buf).unwrap_or(0);
                    let (lock, ready) = &*reader_queue;
                    lock.lock()
                        .unwrap()
                        .push_back((Instant::now(), buf[..n].to_vec()));
                    ready.notify_one();
                    if n == 0 {
                        return;
                    }
                }
            });
            let mut down_write = client;
            std::thread::spawn(move || {
                loop {
                    let (lock, ready) = &*queue;
                    let mut q = lock.lock().unwrap();
                    while q.is_empty() {
                        q = ready.wait(q).unwrap();
                    }
                    let (at, bytes) = q.pop_front().unwrap();
                    drop(q);
                    std::thread::sleep((at + delay).saturating_duration_since(Instant::now()));
                    if bytes.is_empty() || down_write.write_all(&bytes).is_err() {
                        let _ = down_write.shutdown(Shutdown::Both);
                        return;
                    }
                }
            });
        }
    });
    proxy_port
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn per_second(n: u64) -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(n, Duration::from_secs(1))),
        ..LimiterConfig::default()
    }
}

/// µs between two admissions of a budget configured at `per_second` at full share: its
/// period, less the limiter's 1.5 % margin.
fn unit_us(per_second: u64) -> u64 {
    (1_000_000.0 / per_second as f64 / 0.985) as u64
}

fn ask_for(model: &str) -> Ask {
    Ask {
        model: Some(model.into()),
        tokens: 1,
        size: Sizing::default(),
        attempt: 1,
        within: None,
        priority: Priority::Default,
    }
}

fn ask() -> Ask {
    ask_for("m")
}

/// Wall-clock microseconds since the Unix epoch.
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The longest `after` an admission through a Redis nearby may carry: the capacity is
/// taken at most a few milliseconds ahead (Redis's horizon is 5 ms, or about the round
/// trips its answer takes), never booked far ahead.
const AFTER_AT_MOST: Duration = Duration::from_millis(10);

/// Awaits an admission of one call of `model` through `limiter`: when the call may go,
/// in wall-clock µs (the moment the admission resolved, plus its short `after`), and its
/// ticket.
async fn admitted_for(limiter: &dyn AsyncLimiter, model: &str) -> (u64, Ticket) {
    let ask = ask_for(model);
    match limiter.admit(&ask).await {
        Grant::Go { after, ticket } => {
            assert!(after <= AFTER_AT_MOST, "admitted {after:?} ahead");
            (unix_us() + after.as_micros() as u64, ticket)
        }
        other => panic!("expected an admission, got {other:?}"),
    }
}

async fn admitted(limiter: &dyn AsyncLimiter) -> (u64, Ticket) {
    admitted_for(limiter, "m").await
}

/// Asserts that `seqs` are the admissions 1..=n of one budget, each once.
fn assert_one_sequence(seqs: &[u64]) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        sorted, expected,
        "the admissions of one budget are numbered once each"
    );
}

/// Checks `starts` (wall-clock µs, in order) against a stand-in admitting at a quarter
/// share, one call per `quarter_unit` µs: in all never faster than that (less 50 ms for
/// the first and last readings), no two closer than half of it (at full share they would
/// be a quarter of it apart), and never stopped.
fn assert_quarter_share(starts: &[u64], quarter_unit: u64) {
    let n = starts.len() as u64;
    let span = starts[starts.len() - 1].saturating_sub(starts[0]);
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    assert!(
        span + 50_000 >= (n - 1) * quarter_unit,
        "{n} admissions in {span} µs, one per {quarter_unit} µs at a quarter share: {gaps:?}"
    );
    assert!(
        gaps.iter()
            .all(|g| *g >= quarter_unit / 2 && *g < 2_000_000),
        "gaps {gaps:?} at one per {quarter_unit} µs"
    );
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

fn sync_conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// `key`'s budget as Redis holds it, if it holds one.
fn stored(conn: &mut redis::Connection, key: &str) -> Option<BudgetState> {
    let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(conn).unwrap();
    value.map(|v| codec::decode_value(&v, "m").unwrap())
}

/// 512 tasks over 8 models (8 lines, so 8 operations out at once on the one shared
/// connection) through a Redis 200 ms away: each line admits its first callers (up to
/// `mistral_limiter::line::BATCH`) per compare-and-set round (two round trips), every
/// model at once; one round trip per task, or one line at a time, would take 102 s or
/// 13 s. Meanwhile a timer on the runtime keeps ticking.
#[test]
fn a_slow_redis_stalls_neither_the_tasks_nor_the_runtime() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const TASKS: usize = 512;
    const MODELS: usize = 8;
    const DELAY: Duration = Duration::from_millis(200);
    let slow = delaying_proxy(server.port, DELAY);
    let key = ApiKey::new(KEY).unwrap();
    let limiter = Arc::new(
        RedisLimiter::new(
            &format!("redis://127.0.0.1:{slow}/"),
            BASE,
            &key,
            per_second(1_000_000),
        )
        .unwrap()
        .with_timeout(Duration::from_secs(5)),
    );
    let rt = runtime();
    let (took, grants, ticks, gap) = rt.block_on(async {
        // The connection first (its handshake and the script's load are round trips too).
        let _first = admitted_for(&*limiter, "warm-up").await;
        let (tick_count, longest) = (
            Arc::new(AtomicU32::new(0)),
            Arc::new(std::sync::Mutex::new(Duration::ZERO)),
        );
        let ticker = {
            let (tick_count, longest) = (Arc::clone(&tick_count), Arc::clone(&longest));
            tokio::spawn(async move {
                let mut last = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let mut l = longest.lock().unwrap();
                    *l = (*l).max(last.elapsed());
                    last = Instant::now();
                    tick_count.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move {
                    let ask = ask_for(&format!("m{}", i % MODELS));
                    (i % MODELS, limiter.admit(&ask).await)
                })
            })
            .collect();
        let mut grants = Vec::new();
        for task in tasks {
            grants.push(task.await.unwrap());
        }
        let took = started.elapsed();
        ticker.abort();
        let gap = *longest.lock().unwrap();
        (took, grants, tick_count.load(Ordering::Relaxed), gap)
    });
    eprintln!(
        "{TASKS} admissions over {MODELS} models through a Redis {DELAY:?} away took \
         {took:?}; the 10 ms timer ticked {ticks} times, its longest gap {gap:?}"
    );
    assert!(
        !limiter.is_degraded(),
        "admitted in-process: Redis answered too late"
    );
    // Every admission went through Redis: each model's are numbered 1..=64 there. Through
    // a Redis this far, the callers of one round go when its answer is back, and are
    // charged as of two round trips at the latest: those after the first wait out the
    // rest (nothing is held further ahead than they could go).
    for model in 0..MODELS {
        let seqs: Vec<u64> = grants
            .iter()
            .filter(|(m, _)| *m == model)
            .map(|(_, g)| match g {
                Grant::Go { after, ticket } if *after <= 2 * DELAY + AFTER_AT_MOST => ticket.seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_one_sequence(&seqs);
    }
    assert!(took >= 2 * DELAY, "{took:?}");
    assert!(
        took < Duration::from_secs(8),
        "{took:?}: the lines did not share the connection"
    );
    // The runtime kept running: a timer on it ticked while every task awaited Redis.
    assert!(
        ticks as u128 >= took.as_millis() / 10 / 3,
        "{ticks} ticks in {took:?}"
    );
    // A worker blocked for one round trip would stall it for 200 ms; the rest is
    // slack for a loaded machine (it ticks about every 15 ms here).
    assert!(gap < DELAY, "the timer stalled for {gap:?}");
}

/// Checks `starts` (wall-clock µs, any order) against one budget admitting one call per
/// `unit` µs while callers wait: never faster (the span of n admissions is at least n - 1
/// units, less a little), and never idle while callers wait (no gap of half a second,
/// the span within a second of n - 1 units).
fn assert_paced(label: &str, starts: &[u64], unit: u64) {
    let mut s = starts.to_vec();
    s.sort_unstable();
    let t0 = s[0];
    let n = s.len() as u64;
    let span = s[s.len() - 1] - t0;
    let gap = s.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let timeline: Vec<u64> = s.iter().map(|t| (t - t0) / 1_000).collect();
    eprintln!("{label}: {n} admissions in {span} µs, longest gap {gap} µs; ms: {timeline:?}");
    assert!(
        span >= (n - 1) * unit * 9 / 10,
        "{label}: {n} admissions in {span} µs, faster than one per {unit} µs: {timeline:?}"
    );
    assert!(
        gap < 500_000 && span < (n - 1) * unit + 1_000_000,
        "{label}: callers waited while the budget had room (longest gap {gap} µs, {n} \
         admissions in {span} µs at one per {unit} µs): {timeline:?}"
    );
}

/// Two limiters (as two processes would have) through one Redis, 40 tasks between them,
/// 50 a second: one budget under one key (its admissions numbered once each), about
/// 20 ms apart whichever limiter made them.
#[test]
fn two_limiters_through_one_redis_share_one_budget() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let key = ApiKey::new(KEY).unwrap();
    let a = Arc::new(RedisLimiter::new(&server.url(), BASE, &key, per_second(50)).unwrap());
    let b = Arc::new(RedisLimiter::new(&server.url(), BASE, &key, per_second(50)).unwrap());
    assert_eq!(a.key_of("m"), b.key_of("m"));
    assert!(!a.key_of("m").contains("secret"));
    let rt = runtime();
    let admissions: Vec<(u64, Ticket)> = rt.block_on(async {
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let limiter = Arc::clone(if i % 2 == 0 { &a } else { &b });
                tokio::spawn(async move { admitted(&*limiter).await })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    assert!(!a.is_degraded() && !b.is_degraded());
    let seqs: Vec<u64> = admissions.iter().map(|(_, t)| t.seq).collect();
    assert_one_sequence(&seqs);
    let starts: Vec<u64> = admissions.iter().map(|(s, _)| *s).collect();
    assert_paced(
        "40 tasks of two limiters through one Redis",
        &starts,
        unit_us(50),
    );
    let max = max_in_window(&starts, 200_000);
    assert!(max <= 12, "{max} admissions in 200 ms, limit 10");
    let state = stored(&mut sync_conn(&server), &a.key_of("m")).expect("the budget's key");
    assert_eq!(state.source, Source::Configured);
    assert_eq!(state.seq, 40);
}

/// Eight limiters (eight processes' worth, each its own connection and line), eight
/// tasks each, 20 calls a task, on a budget that admits them all at once: every
/// compare-and-set round lands within its tries (nobody falls back in-process), and
/// none overwrites another: Redis counts exactly the 1 280 admissions, each numbered once.
#[test]
fn the_compare_and_set_round_keeps_one_budget_under_concurrent_limiters() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const LIMITERS: usize = 8;
    const TASKS: usize = 8;
    const CALLS: usize = 20;
    let key = ApiKey::new(KEY).unwrap();
    let limiters: Vec<Arc<RedisLimiter>> = (0..LIMITERS)
        .map(|_| {
            Arc::new(
                RedisLimiter::new(&server.url(), BASE, &key, per_second(1_000_000))
                    .unwrap()
                    .with_timeout(Duration::from_secs(5)),
            )
        })
        .collect();
    let rt = runtime();
    let seqs: Vec<u64> = rt.block_on(async {
        let tasks: Vec<_> = (0..LIMITERS * TASKS)
            .map(|i| {
                let limiter = Arc::clone(&limiters[i % LIMITERS]);
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for _ in 0..CALLS {
                        seqs.push(admitted(&*limiter).await.1.seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    for (i, limiter) in limiters.iter().enumerate() {
        assert!(!limiter.is_degraded(), "limiter {i} fell back in-process");
    }
    assert_one_sequence(&seqs);
    let state = stored(&mut sync_conn(&server), &limiters[0].key_of("m")).unwrap();
    assert_eq!(state.seq, (LIMITERS * TASKS * CALLS) as u64);
}

#[test]
fn redis_killed_mid_run_degrades_to_a_quarter_share_and_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let key = ApiKey::new(KEY).unwrap();
    let limiter = RedisLimiter::new(&server.url(), BASE, &key, per_second(50))
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_reconnect_after(Duration::from_millis(300));
    let quarter_unit = 4 * unit_us(50);
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..5 {
            let _ = admitted(&limiter).await;
        }
        assert!(!limiter.is_degraded());
        server.kill();
        let mut starts = Vec::new();
        for _ in 0..10 {
            starts.push(admitted(&limiter).await.0);
        }
        assert!(limiter.is_degraded());
        // Admitted in-process at a quarter of 50/s: about 81 ms apart. Never unlimited,
        // never stopped.
        assert_quarter_share(&starts, quarter_unit);
        server.spawn();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let _ = admitted(&limiter).await;
        assert!(!limiter.is_degraded());
        // Redis restarted empty: this process brought the budget back, at a cautious
        // share.
        let state = stored(&mut sync_conn(&server), &limiter.key_of("m")).expect("brought back");
        assert_eq!(state.source, Source::Configured);
        assert!(state.share <= 0.5, "{state:?}");
    });
}

#[test]
fn an_unreachable_redis_from_the_start_paces_locally() {
    let port = free_port();
    let key = ApiKey::new(KEY).unwrap();
    let spec = LimiterSpec::parse(&format!("redis://:hunter2@127.0.0.1:{port}")).unwrap();
    let limiter = stores::limiter_from_spec(&spec, BASE, &key, per_second(10)).unwrap();
    let shown = format!("{limiter:?}");
    assert!(
        shown.contains("RedisLimiter") && !shown.contains("hunter2"),
        "{shown}"
    );
    let rt = runtime();
    let starts: Vec<u64> = rt.block_on(async {
        let mut starts = Vec::new();
        for _ in 0..4 {
            starts.push(admitted(&*limiter).await.0);
        }
        starts
    });
    // A quarter of 10/s: about 406 ms apart.
    let quarter_unit = 4 * unit_us(10);
    assert_quarter_share(&starts, quarter_unit);
    let _: &dyn AsyncLimiter = &*limiter;
    match stores::limiter_from_spec(
        &LimiterSpec::Redis("rediss://h/#insecure".into()),
        BASE,
        &key,
        LimiterConfig::default(),
    ) {
        Err(mistral_core::Error::Config(m)) => assert!(m.contains("insecure"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn limiter_at(server: &RedisServer, per_second_limit: u64) -> RedisLimiter {
    RedisLimiter::new(
        &server.url(),
        BASE,
        &ApiKey::new(KEY).unwrap(),
        per_second(per_second_limit),
    )
    .unwrap()
    .with_timeout(Duration::from_millis(200))
    .with_reconnect_after(Duration::from_millis(100))
}

/// Redis killed right after an admission: the stand-in starts from the level Redis last
/// had (the next unit is not there for another 200 ms), not from an empty budget that
/// would admit at once.
#[test]
fn a_fallback_starts_from_the_last_known_state() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let limiter = limiter_at(&server, 5);
    let unit = unit_us(5);
    runtime().block_on(async {
        let mut last = 0;
        for _ in 0..5 {
            last = admitted(&limiter).await.0;
        }
        assert!(!limiter.is_degraded());
        server.kill();
        let (first_degraded, _) = admitted(&limiter).await;
        assert!(limiter.is_degraded());
        assert!(
            first_degraded >= last + unit * 3 / 4,
            "the stand-in admitted {} µs after Redis's last admission, one unit is {unit} µs",
            first_degraded.saturating_sub(last)
        );
    });
}

/// Two limiters (processes) at 5 a second, a unit of about 200 ms.
///
/// The first back brings what it knew: a is admitted twice, Redis is killed and at once
/// restarted empty; a's next call does not go at once (as on a fresh budget) but when the
/// unit its last admission took is over.
///
/// A stand-in's admissions are not given again: b is admitted, Redis is killed, b is
/// admitted on its stand-in (at a quarter share: the next quarter-share unit, about
/// 800 ms, is its stand-in's); Redis comes back empty and a brings the budget back
/// without admitting (what a knew is older than b's admissions). When b reconnects, what
/// its stand-in admitted is merged in first: b's next call goes a quarter-share unit
/// after its stand-in's, not at once on the older level a brought back; and a's after it.
#[test]
fn a_redis_restarted_empty_is_rejoined_without_giving_capacity_twice() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = limiter_at(&server, 5);
    let b = limiter_at(&server, 5);
    let unit = unit_us(5);
    let quarter_unit = 4 * unit;
    let rt = runtime();
    let key = a.key_of("m");

    // The first back brings what it knew.
    let a_second = rt.block_on(async {
        let _first = admitted(&a).await;
        admitted(&a).await.0
    });
    server.kill();
    server.spawn();
    let mut conn = sync_conn(&server);
    assert!(
        stored(&mut conn, &key).is_none(),
        "a restarted Redis is empty"
    );
    let a_third = rt.block_on(async { admitted(&a).await.0 });
    assert!(!a.is_degraded());
    assert!(
        a_third >= a_second + unit * 3 / 4,
        "the empty Redis admitted a {} µs after its last admission, one unit is {unit} µs",
        a_third.saturating_sub(a_second)
    );
    let brought = stored(&mut conn, &key).expect("a brought the budget back");
    assert!(brought.share <= 0.5, "a cautious share: {brought:?}");

    // A stand-in's admissions are not given again.
    let _b_first = rt.block_on(async { admitted(&b).await.0 });
    server.kill();
    let b_standin = rt.block_on(async { admitted(&b).await.0 });
    assert!(b.is_degraded());
    server.spawn();
    let mut conn = sync_conn(&server);
    assert!(
        stored(&mut conn, &key).is_none(),
        "a restarted Redis is empty"
    );
    rt.block_on(a.run_direct(&StoreOps {
        model: "m".into(),
        ..StoreOps::default()
    }))
    .expect("a reaches the restarted Redis");
    assert!(
        stored(&mut conn, &key).is_some(),
        "a brought the budget back"
    );
    std::thread::sleep(Duration::from_millis(150));
    let b_next = rt.block_on(async { admitted(&b).await.0 });
    assert!(!b.is_degraded());
    assert!(
        b_next >= b_standin + quarter_unit * 3 / 4,
        "b went {} µs after its stand-in's admission, a quarter-share unit is {quarter_unit} µs",
        b_next.saturating_sub(b_standin)
    );
    let a_next = rt.block_on(async { admitted(&a).await.0 });
    assert!(
        a_next >= b_next + unit * 3 / 4,
        "a went {} µs after b, one unit is {unit} µs",
        a_next.saturating_sub(b_next)
    );
    let joined = stored(&mut conn, &key).unwrap();
    assert!(joined.share <= 0.5, "a cautious share: {joined:?}");
    assert_eq!(joined.source, Source::Configured);
}

/// Four async processes make 50 calls each at 50 a second through Redis while it is
/// killed, restarted empty, and killed and restarted again: through every transition the
/// fleet stays within the limit (stand-ins from Redis's last level at a quarter share, an
/// empty Redis refilled by the first process back and joined by the others).
#[test]
fn real_processes_stay_within_the_limit_through_redis_restarts() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "child_paces_through_redis_restarts",
                    "--exact",
                    "--nocapture",
                ])
                .env("ASYNC_STORES_TEST_RESTART_URL", server.url())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    server.kill();
    std::thread::sleep(Duration::from_millis(700));
    server.spawn();
    std::thread::sleep(Duration::from_millis(1_000));
    server.kill();
    server.spawn();
    let mut all = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        all.extend(
            stdout
                .lines()
                .filter_map(|l| l.find("START ").map(|at| &l[at + 6..]))
                .map(|n| n.trim().parse::<u64>().unwrap()),
        );
    }
    let max = max_in_window(&all, 1_000_000);
    eprintln!(
        "4 async processes through two Redis restarts: {} starts, max {max} in any 1 s (limit 50)",
        all.len()
    );
    assert_eq!(all.len(), 4 * 50);
    // Each stand-in starts from the level its process last saw (a unit or two behind the
    // others' latest admissions), and the starts are read a little late: a few of slack
    // (a Redis restart taken as a fresh budget, or stand-ins at full share, give far
    // more).
    assert!(max <= 54, "{max} starts in one second, limit 50");
}

/// Child mode of the test above: 50 calls of a 50/s budget as the async client makes
/// them (admitted, then the short `after` slept on tokio's timer; the stand-in's
/// admissions included), each call's start printed in wall-clock microseconds.
#[test]
fn child_paces_through_redis_restarts() {
    let Ok(url) = std::env::var("ASYNC_STORES_TEST_RESTART_URL") else {
        return;
    };
    let limiter = RedisLimiter::new(&url, BASE, &ApiKey::new(KEY).unwrap(), per_second(50))
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .with_reconnect_after(Duration::from_millis(200));
    runtime().block_on(async {
        for _ in 0..50 {
            match limiter.admit(&ask()).await {
                Grant::Go { after, .. } => {
                    println!("START {}", unix_us() + after.as_micros() as u64);
                    tokio::time::sleep(after).await;
                }
                other => panic!("expected an admission, got {other:?}"),
            }
        }
    });
}

#[test]
fn a_report_through_redis_teaches_every_limiter_of_the_budget() {
    use mistral_async::stores::{Report, Verdict};
    use mistral_async::{Bucket, Quota, RateLimits, Window};
    let Some(server) = RedisServer::start() else {
        return;
    };
    let key = ApiKey::new(KEY).unwrap();
    let a =
        Arc::new(RedisLimiter::new(&server.url(), BASE, &key, LimiterConfig::default()).unwrap());
    let b =
        Arc::new(RedisLimiter::new(&server.url(), BASE, &key, LimiterConfig::default()).unwrap());
    let report = |ticket: Ticket| Report {
        model: Some("m".into()),
        limits: RateLimits {
            quotas: vec![Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(60),
                limit: Some(120),
                remaining: Some(1),
            }],
            ..RateLimits::default()
        },
        verdict: Verdict::Success,
        retry: None,
        estimated_tokens: 1,
        used_tokens: Some(1),
        attempt: 1,
        correlation_id: None,
        ticket: Some(ticket),
        usage: None,
        size: Sizing::default(),
        origin: Default::default(),
        service_tier: None,
    };
    runtime().block_on(async {
        // Nothing known: one probe goes at once, and b's caller waits for its answer.
        let (_, probe) = admitted(&*a).await;
        let waiting = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { admitted(&*b).await.0 })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "a second call went while the probe was out"
        );
        assert_eq!(b.line("m").waiting, [0, 1, 0]);
        // The probe's answer through a: 120 a minute, 1 left. b's caller goes on it
        // (within b's next ask, 100 ms), not when the probe would time out (2 s) ...
        let reported = unix_us();
        a.report(Instant::now(), &report(probe)).await;
        let first = waiting.await.unwrap();
        assert!(
            first < reported + 1_000_000,
            "went {} µs after the report",
            first.saturating_sub(reported)
        );
        // ... and that was the one left: the next goes half a second after the report.
        let (second, _) = admitted(&*b).await;
        assert!(
            second >= reported + 450_000,
            "{} µs after the report",
            second.saturating_sub(reported)
        );
        let state = stored(&mut sync_conn(&server), &b.key_of("m")).unwrap();
        assert_eq!(state.source, Source::Headers);
    });
}
