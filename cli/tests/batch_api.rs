//! `mistral batch run --via batch-api|auto` against the emulator's `/v1/files` and
//! `/v1/batch/jobs`, end to end.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use mistral_emulator::Limits;
use serde_json::{Value, json};

const MODEL: &str = "mistral-small-latest";

fn mixed_input(path: &std::path::Path) -> HashSet<String> {
    let mut lines = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..300 {
        let id = format!("chat-{i}");
        lines.push(chat_line(&id, MODEL, "hello"));
        ids.insert(id);
    }
    for i in 0..150 {
        let id = format!("emb-{i}");
        lines.push(json!({"custom_id": id, "body": {"model": "mistral-embed", "input": [format!("text {i}")]}}).to_string());
        ids.insert(id);
    }
    // The server refuses this one (an unknown field): an error result, not a lost line.
    lines.push(json!({"custom_id": "refused", "body": {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "bogus": 1}}).to_string());
    ids.insert("refused".into());
    write_lines(path, lines);
    ids
}

fn jobs(emu: &mistral_emulator::Emulator) -> Vec<Value> {
    let response = reqwest_blocking_get(&format!("{}/v1/batch/jobs", emu.url()), emu.key());
    response["data"].as_array().cloned().unwrap_or_default()
}

/// A tiny blocking GET over a raw socket (the tests need no HTTP client of their own).
fn reqwest_blocking_get(url: &str, key: &str) -> Value {
    raw_request("GET", url, key, None)
}

/// One HTTP/1.1 request over a raw socket: `body` is (content type, bytes).
fn raw_request(method: &str, url: &str, key: &str, body: Option<(&str, &[u8])>) -> Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n"
    );
    if let Some((content_type, bytes)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).unwrap();
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[test]
fn the_batch_api_path_uploads_follows_and_writes_every_result() {
    let emu = emulator(MODEL, Limits::new(Some(5), Some(10_000)));
    let dir = temp_dir("batchapi");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = mixed_input(&input);
    let out = batch(
        &emu,
        &input,
        &output,
        &["--via", "batch-api", "--poll-interval", "0.1"],
    );
    let err = stderr(&out);
    // One request was refused by the server: complete, with an error result.
    assert_eq!(out.status.code(), Some(1), "{err}");
    let values = assert_each_once(&output, &expected);
    let refused = values.iter().find(|v| v["custom_id"] == "refused").unwrap();
    assert_eq!(refused["response"]["status_code"], 422, "{refused}");
    assert!(!refused["error"].is_null());
    let chat = values.iter().find(|v| v["custom_id"] == "chat-7").unwrap();
    assert_eq!(chat["response"]["body"]["object"], "chat.completion");
    let emb = values.iter().find(|v| v["custom_id"] == "emb-7").unwrap();
    assert_eq!(emb["response"]["body"]["data"][0]["object"], "embedding");
    // One job per model, and the online limits were not spent (5/s would take 90 s).
    let jobs = jobs(&emu);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["status"] == "SUCCESS"));
    assert_eq!(served(&emu), 0, "the online endpoints were used");
    let s = summary(&out);
    assert_eq!(s["via"], "batch-api");
    assert_eq!(s["succeeded"], 450);
    assert!(
        !output.with_file_name("out.jsonl.batch-jobs.json").exists(),
        "the jobs file stays behind"
    );
}

#[test]
fn a_run_killed_while_its_jobs_run_follows_the_same_jobs_again() {
    let emu = emulator(MODEL, Limits::new(Some(5), Some(10_000)));
    let dir = temp_dir("batchapi-kill");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = mixed_input(&input);
    let jobs_file = output.with_file_name("out.jsonl.batch-jobs.json");
    let mut child = spawn_batch(
        &emu,
        &input,
        &output,
        &["--via", "batch-api", "--poll-interval", "0.1"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    // Killed as soon as the first job exists: its id may or may not have reached the
    // jobs file, and the second group may or may not have its job yet.
    while !jobs_file.exists() || jobs(&emu).is_empty() {
        assert!(Instant::now() < deadline, "no jobs were created");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = batch(
        &emu,
        &input,
        &output,
        &["--via", "batch-api", "--poll-interval", "0.1"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("job(s) of an earlier run"), "{err}");
    assert_each_once(&output, &expected);
    assert_eq!(jobs(&emu).len(), 2, "jobs were submitted again");
}

#[test]
fn auto_picks_the_batch_api_when_online_misses_the_deadline() {
    let emu = emulator(MODEL, Limits::new(Some(20), Some(100_000)));
    let dir = temp_dir("auto");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = chat_input(&input, 60, MODEL);
    // 60 requests at 20/s, the 19 the probe's answer left at once: ~2 s online, past a
    // 1 s deadline.
    let out = batch(
        &emu,
        &input,
        &output,
        &[
            "--via",
            "auto",
            "--deadline",
            "1s",
            "--poll-interval",
            "0.1",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("past the deadline"), "{err}");
    assert_eq!(summary(&out)["via"], "batch-api");
    assert_each_once(&output, &expected);
    // Within a generous deadline it stays online.
    let output = dir.join("out2.jsonl");
    let out = batch(
        &emu,
        &input,
        &output,
        &["--via", "auto", "--deadline", "1h"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&out)["via"], "online");
    assert_each_once(&output, &expected);
}

#[test]
fn a_job_created_just_before_a_crash_is_found_on_the_server_and_followed() {
    let emu = emulator(MODEL, Limits::new(Some(5), Some(10_000)));
    let dir = temp_dir("batchapi-orphan");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = mixed_input(&input);
    // The state a crash leaves between creating the chat job and recording its id: the
    // job exists on the server with the run's token in its metadata, the jobs file does
    // not list it.
    let chat_lines: String = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .filter(|l| l.contains(MODEL))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut multipart = Vec::new();
    multipart.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.jsonl\"\r\n\r\n");
    multipart.extend_from_slice(chat_lines.as_bytes());
    multipart.extend_from_slice(b"\r\n--B--\r\n");
    let file = raw_request(
        "POST",
        &format!("{}/v1/files", emu.url()),
        emu.key(),
        Some(("multipart/form-data; boundary=B", &multipart)),
    );
    let create = json!({"input_files": [file["id"]], "endpoint": "/v1/chat/completions",
                        "model": MODEL, "metadata": {"mistral_cli_run": "run-token"}})
    .to_string();
    let job = raw_request(
        "POST",
        &format!("{}/v1/batch/jobs", emu.url()),
        emu.key(),
        Some(("application/json", create.as_bytes())),
    );
    assert_eq!(job["status"], "QUEUED", "{job}");
    std::fs::write(
        output.with_file_name("out.jsonl.batch-jobs.json"),
        json!({"run": "run-token", "jobs": [], "complete": false}).to_string(),
    )
    .unwrap();
    let out = batch(
        &emu,
        &input,
        &output,
        &["--via", "batch-api", "--poll-interval", "0.1"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("following the 1 job(s) of an earlier run"),
        "{err}"
    );
    assert_each_once(&output, &expected);
    let jobs = jobs(&emu);
    assert_eq!(
        jobs.len(),
        2,
        "the chat group was submitted again: {jobs:?}"
    );
    assert_eq!(jobs[1]["model"], "mistral-embed");
}
