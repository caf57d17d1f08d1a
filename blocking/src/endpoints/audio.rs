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
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::TranscriptionRequest;
    ///
    /// let audio = std::fs::read("meeting.mp3").unwrap_or_default();
    /// let request = TranscriptionRequest::file("voxtral-mini-latest", "meeting.mp3", audio)
    ///     .language("en")
    ///     .segments();
    /// let reply = client.transcription(request)?;
    /// for segment in &reply.segments {
    ///     println!("[{:.1}-{:.1}] {}", segment.start, segment.end, segment.text);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn transcription(
        &self,
        request: impl Into<TranscriptionRequest>,
    ) -> Result<Reply<TranscriptionResponse>, Error> {
        self.reply(&ApiRequest::transcription(&request.into()))
    }
}
