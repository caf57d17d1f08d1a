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
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::ClassificationRequest;
    ///
    /// let request = ClassificationRequest::new("ft:classifier:intents", "refund please");
    /// let reply = client.classifications(request).await?;
    /// println!("{:?}", reply.results[0].get("intent").and_then(|s| s.top()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn classifications(
        &self,
        request: impl Into<ClassificationRequest>,
    ) -> Result<Reply<ClassificationResponse>, Error> {
        self.fetch(ApiRequest::classifications(&request.into())?)
            .await
    }

    /// `POST /v1/chat/classifications`: a classifier's scores for each chat.
    pub async fn chat_classifications(
        &self,
        request: impl Into<ChatClassificationRequest>,
    ) -> Result<Reply<ClassificationResponse>, Error> {
        self.fetch(ApiRequest::chat_classifications(&request.into())?)
            .await
    }
}
