//! `POST /v1/ocr`.

use mistral_core::models::{OcrRequest, OcrResponse};
use mistral_core::{ApiRequest, Error, Reply};

use crate::Client;

impl Client {
    /// `POST /v1/ocr`: a document read into Markdown, page by page.
    ///
    /// OCR has a budget of its own, in pages per minute: the call reserves the pages the
    /// request is expected to cost ([`OcrRequest::estimated_pages`]: the pages named, 1
    /// for an image, an inline PDF's own count, else [`OcrRequest::expected_pages`] or
    /// [`mistral_core::models::DEFAULT_DOCUMENT_PAGES`]) and the answer's
    /// `pages_processed` corrects it. A 429 on the page budget is waited out like any
    /// other spent window.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::{OcrDocument, OcrRequest};
    ///
    /// let request = OcrRequest::new("mistral-ocr-latest", OcrDocument::url("https://example.com/a.pdf"))
    ///     .pages([0, 1]);
    /// let reply = client.ocr(request).await?;
    /// println!("{}", reply.markdown());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ocr(&self, request: impl Into<OcrRequest>) -> Result<Reply<OcrResponse>, Error> {
        self.fetch(ApiRequest::ocr(&request.into())?).await
    }
}
