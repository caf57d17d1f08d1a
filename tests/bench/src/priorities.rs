//! The mixed scenario of `cargo xtask bench --priorities`: a batch backlog and a person on
//! one saturated budget. 64 batch threads keep their calls queued for a while on a strict
//! leaky bucket (the emulator's, 20 per second, no burst, limits announced) while one
//! interactive thread sends a call a second. Per variant: the interactive calls' latency
//! (p50, p99, worst), the batch's goodput (its calls per second against the limit) and
//! the 429s the server sent. Variants: ours with priorities (batch `Priority::Batch`, the
//! person `Priority::Interactive`), ours FIFO (both `Priority::Default`: one queue), and
//! the uncoordinated baselines (no shared limiter: the official SDKs' backoff, best
//! practice's full jitter), each thread on its own.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mistral_blocking::stores::NoLimiter;
use mistral_blocking::{ChatRequest, Client, Message, Priority};
use mistral_emulator::{Config, Emulator, Era, Limits, Semantics};

use crate::Strategy;

const MODEL: &str = "mistral-small-latest";
/// The budget: requests per second, no burst.
pub const RATE: u64 = 20;
/// Batch threads (each keeps one call queued).
pub const BATCH_THREADS: usize = 64;
/// How long the batch threads start new calls.
pub const BATCH_FOR: Duration = Duration::from_secs(12);
/// Interactive calls, one a second from `PERSON_FROM`.
pub const PERSON_CALLS: usize = 10;
const PERSON_FROM: Duration = Duration::from_secs(2);

/// One variant of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Our limiter, the batch as `Priority::Batch`, the person as `Priority::Interactive`.
    Priorities,
    /// Our limiter, every call `Priority::Default`: one queue, first come first served.
    Fifo,
    /// No shared limiter: a baseline strategy on every thread.
    Uncoordinated(Strategy),
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 4] = [
        Variant::Priorities,
        Variant::Fifo,
        Variant::Uncoordinated(Strategy::OfficialSdk),
        Variant::Uncoordinated(Strategy::BestPractice),
    ];

    /// Its name in the report.
    pub fn name(self) -> String {
        match self {
            Variant::Priorities => "ours, priorities".into(),
            Variant::Fifo => "ours, FIFO (one class)".into(),
            Variant::Uncoordinated(s) => format!("{} (no shared limiter)", s.name()),
        }
    }
}

/// What one variant measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The variant.
    pub variant: Variant,
    /// Each interactive call's latency (its start to its answer).
    pub person: Vec<Duration>,
    /// Interactive calls that failed.
    pub person_errors: usize,
    /// Batch calls that succeeded.
    pub batch_done: usize,
    /// Batch calls that failed.
    pub batch_errors: usize,
    /// From the first call to the last answer.
    pub span: Duration,
    /// Requests the server admitted.
    pub admitted: usize,
    /// 429s the server sent.
    pub refused: usize,
}

impl Outcome {
    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.person.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }

    /// The batch's calls per second over the run, against the limit.
    pub fn batch_goodput(&self) -> f64 {
        self.batch_done as f64 / self.span.as_secs_f64().max(1e-9) / RATE as f64
    }
}

fn client(emu: &Emulator, variant: Variant, priority: Priority) -> Client {
    let builder = Client::builder().api_key(emu.key()).base_url(emu.url());
    let built = match variant {
        Variant::Uncoordinated(strategy) => builder
            .retry_policy(strategy.policy())
            .limiter(Arc::new(NoLimiter))
            .build(),
        Variant::Fifo => builder.priority(Priority::Default).build(),
        Variant::Priorities => builder.priority(priority).build(),
    };
    built.expect("a client of the emulator")
}

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")]).max_tokens(8)
}

/// Runs one variant against a fresh emulator.
pub fn run_variant(variant: Variant) -> Outcome {
    let emu = Emulator::start(
        Config {
            era: Era::Y2026,
            semantics: Semantics::Leaky,
            window_secs: 1.0,
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(RATE), None)),
    );
    let batch = client(&emu, variant, Priority::Batch);
    let person = client(&emu, variant, Priority::Interactive);
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let (latencies, person_errors) = std::thread::scope(|s| {
        for _ in 0..BATCH_THREADS {
            s.spawn(|| {
                while start.elapsed() < BATCH_FOR {
                    match batch.chat(request()) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        let person = s.spawn(|| {
            std::thread::sleep(PERSON_FROM);
            let (mut latencies, mut errors) = (Vec::new(), 0);
            for _ in 0..PERSON_CALLS {
                let t = Instant::now();
                match person.chat(request()) {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            (latencies, errors)
        });
        person.join().expect("the interactive thread")
    });
    let span = start.elapsed();
    let log = emu.log();
    Outcome {
        variant,
        person: latencies,
        person_errors,
        batch_done: done.into_inner(),
        batch_errors: failed.into_inner(),
        span,
        admitted: log.admitted_for(MODEL),
        refused: log.count_429(),
    }
}

/// Runs every variant, writes `priorities.md` under `out` and returns its text.
pub fn run(out: &Path) -> String {
    let outcomes: Vec<Outcome> = Variant::ALL
        .into_iter()
        .map(|v| {
            eprintln!("[priorities] {} ...", v.name());
            run_variant(v)
        })
        .collect();
    let text = markdown(&outcomes);
    if let Err(e) =
        std::fs::create_dir_all(out).and_then(|()| std::fs::write(out.join("priorities.md"), &text))
    {
        eprintln!("[priorities] cannot write the report: {e}");
    }
    text
}

/// The report: one row per variant.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Interactive before batch\n\n{BATCH_THREADS} batch threads keep calls queued for \
         {} s on a strict leaky bucket of {RATE}/s (no burst, limits announced; one pacing \
         interval is {} ms) while one interactive thread sends {PERSON_CALLS} calls, one a \
         second from {} s in. Batch goodput: its calls per second over the run against the \
         limit.\n",
        BATCH_FOR.as_secs(),
        1000 / RATE,
        PERSON_FROM.as_secs()
    );
    let _ = writeln!(
        s,
        "| variant | interactive p50 | p99 | worst | failed | batch calls | batch goodput | 429s | admitted |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let worst = o.person.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {:.3} s | {:.3} s | {:.3} s | {} | {} ({} failed) | {:.2} | {} | {} |",
            o.variant.name(),
            o.percentile(0.5).as_secs_f64(),
            o.percentile(0.99).as_secs_f64(),
            worst.as_secs_f64(),
            o.person_errors,
            o.batch_done,
            o.batch_errors,
            o.batch_goodput(),
            o.refused,
            o.admitted,
        );
    }
    s
}
