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
    /// # async fn demo(client: mistral_async::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use mistral_async::{BatchJobRequest, BatchRequest, BatchResult, FileUpload, batch_jsonl};
    /// use serde_json::json;
    ///
    /// let lines = batch_jsonl(&[BatchRequest::new("q1", json!({
    ///     "model": "mistral-small-latest", "messages": [{"role": "user", "content": "Hi"}]
    /// }))])?;
    /// let file = client.upload_file(FileUpload::new("requests.jsonl", lines)).await?;
    /// let request = BatchJobRequest::new("/v1/chat/completions", vec![file.id.clone()])
    ///     .model("mistral-small-latest");
    /// let mut job = client.create_batch_job(request).await?.into_inner();
    /// while !job.is_done() {
    ///     tokio::time::sleep(Duration::from_secs(5)).await;
    ///     job = client.batch_job(&job.id).await?.into_inner();
    /// }
    /// if let Some(output) = &job.output_file {
    ///     for line in BatchResult::parse_lines(&client.file_content(output).await?) {
    ///         println!("{:?}", line?.custom_id);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_file(
        &self,
        upload: impl Into<FileUpload>,
    ) -> Result<Reply<FileObject>, Error> {
        self.fetch(ApiRequest::upload_file(&upload.into())).await
    }

    /// `GET /v1/files/{id}`: an uploaded file's object.
    pub async fn file(&self, file_id: &str) -> Result<Reply<FileObject>, Error> {
        self.fetch(ApiRequest::file(file_id)).await
    }

    /// `GET /v1/files/{id}/content`: a file's bytes (a batch's output JSONL: read it
    /// with [`mistral_core::models::BatchResult::parse_lines`]). Read whole, up to
    /// [`crate::MAX_RESPONSE_BYTES`].
    pub async fn file_content(&self, file_id: &str) -> Result<Reply, Error> {
        self.raw(ApiRequest::file_content(file_id)).await
    }

    /// `POST /v1/batch/jobs`: creates a batch job.
    pub async fn create_batch_job(
        &self,
        request: impl Into<BatchJobRequest>,
    ) -> Result<Reply<BatchJob>, Error> {
        self.fetch(ApiRequest::create_batch_job(&request.into())?)
            .await
    }

    /// `GET /v1/batch/jobs/{id}`: a batch job as it stands.
    pub async fn batch_job(&self, job_id: &str) -> Result<Reply<BatchJob>, Error> {
        self.fetch(ApiRequest::batch_job(job_id)).await
    }

    /// `POST /v1/batch/jobs/{id}/cancel`: asks a batch job to stop.
    pub async fn cancel_batch_job(&self, job_id: &str) -> Result<Reply<BatchJob>, Error> {
        self.fetch(ApiRequest::cancel_batch_job(job_id)).await
    }
}
