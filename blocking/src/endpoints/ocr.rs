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
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::{OcrDocument, OcrRequest};
    ///
    /// let pdf = std::fs::read("invoice.pdf").unwrap_or_default();
    /// let reply = client.ocr(OcrRequest::new("mistral-ocr-latest", OcrDocument::pdf(&pdf)))?;
    /// println!("{} pages: {}", reply.pages_processed(), reply.markdown());
    /// # Ok(())
    /// # }
    /// ```
    pub fn ocr(&self, request: impl Into<OcrRequest>) -> Result<Reply<OcrResponse>, Error> {
        self.reply(&ApiRequest::ocr(&request.into())?)
    }
}
