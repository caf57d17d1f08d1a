//! The Redis store against a real `redis-server` this harness starts on a free loopback
//! port: the compare-and-set rounds keep one budget under concurrent processes and
//! threads, real processes share one budget, and a Redis killed or restarted empty
//! degrades to local admission and recovers without a burst.
//!
//! Needs `redis-server` on PATH (or its path in `MISTRAL_TEST_REDIS_SERVER`). Without it
//! the tests fail when `CI` is set and are skipped loudly otherwise.

#![cfg(feature = "redis")]

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{CHILD_ENV, Logs, TempDir, assert_paced, max_in_window, run_children};
use mistral_blocking::stores::{self, LimiterSpec, RedisLimiter, admit};
use mistral_core::limiter::{LimiterConfig, Limits};
use mistral_core::{ApiKey, Ask, Grant, Limiter};
use mistral_limiter::store::{StoreOps, codec};
use mistral_limiter::{AdmitOp, Candidate, Decision};

const KEY: &str = "sk-TEST-very-secret-key-0123456789";
const BASE: &str = "https://api.mistral.ai";
const S: u64 = 1_000_000;

/// A `redis-server` on a free loopback port, without persistence, killed on drop.
struct RedisServer {
    bin: String,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or returns `None` (after saying so loudly) when `redis-server` is not
    /// installed and `CI` is not set.
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
            // As `cargo xtask test` reads it: set, and not empty, `0` or `false`.
            let ci = std::env::var("CI").is_ok_and(|v| {
                !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false")
            });
            if ci {
                panic!(
                    "`{bin}` not found and CI is set: install redis-server (cargo xtask test \
                     does) or set MISTRAL_TEST_REDIS_SERVER"
                );
            }
            eprintln!(
                "\n*** SKIP: `{bin}` not found; the Redis store tests did not run. Install \
                 redis-server or set MISTRAL_TEST_REDIS_SERVER. ***\n"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            bin,
            port,
            dir: TempDir::new("redis"),
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
            .arg(self.dir.path())
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

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(per_second: u64) -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(per_second, Duration::from_secs(1))),
        ..LimiterConfig::default()
    }
}

fn ask() -> Ask {
    Ask {
        model: Some("m".into()),
        tokens: 1,
        size: Default::default(),
        attempt: 1,
        within: None,
        priority: mistral_core::Priority::Default,
    }
}

/// One caller of `model`, admitted however far ahead it fits: the answer says when the
/// budget could take it.
fn one(model: &str) -> StoreOps {
    StoreOps {
        model: model.into(),
        reports: Vec::new(),
        admit: Some(AdmitOp {
            proc_id: 7,
            waiting: [0, 1, 0],
            candidates: vec![Candidate {
                lane: 1,
                size: Default::default(),
                tokens: 1,
                within_us: u64::MAX,
            }],
            horizon_us: u64::MAX,
            late_us: 0,
            ask_gap_us: S,
            reserve_ppm: [0; 3],
        }),
    }
}

fn fits_in(limiter: &RedisLimiter, model: &str) -> u64 {
    // A round that lost its compare-and-set `MAX_TRIES` times to other processes
    // admits nobody and says to ask again shortly (a `Wait`), as a driver then does.
    for _ in 0..20 {
        match limiter.run_direct(&one(model)).unwrap().decisions[0] {
            Decision::Go { wait_us, .. } => return wait_us,
            Decision::Wait => std::thread::sleep(Duration::from_millis(1)),
            other => panic!("expected Go, got {other:?}"),
        }
    }
    panic!("20 rounds in a row admitted nobody")
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Admits one call as a client would, and returns the wall-clock µs it goes at.
fn admit_now(limiter: &dyn Limiter) -> u64 {
    match admit(limiter, &ask()) {
        Grant::Go { after, .. } => {
            std::thread::sleep(after);
            wall_us()
        }
        Grant::Now => wall_us(),
        other => panic!("expected an admission, got {other:?}"),
    }
}

#[test]
fn concurrent_rounds_keep_one_budget_on_redis_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let key = ApiKey::new(KEY).unwrap();
    let mut conn = server.conn();
    let (sec, usec): (u64, u64) = redis::cmd("TIME").query(&mut conn).unwrap();
    let redis_now = sec * S + usec;
    // Eight limiters (as eight processes would have) race for one budget of 50/s, each
    // asking where its caller fits however far ahead: every answer is a distinct slot,
    // 20.3 ms apart, none given twice (a lost compare-and-set would give one twice).
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = server.url();
            let key = key.clone();
            std::thread::spawn(move || {
                let limiter = RedisLimiter::new(&url, BASE, &key, config(50))
                    .unwrap()
                    .with_timeout(Duration::from_secs(5));
                (0..25)
                    .map(|_| fits_in(&limiter, "m"))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let waits: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let limiter = RedisLimiter::new(&server.url(), BASE, &key, config(50)).unwrap();
    let value: Vec<u8> = redis::cmd("GET")
        .arg(limiter.key_of("m"))
        .query(&mut conn)
        .unwrap();
    let state = codec::decode_value(&value, "m").unwrap();
    assert_eq!(state.seq, 200, "every admission counted once");
    assert!(state.seen_us >= redis_now && state.seen_us < redis_now + 60 * S);
    // The last caller's slot is about 199 periods after the first's (less the time the
    // asking took).
    let last = waits.iter().max().unwrap();
    assert!(*last >= 190 * 20_000, "{last}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(limiter.key_of("m"))
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 86_000_000, "{ttl}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.iter().all(|k| !k.contains("secret")), "{keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with("mistral-limiter:{")),
        "{keys:?}"
    );
}

#[test]
fn a_damaged_value_starts_from_what_this_process_knew() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (_guard, logs) = Logs::capture();
    let key = ApiKey::new(KEY).unwrap();
    let limiter = RedisLimiter::new(&server.url(), BASE, &key, config(50)).unwrap();
    assert_eq!(fits_in(&limiter, "m"), 0);
    assert!(fits_in(&limiter, "m") > 15_000);
    let mut conn = server.conn();
    let _: () = redis::cmd("SET")
        .arg(limiter.key_of("m"))
        .arg("12 monkeys")
        .query(&mut conn)
        .unwrap();
    // Not a fresh budget (a burst): the level this process saw, at a quarter share.
    assert!(fits_in(&limiter, "m") > 30_000);
    assert_eq!(logs.count("WARN", "unreadable"), 1, "{}", logs.text());
    // The script is invoked by its SHA: a flushed script cache (a Redis restart) is
    // handled by loading it again.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    assert!(limiter.run_direct(&one("m")).is_ok());
}

#[test]
fn real_processes_share_one_redis_budget() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let per_child = run_children(
        "child_admits_through_redis",
        4,
        &[("STORES_TEST_REDIS_URL", server.url())],
    );
    assert_paced("redis, 4 processes", &per_child, 51);
    eprintln!("took {:?}", started.elapsed());
}

/// Child mode of the test above: 30 calls of a 50/s budget admitted as a client's would
/// be, printing when each goes.
#[test]
fn child_admits_through_redis() {
    let (Ok(url), Ok(_)) = (
        std::env::var("STORES_TEST_REDIS_URL"),
        std::env::var(CHILD_ENV),
    ) else {
        return;
    };
    let key = ApiKey::new(KEY).unwrap();
    // A generous timeout: this machine may be busy compiling; a slow answer is not what
    // this test is about.
    let limiter = RedisLimiter::new(&url, BASE, &key, config(50))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    for _ in 0..30 {
        println!("START {}", admit_now(&limiter));
    }
}

#[test]
fn redis_killed_mid_run_degrades_to_a_quarter_share_and_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (_guard, logs) = Logs::capture();
    let key = ApiKey::new(KEY).unwrap();
    let limiter = RedisLimiter::new(&server.url(), BASE, &key, config(50))
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_reconnect_after(Duration::from_millis(300));
    let starts: Vec<u64> = (0..5).map(|_| admit_now(&limiter)).collect();
    assert!(!limiter.is_degraded());
    assert!(
        starts[4] - starts[0] >= 70_000,
        "4 periods of 20.3 ms: {starts:?}"
    );

    server.kill();
    let degraded: Vec<u64> = (0..8).map(|_| admit_now(&limiter)).collect();
    assert!(limiter.is_degraded());
    // A quarter of 50/s: 81 ms apart. Never unlimited.
    for w in degraded.windows(2) {
        let gap = w[1] - w[0];
        assert!((75_000..400_000).contains(&gap), "{degraded:?}");
    }
    // Reports while down neither panic nor fail.
    limiter.report(
        Instant::now(),
        &mistral_core::Report {
            ticket: None,
            model: Some("m".into()),
            limits: Default::default(),
            verdict: mistral_core::Verdict::Success,
            retry: None,
            estimated_tokens: 1,
            used_tokens: Some(1),
            attempt: 1,
            correlation_id: None,
            usage: None,
            size: Default::default(),
            origin: Default::default(),
            service_tier: None,
        },
    );
    assert_eq!(logs.count("WARN", "store failed"), 1, "{}", logs.text());

    server.spawn();
    std::thread::sleep(Duration::from_millis(350));
    admit_now(&limiter);
    assert!(!limiter.is_degraded(), "{}", logs.text());
    assert_eq!(logs.count("INFO", "is back"), 1, "{}", logs.text());
    let mut conn = server.conn();
    let exists: bool = redis::cmd("EXISTS")
        .arg(limiter.key_of("m"))
        .query(&mut conn)
        .unwrap();
    assert!(exists, "the budget is in Redis again");
    // A second outage is logged again, once.
    server.kill();
    admit_now(&limiter);
    admit_now(&limiter);
    assert_eq!(logs.count("WARN", "store failed"), 2, "{}", logs.text());
}

#[test]
fn an_unreachable_redis_from_the_start_admits_locally() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = ApiKey::new(KEY).unwrap();
    let spec = LimiterSpec::parse(&format!("redis://:hunter2@127.0.0.1:{port}")).unwrap();
    let limiter = stores::limiter_from_spec(&spec, BASE, &key, config(10)).unwrap();
    let shown = format!("{limiter:?}");
    assert!(
        shown.contains("RedisLimiter") && !shown.contains("hunter2"),
        "{shown}"
    );
    let starts: Vec<u64> = (0..4).map(|_| admit_now(&*limiter)).collect();
    // A quarter of 10/s: about 406 ms apart.
    assert!(starts[3] - starts[0] >= 3 * 390_000, "{starts:?}");
    assert!(matches!(
        stores::limiter_from_spec(
            &LimiterSpec::Redis("redis://[::1".into()),
            BASE,
            &key,
            LimiterConfig::default()
        ),
        Err(mistral_core::Error::Config(_))
    ));
}

fn ten_per_second(server: &RedisServer) -> RedisLimiter {
    RedisLimiter::new(&server.url(), BASE, &ApiKey::new(KEY).unwrap(), config(10))
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_reconnect_after(Duration::from_millis(100))
}

/// Redis killed with a second of the budget given out: the stand-in starts from that
/// level (from empty budgets, the next calls would go at once while every admission
/// Redis had given was still being spent).
#[test]
fn a_fallback_starts_from_the_last_known_state() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let limiter = ten_per_second(&server);
    let mut last = 0;
    for _ in 0..10 {
        last = fits_in(&limiter, "m");
    }
    assert!(last >= 850_000, "{last}");
    server.kill();
    let started = Instant::now();
    admit_now(&limiter);
    assert!(limiter.is_degraded());
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "the stand-in admitted at once what Redis had already given: {:?}",
        started.elapsed()
    );
}

/// Redis restarted empty while this process had a second given out and another one
/// still admitted on its stand-in: the first operation brings the budget back (at a
/// quarter share), so neither process gets a burst.
#[test]
fn a_redis_restarted_empty_is_rejoined_without_a_burst() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = ten_per_second(&server);
    let b = ten_per_second(&server);
    for _ in 0..5 {
        fits_in(&a, "m");
        fits_in(&b, "m");
    }
    server.kill();
    // B admits on its stand-in meanwhile (waiting there for the level Redis had).
    let b = std::sync::Arc::new(b);
    let waiting = {
        let b = std::sync::Arc::clone(&b);
        std::thread::spawn(move || admit_now(&*b))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(b.is_degraded());
    server.spawn();
    let mut conn = server.conn();
    let exists: bool = redis::cmd("EXISTS")
        .arg(a.key_of("m"))
        .query(&mut conn)
        .unwrap();
    assert!(!exists, "a restarted Redis is empty");
    let asked = Instant::now();
    let next = fits_in(&a, "m");
    assert!(next >= 500_000, "the empty Redis admitted at once: {next}");
    let a_at = asked + Duration::from_micros(next);
    let value: Vec<u8> = redis::cmd("GET")
        .arg(a.key_of("m"))
        .query(&mut conn)
        .unwrap();
    let state = codec::decode_value(&value, "m").unwrap();
    assert!(state.share <= stores::DEGRADED_SHARE, "{state:?}");
    // B comes back after its reconnect pause and joins the same budget.
    waiting.join().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let asked = Instant::now();
    let b_next = fits_in(&b, "m");
    assert!(!b.is_degraded());
    let b_at = asked + Duration::from_micros(b_next);
    assert!(b_at > a_at, "{b_at:?} before {a_at:?}");
}

/// Four real processes admit 50 requests a second through Redis while it is killed,
/// restarted empty, and killed and restarted again. Through every transition the fleet
/// stays within the limit: each stand-in starts from the level Redis last showed at a
/// quarter share, and an empty Redis is given back what the first process back knew.
#[test]
fn real_processes_stay_within_the_limit_through_redis_restarts() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<Child> = (0..4)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "child_admits_through_redis_restarts",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, i.to_string())
                .env("STORES_TEST_RESTART_URL", server.url())
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
    let per_child: Vec<Vec<u64>> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child failed:\n{stdout}");
            stdout
                .lines()
                .filter_map(|l| l.find("START ").map(|at| &l[at + 6..]))
                .map(|n| n.trim().parse().unwrap())
                .collect()
        })
        .collect();
    let all: Vec<u64> = per_child.iter().flatten().copied().collect();
    let max = max_in_window(&all, S);
    eprintln!(
        "4 processes through two Redis restarts: {} starts, max {max} in any 1 s (limit 50)",
        all.len()
    );
    assert!(all.len() == 4 * 50);
    // A slot of slack: a process that fails over while the others are already back may
    // take a slot the shared budget gave out meanwhile.
    assert!(max <= 52, "{max} starts in one second, limit 50");
}

/// Child mode of the test above: 50 calls of a 50/s budget through a `RedisLimiter` as a
/// client's are admitted (its fallback included), printing when each goes.
#[test]
fn child_admits_through_redis_restarts() {
    let (Ok(url), Ok(_)) = (
        std::env::var("STORES_TEST_RESTART_URL"),
        std::env::var(CHILD_ENV),
    ) else {
        return;
    };
    let limiter = RedisLimiter::new(&url, BASE, &ApiKey::new(KEY).unwrap(), config(50))
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .with_reconnect_after(Duration::from_millis(200));
    for _ in 0..50 {
        println!("START {}", admit_now(&limiter));
    }
}
