//! One process's part of a run: a share of a workload sent through one strategy, with
//! what each call took and what the process spent.
//!
//! A [`Job`] is plain data (JSON), so a child process can run it: the bench re-executes
//! itself with `--child`, writes the job on the child's stdin and reads a [`JobResult`]
//! from its stdout ([`super::child`]). [`run_job`] runs one in the current process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mistral_core::limiter::LimiterConfig;
use mistral_core::{Error, Limiter, NoLimiter, Stats};
use mistral_limiter::LocalLimiter;
use serde::{Deserialize, Serialize};

use super::measure;
use super::strategy::{Runtime, Strategy};
use super::workload::Workload;

/// Where the calls of a job are paced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreSpec {
    /// No limiter at all ([`NoLimiter`]): every call goes when its retry logic says.
    None,
    /// A fresh [`LocalLimiter`] shared by every thread or task of the job.
    Local,
    /// A `FileLimiter` on this state file, shared with the other processes.
    File(PathBuf),
    /// A `RedisLimiter` on this server, shared with the other processes.
    Redis(String),
}

/// One process's part of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The emulator (or server) base URL.
    pub url: String,
    /// The API key.
    pub key: String,
    /// The retry strategy (and driver).
    pub strategy: Strategy,
    /// Where calls are paced.
    pub store: StoreSpec,
    /// The whole run's workload.
    pub workload: Workload,
    /// This job sends requests `i` with `i % shares == share` (in order).
    pub share: usize,
    /// Number of jobs the workload is shared out to.
    pub shares: usize,
    /// Threads (blocking) or tasks (async) of this job.
    pub concurrency: usize,
    /// The run's time zero, microseconds since the Unix epoch: no call starts before it,
    /// and every instant reported is measured from it.
    pub epoch_unix_us: u64,
    /// No call starts later than this after the epoch.
    pub budget_ms: u64,
    /// How long calls still running at the end of the budget may take to finish.
    pub grace_ms: u64,
    /// Base of the clients' jitter seeds.
    pub seed: u64,
}

impl Job {
    /// The workload indexes this job sends, in order.
    pub fn indexes(&self) -> Vec<usize> {
        let shares = self.shares.max(1);
        (0..self.workload.len())
            .filter(|i| i % shares == self.share % shares)
            .collect()
    }
}

/// One finished call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Index in the workload.
    pub index: usize,
    /// Start, microseconds after the run's epoch.
    pub start_us: u64,
    /// End (the client returned), microseconds after the run's epoch.
    pub end_us: u64,
    /// HTTP attempts the call made.
    pub attempts: u32,
    /// The error the caller got, if any (its `Display`).
    pub error: Option<String>,
}

impl CallRecord {
    /// `true` when the caller got a response.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// How long the caller waited.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.end_us.saturating_sub(self.start_us))
    }
}

/// The client's counters over a job (a subset of [`Stats`], summable over processes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Calls started.
    pub calls: u64,
    /// HTTP attempts sent.
    pub attempts: u64,
    /// Attempts after the first of their call.
    pub retries: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that ended with an error.
    pub failures: u64,
    /// 429s received.
    pub rate_limited: u64,
    /// Time calls spent waiting, summed, in milliseconds.
    pub waited_ms: u64,
}

impl From<&Stats> for Counters {
    fn from(s: &Stats) -> Self {
        Counters {
            calls: s.calls,
            attempts: s.attempts,
            retries: s.retries,
            successes: s.successes,
            failures: s.failures,
            rate_limited: s.rate_limited.total(),
            waited_ms: u64::try_from(s.waited.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl std::ops::Add for Counters {
    type Output = Counters;

    /// The sum of two processes' counters.
    fn add(self, o: Counters) -> Counters {
        Counters {
            calls: self.calls + o.calls,
            attempts: self.attempts + o.attempts,
            retries: self.retries + o.retries,
            successes: self.successes + o.successes,
            failures: self.failures + o.failures,
            rate_limited: self.rate_limited + o.rate_limited,
            waited_ms: self.waited_ms + o.waited_ms,
        }
    }
}

/// What a job did and cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Every finished call.
    pub calls: Vec<CallRecord>,
    /// Requests of the job's share never finished (not started before the budget ran
    /// out, or still running after the grace period).
    pub unfinished: usize,
    /// The client's counters.
    pub counters: Counters,
    /// CPU time (user + system) spent from the epoch to the end, in milliseconds.
    pub cpu_ms: Option<f64>,
    /// Peak resident memory of the process, KiB.
    pub peak_rss_kib: Option<u64>,
    /// `true` when CPU and memory are the whole process's (the job ran in-process,
    /// next to the emulator and other runs), not the client's alone.
    pub process_wide: bool,
    /// Why the job could not run at all, if it could not.
    pub setup_error: Option<String>,
}

/// Microseconds since the Unix epoch, now.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The run's clock: microseconds after the epoch, read from a monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Clock {
    anchor: Instant,
    /// `anchor` in microseconds after the epoch (negative before it).
    anchor_us: i64,
}

impl Clock {
    fn new(epoch_unix_us: u64) -> Clock {
        let anchor = Instant::now();
        let anchor_us = unix_us() as i64 - epoch_unix_us as i64;
        Clock { anchor, anchor_us }
    }

    fn now_us(&self) -> u64 {
        let since = self.anchor.elapsed().as_micros() as i64;
        (self.anchor_us + since).max(0) as u64
    }

    /// Sleeps until the epoch.
    fn wait_for_epoch(&self) {
        if self.anchor_us < 0 {
            std::thread::sleep(Duration::from_micros(self.anchor_us.unsigned_abs()));
        }
    }
}

/// The limiter a job's store names, for the client the job runs: each client's own
/// stores (the async one never blocks its runtime).
enum JobLimiter {
    Blocking(Arc<dyn Limiter>),
    Async(Arc<dyn mistral_async::stores::AsyncLimiter>),
}

/// Builds the limiter a job's store names, for `runtime`'s client.
fn limiter(
    store: &StoreSpec,
    url: &str,
    key: &str,
    runtime: Runtime,
) -> Result<JobLimiter, String> {
    let api_key = || mistral_core::ApiKey::new(key).map_err(|e| e.to_string());
    Ok(match (store, runtime) {
        (StoreSpec::None, Runtime::Blocking) => JobLimiter::Blocking(Arc::new(NoLimiter)),
        (StoreSpec::None, Runtime::Async) => JobLimiter::Async(Arc::new(NoLimiter)),
        (StoreSpec::Local, Runtime::Blocking) => {
            JobLimiter::Blocking(Arc::new(LocalLimiter::new()))
        }
        (StoreSpec::Local, Runtime::Async) => JobLimiter::Async(Arc::new(LocalLimiter::new())),
        (StoreSpec::File(path), runtime) => {
            let failed = |e: std::io::Error| format!("file store {}: {e}", path.display());
            match runtime {
                Runtime::Blocking => JobLimiter::Blocking(Arc::new(
                    mistral_blocking::stores::FileLimiter::at_path(path, LimiterConfig::default())
                        .map_err(failed)?,
                )),
                Runtime::Async => JobLimiter::Async(Arc::new(
                    mistral_async::stores::FileLimiter::at_path(path, LimiterConfig::default())
                        .map_err(failed)?,
                )),
            }
        }
        (StoreSpec::Redis(redis), runtime) => {
            let key = api_key()?;
            let failed = |e: Error| format!("redis store {redis}: {e}");
            match runtime {
                Runtime::Blocking => JobLimiter::Blocking(Arc::new(
                    mistral_blocking::stores::RedisLimiter::new(
                        redis,
                        url,
                        &key,
                        LimiterConfig::default(),
                    )
                    .map_err(failed)?,
                )),
                Runtime::Async => JobLimiter::Async(Arc::new(
                    mistral_async::stores::RedisLimiter::new(
                        redis,
                        url,
                        &key,
                        LimiterConfig::default(),
                    )
                    .map_err(failed)?,
                )),
            }
        }
    })
}

/// State shared by a job's workers.
struct Shared {
    job: Job,
    indexes: Vec<usize>,
    next: AtomicUsize,
    clock: Clock,
    records: Mutex<Vec<CallRecord>>,
    stop: AtomicBool,
}

impl Shared {
    /// The next request to send, unless the budget is spent.
    fn take(&self) -> Option<usize> {
        if self.stop.load(Ordering::Relaxed) || self.clock.now_us() >= self.job.budget_ms * 1000 {
            return None;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        self.indexes.get(at).copied()
    }

    fn record(&self, index: usize, start_us: u64, outcome: Result<u32, Error>) {
        let end_us = self.clock.now_us();
        let (attempts, error) = match outcome {
            Ok(attempts) => (attempts, None),
            Err(e) => (e.trail().map_or(1, |t| t.attempts), Some(e.to_string())),
        };
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push(CallRecord {
            index,
            start_us,
            end_us,
            attempts,
            error,
        });
    }
}

/// Runs `job` in this process, and measures it.
///
/// Workers stop taking requests when the budget is spent; calls still running get
/// `grace_ms` more, then are abandoned (their threads are left behind; in a child process
/// they end with it). CPU and memory are this process's (flagged `process_wide` when
/// `in_process`, because an emulator or other runs may share it).
pub fn run_job(job: &Job, in_process: bool) -> JobResult {
    let limiter = match limiter(&job.store, &job.url, &job.key, job.strategy.runtime()) {
        Ok(l) => l,
        Err(e) => {
            return JobResult {
                setup_error: Some(e),
                unfinished: job.indexes().len(),
                ..JobResult::default()
            };
        }
    };
    let shared = Arc::new(Shared {
        indexes: job.indexes(),
        job: job.clone(),
        next: AtomicUsize::new(0),
        clock: Clock::new(job.epoch_unix_us),
        records: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    shared.clock.wait_for_epoch();
    let cpu_before = measure::cpu_time();
    let counters = match limiter {
        JobLimiter::Blocking(limiter) => run_blocking(&shared, limiter),
        JobLimiter::Async(limiter) => run_async(&shared, limiter),
    };
    let counters = match counters {
        Ok(c) => c,
        Err(e) => {
            return JobResult {
                setup_error: Some(e),
                unfinished: shared.indexes.len(),
                ..JobResult::default()
            };
        }
    };
    shared.stop.store(true, Ordering::Relaxed);
    let cpu_ms = match (cpu_before, measure::cpu_time()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1000.0),
        _ => None,
    };
    let calls = shared
        .records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    JobResult {
        unfinished: shared.indexes.len().saturating_sub(calls.len()),
        calls,
        counters,
        cpu_ms,
        peak_rss_kib: measure::peak_rss_kib(),
        process_wide: in_process,
        setup_error: None,
    }
}

/// The instant the job gives up on calls still running.
fn give_up_at(shared: &Shared) -> Instant {
    let end_us = (shared.job.budget_ms + shared.job.grace_ms) * 1000;
    Instant::now() + Duration::from_micros(end_us.saturating_sub(shared.clock.now_us()))
}

fn run_blocking(shared: &Arc<Shared>, limiter: Arc<dyn Limiter>) -> Result<Counters, String> {
    let job = &shared.job;
    let client = mistral_blocking::Client::builder()
        .base_url(job.url.as_str())
        .api_key(job.key.as_str())
        .retry_policy(job.strategy.policy())
        .limiter(limiter)
        .seed(job.seed)
        .build()
        .map_err(|e| e.to_string())?;
    let (done_tx, done_rx) = mpsc::channel();
    let workers = job.concurrency.max(1);
    for _ in 0..workers {
        let shared = Arc::clone(shared);
        let client = client.clone();
        let done = done_tx.clone();
        std::thread::Builder::new()
            .spawn(move || {
                while let Some(index) = shared.take() {
                    let request = shared.job.workload.request(index);
                    let start = shared.clock.now_us();
                    let outcome = client.chat(&request).map(|reply| reply.trail.attempts);
                    shared.record(index, start, outcome);
                }
                let _ = done.send(());
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
    }
    drop(done_tx);
    let deadline = give_up_at(shared);
    for _ in 0..workers {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    Ok(Counters::from(&client.stats()))
}

fn run_async(
    shared: &Arc<Shared>,
    limiter: Arc<dyn mistral_async::stores::AsyncLimiter>,
) -> Result<Counters, String> {
    let job = &shared.job;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let client = mistral_async::Client::builder()
        .base_url(job.url.as_str())
        .api_key(job.key.as_str())
        .retry_policy(job.strategy.policy())
        .limiter(limiter)
        .seed(job.seed)
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = give_up_at(shared);
    let tasks = job.concurrency.max(1);
    runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let shared = Arc::clone(shared);
            let client = client.clone();
            set.spawn(async move {
                while let Some(index) = shared.take() {
                    let request = shared.job.workload.request(index);
                    let start = shared.clock.now_us();
                    let outcome = client
                        .chat(&request)
                        .await
                        .map(|reply| reply.trail.attempts);
                    shared.record(index, start, outcome);
                }
            });
        }
        let all = async { while set.join_next().await.is_some() {} };
        let _ = tokio::time::timeout_at(deadline.into(), all).await;
        set.abort_all();
    });
    let counters = Counters::from(&client.stats());
    runtime.shutdown_background();
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_workload_in_order() {
        let job = Job {
            url: String::new(),
            key: String::new(),
            strategy: Strategy::OursBlocking,
            store: StoreSpec::Local,
            workload: Workload::uniform("m", 10, 8),
            share: 1,
            shares: 4,
            concurrency: 1,
            epoch_unix_us: 0,
            budget_ms: 0,
            grace_ms: 0,
            seed: 0,
        };
        assert_eq!(job.indexes(), [1, 5, 9]);
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), job);
    }

    #[test]
    fn counters_add_up() {
        let a = Counters {
            calls: 1,
            attempts: 2,
            ..Counters::default()
        };
        assert_eq!((a + a).attempts, 4);
    }
}
