//! Jobs in child processes: the bench binary re-executes itself with [`CHILD_FLAG`],
//! writes a [`Job`] as JSON on the child's stdin, and reads the [`JobResult`] the child
//! prints as one JSON line on its stdout. A child holds the client alone, so its CPU
//! time and peak memory are the client's, and several children share one budget through
//! a store (S3, S4).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::job::{Job, JobResult, run_job};

/// The command-line flag that makes the bench binary a child.
pub const CHILD_FLAG: &str = "--child";

/// Extra time a child gets past its budget and grace before it is killed.
const KILL_MARGIN: Duration = Duration::from_secs(15);

/// Runs in a child: reads a job on stdin, runs it, prints its result on stdout, and
/// exits (threads still stuck in calls end with the process).
pub fn child_main() -> ! {
    let mut input = String::new();
    let result = match std::io::stdin().read_to_string(&mut input) {
        Ok(_) => match serde_json::from_str::<Job>(&input) {
            Ok(job) => run_job(&job, false),
            Err(e) => failed(format!("the child could not read its job: {e}")),
        },
        Err(e) => failed(format!("the child could not read stdin: {e}")),
    };
    let line = serde_json::to_string(&result).unwrap_or_else(|e| {
        serde_json::to_string(&failed(format!("cannot encode the result: {e}"))).unwrap_or_default()
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(0)
}

fn failed(why: String) -> JobResult {
    JobResult {
        setup_error: Some(why),
        ..JobResult::default()
    }
}

/// Runs every job in its own child process of `exe` at once, and collects the results
/// in order. A child that fails, or outlives its budget by far (it is then killed),
/// yields a result with [`JobResult::setup_error`] set.
pub fn run_in_children(exe: &Path, jobs: &[Job]) -> Vec<JobResult> {
    let mut running: Vec<Result<(Child, Instant), String>> = Vec::new();
    for job in jobs {
        running.push(spawn(exe, job));
    }
    // Read every stdout on its own thread, so that no child blocks on a full pipe.
    let handles: Vec<_> = running
        .into_iter()
        .zip(jobs)
        .map(|(child, job)| {
            let unfinished = job.indexes().len();
            std::thread::spawn(move || match child {
                Ok((child, kill_at)) => collect(child, kill_at, unfinished),
                Err(e) => JobResult {
                    unfinished,
                    ..failed(e)
                },
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| failed("the collector thread panicked".into()))
        })
        .collect()
}

fn spawn(exe: &Path, job: &Job) -> Result<(Child, Instant), String> {
    let input = serde_json::to_vec(job).map_err(|e| format!("cannot encode the job: {e}"))?;
    let mut child = Command::new(exe)
        .arg(CHILD_FLAG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .map_err(|e| format!("cannot hand the child its job: {e}"))?;
    }
    let until_epoch = Duration::from_micros(
        job.epoch_unix_us
            .saturating_sub(super::job::unix_us())
            .min(60_000_000),
    );
    let kill_at = Instant::now()
        + until_epoch
        + Duration::from_millis(job.budget_ms + job.grace_ms)
        + KILL_MARGIN;
    Ok((child, kill_at))
}

fn collect(mut child: Child, kill_at: Instant, unfinished: usize) -> JobResult {
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut text);
        }
        text
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= kill_at => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let text = reader.join().unwrap_or_default();
    let parsed = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<JobResult>(l).ok());
    match (parsed, status) {
        (Some(result), _) => result,
        (None, Some(status)) => JobResult {
            unfinished,
            ..failed(format!("the child ended ({status}) without a result"))
        },
        (None, None) => JobResult {
            unfinished,
            ..failed("the child outlived its budget and was killed".into())
        },
    }
}
