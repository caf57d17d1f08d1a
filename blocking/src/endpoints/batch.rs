//! Files and batch jobs: `POST /v1/files`, `GET /v1/files/{id}[/content]`,
//! `POST /v1/batch/jobs`, `GET /v1/batch/jobs/{id}`, `POST /v1/batch/jobs/{id}/cancel`.
//! Outside any model's budget (a batch does not spend the online limits), with the
//! same retries, errors and statistics as every call; an upload or a job creation
//! whose answer was lost is not sent again (it may have been done).

use mistral_core::models::{BatchJob, BatchJobRequest, FileObject, FileUpload};
use mistral_core::{ApiRequest, Error, Reply};

use crate::Client;

impl Client {
    /// `POST /v1/files`: uploads a file (a multipart form).
    ///
    /// The whole batch, from code: upload, create, poll, download.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use mistral_blocking::{BatchJobRequest, BatchRequest, BatchResult, FileUpload, batch_jsonl};
    /// use serde_json::json;
    ///
    /// let lines = batch_jsonl(&[BatchRequest::new("q1", json!({
    ///     "model": "mistral-small-latest", "messages": [{"role": "user", "content": "Hi"}]
    /// }))])?;
    /// let file = client.upload_file(FileUpload::new("requests.jsonl", lines))?;
    /// let request = BatchJobRequest::new("/v1/chat/completions", vec![file.id.clone()])
    ///     .model("mistral-small-latest");
    /// let mut job = client.create_batch_job(&request)?.into_inner();
    /// while !job.is_done() {
    ///     std::thread::sleep(Duration::from_secs(5));
    ///     job = client.batch_job(&job.id)?.into_inner();
    /// }
    /// if let Some(output) = &job.output_file {
    ///     for line in BatchResult::parse_lines(&client.file_content(output)?) {
    ///         let line = line?;
    ///         println!("{:?}: {}", line.custom_id, line.is_success());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn upload_file(&self, upload: impl Into<FileUpload>) -> Result<Reply<FileObject>, Error> {
        self.reply(&ApiRequest::upload_file(&upload.into()))
    }

    /// `GET /v1/files/{id}`: an uploaded file's object.
    pub fn file(&self, file_id: &str) -> Result<Reply<FileObject>, Error> {
        self.reply(&ApiRequest::file(file_id))
    }

    /// `GET /v1/files/{id}/content`: a file's bytes (a batch's output JSONL: read it
    /// with [`mistral_core::models::BatchResult::parse_lines`]). Read whole, up to
    /// [`crate::MAX_RESPONSE_BYTES`].
    pub fn file_content(&self, file_id: &str) -> Result<Reply, Error> {
        self.raw(&ApiRequest::file_content(file_id))
    }

    /// `POST /v1/batch/jobs`: creates a batch job.
    pub fn create_batch_job(
        &self,
        request: impl Into<BatchJobRequest>,
    ) -> Result<Reply<BatchJob>, Error> {
        self.reply(&ApiRequest::create_batch_job(&request.into())?)
    }

    /// `GET /v1/batch/jobs/{id}`: a batch job as it stands.
    pub fn batch_job(&self, job_id: &str) -> Result<Reply<BatchJob>, Error> {
        self.reply(&ApiRequest::batch_job(job_id))
    }

    /// `POST /v1/batch/jobs/{id}/cancel`: asks a batch job to stop.
    pub fn cancel_batch_job(&self, job_id: &str) -> Result<Reply<BatchJob>, Error> {
        self.reply(&ApiRequest::cancel_batch_job(job_id))
    }
}
