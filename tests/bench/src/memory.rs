//! Memory per call in flight (`mistral-bench --memory`): the resident memory and the
//! live heap of a process holding thousands of `mistral-async` calls at once, per call,
//! in the two places a call waits:
//!
//! - **in the limiter's line**: admitted one at a time by a configured limit (1 per
//!   hour), every other call waits in the in-process limiter's line, holding no
//!   connection;
//! - **at the server**: admitted at once, every call waits for a response the emulator
//!   holds back (45 s), on a connection of its own.
//!
//! Each measurement runs in a child process of the bench binary (`--memory-child`),
//! against an emulator in this process, so the child's memory is the client's alone: its
//! `VmRSS` and its live heap (the bench binary counts allocations: `stats_alloc`) after a
//! warm-up call, then again once every call waits, the difference divided by the calls.
//! The prompt is 1,000 characters (the request body about 1.1 KB).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_core::CallOptions;
use mistral_core::limiter::{LimiterConfig, Limits as ClientLimits};
use mistral_core::models::{ChatRequest, Message};
use mistral_emulator::{Config, Emulator, Limits};
use mistral_limiter::LocalLimiter;
use serde::{Deserialize, Serialize};

/// The command-line flag that makes the bench binary a memory child.
pub const MEMORY_CHILD_FLAG: &str = "--memory-child";

const MODEL: &str = "mistral-small-latest";
/// The model of the warm-up call (outside the measured budget).
const WARM_MODEL: &str = "open-mistral-nemo";
/// How long the emulator holds every response when calls wait at the server.
const SERVER_HOLDS: Duration = Duration::from_secs(45);
/// Characters of every call's prompt.
pub const PROMPT_CHARS: usize = 1_000;

/// Where the calls wait while memory is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Waiting {
    /// In the in-process limiter's line (no connection).
    Line,
    /// At the server, for a response it holds back (one connection each).
    Server,
}

impl Waiting {
    fn name(self) -> &'static str {
        match self {
            Waiting::Line => "in the limiter's line",
            Waiting::Server => "at the server (a slow response)",
        }
    }
}

/// One child's job.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MemoryJob {
    waiting: Waiting,
    calls: usize,
    base_url: String,
    key: String,
}

/// One measurement: `calls` async calls waiting in one place.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryRow {
    /// Where the calls waited.
    pub waiting: String,
    /// Calls in flight.
    pub calls: usize,
    /// The child's resident memory after the warm-up call, KiB.
    pub rss_before_kib: u64,
    /// The child's resident memory with every call waiting, KiB.
    pub rss_after_kib: u64,
    /// Live heap bytes allocated by the calls (after less before), when counted.
    pub heap_bytes: Option<i64>,
    /// Live heap blocks allocated by the calls, when counted.
    pub heap_blocks: Option<i64>,
    /// The size of one `client.chat(...)` future (each task holds one).
    pub future_bytes: usize,
    /// How long until every call waited (spawned, in line or sent), ms.
    pub ready_ms: u64,
    /// Why the row has no numbers.
    pub error: Option<String>,
}

impl MemoryRow {
    /// Resident memory per call, KiB.
    pub fn rss_kib_per_call(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / self.calls.max(1) as f64
    }

    /// Live heap per call, bytes.
    pub fn heap_per_call(&self) -> Option<f64> {
        self.heap_bytes.map(|b| b as f64 / self.calls.max(1) as f64)
    }

    /// Live heap blocks per call.
    pub fn blocks_per_call(&self) -> Option<f64> {
        self.heap_blocks
            .map(|b| b as f64 / self.calls.max(1) as f64)
    }
}

/// Runs every measurement: `calls` (e.g. 4,000 and 10,000) in each place, one child
/// each, with `exe` the bench binary.
pub fn run(exe: &Path, calls: &[usize]) -> Vec<MemoryRow> {
    let mut rows = Vec::new();
    for waiting in [Waiting::Line, Waiting::Server] {
        for &n in calls {
            let row = measure(exe, waiting, n).unwrap_or_else(|e| MemoryRow {
                waiting: waiting.name().into(),
                calls: n,
                error: Some(e),
                ..MemoryRow::default()
            });
            eprintln!("[memory] {}", line_of(&row));
            rows.push(row);
        }
    }
    rows
}

fn measure(exe: &Path, waiting: Waiting, calls: usize) -> Result<MemoryRow, String> {
    // The limit that keeps calls in line is the client's own (configured): the server
    // has none.
    let limits = Limits::new(None, None);
    let emulator = Emulator::start(
        Config {
            window_secs: 60.0,
            latency_ms: match waiting {
                Waiting::Line => 0,
                Waiting::Server => SERVER_HOLDS.as_millis() as u64,
            },
            max_log_entries: 4 * calls + 100,
            ..Config::default()
        }
        .model(MODEL, limits)
        .model(WARM_MODEL, Limits::new(None, None)),
    );
    let job = MemoryJob {
        waiting,
        calls,
        base_url: emulator.url(),
        key: emulator.key().to_owned(),
    };
    // MISTRAL_BENCH_MEMORY_WRAP runs the child under a profiler (e.g. `heaptrack -o
    // /tmp/memory`), which then counts in its memory.
    let wrap = std::env::var("MISTRAL_BENCH_MEMORY_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = command
        .arg(MEMORY_CHILD_FLAG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = serde_json::to_string(&job).map_err(|e| e.to_string())?;
    writeln!(stdin, "{line}").map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(stdout).lines();
    let mut result = Err("the child ended without a result".to_owned());
    while let Some(Ok(text)) = lines.next() {
        if text == "spawned" {
            // Every call is admitted at once: wait until the server holds them all.
            // Every call is admitted at once: wait until the server holds them all (a
            // few connections may take longer on a loaded machine: 99 % will do).
            let until = Instant::now() + Duration::from_secs(30);
            let all = calls as u64 + 1;
            while emulator.requests_received() < all && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let got = emulator.requests_received();
            if got * 100 < all * 99 {
                result = Err(format!("the server got {got} of {all} requests"));
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            writeln!(stdin, "measure").map_err(|e| e.to_string())?;
        } else if text.starts_with('{') {
            result = serde_json::from_str::<MemoryRow>(&text).map_err(|e| e.to_string());
            break;
        }
    }
    // The child exits once it has printed (a profiler wrapping it writes its data then).
    drop(stdin);
    let until = Instant::now() + Duration::from_secs(20);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The child's side: reads a job on stdin, measures, prints one JSON row, exits.
pub fn child_main() -> ! {
    let mut input = BufReader::new(std::io::stdin());
    let mut line = String::new();
    let row = match input.read_line(&mut line) {
        Ok(_) => match serde_json::from_str::<MemoryJob>(&line) {
            Ok(job) => child_measure(&job, &mut input).unwrap_or_else(|e| MemoryRow {
                waiting: job.waiting.name().into(),
                calls: job.calls,
                error: Some(e),
                ..MemoryRow::default()
            }),
            Err(e) => MemoryRow {
                error: Some(format!("the child could not read its job: {e}")),
                ..MemoryRow::default()
            },
        },
        Err(e) => MemoryRow {
            error: Some(format!("the child could not read stdin: {e}")),
            ..MemoryRow::default()
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(&row).unwrap_or_default());
    let _ = out.flush();
    std::process::exit(0)
}

fn request(model: &str, i: usize) -> ChatRequest {
    let mut prompt = format!("request {i}: ");
    while prompt.len() < PROMPT_CHARS {
        prompt.push_str("lorem ipsum dolor sit amet ");
    }
    prompt.truncate(PROMPT_CHARS);
    ChatRequest::new(model, vec![Message::user(prompt)]).max_tokens(16)
}

fn child_measure(job: &MemoryJob, input: &mut impl BufRead) -> Result<MemoryRow, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let per_hour = |n| ClientLimits::requests(n, Duration::from_secs(3600));
    let config = match job.waiting {
        // One call an hour: the first goes, every other waits in line.
        Waiting::Line => LimiterConfig {
            default: Some(per_hour(1_000_000_000)),
            models: [(MODEL.to_owned(), per_hour(1))].into_iter().collect(),
            ..LimiterConfig::default()
        },
        // No wait before sending.
        Waiting::Server => LimiterConfig {
            default: Some(per_hour(1_000_000_000_000)),
            ..LimiterConfig::default()
        },
    };
    let limiter = Arc::new(LocalLimiter::with_config(config));
    runtime.block_on(async {
        let client = mistral_async::Client::builder()
            .base_url(job.base_url.as_str())
            .api_key(job.key.as_str())
            .limiter(limiter.clone())
            .build()
            .map_err(|e| e.to_string())?
            .with_options(CallOptions::new().no_deadline());
        client
            .chat(request(WARM_MODEL, 0))
            .await
            .map_err(|e| format!("the warm-up call failed: {e}"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let future_bytes = std::mem::size_of_val(&client.chat(request(MODEL, 0)));
        let before = (rss_kib(), heap());
        let spawned = Instant::now();
        let mut tasks = Vec::with_capacity(job.calls);
        for i in 0..job.calls {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let _ = client.chat(request(MODEL, i)).await;
            }));
        }
        match job.waiting {
            Waiting::Line => {
                let until = Instant::now() + Duration::from_secs(60);
                loop {
                    let waiting: u64 = limiter.line(MODEL).waiting.iter().sum();
                    if waiting as usize + 1 >= job.calls {
                        break;
                    }
                    if Instant::now() > until {
                        return Err(format!("{waiting} of {} calls in line", job.calls));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Waiting::Server => {
                println!("spawned");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                tokio::task::block_in_place(|| input.read_line(&mut line))
                    .map_err(|e| e.to_string())?;
            }
        }
        let ready_ms = spawned.elapsed().as_millis() as u64
            - match job.waiting {
                Waiting::Line => 500,
                Waiting::Server => 0,
            };
        let after = (rss_kib(), heap());
        let delta = |f: fn(&(u64, u64)) -> u64| match (before.1, after.1) {
            (Some(b), Some(a)) if f(&a) > 0 => Some(f(&a) as i64 - f(&b) as i64),
            _ => None,
        };
        let row = MemoryRow {
            waiting: job.waiting.name().into(),
            calls: job.calls,
            rss_before_kib: before.0,
            rss_after_kib: after.0,
            heap_bytes: delta(|h| h.0),
            heap_blocks: delta(|h| h.1),
            future_bytes,
            ready_ms,
            error: None,
        };
        drop(tasks);
        Ok(row)
    })
}

/// This process's resident memory now (`VmRSS`), KiB (0 where unknown).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Live heap bytes and blocks, when this binary counts its allocations.
fn heap() -> Option<(u64, u64)> {
    let s = stats_alloc::INSTRUMENTED_SYSTEM.stats();
    if s.allocations == 0 {
        return None;
    }
    let bytes = (s.bytes_allocated as u64).saturating_sub(s.bytes_deallocated as u64);
    let blocks = (s.allocations as u64).saturating_sub(s.deallocations as u64);
    Some((bytes, blocks))
}

fn line_of(row: &MemoryRow) -> String {
    match &row.error {
        Some(e) => format!("{} calls {}: not measured ({e})", row.calls, row.waiting),
        None => format!(
            "{} calls {}: RSS {} -> {} KiB, {:.1} KiB per call; heap {} per call in {} blocks; \
             the call's future {} B; all waiting after {} ms",
            row.calls,
            row.waiting,
            row.rss_before_kib,
            row.rss_after_kib,
            row.rss_kib_per_call(),
            row.heap_per_call()
                .map_or("?".into(), |b| format!("{:.0} B", b)),
            row.blocks_per_call()
                .map_or("?".into(), |b| format!("{b:.1}")),
            row.future_bytes,
            row.ready_ms,
        ),
    }
}

/// The rows as a markdown table.
pub fn markdown(rows: &[MemoryRow]) -> String {
    let mut out = String::from(
        "## Memory per call in flight (mistral-async)\n\n\
         | calls waiting | where | RSS before → with them | RSS per call | live heap per call | heap blocks per call | a call's future |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        match &row.error {
            Some(e) => out.push_str(&format!(
                "| {} | {} | not measured: {e} | | | | |\n",
                row.calls, row.waiting
            )),
            None => out.push_str(&format!(
                "| {} | {} | {:.1} → {:.1} MiB | {:.1} KiB | {} | {} | {} B |\n",
                row.calls,
                row.waiting,
                row.rss_before_kib as f64 / 1024.0,
                row.rss_after_kib as f64 / 1024.0,
                row.rss_kib_per_call(),
                row.heap_per_call()
                    .map_or("?".into(), |b| format!("{:.1} KiB", b / 1024.0)),
                row.blocks_per_call()
                    .map_or("?".into(), |b| format!("{b:.0}")),
                row.future_bytes,
            )),
        }
    }
    out.push_str(&format!(
        "\nEach row is one child process of the bench holding that many `client.chat` \
         calls (a {PROMPT_CHARS}-character prompt) at once, against an emulator in the \
         parent: in the line, a configured limit of one call an hour admits the first and \
         every other waits; at the server, every call is admitted and the emulator holds \
         its response {} s. Per call: (with them − before) ÷ calls, after a warm-up \
         call.\n",
        SERVER_HOLDS.as_secs()
    ));
    out
}
