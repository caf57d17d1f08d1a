//! The emulator's Batch API (`/v1/files`, `/v1/batch/jobs`) on the wire, as
//! `mistral-api.md` §6 describes it.

use std::time::{Duration, Instant};

use mistral_emulator::raw_http::Connection;
use mistral_emulator::{Config, Emulator};
use serde_json::{Value, json};

fn request(
    emu: &Emulator,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut conn = Connection::open(&emu.url()).unwrap();
    let auth = format!("Bearer {}", emu.key());
    let mut headers = vec![("authorization", auth.as_str())];
    if !content_type.is_empty() {
        headers.push(("content-type", content_type));
    }
    conn.send(method, path, &headers, body).unwrap();
    let response = conn.receive().unwrap();
    (response.status, response.body)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn upload(emu: &Emulator, content: &str) -> Value {
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--XX\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n",
    );
    body.extend_from_slice(b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n");
    body.extend_from_slice(content.as_bytes());
    body.extend_from_slice(b"\r\n--XX--\r\n");
    let (status, bytes) = request(
        emu,
        "POST",
        "/v1/files",
        "multipart/form-data; boundary=XX",
        &body,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    json_of(&bytes)
}

fn wait_for_end(emu: &Emulator, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let (status, bytes) = request(emu, "GET", &format!("/v1/batch/jobs/{id}"), "", b"");
        assert_eq!(status, 200);
        let job = json_of(&bytes);
        let state = job["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if matches!(
            state.as_str(),
            "SUCCESS" | "FAILED" | "CANCELLED" | "TIMEOUT_EXCEEDED"
        ) {
            return json!({"job": job, "seen": seen});
        }
        assert!(Instant::now() < deadline, "the job never ended: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_job_runs_its_file_and_writes_output_and_error_files() {
    let emu = Emulator::start(Config::default());
    let mut content = String::new();
    for i in 0..250 {
        content.push_str(&json!({"custom_id": format!("r{i}"), "body": {"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}}).to_string());
        content.push('\n');
    }
    content.push_str(
        &json!({"custom_id": "bad", "body": {"messages": [], "nonsense": 1}}).to_string(),
    );
    content.push('\n');
    let file = upload(&emu, &content);
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["num_lines"], 251);
    assert_eq!(file["bytes"], content.len());
    let create = json!({"input_files": [file["id"]], "endpoint": "/v1/chat/completions",
                        "model": "mistral-small-latest", "metadata": {"k": "v"}, "timeout_hours": 1});
    let (status, bytes) = request(
        &emu,
        "POST",
        "/v1/batch/jobs",
        "application/json",
        create.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let job = json_of(&bytes);
    assert_eq!(job["status"], "QUEUED");
    assert_eq!(job["object"], "batch");
    assert_eq!(job["total_requests"], 251);
    assert_eq!(job["metadata"]["k"], "v");
    let ended = wait_for_end(&emu, job["id"].as_str().unwrap());
    let seen: Vec<&str> = ended["seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(seen, ["QUEUED", "RUNNING", "SUCCESS"]);
    let job = &ended["job"];
    assert_eq!(job["succeeded_requests"], 250);
    assert_eq!(job["failed_requests"], 1);
    assert_eq!(job["completed_requests"], 251);
    // The output file: one success per good line, in the result format.
    let (status, bytes) = request(
        &emu,
        "GET",
        &format!("/v1/files/{}/content", job["output_file"].as_str().unwrap()),
        "",
        b"",
    );
    assert_eq!(status, 200);
    let lines: Vec<Value> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 250);
    assert_eq!(lines[0]["custom_id"], "r0");
    assert_eq!(lines[0]["response"]["status_code"], 200);
    assert_eq!(lines[0]["response"]["body"]["object"], "chat.completion");
    assert_eq!(
        lines[0]["response"]["body"]["model"], "mistral-small-latest",
        "the job's model fills in"
    );
    assert!(lines[0]["error"].is_null());
    // The error file: the refusal the online endpoint would have given.
    let (_, bytes) = request(
        &emu,
        "GET",
        &format!("/v1/files/{}/content", job["error_file"].as_str().unwrap()),
        "",
        b"",
    );
    let error: Value =
        serde_json::from_slice(bytes.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(error["custom_id"], "bad");
    assert_eq!(error["response"]["status_code"], 422);
    assert!(!error["error"].is_null());
    // The Batch API does not spend the online limits.
    assert_eq!(emu.log().admitted(), 0);
}

#[test]
fn keys_ids_and_cancellation() {
    let emu = Emulator::start(Config::default());
    // No key: 401, as everywhere else.
    let mut conn = Connection::open(&emu.url()).unwrap();
    conn.send("GET", "/v1/batch/jobs", &[], b"").unwrap();
    assert_eq!(conn.receive().unwrap().status, 401);
    // Unknown ids: 404.
    assert_eq!(request(&emu, "GET", "/v1/batch/jobs/nope", "", b"").0, 404);
    assert_eq!(
        request(&emu, "GET", "/v1/files/nope/content", "", b"").0,
        404
    );
    let create = json!({"input_files": ["nope"], "endpoint": "/v1/chat/completions", "model": "m"});
    assert_eq!(
        request(
            &emu,
            "POST",
            "/v1/batch/jobs",
            "application/json",
            create.to_string().as_bytes()
        )
        .0,
        404
    );
    let create = json!({"input_files": [], "endpoint": "/v1/chat/completions"});
    assert_eq!(
        request(
            &emu,
            "POST",
            "/v1/batch/jobs",
            "application/json",
            create.to_string().as_bytes()
        )
        .0,
        422
    );
    // A job cancelled while queued ends CANCELLED, without output.
    let content: String = (0..2000)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("r{i}"), "body": {"input": "x"}})
            )
        })
        .collect();
    let file = upload(&emu, &content);
    let create = json!({"input_files": [file["id"]], "endpoint": "/v1/embeddings", "model": "mistral-embed"});
    let (_, bytes) = request(
        &emu,
        "POST",
        "/v1/batch/jobs",
        "application/json",
        create.to_string().as_bytes(),
    );
    let id = json_of(&bytes)["id"].as_str().unwrap().to_string();
    let (status, bytes) = request(
        &emu,
        "POST",
        &format!("/v1/batch/jobs/{id}/cancel"),
        "application/json",
        b"{}",
    );
    assert_eq!(status, 200);
    assert_eq!(json_of(&bytes)["status"], "CANCELLATION_REQUESTED");
    let ended = wait_for_end(&emu, &id);
    assert_eq!(ended["job"]["status"], "CANCELLED");
    assert!(ended["job"]["completed_requests"].as_u64().unwrap() < 2000);
    // Listed.
    let (_, bytes) = request(&emu, "GET", "/v1/batch/jobs", "", b"");
    assert_eq!(json_of(&bytes)["data"].as_array().unwrap().len(), 1);
}

#[test]
fn inline_requests_need_no_upload() {
    let emu = Emulator::start(Config::default());
    let create = json!({"endpoint": "/v1/embeddings", "model": "mistral-embed",
                        "requests": [{"custom_id": "a", "body": {"input": "x"}},
                                     {"custom_id": "b", "body": {"input": ["y", "z"]}}]});
    let (status, bytes) = request(
        &emu,
        "POST",
        "/v1/batch/jobs",
        "application/json",
        create.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let job = json_of(&bytes);
    assert_eq!(job["total_requests"], 2);
    let ended = wait_for_end(&emu, job["id"].as_str().unwrap());
    assert_eq!(ended["job"]["succeeded_requests"], 2);
    let output = ended["job"]["output_file"].as_str().unwrap();
    let (_, bytes) = request(&emu, "GET", &format!("/v1/files/{output}/content"), "", b"");
    let text = String::from_utf8(bytes).unwrap();
    let b: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(b["custom_id"], "b");
    assert_eq!(b["response"]["body"]["data"].as_array().unwrap().len(), 2);
}
