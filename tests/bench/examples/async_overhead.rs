//! A profiling aid for the async client's overhead (issue 20, item 8): N chat calls from
//! 8 tasks on a 2-worker runtime to an in-process emulator that announces limits never
//! reached, through one of
//!
//! - `bare`: plain reqwest (the client's own TLS and redirect settings), serializing the
//!   same request and decoding the same response as the client;
//! - `timer`: the same with a tokio timeout around each exchange (the cost of a timer);
//! - `xport`: the same exchange as the client's transport makes it (an `http::Request`
//!   converted to reqwest's, the body read chunk by chunk);
//! - `ours`: `mistral-async` with the default in-process limiter;
//! - `nolim`: `mistral-async` with no limiter.
//!
//! `cargo run --release -p mistral-bench --example async_overhead -- ours 20000`, under
//! `perf record --call-graph dwarf` or `perf stat`. The bench's figures come from
//! `mistral-bench` (alternating rounds), not from this.
use std::sync::Arc;
use std::time::Instant;

use mistral_bench::workload::Workload;
use mistral_core::models::ChatResponse;
use mistral_emulator::{Config, Emulator, Limits};
use mistral_limiter::LocalLimiter;

#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "ours".into());
    assert!(
        ["bare", "timer", "xport", "ours", "nolim"].contains(&which.as_str()),
        "bare, timer, ours or nolim"
    );
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let config = Config {
        window_secs: 1.0,
        max_log_entries: 100_000,
        ..Config::default()
    }
    .model(
        "mistral-small-latest",
        Limits::new(Some(1_000_000), Some(1_000_000_000)),
    );
    let emulator = Emulator::start(config);
    let base = emulator.url();
    let url = format!("{base}/v1/chat/completions");
    let auth = format!("Bearer {}", emulator.key());
    let workload = Arc::new(Workload::uniform("mistral-small-latest", n, 40));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b = mistral_async::Client::builder()
        .base_url(base.as_str())
        .api_key(emulator.key());
    let client = if which == "nolim" {
        b.limiter(Arc::new(mistral_core::limiter::NoLimiter))
            .build()
            .unwrap()
    } else {
        b.limiter(Arc::new(LocalLimiter::new())).build().unwrap()
    };
    let bare = mistral_async::http_client_builder().build().unwrap();
    let ways = 8;
    let per_task = n / ways;
    let start = Instant::now();
    let allocs = stats_alloc::INSTRUMENTED_SYSTEM.stats().allocations;
    runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for w in 0..ways {
            let (bare, url, auth, workload, client, which) = (
                bare.clone(),
                url.clone(),
                auth.clone(),
                workload.clone(),
                client.clone(),
                which.clone(),
            );
            set.spawn(async move {
                for k in 0..per_task {
                    let i = w * per_task + k;
                    if which == "xport" {
                        let body = serde_json::to_vec(&workload.request(i)).unwrap();
                        let req = reqwest::Request::try_from(
                            ::http::Request::builder()
                                .method("POST")
                                .uri(url.as_str())
                                .header("authorization", auth.as_str())
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap(),
                        )
                        .unwrap();
                        let mut response = bare.execute(req).await.unwrap();
                        let mut buf = Vec::new();
                        while let Some(chunk) = response.chunk().await.unwrap() {
                            buf.extend_from_slice(&chunk);
                        }
                        let _: ChatResponse = serde_json::from_slice(&buf).unwrap();
                    } else if which != "bare" && which != "timer" {
                        client.chat(workload.request(i)).await.unwrap();
                    } else {
                        let body = serde_json::to_vec(&workload.request(i)).unwrap();
                        let fut = bare
                            .post(&url)
                            .header("Authorization", &auth)
                            .header("Content-Type", "application/json")
                            .body(body)
                            .send();
                        let response = if which == "timer" {
                            tokio::time::timeout(std::time::Duration::from_secs(60), fut)
                                .await
                                .unwrap()
                                .unwrap()
                        } else {
                            fut.await.unwrap()
                        };
                        let bytes = response.bytes().await.unwrap();
                        let _: ChatResponse = serde_json::from_slice(&bytes).unwrap();
                    }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    let e = start.elapsed();
    let allocs = stats_alloc::INSTRUMENTED_SYSTEM.stats().allocations - allocs;
    eprintln!(
        "{which}: {:.1} allocations a call (client and emulator)",
        allocs as f64 / n as f64
    );
    if which == "ours" {
        eprintln!("{:?}", client.stats());
    }
    eprintln!(
        "{which}: {n} in {:?} = {:.1} us/req",
        e,
        e.as_secs_f64() * 1e6 / n as f64
    );
}
