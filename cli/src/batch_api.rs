//! `--via batch-api`: Mistral's Batch API instead of the online endpoints.
//!
//! The requests still to do are split by (endpoint, model), since a job has one of each;
//! each group is written to a temporary JSONL file, uploaded (`POST /v1/files`, purpose
//! `batch`, streamed from disk), and becomes one job (`POST /v1/batch/jobs`). The job ids
//! are kept next to the output (`OUTPUT.batch-jobs.json`, written before the first job
//! is created) so that a run killed while it waits follows the same jobs when started
//! again instead of submitting new ones; each job's metadata names the run, so a job
//! created just before a crash is found on the server (`GET /v1/batch/jobs`) and
//! followed too, and only the groups with no job are submitted. Jobs
//! are polled (`GET /v1/batch/jobs/{id}`) with a progress bar; when they end, their
//! `output_file` and `error_file` are downloaded (`GET /v1/files/{id}/content`, streamed)
//! and their lines appended to the output in the same format as the online run, skipping
//! any `custom_id` already answered. The file transfers use reqwest directly (the client
//! has no multipart or raw-body call); job creation and polling go through the client.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mistral_async::ApiRequest;
use serde_json::{Value, json};

use crate::input::{self, Endpoint, fingerprint, in_shard};
use crate::output::{self, Appender, Resumed};
use crate::progress::Progress;
use crate::run::{Counters, Outcome, Plan, Stop};
use crate::{BatchArgs, Connection};

/// One submitted job, as kept in the jobs file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Submitted {
    id: String,
    endpoint: String,
    model: String,
    requests: u64,
}

/// The jobs file: written before the first job is created, again after each one.
///
/// Every job carries `run` in its metadata (`mistral_cli_run`), so a job created just
/// before a crash, whose id never reached this file, is found again on the server and
/// followed rather than submitted twice.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct JobsFile {
    run: String,
    jobs: Vec<Submitted>,
    /// Every (endpoint, model) group has its job.
    complete: bool,
}

/// The metadata key that names the run a job belongs to.
const RUN_KEY: &str = "mistral_cli_run";

fn jobs_file(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".batch-jobs.json");
    output.with_file_name(name)
}

/// Runs `plan` through the Batch API.
pub async fn run(
    conn: &Connection,
    args: &BatchArgs,
    plan: Plan,
    resumed: Resumed,
    progress: Arc<Progress>,
) -> Outcome {
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = follow(conn, args, &plan, resumed, &progress, &counters)
        .await
        .err();
    let written =
        counters.succeeded.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
    if stop.is_none() && written < plan.todo {
        counters
            .transient
            .store(plan.todo - written, Ordering::Relaxed);
    }
    Outcome {
        stop,
        elapsed: started.elapsed(),
        counters,
        concurrency: 0,
    }
}

async fn follow(
    conn: &Connection,
    args: &BatchArgs,
    plan: &Plan,
    resumed: Resumed,
    progress: &Progress,
    counters: &Counters,
) -> Result<(), Stop> {
    let jobs_path = jobs_file(&plan.output);
    let mut file = match std::fs::read(&jobs_path) {
        Ok(bytes) => {
            let mut file: JobsFile = serde_json::from_slice(&bytes).map_err(|e| {
                Stop::Output(format!(
                    "{} is unreadable ({e}); remove it to submit new jobs",
                    jobs_path.display()
                ))
            })?;
            adopt_orphans(conn, &mut file).await?;
            save_jobs(&jobs_path, &file)?;
            eprintln!(
                "mistral: following the {} job(s) of an earlier run ({})",
                file.jobs.len(),
                jobs_path.display()
            );
            file
        }
        Err(_) => JobsFile {
            run: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            ..JobsFile::default()
        },
    };
    if !file.complete {
        submit(conn, plan, &resumed, &jobs_path, &mut file).await?;
    }
    let jobs = file.jobs;
    // Follow the jobs to their end.
    let interval = Duration::from_secs_f64(args.poll_interval.clamp(0.05, 3600.0));
    let mut states: HashMap<String, Value> = HashMap::new();
    // SIGINT or SIGTERM while the jobs run: stop following them (they go on at Mistral;
    // the same command follows them again).
    let mut signals = crate::run::Signals::listen();
    loop {
        for job in &jobs {
            if states.get(&job.id).is_some_and(is_final) {
                continue;
            }
            let reply = conn
                .client
                .send(ApiRequest::get(format!("/v1/batch/jobs/{}", job.id)))
                .await
                .map_err(|e| stop_for(&e, "cannot read the batch job"))?;
            states.insert(job.id.clone(), reply.value);
        }
        let count = |field: &str| -> u64 {
            states
                .values()
                .filter_map(|s| s.get(field).and_then(Value::as_u64))
                .sum()
        };
        let status = summarize_status(&states);
        progress.job(
            count("completed_requests"),
            count("total_requests").max(1),
            &status,
        );
        if states.len() == jobs.len() && states.values().all(is_final) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            signal = next_signal(&mut signals) => {
                return Err(Stop::Interrupted(signal));
            }
        }
    }
    // Download the results.
    let mut appender = Appender::open(&plan.output).map_err(Stop::Output)?;
    let mut written = std::collections::HashSet::new();
    for job in &jobs {
        let Some(state) = states.get(&job.id) else {
            continue;
        };
        for field in ["output_file", "error_file"] {
            if let Some(file_id) = state.get(field).and_then(Value::as_str) {
                download(
                    conn,
                    file_id,
                    &mut appender,
                    &resumed,
                    &mut written,
                    counters,
                )
                .await?;
            }
        }
        let status = state.get("status").and_then(Value::as_str).unwrap_or("?");
        if status != "SUCCESS" {
            eprintln!("mistral: batch job {} ended {status}", job.id);
        }
    }
    let _ = std::fs::remove_file(&jobs_path);
    Ok(())
}

/// The next SIGINT or SIGTERM; never, without signal handlers.
async fn next_signal(signals: &mut Option<crate::run::Signals>) -> crate::run::Signal {
    match signals {
        Some(signals) => signals.next().await,
        None => std::future::pending().await,
    }
}

fn is_final(state: &Value) -> bool {
    matches!(
        state.get("status").and_then(Value::as_str),
        Some("SUCCESS" | "FAILED" | "TIMEOUT_EXCEEDED" | "CANCELLED")
    )
}

fn summarize_status(states: &HashMap<String, Value>) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in states.values() {
        *counts
            .entry(s.get("status").and_then(Value::as_str).unwrap_or("?"))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(s, n)| {
            if *n == 1 {
                s.to_string()
            } else {
                format!("{n}×{s}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn stop_for(error: &mistral_async::Error, what: &str) -> Stop {
    let message = format!("{what}: {error}");
    if error.is_permanent() {
        Stop::Fatal(message)
    } else {
        Stop::Failing(message)
    }
}

/// Splits the work by (endpoint, model), uploads each group and creates its job.
async fn submit(
    conn: &Connection,
    plan: &Plan,
    resumed: &Resumed,
    jobs_path: &Path,
    file: &mut JobsFile,
) -> Result<(), Stop> {
    save_jobs(jobs_path, file)?;
    let submitted: std::collections::HashSet<(String, String)> = file
        .jobs
        .iter()
        .map(|j| (j.endpoint.clone(), j.model.clone()))
        .collect();
    let mut groups: HashMap<(Endpoint, String), (PathBuf, BufWriter<File>, u64)> = HashMap::new();
    let mut trouble: Option<String> = None;
    let base = plan.output.clone();
    input::for_each_line(&plan.input, |line_no, line| {
        if plan.skip_lines.contains(&line_no) {
            return Ok(true);
        }
        let Ok(Ok(Some(job))) = line.map(|l| input::parse_line(line_no, l, &plan.defaults)) else {
            return Ok(true);
        };
        if !in_shard(plan.shard, &job.custom_id)
            || resumed.done.contains(&fingerprint(&job.custom_id))
            || submitted.contains(&(job.endpoint.path().to_string(), job.model.clone()))
        {
            return Ok(true);
        }
        let n = groups.len();
        let key = (job.endpoint, job.model.clone());
        if !groups.contains_key(&key) {
            let mut name = base.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".batch-upload-{n}.jsonl"));
            let path = base.with_file_name(name);
            match File::create(&path) {
                Ok(f) => {
                    groups.insert(key.clone(), (path, BufWriter::new(f), 0));
                }
                Err(e) => {
                    trouble = Some(format!("cannot create {}: {e}", path.display()));
                    return Ok(false);
                }
            }
        }
        if let Some((path, writer, count)) = groups.get_mut(&key) {
            let mut line = json!({"custom_id": job.custom_id, "body": job.body}).to_string();
            line.push('\n');
            if let Err(e) = writer.write_all(line.as_bytes()) {
                trouble = Some(format!("cannot write {}: {e}", path.display()));
                return Ok(false);
            }
            *count += 1;
        }
        Ok(true)
    })
    .map_err(|e| Stop::Output(format!("cannot read {}: {e}", plan.input.display())))?;
    if let Some(t) = trouble {
        return Err(Stop::Output(t));
    }
    for ((endpoint, model), (path, writer, count)) in groups {
        writer
            .into_inner()
            .map_err(|e| Stop::Output(format!("cannot write {}: {}", path.display(), e.error())))?;
        let uploaded = upload(conn, &path).await;
        let _ = std::fs::remove_file(&path);
        let file_id = uploaded?;
        let body = json!({
            "input_files": [file_id],
            "endpoint": endpoint.path(),
            "model": model,
            "metadata": {"created_by": "mistral-cli", RUN_KEY: file.run},
            "timeout_hours": 24,
        });
        let request = ApiRequest::post_json("/v1/batch/jobs", &body)
            .map_err(|e| Stop::Fatal(e.to_string()))?;
        let reply = conn
            .client
            .send(request)
            .await
            .map_err(|e| stop_for(&e, "cannot create the batch job"))?;
        let Some(id) = reply.value.get("id").and_then(Value::as_str) else {
            return Err(Stop::Failing(
                "the batch job was created without an id".into(),
            ));
        };
        eprintln!(
            "mistral: batch job {id}: {count} request(s) to {model} {}",
            endpoint.path()
        );
        file.jobs.push(Submitted {
            id: id.to_string(),
            endpoint: endpoint.path().to_string(),
            model,
            requests: count,
        });
        save_jobs(jobs_path, file)?;
    }
    file.complete = true;
    save_jobs(jobs_path, file)
}

/// Adds the jobs of `file.run` that the server has but the file lost (created just
/// before a crash).
async fn adopt_orphans(conn: &Connection, file: &mut JobsFile) -> Result<(), Stop> {
    let reply = conn
        .client
        .send(ApiRequest::get(
            "/v1/batch/jobs?page_size=100&created_by_me=true",
        ))
        .await
        .map_err(|e| stop_for(&e, "cannot list the batch jobs"))?;
    let listed = reply
        .value
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for job in listed {
        let ours = job
            .pointer(&format!("/metadata/{RUN_KEY}"))
            .and_then(Value::as_str)
            == Some(file.run.as_str());
        let Some(id) = job.get("id").and_then(Value::as_str) else {
            continue;
        };
        if ours && !file.jobs.iter().any(|j| j.id == id) {
            let text = |field: &str| {
                job.get(field)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            file.jobs.push(Submitted {
                id: id.to_string(),
                endpoint: text("endpoint"),
                model: text("model"),
                requests: job
                    .get("total_requests")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            });
        }
    }
    Ok(())
}

fn save_jobs(path: &Path, jobs: &JobsFile) -> Result<(), Stop> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(jobs).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Stop::Output(format!("cannot write {}: {e}", path.display())))
}

fn http(conn: &Connection) -> Result<reqwest::Client, Stop> {
    // No redirects, and the async client's TLS (reqwest has no crypto provider of its own).
    mistral_async::http_client_builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            Stop::Fatal(format!(
                "cannot build the HTTP client for {}: {e}",
                conn.base_url
            ))
        })
}

/// `POST /v1/files` (multipart, purpose `batch`), the file streamed from disk.
async fn upload(conn: &Connection, path: &Path) -> Result<String, Stop> {
    let size = std::fs::metadata(path)
        .map_err(|e| Stop::Output(format!("cannot read {}: {e}", path.display())))?
        .len();
    let boundary = format!("mistral-cli-{:016x}", fastrand::u64(..));
    let filename = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .replace('"', "");
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/jsonl\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + size + tail.len() as u64;
    let file = File::open(path)
        .map_err(|e| Stop::Output(format!("cannot read {}: {e}", path.display())))?;
    enum Step {
        Head(File),
        Body(File),
        Tail,
        End,
    }
    let (head, tail) = (Bytes::from(head), Bytes::from(tail));
    let stream = futures_util::stream::unfold(Step::Head(file), move |step| {
        let (head, tail) = (head.clone(), tail.clone());
        async move {
            match step {
                Step::Head(file) => Some((Ok::<Bytes, std::io::Error>(head), Step::Body(file))),
                Step::Body(mut file) => {
                    let mut buf = vec![0u8; 1 << 16];
                    match file.read(&mut buf) {
                        Ok(0) => Some((Ok(tail), Step::End)),
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(Bytes::from(buf)), Step::Body(file)))
                        }
                        Err(e) => Some((Err(e), Step::Tail)),
                    }
                }
                Step::Tail => Some((Ok(tail), Step::End)),
                Step::End => None,
            }
        }
    });
    let response = http(conn)?
        .post(format!("{}/v1/files", conn.base_url))
        .bearer_auth(&conn.key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("content-length", length)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| {
            Stop::Failing(format!(
                "cannot upload {}: {}",
                path.display(),
                without_url(&e)
            ))
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = format!(
            "uploading the batch file was refused ({status}): {}",
            excerpt(&text)
        );
        return Err(if status.is_client_error() && status.as_u16() != 429 {
            Stop::Fatal(message)
        } else {
            Stop::Failing(message)
        });
    }
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| {
            Stop::Failing(format!(
                "the upload answer has no file id: {}",
                excerpt(&text)
            ))
        })
}

fn excerpt(text: &str) -> String {
    text.chars().take(300).collect()
}

/// The error's words without its URL (which holds nothing secret, but is noise).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    text
}

/// `GET /v1/files/{id}/content`, streamed: each line becomes a result in the output.
async fn download(
    conn: &Connection,
    file_id: &str,
    appender: &mut Appender,
    resumed: &Resumed,
    written: &mut std::collections::HashSet<u128>,
    counters: &Counters,
) -> Result<(), Stop> {
    let mut response = http(conn)?
        .get(format!("{}/v1/files/{file_id}/content", conn.base_url))
        .bearer_auth(&conn.key)
        .send()
        .await
        .map_err(|e| {
            Stop::Failing(format!(
                "cannot download the results {file_id}: {}",
                without_url(&e)
            ))
        })?;
    if !response.status().is_success() {
        return Err(Stop::Failing(format!(
            "downloading the results {file_id} was refused ({})",
            response.status()
        )));
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            Stop::Failing(format!(
                "the download of {file_id} broke: {}",
                without_url(&e)
            ))
        })?;
        let last = chunk.is_none();
        if let Some(chunk) = chunk {
            pending.extend_from_slice(&chunk);
        } else if !pending.is_empty() {
            pending.push(b'\n');
        }
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + i];
            start += i + 1;
            if let Some((text, good)) = convert(line, resumed, written) {
                out.extend_from_slice(text.as_bytes());
                if good { ok += 1 } else { failed += 1 }
            }
        }
        pending.drain(..start);
        if out.len() >= 1 << 20 || (last && !out.is_empty()) {
            appender.append(&out).map_err(Stop::Output)?;
            counters.succeeded.fetch_add(ok, Ordering::Relaxed);
            counters.failed.fetch_add(failed, Ordering::Relaxed);
            out.clear();
            (ok, failed) = (0, 0);
        }
        if last {
            return Ok(());
        }
    }
}

/// One line of a job's result file as an output line, unless its `custom_id` already has
/// one: `(line, succeeded)`.
fn convert(
    line: &[u8],
    resumed: &Resumed,
    written: &mut std::collections::HashSet<u128>,
) -> Option<(String, bool)> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let custom_id = value.get("custom_id")?.as_str()?.to_string();
    let id = fingerprint(&custom_id);
    if resumed.done.contains(&id) || !written.insert(id) {
        return None;
    }
    let status = value
        .pointer("/response/status_code")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let body = value
        .pointer("/response/body")
        .cloned()
        .unwrap_or(Value::Null);
    let error = value.get("error").filter(|e| !e.is_null());
    match (status, error) {
        (Some(s), None) if (200..300).contains(&s) => {
            Some((output::success_line(&custom_id, s, body), true))
        }
        _ => {
            let message = error
                .and_then(|e| e.get("message"))
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                .unwrap_or_else(|| format!("status {}", status.unwrap_or(0)));
            let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
            Some((
                output::error_line(&custom_id, status, body, &message, code),
                false,
            ))
        }
    }
}
