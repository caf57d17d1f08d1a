//! Admission latency through each store of the shared limiter, from the async client's
//! side: 512 tasks on a 2-worker tokio runtime each ask to be admitted at the same moment,
//! for several rounds, on a budget far above what they ask (so every one is admitted as
//! soon as its line reaches it); an admission's latency runs from the round's start to
//! its grant (so a store that blocks the workers, or serializes its callers, shows its
//! queue: a line admits up to `mistral_limiter::line::BATCH` callers per store operation).
//! Prints p50/p99 per store; `redis+1ms` is Redis behind a loopback proxy that delays
//! every reply by 1 ms.
//!
//! `cargo bench -p mistral-async --features redis --bench stores` (or
//! `cargo xtask bench --stores`); Redis is skipped when `redis-server` is not found
//! (`MISTRAL_TEST_REDIS_SERVER`, else `/usr/bin/redis-server`, else `PATH`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_async::stores::{
    Ask, AsyncLimiter, FileLimiter, Grant, LimiterConfig, LocalLimiter, RedisLimiter,
};
use mistral_async::{ApiKey, Limits, Priority};
use mistral_core::Sizing;

const TASKS: usize = 512;
const ROUNDS: usize = 20;
const BASE: &str = "http://127.0.0.1:9";

fn config() -> LimiterConfig {
    // Far above what the bench asks, so every caller is admitted when its line reaches it.
    LimiterConfig {
        default: Some(Limits::requests(1_000_000_000, Duration::from_secs(1))),
        ..LimiterConfig::default()
    }
}

fn ask() -> Ask {
    Ask {
        model: Some("m".into()),
        tokens: 1,
        size: Sizing::default(),
        attempt: 1,
        within: None,
        priority: Priority::Default,
    }
}

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Option<Redis> {
    let program = std::env::var_os("MISTRAL_TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.exists()))?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(program)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Redis(child, port);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A loopback TCP proxy to `port` that delays every chunk Redis sends back by `delay`
/// (from when it arrived: latency, not a lower throughput). Its threads live as long as
/// the process.
fn delaying_proxy(port: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
            let mut s_read = server;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match std::io::Read::read(&mut s_read, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let mut c_write = client;
            std::thread::spawn(move || {
                for (at, bytes) in rx {
                    let due = at + delay;
                    let left = due.saturating_duration_since(Instant::now());
                    std::thread::sleep(left);
                    if std::io::Write::write_all(&mut c_write, &bytes).is_err() {
                        return;
                    }
                }
            });
        }
    });
    proxy_port
}

/// One admission of a call of `m`; anything else than "go" is the store failing the bench.
async fn admit(limiter: &dyn AsyncLimiter) {
    let ask = ask();
    match limiter.admit(&ask).await {
        Grant::Go { .. } => {}
        other => panic!("expected an admission, got {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn measure(name: &str, limiter: Arc<dyn AsyncLimiter>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut latencies = Vec::with_capacity(TASKS * ROUNDS);
    let started = Instant::now();
    runtime.block_on(async {
        // One warm-up admission (a connection, a file).
        admit(&*limiter).await;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    tokio::spawn(async move {
                        admit(&*limiter).await;
                        start.elapsed()
                    })
                })
                .collect();
            for task in tasks {
                latencies.push(task.await.unwrap());
            }
        }
    });
    let total = started.elapsed();
    latencies.sort_unstable();
    println!(
        "{name:<9} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  ({} admissions, {TASKS} tasks x {ROUNDS} rounds on 2 workers, {:.2} s)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        latencies.len(),
        total.as_secs_f64()
    );
}

fn main() {
    let key = ApiKey::new("sk-bench").unwrap();
    println!("admission latency through the async client's stores (mistral_async::stores)");
    measure("local", Arc::new(LocalLimiter::with_config(config())));
    let dir = std::env::temp_dir().join(format!("mistral-stores-bench-{}", std::process::id()));
    let file = FileLimiter::at_path(dir.join("state"), config()).unwrap();
    measure("file", Arc::new(file));
    let _ = std::fs::remove_dir_all(&dir);
    match redis_server() {
        Some(server) => {
            let url = format!("redis://127.0.0.1:{}/", server.1);
            let redis = RedisLimiter::new(&url, BASE, &key, config()).unwrap();
            measure("redis", Arc::new(redis));
            let slow = delaying_proxy(server.1, Duration::from_millis(1));
            let url = format!("redis://127.0.0.1:{slow}/");
            let redis = RedisLimiter::new(&url, BASE, &key, config()).unwrap();
            measure("redis+1ms", Arc::new(redis));
        }
        None => println!("redis     skipped: no redis-server"),
    }
}
