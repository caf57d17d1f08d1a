//! Files and batch jobs: `POST /v1/files` (a multipart upload), `GET
//! /v1/files/{id}/content`, `POST /v1/batch/jobs`, `GET /v1/batch/jobs/{id}`,
//! `POST /v1/batch/jobs/{id}/cancel`: what `mistral batch --via batch-api` does, from
//! code.
//!
//! A batch is a JSONL file of [`BatchRequest`]s (`{"custom_id", "body"}`, [`batch_jsonl`]),
//! uploaded with purpose `batch`, then a job over it; the job is polled until
//! [`BatchJob::is_done`], and its `output_file` (and `error_file`) downloaded and read
//! line by line ([`BatchResult::parse_lines`]). These calls spend no model's budget (the
//! Batch API does not spend the online limits): they go outside any, with the same
//! retries, errors and statistics as every call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::de;
use crate::multipart::Form;

open_enum! {
    /// What an uploaded file is for.
    pub enum FilePurpose {
        /// `batch`: the input of a batch job.
        Batch => "batch",
        /// `ocr`: a document for `/v1/ocr`.
        Ocr => "ocr",
        /// `fine-tune`: training data.
        FineTune => "fine-tune",
        /// `audio`: audio for transcription.
        Audio => "audio",
    }
}

/// A file to upload with `POST /v1/files`.
///
/// ```
/// use mistral_core::models::{BatchRequest, FilePurpose, FileUpload, batch_jsonl};
/// use serde_json::json;
///
/// let lines = batch_jsonl(&[
///     BatchRequest::new("1", json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "Hi"}]})),
/// ])?;
/// let upload = FileUpload::new("requests.jsonl", lines).purpose(FilePurpose::Batch);
/// let (content_type, body) = upload.form().finish();
/// assert!(content_type.to_str()?.starts_with("multipart/form-data; boundary="));
/// assert!(String::from_utf8_lossy(&body).contains("name=\"purpose\"\r\n\r\nbatch\r\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUpload {
    /// The file's name.
    pub filename: String,
    /// Its bytes.
    pub content: bytes::Bytes,
    /// What it is for (`batch` unless set).
    pub purpose: FilePurpose,
    /// Its media type (`application/octet-stream` unless set; a `.jsonl` name gives
    /// `application/x-ndjson`).
    pub content_type: Option<String>,
}

impl FileUpload {
    /// A file named `filename` holding `content`, for a batch.
    pub fn new(filename: impl Into<String>, content: impl Into<bytes::Bytes>) -> Self {
        Self {
            filename: filename.into(),
            content: content.into(),
            purpose: FilePurpose::Batch,
            content_type: None,
        }
    }

    /// Sets what the file is for.
    pub fn purpose(mut self, purpose: FilePurpose) -> Self {
        self.purpose = purpose;
        self
    }

    /// The multipart form of the upload: `purpose`, then `file`.
    pub fn form(&self) -> Form {
        let kind =
            self.content_type
                .clone()
                .unwrap_or_else(|| match self.filename.ends_with(".jsonl") {
                    true => "application/x-ndjson".into(),
                    false => "application/octet-stream".into(),
                });
        Form::new().text("purpose", self.purpose.as_str()).file(
            "file",
            self.filename.clone(),
            kind,
            self.content.clone(),
        )
    }
}

/// An uploaded file: `{id, object: "file", bytes, created_at, filename, purpose, …}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    /// The file's id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// `file`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// Its size.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub bytes: u64,
    /// Unix time of the upload.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub created_at: u64,
    /// Its name.
    #[serde(default, deserialize_with = "de::null_default")]
    pub filename: String,
    /// What it is for.
    #[serde(default, deserialize_with = "de::null_default")]
    pub purpose: String,
    /// Lines of a JSONL file.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_lines: Option<u64>,
    /// Any other field (`sample_type`, `source`, `mimetype`, `signature`…), verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One line of a batch's input: `{"custom_id", "body"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The caller's id of the request (its result carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// The request's body, as the online endpoint takes it.
    pub body: Value,
}

impl BatchRequest {
    /// A request `custom_id` of `body` (a chat request, an embedding request…: any
    /// serializable request).
    pub fn new(custom_id: impl Into<String>, body: impl Serialize) -> Self {
        Self {
            custom_id: Some(custom_id.into()),
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }
}

/// The JSONL of `requests`, one line each (the content of a batch file).
pub fn batch_jsonl(requests: &[BatchRequest]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for request in requests {
        serde_json::to_writer(&mut out, request)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The body of `POST /v1/batch/jobs`.
///
/// ```
/// use mistral_core::models::BatchJobRequest;
///
/// let job = BatchJobRequest::new("/v1/chat/completions", vec!["file-id".into()])
///     .model("mistral-small-latest");
/// assert_eq!(
///     serde_json::to_value(&job)?,
///     serde_json::json!({"endpoint": "/v1/chat/completions", "input_files": ["file-id"],
///                        "model": "mistral-small-latest"})
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchJobRequest {
    /// The endpoint every line goes to (`/v1/chat/completions`, `/v1/embeddings`…).
    pub endpoint: String,
    /// The uploaded input files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_files: Vec<String>,
    /// Requests given inline instead of (or beside) files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<BatchRequest>>,
    /// The model every line uses (or an agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent every line uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Metadata kept with the job (strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Hours before the job times out (24 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_hours: Option<u32>,
}

impl BatchJobRequest {
    /// A job of `endpoint` over the uploaded `input_files`.
    pub fn new(endpoint: impl Into<String>, input_files: Vec<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            input_files,
            requests: None,
            model: None,
            agent_id: None,
            metadata: None,
            timeout_hours: None,
        }
    }

    /// A job of `endpoint` over requests given inline (no upload).
    pub fn inline(endpoint: impl Into<String>, requests: Vec<BatchRequest>) -> Self {
        Self {
            requests: Some(requests),
            ..Self::new(endpoint, Vec::new())
        }
    }

    /// Sets `model`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }
}

open_enum! {
    /// A batch job's status.
    pub enum BatchStatus {
        /// Waiting to start.
        Queued => "QUEUED",
        /// Running.
        Running => "RUNNING",
        /// Done: every line answered (some may have failed: see the error file).
        Success => "SUCCESS",
        /// Failed as a whole.
        Failed => "FAILED",
        /// Not done within `timeout_hours`.
        TimeoutExceeded => "TIMEOUT_EXCEEDED",
        /// Cancelled, not stopped yet.
        CancellationRequested => "CANCELLATION_REQUESTED",
        /// Cancelled.
        Cancelled => "CANCELLED",
    }
}

impl Default for BatchStatus {
    fn default() -> Self {
        Self::Other(String::new())
    }
}

impl BatchStatus {
    /// Whether the job will change no more (success, failure, timeout, cancelled).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::TimeoutExceeded | Self::Cancelled
        )
    }
}

/// A batch job: `{id, object: "batch", status, counts, output_file, error_file, …}`.
///
/// A [`crate::Reply`] of a job has an HTTP `status` of its own: the job's is
/// `reply.value.status` (or [`BatchJob::is_done`] through the reply).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchJob {
    /// The job's id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// `batch`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// Its status.
    #[serde(default, deserialize_with = "de::null_default")]
    pub status: BatchStatus,
    /// The endpoint its lines go to.
    #[serde(default, deserialize_with = "de::null_default")]
    pub endpoint: String,
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its input files.
    #[serde(default, deserialize_with = "de::null_default")]
    pub input_files: Vec<String>,
    /// The answers' file, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
    /// The failed lines' file, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_file: Option<String>,
    /// Errors of the job as a whole.
    #[serde(default, deserialize_with = "de::null_default")]
    pub errors: Vec<Value>,
    /// Lines in all.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub total_requests: u64,
    /// Lines answered.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub completed_requests: u64,
    /// Lines answered with success.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub succeeded_requests: u64,
    /// Lines answered with an error.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub failed_requests: u64,
    /// Unix time of creation.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub created_at: u64,
    /// Unix time it started running.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<u64>,
    /// Unix time it ended.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_at: Option<u64>,
    /// Any other field (`metadata`, `agent_id`, `outputs`…), verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl BatchJob {
    /// Whether the job will change no more ([`BatchStatus::is_done`]).
    pub fn is_done(&self) -> bool {
        self.status.is_done()
    }
}

/// One line of a batch's output (or error) file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The line's id in the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The request's `custom_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// The answer: `{status_code, body}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<BatchResponse>,
    /// The error, for a failed line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The answer of one batch line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The status the online endpoint would have answered.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub status_code: u64,
    /// The body it would have answered (decode it with `serde_json::from_value`).
    #[serde(default)]
    pub body: Value,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl BatchResult {
    /// The lines of an output or error file, each decoded (a line that is not one is a
    /// `serde_json` error, the others still read); blank lines skipped.
    pub fn parse_lines(content: &[u8]) -> Vec<Result<BatchResult, serde_json::Error>> {
        content
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(serde_json::from_slice)
            .collect()
    }

    /// Whether the line was answered with a 2xx and no error.
    pub fn is_success(&self) -> bool {
        self.error.as_ref().is_none_or(Value::is_null)
            && self
                .response
                .as_ref()
                .is_some_and(|r| (200..300).contains(&r.status_code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_decodes_and_tells_when_it_is_done() {
        let job: BatchJob = serde_json::from_value(json!({
            "id": "b-1", "object": "batch", "input_files": ["f-1"], "metadata": {"run": "x"},
            "endpoint": "/v1/chat/completions", "model": "m", "agent_id": null,
            "output_file": null, "error_file": null, "errors": [], "status": "RUNNING",
            "created_at": 1, "total_requests": 10, "completed_requests": 4,
            "succeeded_requests": 4, "failed_requests": 0, "started_at": 2, "completed_at": null,
            "priority": "standard"
        }))
        .unwrap();
        assert_eq!(job.status, BatchStatus::Running);
        assert!(!job.is_done());
        assert_eq!(job.extra["metadata"]["run"], "x");
        assert_eq!(job.extra["priority"], "standard");
        for (status, done) in [
            ("SUCCESS", true),
            ("FAILED", true),
            ("TIMEOUT_EXCEEDED", true),
            ("CANCELLED", true),
            ("CANCELLATION_REQUESTED", false),
            ("QUEUED", false),
            ("PAUSED", false),
        ] {
            assert_eq!(BatchStatus::from(status).is_done(), done, "{status}");
        }
    }

    #[test]
    fn lines_go_out_and_come_back() {
        let jsonl = batch_jsonl(&[
            BatchRequest::new("a", json!({"model": "m"})),
            BatchRequest {
                custom_id: None,
                body: json!({}),
            },
        ])
        .unwrap();
        assert_eq!(
            String::from_utf8(jsonl).unwrap(),
            "{\"custom_id\":\"a\",\"body\":{\"model\":\"m\"}}\n{\"body\":{}}\n"
        );
        let output = b"{\"id\":\"o1\",\"custom_id\":\"a\",\"response\":{\"status_code\":200,\"body\":{\"x\":1}},\"error\":null}\n\n\
            {\"custom_id\":\"b\",\"response\":{\"status_code\":422,\"body\":{}},\"error\":{\"message\":\"bad\"}}\nnot json\n";
        let lines = BatchResult::parse_lines(output);
        assert_eq!(lines.len(), 3);
        let first = lines[0].as_ref().unwrap();
        assert!(first.is_success());
        assert_eq!(first.response.as_ref().unwrap().body["x"], 1);
        assert!(!lines[1].as_ref().unwrap().is_success());
        assert!(lines[2].is_err());
    }

    #[test]
    fn an_upload_is_a_form_of_purpose_and_file() {
        let upload = FileUpload::new("in.jsonl", b"{}\n".to_vec());
        let (_, body) = upload.form().finish();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("name=\"purpose\"\r\n\r\nbatch\r\n"));
        assert!(text.contains(
            "filename=\"in.jsonl\"\r\nContent-Type: application/x-ndjson\r\n\r\n{}\n\r\n"
        ));
        let file: FileObject = serde_json::from_value(json!({
            "id": "f", "object": "file", "bytes": 3, "created_at": 5, "filename": "in.jsonl",
            "purpose": "batch", "sample_type": "batch_request", "num_lines": 1, "source": "upload"
        }))
        .unwrap();
        assert_eq!((file.bytes, file.num_lines), (3, Some(1)));
        assert_eq!(file.extra["source"], "upload");
    }
}
