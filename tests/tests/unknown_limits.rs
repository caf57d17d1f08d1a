//! Limits the server never announces, for both clients with their default limiter and
//! no configured limits: a real nginx `limit_req` (10 r/s, no burst, HTML 429s) in front
//! of the emulator, judged by nginx's own access log; and the emulator's own leaky bucket
//! and concurrency limit (at most K in flight), judged by the emulator's log.
//!
//! Each test asserts what the targets imply, with generous bounds: every call
//! succeeds, each admitted once; attempts per call ≤ 1.5 (the target is 1.10); makespan
//! ≤ 3 × the server's own best (the target is goodput ≥ 0.90). Run with `--nocapture`
//! to see the numbers; they belong in the bench.
//!
//! The nginx tests need nginx (`MISTRAL_TEST_NGINX=/usr/sbin/nginx`, set by `cargo xtask
//! test`, else `nginx` on PATH or `/usr/sbin/nginx`). Without it they fail when `CI` is
//! set and are skipped loudly otherwise.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mistral_core::Stats;
use mistral_core::models::{ChatRequest, Message};
use mistral_tests::emulator::{Config, Limits, Semantics};
use mistral_tests::{Emulator, Log};

const MODEL: &str = "mistral-small-latest";
/// Calls per run.
const CALLS: usize = 50;
/// Threads of a blocking run, tasks of an async run.
const CALLERS: usize = 32;
/// Most attempts per call the tests accept (the target is 1.10).
const MAX_ATTEMPTS_PER_CALL: f64 = 1.5;
/// Largest makespan accepted, as a multiple of the server's own best (the target is
/// goodput ≥ 0.90, about 1.11 ×).
const MAX_MAKESPAN_FACTOR: f64 = 3.0;

// ---------------------------------------------------------------------------------------
// The two clients, driven the same way
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Blocking,
    Async,
}

/// What a run of [`CALLS`] calls gave.
#[derive(Debug)]
struct Run {
    makespan: Duration,
    failures: Vec<String>,
    stats: Stats,
}

fn request(i: usize) -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user(format!("call {i}"))]).max_tokens(16)
}

/// [`CALLS`] chat calls from [`CALLERS`] threads or tasks through one client built with
/// nothing but the URL and the key (the default limiter, the default retry policy).
fn run(driver: Driver, url: &str, key: &str) -> Run {
    match driver {
        Driver::Blocking => {
            let client = mistral_blocking::Client::builder()
                .base_url(url)
                .api_key(key)
                .build()
                .expect("client");
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let failures = std::thread::scope(|s| {
                let handles: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let client = client.clone();
                        let next = next.clone();
                        s.spawn(move || {
                            let mut failures = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= CALLS {
                                    break failures;
                                }
                                if let Err(e) = client.chat(&request(i)) {
                                    failures.push(format!("call {i}: {e}"));
                                }
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("caller thread"))
                    .collect::<Vec<_>>()
            });
            Run {
                makespan: start.elapsed(),
                failures,
                stats: client.stats(),
            }
        }
        Driver::Async => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = mistral_async::Client::builder()
                    .base_url(url)
                    .api_key(key)
                    .build()
                    .expect("client");
                let next = Arc::new(AtomicUsize::new(0));
                let start = Instant::now();
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let client = client.clone();
                        let next = next.clone();
                        tokio::spawn(async move {
                            let mut failures = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= CALLS {
                                    break failures;
                                }
                                if let Err(e) = client.chat(&request(i)).await {
                                    failures.push(format!("call {i}: {e}"));
                                }
                            }
                        })
                    })
                    .collect();
                let mut failures = Vec::new();
                for task in tasks {
                    failures.extend(task.await.expect("caller task"));
                }
                Run {
                    makespan: start.elapsed(),
                    failures,
                    stats: client.stats(),
                }
            })
        }
    }
}

/// What the server saw, whoever counted it.
#[derive(Debug)]
struct Seen {
    admitted: usize,
    refused: usize,
    other: usize,
}

/// Prints the numbers, then checks them against the bounds.
fn judge(name: &str, run: &Run, seen: &Seen, best: Duration) {
    let attempts = (seen.admitted + seen.refused + seen.other) as f64 / CALLS as f64;
    let factor = run.makespan.as_secs_f64() / best.as_secs_f64();
    eprintln!(
        "{name}: {CALLS} calls, {CALLERS} callers: makespan {:.2} s (server's best {:.2} s, \
         {factor:.2} x, goodput {:.2}), {} admitted, {} 429s, {} other, {attempts:.2} \
         attempts per call (client counted {} attempts, {} retries, waited {:.1} s), \
         {} failures",
        run.makespan.as_secs_f64(),
        best.as_secs_f64(),
        1.0 / factor,
        seen.admitted,
        seen.refused,
        seen.other,
        run.stats.attempts,
        run.stats.retries,
        run.stats.waited.as_secs_f64(),
        run.failures.len(),
    );
    assert!(
        run.failures.is_empty(),
        "{name}: {} calls failed, first: {}",
        run.failures.len(),
        run.failures[0]
    );
    assert_eq!(
        seen.admitted, CALLS,
        "{name}: every call admitted exactly once"
    );
    assert_eq!(seen.other, 0, "{name}: only 200s and 429s");
    assert!(
        attempts <= MAX_ATTEMPTS_PER_CALL,
        "{name}: {attempts:.2} attempts per call (bound {MAX_ATTEMPTS_PER_CALL}, target 1.10)"
    );
    assert!(
        factor <= MAX_MAKESPAN_FACTOR,
        "{name}: makespan {:.2} s is {factor:.2} x the server's best {:.2} s (bound \
         {MAX_MAKESPAN_FACTOR} x; the target, goodput 0.90, is 1.11 x)",
        run.makespan.as_secs_f64(),
        best.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------

/// nginx's rate in the tests: `rate=10r/s`, no burst.
const NGINX_RATE: u64 = 10;

/// A directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "mistral-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The nginx binary, or `None` (said loudly) when there is none and `CI` is not set.
fn nginx_binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MISTRAL_TEST_NGINX") {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![PathBuf::from("nginx"), PathBuf::from("/usr/sbin/nginx")],
    };
    let works = |bin: &Path| {
        Command::new(bin)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(bin) = candidates.iter().find(|b| works(b)) {
        return Some(bin.clone());
    }
    // As `cargo xtask test` reads it: set, and not empty, `0` or `false`.
    let ci = std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"));
    assert!(
        !ci,
        "nginx not found ({candidates:?}) and CI is set: install nginx-light (cargo xtask \
         test does) or set MISTRAL_TEST_NGINX"
    );
    eprintln!(
        "\n*** SKIP: nginx not found ({candidates:?}); the nginx tests did not run. Install \
         nginx-light or set MISTRAL_TEST_NGINX. ***\n"
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A real nginx with its own prefix and config in a temp dir, killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Nginx {
    /// nginx on a free loopback port: `limit_req` at `rate` r/s without burst (429 with
    /// nginx's own HTML page), `proxy_pass` to `upstream`, an access log of `$msec
    /// $status $request_uri`.
    fn start(bin: &Path, upstream: std::net::SocketAddr, rate: u64) -> Nginx {
        let mut last_error = String::new();
        // The free port may be taken between the probe and nginx's bind: try again.
        for _ in 0..3 {
            let dir = TempDir::new("nginx");
            let port = free_port();
            let root = dir.0.display().to_string();
            for sub in ["logs", "tmp"] {
                std::fs::create_dir_all(dir.0.join(sub)).expect("nginx dirs");
            }
            let conf = format!(
                "daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    log_format judge '$msec $status $request_uri';
    access_log {root}/logs/access.log judge;
    limit_req_zone $binary_remote_addr zone=api:1m rate={rate}r/s;
    limit_req_status 429;
    upstream emulator {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=api;
            proxy_pass http://emulator;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
            );
            let conf_path = dir.0.join("nginx.conf");
            std::fs::File::create(&conf_path)
                .and_then(|mut f| f.write_all(conf.as_bytes()))
                .expect("nginx.conf");
            let child = Command::new(bin)
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(dir.0.join("logs/error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut nginx = Nginx { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return nginx;
                }
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    last_error = format!(
                        "nginx exited ({status}): {}",
                        std::fs::read_to_string(nginx.dir.0.join("logs/error.log"))
                            .unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log: `(msec, status, uri)` per request, in the order nginx wrote them.
    fn access_log(&self) -> Vec<(f64, u16, String)> {
        let text = std::fs::read_to_string(self.dir.0.join("logs/access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let msec = parts.next()?.parse().ok()?;
                let status = parts.next()?.parse().ok()?;
                Some((msec, status, parts.next()?.to_owned()))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (`master_process off`): killing it stops nginx.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn through_nginx(driver: Driver) {
    let Some(bin) = nginx_binary() else {
        return;
    };
    // The emulator with no rate limit: nginx is the only limiter, and says nothing.
    let emulator = Emulator::start(Config {
        default_limits: Limits::new(None, None),
        headers: false,
        ..Config::default()
    });
    let nginx = Nginx::start(&bin, emulator.addr(), NGINX_RATE);
    let run = run(driver, &nginx.url(), emulator.key());
    let log = nginx.access_log();
    drop(nginx);
    let chat: Vec<&(f64, u16, String)> = log
        .iter()
        .filter(|(_, _, uri)| uri == "/v1/chat/completions")
        .collect();
    let seen = Seen {
        admitted: chat.iter().filter(|e| e.1 == 200).count(),
        refused: chat.iter().filter(|e| e.1 == 429).count(),
        other: chat.iter().filter(|e| e.1 != 200 && e.1 != 429).count(),
    };
    // What nginx admitted, the emulator served: nothing else reached it.
    assert_eq!(emulator.log().admitted(), seen.admitted);
    // nginx's own guarantee, seen in its log: 200s 1/rate apart at least (the log's
    // $msec is the end of each request, so allow a few ms of jitter).
    let times: Vec<f64> = chat.iter().filter(|e| e.1 == 200).map(|e| e.0).collect();
    let closest = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    eprintln!("nginx: closest admitted pair {:.3} s apart", closest);
    // The best nginx allows: the first at once, then one every 1/rate.
    let best = Duration::from_secs_f64((CALLS - 1) as f64 / NGINX_RATE as f64);
    judge(&format!("nginx 10 r/s, {driver:?}"), &run, &seen, best);
}

#[test]
fn nginx_limit_req_blocking_threads() {
    through_nginx(Driver::Blocking);
}

#[test]
fn nginx_limit_req_async_tasks() {
    through_nginx(Driver::Async);
}

// ---------------------------------------------------------------------------------------
// The emulator's leaky bucket and concurrency limit, nothing announced
// ---------------------------------------------------------------------------------------

fn seen_by(log: &Log) -> Seen {
    Seen {
        admitted: log.admitted_for(MODEL),
        refused: log.count_429(),
        other: log.total() - log.admitted() - log.count_429(),
    }
}

fn leaky(driver: Driver) {
    // nginx's rule in the emulator: 10 per second, no burst, no headers, gateway body.
    let emulator = Emulator::start(
        Config {
            semantics: Semantics::Leaky,
            window_secs: 1.0,
            headers: false,
            rate_limit_body: Some(mistral_tests::RateLimitBody::Gateway),
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(10), None)),
    );
    let run = run(driver, &emulator.url(), emulator.key());
    let log = emulator.log();
    assert!(log.violations().is_empty(), "{:?}", log.violations());
    let best = Duration::from_secs_f64((CALLS - 1) as f64 / 10.0);
    judge(
        &format!("leaky 10 r/s, {driver:?}"),
        &run,
        &seen_by(&log),
        best,
    );
}

#[test]
fn leaky_bucket_blocking_threads() {
    leaky(Driver::Blocking);
}

#[test]
fn leaky_bucket_async_tasks() {
    leaky(Driver::Async);
}

/// At most this many in flight.
const K: u64 = 4;

fn concurrency(driver: Driver) {
    // At most 4 in flight, 200-500 ms each; 429 with the 1300 body and no headers; no
    // rate limit.
    let emulator = Emulator::start(
        Config {
            headers: false,
            latency_ms: 200,
            latency_jitter_ms: 300,
            ..Config::default()
        }
        .model(
            MODEL,
            Limits {
                concurrency: Some(K),
                ..Limits::new(None, None)
            },
        ),
    );
    let run = run(driver, &emulator.url(), emulator.key());
    let log = emulator.log();
    assert!(log.violations().is_empty(), "{:?}", log.violations());
    assert!(log.max_in_flight(MODEL) <= K as usize);
    // The best the server allows: its K places always busy, each call its drawn
    // service time.
    let busy: Duration = log
        .in_flight(MODEL)
        .iter()
        .map(|h| h.released - h.taken)
        .sum();
    let best = busy / K as u32;
    eprintln!(
        "concurrency: at most {} in flight of {K}",
        log.max_in_flight(MODEL)
    );
    judge(
        &format!("concurrency {K}, {driver:?}"),
        &run,
        &seen_by(&log),
        best,
    );
}

#[test]
fn concurrency_limit_blocking_threads() {
    concurrency(Driver::Blocking);
}

#[test]
fn concurrency_limit_async_tasks() {
    concurrency(Driver::Async);
}
