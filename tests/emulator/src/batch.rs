//! Mistral's Batch API (`mistral-api.md` §6): `/v1/files` and `/v1/batch/jobs`.
//!
//! - `POST /v1/files` (multipart: `purpose`, `file`) keeps the file in memory and answers
//!   its object (`id`, `object: "file"`, `bytes`, `created_at`, `filename`, `purpose`,
//!   `num_lines`, …); `GET /v1/files`, `GET /v1/files/{id}`, `GET /v1/files/{id}/content`.
//! - `POST /v1/batch/jobs` (`input_files`, or inline `requests`, `endpoint`, `model`,
//!   `metadata`, `timeout_hours`) answers the job `QUEUED`; `GET /v1/batch/jobs[/{id}]`,
//!   `POST /v1/batch/jobs/{id}/cancel`.
//! - A job waits [`QUEUE_MS`] in `QUEUED`, then runs at [`LINES_PER_TICK`] lines every
//!   [`TICK_MS`] (`RUNNING`, with `completed_requests`, `succeeded_requests`,
//!   `failed_requests`), and ends `SUCCESS` with an `output_file` (one
//!   `{"id", "custom_id", "response": {"status_code": 200, "body"}, "error": null}` per
//!   success) and, when some lines failed, an `error_file` (the same shape with the
//!   error's status and body and an `error` object). A cancelled job ends `CANCELLED`
//!   with what it had done.
//! - Each line is answered as the online endpoint would answer it (the same validation
//!   and bodies, [`super::api`]), without the rate limiter: the Batch API does not spend
//!   the online limits. These calls are logged as `Listed` (answered without the limiter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::api::{self, Endpoint};
use super::rng::hex32;

/// Time a job stays `QUEUED`.
pub const QUEUE_MS: u64 = 200;
/// Time between two steps of a running job.
pub const TICK_MS: u64 = 50;
/// Lines a running job answers per step.
pub const LINES_PER_TICK: usize = 100;
/// Largest upload accepted.
pub const MAX_UPLOAD_BYTES: usize = 1 << 30;

/// An answer of the Batch API routes (the server turns it into a response).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Answer {
    fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
        }
    }

    fn not_found(what: &str) -> Answer {
        Answer::json(
            404,
            &json!({"object": "error", "message": format!("{what} not found"),
                    "type": "invalid_request_error", "param": null, "code": null}),
        )
    }

    fn invalid(message: &str) -> Answer {
        Answer::json(
            422,
            &json!({"object": "error", "message": message, "type": "invalid_request_error",
                    "param": null, "code": null, "raw_status_code": 422}),
        )
    }
}

#[derive(Debug, Clone)]
struct StoredFile {
    id: String,
    filename: String,
    purpose: String,
    created_at: u64,
    num_lines: u64,
    content: Bytes,
}

impl StoredFile {
    fn object(&self) -> Value {
        json!({"id": self.id, "object": "file", "bytes": self.content.len(),
               "created_at": self.created_at, "filename": self.filename,
               "purpose": self.purpose, "sample_type": "batch_request",
               "num_lines": self.num_lines, "source": "upload"})
    }
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    input_files: Vec<String>,
    endpoint: String,
    model: Option<String>,
    metadata: Value,
    status: &'static str,
    created_at: u64,
    started_at: Option<u64>,
    completed_at: Option<u64>,
    total: u64,
    succeeded: u64,
    failed: u64,
    output_file: Option<String>,
    error_file: Option<String>,
    cancel: bool,
}

impl Job {
    fn object(&self) -> Value {
        json!({"id": self.id, "object": "batch", "input_files": self.input_files,
               "metadata": self.metadata, "endpoint": self.endpoint, "model": self.model,
               "agent_id": null, "output_file": self.output_file, "error_file": self.error_file,
               "errors": [], "status": self.status, "created_at": self.created_at,
               "total_requests": self.total, "completed_requests": self.succeeded + self.failed,
               "succeeded_requests": self.succeeded, "failed_requests": self.failed,
               "started_at": self.started_at, "completed_at": self.completed_at})
    }
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<String, StoredFile>,
    file_order: Vec<String>,
    jobs: HashMap<String, Job>,
    job_order: Vec<String>,
    next: u64,
}

impl State {
    fn new_id(&mut self, seed: u64) -> String {
        self.next += 1;
        let hex = hex32(seed ^ 0xBA7C, self.next);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// Files and batch jobs of one emulator.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batches {
    state: Arc<Mutex<State>>,
}

/// What answering a line needs from the emulator's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answering {
    pub seed: u64,
    pub completion_tokens: u32,
    pub embedding_dim: usize,
}

/// `true` for the paths served here.
pub(crate) fn handles(path: &str) -> bool {
    path == "/v1/files"
        || path.starts_with("/v1/files/")
        || path == "/v1/batch/jobs"
        || path.starts_with("/v1/batch/jobs/")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes of an uploaded (or produced) file.
    pub(crate) fn content(&self, file_id: &str) -> Option<Bytes> {
        self.lock().files.get(file_id).map(|f| f.content.clone())
    }

    /// Answers one request (already authorised). `content_type` is the request's.
    pub(crate) fn route(
        &self,
        method: &http::Method,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        answering: Answering,
    ) -> Answer {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("POST", ["v1", "files"]) => self.upload(content_type, body, answering.seed),
            ("GET", ["v1", "files"]) => {
                let state = self.lock();
                let data: Vec<Value> = state
                    .file_order
                    .iter()
                    .filter_map(|id| state.files.get(id).map(StoredFile::object))
                    .collect();
                Answer::json(
                    200,
                    &json!({"data": data, "object": "list", "total": data.len()}),
                )
            }
            ("GET", ["v1", "files", id]) => match self.lock().files.get(*id) {
                Some(file) => Answer::json(200, &file.object()),
                None => Answer::not_found("File"),
            },
            ("GET", ["v1", "files", id, "content"]) => match self.lock().files.get(*id) {
                Some(file) => Answer {
                    status: 200,
                    content_type: "application/octet-stream",
                    body: file.content.clone(),
                },
                None => Answer::not_found("File"),
            },
            ("POST", ["v1", "batch", "jobs"]) => self.create(body, answering),
            ("GET", ["v1", "batch", "jobs"]) => {
                let state = self.lock();
                let data: Vec<Value> = state
                    .job_order
                    .iter()
                    .filter_map(|id| state.jobs.get(id).map(Job::object))
                    .collect();
                Answer::json(
                    200,
                    &json!({"data": data, "object": "list", "total": data.len()}),
                )
            }
            ("GET", ["v1", "batch", "jobs", id]) => match self.lock().jobs.get(*id) {
                Some(job) => Answer::json(200, &job.object()),
                None => Answer::not_found("Batch job"),
            },
            ("POST", ["v1", "batch", "jobs", id, "cancel"]) => {
                let mut state = self.lock();
                match state.jobs.get_mut(*id) {
                    Some(job) => {
                        if matches!(job.status, "QUEUED" | "RUNNING") {
                            job.cancel = true;
                            job.status = "CANCELLATION_REQUESTED";
                        }
                        Answer::json(200, &job.object())
                    }
                    None => Answer::not_found("Batch job"),
                }
            }
            (_, ["v1", "files", ..] | ["v1", "batch", ..])
                if matches!(method.as_str(), "GET" | "POST") =>
            {
                Answer::json(
                    404,
                    &json!({"message": "no Route matched with those values"}),
                )
            }
            _ => Answer::json(405, &json!({"detail": "Method Not Allowed"})),
        }
    }

    fn upload(&self, content_type: Option<&str>, body: &[u8], seed: u64) -> Answer {
        let Some(boundary) = content_type.and_then(boundary_of) else {
            return Answer::invalid("expected multipart/form-data with a boundary");
        };
        let parts = multipart(body, &boundary);
        let mut purpose = None;
        let mut file = None;
        for part in parts {
            match part.name.as_deref() {
                Some("purpose") => {
                    purpose = Some(String::from_utf8_lossy(part.data).trim().to_string())
                }
                Some("file") => {
                    file = Some((
                        part.filename.unwrap_or_else(|| "upload.jsonl".into()),
                        part.data,
                    ))
                }
                _ => {}
            }
        }
        let Some((filename, data)) = file else {
            return Answer::json(
                422,
                &json!({"detail": [{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": null}]}),
            );
        };
        let purpose = purpose.unwrap_or_else(|| "fine-tune".into());
        let mut state = self.lock();
        let id = state.new_id(seed);
        let stored = StoredFile {
            id: id.clone(),
            filename,
            purpose,
            created_at: unix_now(),
            num_lines: data
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count() as u64,
            content: Bytes::copy_from_slice(data),
        };
        let answer = Answer::json(200, &stored.object());
        state.file_order.push(id.clone());
        state.files.insert(id, stored);
        answer
    }

    fn create(&self, body: &[u8], answering: Answering) -> Answer {
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
            return Answer::invalid("the body is not a JSON object");
        };
        // Inline requests (since 2026-01): `requests` instead of `input_files`.
        let inline: Option<Vec<Bytes>> = match request.get("requests") {
            Some(Value::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .map(|item| Bytes::from(item.to_string()))
                    .collect(),
            ),
            Some(_) => return Answer::invalid("requests must be a non-empty list"),
            None => None,
        };
        let input_files: Vec<String> = match request.get("input_files") {
            None if inline.is_some() => Vec::new(),
            Some(Value::Array(ids)) if !ids.is_empty() => {
                match ids
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                {
                    Some(ids) => ids,
                    None => return Answer::invalid("input_files must be a list of file ids"),
                }
            }
            _ => return Answer::invalid("input_files must be a non-empty list of file ids"),
        };
        let Some(endpoint) = request.get("endpoint").and_then(Value::as_str) else {
            return Answer::invalid("endpoint is required");
        };
        let Some(api_endpoint) = Endpoint::from_path(endpoint) else {
            return Answer::invalid(&format!("unsupported endpoint {endpoint}"));
        };
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut state = self.lock();
        let mut lines: Vec<Bytes> = inline.unwrap_or_default();
        for id in &input_files {
            let Some(file) = state.files.get(id) else {
                return Answer::not_found(&format!("File {id}"));
            };
            let content = file.content.clone();
            let mut start = 0;
            for (i, b) in content.iter().enumerate() {
                if *b == b'\n' {
                    lines.push(content.slice(start..i));
                    start = i + 1;
                }
            }
            if start < content.len() {
                lines.push(content.slice(start..));
            }
        }
        lines.retain(|l| !l.iter().all(u8::is_ascii_whitespace));
        let id = state.new_id(answering.seed);
        let job = Job {
            id: id.clone(),
            input_files,
            endpoint: endpoint.to_string(),
            model: model.clone(),
            metadata: request.get("metadata").cloned().unwrap_or(Value::Null),
            status: "QUEUED",
            created_at: unix_now(),
            started_at: None,
            completed_at: None,
            total: lines.len() as u64,
            succeeded: 0,
            failed: 0,
            output_file: None,
            error_file: None,
            cancel: false,
        };
        let answer = Answer::json(200, &job.object());
        state.job_order.push(id.clone());
        state.jobs.insert(id.clone(), job);
        drop(state);
        let batches = self.clone();
        tokio::spawn(async move {
            batches
                .process(id, api_endpoint, model, lines, answering)
                .await;
        });
        answer
    }

    async fn process(
        &self,
        id: String,
        endpoint: Endpoint,
        model: Option<String>,
        lines: Vec<Bytes>,
        answering: Answering,
    ) {
        tokio::time::sleep(Duration::from_millis(QUEUE_MS)).await;
        {
            let mut state = self.lock();
            let Some(job) = state.jobs.get_mut(&id) else {
                return;
            };
            if job.cancel {
                job.status = "CANCELLED";
                job.completed_at = Some(unix_now());
                return;
            }
            job.status = "RUNNING";
            job.started_at = Some(unix_now());
        }
        let mut output = Vec::new();
        let mut errors = Vec::new();
        let mut cancelled = false;
        for (chunk_no, chunk) in lines.chunks(LINES_PER_TICK).enumerate() {
            tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
            let (mut ok, mut failed) = (0, 0);
            for (i, line) in chunk.iter().enumerate() {
                let n = (chunk_no * LINES_PER_TICK + i) as u64;
                let (good, text) = answer_line(&id, n, endpoint, model.as_deref(), line, answering);
                if good {
                    ok += 1;
                    output.extend_from_slice(text.as_bytes());
                } else {
                    failed += 1;
                    errors.extend_from_slice(text.as_bytes());
                }
            }
            let mut state = self.lock();
            let Some(job) = state.jobs.get_mut(&id) else {
                return;
            };
            job.succeeded += ok;
            job.failed += failed;
            if job.cancel {
                cancelled = true;
                break;
            }
        }
        let mut state = self.lock();
        let output_id = (!output.is_empty()).then(|| state.new_id(answering.seed));
        let error_id = (!errors.is_empty()).then(|| state.new_id(answering.seed));
        for (file_id, content, kind) in
            [(&output_id, output, "output"), (&error_id, errors, "error")]
        {
            if let Some(file_id) = file_id {
                let num_lines = content.iter().filter(|b| **b == b'\n').count() as u64;
                state.file_order.push(file_id.clone());
                state.files.insert(
                    file_id.clone(),
                    StoredFile {
                        id: file_id.clone(),
                        filename: format!("{id}-{kind}.jsonl"),
                        purpose: "batch".into(),
                        created_at: unix_now(),
                        num_lines,
                        content: Bytes::from(content),
                    },
                );
            }
        }
        if let Some(job) = state.jobs.get_mut(&id) {
            job.output_file = output_id;
            job.error_file = error_id;
            job.status = if cancelled { "CANCELLED" } else { "SUCCESS" };
            job.completed_at = Some(unix_now());
        }
    }
}

/// One input line's result line: `(succeeded, line with its newline)`.
fn answer_line(
    job: &str,
    n: u64,
    endpoint: Endpoint,
    model: Option<&str>,
    line: &[u8],
    answering: Answering,
) -> (bool, String) {
    let id = format!("batch-{}-{n}", &job[..8.min(job.len())]);
    let parsed: Option<Value> = serde_json::from_slice(line).ok();
    let custom_id = parsed
        .as_ref()
        .and_then(|v| v.get("custom_id"))
        .cloned()
        .unwrap_or(Value::Null);
    let body = parsed.as_ref().and_then(|v| v.get("body")).cloned();
    let result = match body {
        Some(Value::Object(mut body)) => {
            if let Some(model) = model {
                body.entry("model")
                    .or_insert_with(|| Value::String(model.to_string()));
            }
            body.remove("stream");
            let bytes = Value::Object(body).to_string();
            api::parse(
                endpoint,
                bytes.as_bytes(),
                answering.completion_tokens,
                answering.embedding_dim,
            )
            .map(|parsed| api::response(&parsed, &hex32(answering.seed ^ 0xB0D1, n), unix_now()))
            .map_err(|invalid| (invalid.status, invalid.body))
        }
        _ => Err((
            400,
            json!({"object": "error", "message": "each line needs a custom_id and a body object",
                   "type": "invalid_request_error", "param": null, "code": null}),
        )),
    };
    let (good, value) = match result {
        Ok(body) => (
            true,
            json!({"id": id, "custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": null}),
        ),
        Err((status, body)) => {
            let message = body
                .get("message")
                .map(|m| match m {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .or_else(|| body.get("detail").map(Value::to_string))
                .unwrap_or_else(|| "invalid request".into());
            (
                false,
                json!({"id": id, "custom_id": custom_id, "response": {"status_code": status, "body": body},
                       "error": {"message": message, "code": body.get("code").cloned().unwrap_or(Value::Null)}}),
            )
        }
    };
    let mut text = value.to_string();
    text.push('\n');
    (good, text)
}

/// The boundary of a `multipart/form-data` content type.
pub(crate) fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// One part of a multipart body.
pub(crate) struct Part<'a> {
    pub name: Option<String>,
    pub filename: Option<String>,
    pub data: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// The parts of a multipart body.
pub(crate) fn multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = Vec::new();
    let Some(mut at) = find(body, delimiter, 0) else {
        return parts;
    };
    loop {
        let start = at + delimiter.len();
        if body.get(start..start + 2) == Some(b"--") {
            break;
        }
        let Some(head_end) = find(body, b"\r\n\r\n", start) else {
            break;
        };
        let head = String::from_utf8_lossy(&body[start..head_end]);
        let data_start = head_end + 4;
        let mut next_delimiter = Vec::with_capacity(delimiter.len() + 2);
        next_delimiter.extend_from_slice(b"\r\n");
        next_delimiter.extend_from_slice(delimiter);
        let Some(data_end) = find(body, &next_delimiter, data_start) else {
            break;
        };
        let mut name = None;
        let mut filename = None;
        for line in head.lines() {
            if line
                .to_ascii_lowercase()
                .starts_with("content-disposition:")
            {
                for param in line.split(';') {
                    if let Some((k, v)) = param.split_once('=') {
                        let v = v.trim().trim_matches('"').to_string();
                        match k.trim() {
                            "name" => name = Some(v),
                            "filename" => filename = Some(v),
                            _ => {}
                        }
                    }
                }
            }
        }
        parts.push(Part {
            name,
            filename,
            data: &body[data_start..data_end],
        });
        at = data_end + 2;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_found() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n{\"b\":2}\n\r\n--xyz--\r\n";
        let parts = multipart(body, "xyz");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name.as_deref(), Some("purpose"));
        assert_eq!(parts[0].data, b"batch");
        assert_eq!(parts[1].filename.as_deref(), Some("a.jsonl"));
        assert_eq!(parts[1].data, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"xyz\"").as_deref(),
            Some("xyz")
        );
    }
}
