//! `POST /v1/classifications` and `POST /v1/chat/classifications`.

use mistral_core::models::{
    ChatClassificationRequest, ClassificationRequest, ClassificationResponse,
};
use mistral_core::{ApiRequest, Error, Reply};

use crate::Client;

impl Client {
    /// `POST /v1/classifications`: a classifier's scores for each text, in the model's
    /// token budget.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::ClassificationRequest;
    ///
    /// let reply = client.classifications(ClassificationRequest::new("ft:classifier:intents", "refund please"))?;
    /// for (target, scores) in &reply.results[0] {
    ///     println!("{target}: {:?}", scores.top());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn classifications(
        &self,
        request: impl Into<ClassificationRequest>,
    ) -> Result<Reply<ClassificationResponse>, Error> {
        self.reply(&ApiRequest::classifications(&request.into())?)
    }

    /// `POST /v1/chat/classifications`: a classifier's scores for each chat.
    pub fn chat_classifications(
        &self,
        request: impl Into<ChatClassificationRequest>,
    ) -> Result<Reply<ClassificationResponse>, Error> {
        self.reply(&ApiRequest::chat_classifications(&request.into())?)
    }
}
