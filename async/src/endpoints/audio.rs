//! `POST /v1/audio/transcriptions`.

use mistral_core::models::{TranscriptionRequest, TranscriptionResponse};
use mistral_core::{ApiRequest, Error, Reply};

use crate::Client;

impl Client {
    /// `POST /v1/audio/transcriptions`: audio to text (a multipart upload, or the audio
    /// by URL or file id), in the model's token budget: the estimate is made from the
    /// audio's length ([`TranscriptionRequest::estimated_tokens`]) and the answer's
    /// `usage` corrects it.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::TranscriptionRequest;
    ///
    /// let request = TranscriptionRequest::url("voxtral-mini-latest", "https://example.com/talk.mp3")
    ///     .language("en");
    /// println!("{}", client.transcription(request).await?.text);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn transcription(
        &self,
        request: impl Into<TranscriptionRequest>,
    ) -> Result<Reply<TranscriptionResponse>, Error> {
        self.fetch(ApiRequest::transcription(&request.into())).await
    }
}
