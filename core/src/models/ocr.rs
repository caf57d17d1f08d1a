//! `POST /v1/ocr`: a document (a PDF or an image, by URL, inline as a `data:` URL, or an
//! uploaded file) read into Markdown, page by page.
//!
//! OCR's limit is **pages** per minute (`x-ratelimit-{limit,remaining}-ocr-pages-minute`),
//! not tokens: its budget counts pages ([`crate::request::CostUnit::Pages`]). A request's
//! pages are estimated before it is sent ([`OcrRequest::estimated_pages`]) and corrected
//! from the answer (`usage_info.pages_processed`, or the `x-ratelimit-ocr-pages-query-cost`
//! header), as a chat request's tokens are from its `usage`.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{ImageUrl, ResponseFormat};
use super::de;

/// Pages assumed for a document whose length cannot be read from the request (a PDF by
/// URL or uploaded file, or an inline PDF whose page count is hidden in compressed
/// streams), when the request names no `pages` and no
/// [`OcrRequest::expected_pages`]: the estimate the OCR budget reserves until the
/// answer's `pages_processed` corrects it.
pub const DEFAULT_DOCUMENT_PAGES: u64 = 8;

/// The body of `POST /v1/ocr`.
///
/// ```
/// use mistral_core::models::{OcrDocument, OcrRequest};
///
/// let request = OcrRequest::new("mistral-ocr-latest", OcrDocument::url("https://example.com/paper.pdf"))
///     .pages([0, 1, 2])
///     .include_image_base64(true);
/// assert_eq!(request.estimated_pages(), 3);
/// let image = OcrRequest::new("mistral-ocr-latest", OcrDocument::image_url("https://example.com/receipt.png"));
/// assert_eq!(image.estimated_pages(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrRequest {
    /// Model id, e.g. `mistral-ocr-latest`.
    pub model: String,
    /// The document to read.
    pub document: OcrDocument,
    /// Only these pages (0-based): a list, or a string of numbers and ranges (`"0,2-4"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<PageSelection>,
    /// Include each extracted image's bytes (base64) in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_image_base64: Option<bool>,
    /// At most this many images extracted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_limit: Option<u32>,
    /// Only images at least this high and wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_min_size: Option<u32>,
    /// Structured output for each bounding box (`json_schema` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox_annotation_format: Option<ResponseFormat>,
    /// Structured output for the whole document (`json_schema` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_annotation_format: Option<ResponseFormat>,
    /// A prompt guiding the document annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_annotation_prompt: Option<String>,
    /// `markdown` or `html` for tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_format: Option<String>,
    /// Extract each page's header apart from its Markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_header: Option<bool>,
    /// Extract each page's footer apart from its Markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_footer: Option<bool>,
    /// Return paragraph-level bounding boxes (`blocks`) for each page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_blocks: Option<bool>,
    /// `word` or `page` confidence scores (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_scores_granularity: Option<String>,
    /// Fields this client does not know yet, sent as given (the API refuses fields it
    /// does not know with a 422: only for fields it has).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// The pages the caller expects the document to have (never sent): the budget's
    /// estimate when the request itself does not tell.
    #[serde(skip)]
    pub expected_pages: Option<u64>,
}

impl OcrRequest {
    /// A request reading `document` with `model`.
    pub fn new(model: impl Into<String>, document: OcrDocument) -> Self {
        Self {
            model: model.into(),
            document,
            pages: None,
            include_image_base64: None,
            image_limit: None,
            image_min_size: None,
            bbox_annotation_format: None,
            document_annotation_format: None,
            document_annotation_prompt: None,
            table_format: None,
            extract_header: None,
            extract_footer: None,
            include_blocks: None,
            confidence_scores_granularity: None,
            extra: BTreeMap::new(),
            expected_pages: None,
        }
    }

    /// Only these pages (0-based).
    pub fn pages(mut self, pages: impl Into<PageSelection>) -> Self {
        self.pages = Some(pages.into());
        self
    }

    /// Include each extracted image's bytes (base64) in the answer.
    pub fn include_image_base64(mut self, include: bool) -> Self {
        self.include_image_base64 = Some(include);
        self
    }

    /// The pages the document is expected to have (the budget's estimate for a document
    /// whose length the request does not tell; never sent).
    pub fn expected_pages(mut self, pages: u64) -> Self {
        self.expected_pages = Some(pages);
        self
    }

    /// The pages this request is expected to cost, at least 1: the pages named
    /// ([`OcrRequest::pages`]), at most the document's own when it is known; 1 for an
    /// image; an inline PDF's pages counted in its bytes; else
    /// [`OcrRequest::expected_pages`] or [`DEFAULT_DOCUMENT_PAGES`].
    pub fn estimated_pages(&self) -> u64 {
        let document = self.document.known_pages();
        let named = self.pages.as_ref().and_then(PageSelection::count);
        let pages = match (named, document) {
            (Some(named), Some(document)) => named.min(document),
            (Some(named), None) => named,
            (None, Some(document)) => document,
            (None, None) => self.expected_pages.unwrap_or(DEFAULT_DOCUMENT_PAGES),
        };
        pages.max(1)
    }
}

/// The document of an OCR request, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OcrDocument {
    /// `{"type":"document_url","document_url":…}`: a PDF (or another document) by URL or
    /// as a `data:` URL.
    DocumentUrl {
        /// The URL.
        document_url: String,
        /// The file's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document_name: Option<String>,
    },
    /// `{"type":"image_url","image_url":…}`: one image by URL or as a `data:` URL.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
    /// `{"type":"file","file_id":…}`: a file uploaded with `POST /v1/files`.
    File {
        /// The uploaded file's id.
        file_id: String,
    },
}

impl OcrDocument {
    /// A document by URL (`https://…` or a `data:` URL).
    pub fn url(url: impl Into<String>) -> Self {
        Self::DocumentUrl {
            document_url: url.into(),
            document_name: None,
        }
    }

    /// A PDF sent inline: `data:application/pdf;base64,…`.
    pub fn pdf(bytes: &[u8]) -> Self {
        Self::url(data_url("application/pdf", bytes))
    }

    /// An image by URL (`https://…` or a `data:` URL).
    pub fn image_url(url: impl Into<String>) -> Self {
        Self::ImageUrl {
            image_url: ImageUrl::Url(url.into()),
        }
    }

    /// An image sent inline as a `data:` URL of `mime_type` (`image/png`, `image/jpeg`…).
    pub fn image(mime_type: &str, bytes: &[u8]) -> Self {
        Self::image_url(data_url(mime_type, bytes))
    }

    /// A file uploaded with `POST /v1/files` (purpose `ocr`).
    pub fn file(file_id: impl Into<String>) -> Self {
        Self::File {
            file_id: file_id.into(),
        }
    }

    /// The pages this document has, when the request tells: 1 for an image, a PDF's
    /// pages counted in an inline `data:` URL; `None` otherwise.
    pub fn known_pages(&self) -> Option<u64> {
        match self {
            Self::ImageUrl { .. } => Some(1),
            Self::DocumentUrl { document_url, .. } => {
                let (mime, bytes) = decode_data_url(document_url)?;
                if mime.starts_with("image/") {
                    return Some(1);
                }
                pdf_pages(&bytes)
            }
            Self::File { .. } => None,
        }
    }
}

/// A `data:` URL of `bytes` (base64).
pub fn data_url(mime_type: &str, bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("data:{mime_type};base64,{encoded}")
}

/// The media type and bytes of a base64 `data:` URL (`None` for anything else).
fn decode_data_url(url: &str) -> Option<(String, Vec<u8>)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let mime = head.strip_suffix(";base64")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    Some((mime.to_ascii_lowercase(), bytes))
}

/// The pages of a PDF, read from its bytes: its `/Type /Page` objects, or where those
/// are hidden in compressed object streams, the largest `/Count` of a page tree. `None`
/// when neither is found (not a PDF, or one this reading cannot count).
pub fn pdf_pages(bytes: &[u8]) -> Option<u64> {
    if !bytes.starts_with(b"%PDF") {
        return None;
    }
    let mut pages = 0u64;
    for at in memchr::memmem::find_iter(bytes, b"/Type") {
        let rest = &bytes[at + 5..];
        let skipped = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let rest = &rest[skipped..];
        if rest.starts_with(b"/Page") && !rest.get(5).is_some_and(u8::is_ascii_alphanumeric) {
            pages += 1;
        }
    }
    if pages > 0 {
        return Some(pages);
    }
    memchr::memmem::find_iter(bytes, b"/Count")
        .filter_map(|at| {
            let rest = &bytes[at + 6..];
            let skipped = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let digits: String = rest[skipped..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|b| char::from(*b))
                .collect();
            digits.parse::<u64>().ok()
        })
        .max()
        .filter(|n| *n > 0)
}

/// `pages`: a list of 0-based page numbers, or a string of numbers and ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PageSelection {
    /// `[0, 1, 2]`.
    List(Vec<u32>),
    /// `"0,2-4"`.
    Ranges(String),
}

impl PageSelection {
    /// How many distinct pages the selection names (`None` for a string this client
    /// cannot read, or an empty selection).
    pub fn count(&self) -> Option<u64> {
        let mut pages: Vec<u32> = match self {
            Self::List(list) => list.clone(),
            Self::Ranges(text) => {
                let mut pages = Vec::new();
                for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match part.split_once('-') {
                        Some((a, b)) => {
                            let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse().ok()?);
                            if b < a || b - a > 100_000 {
                                return None;
                            }
                            pages.extend(a..=b);
                        }
                        None => pages.push(part.parse().ok()?),
                    }
                }
                pages
            }
        };
        pages.sort_unstable();
        pages.dedup();
        (!pages.is_empty()).then_some(pages.len() as u64)
    }
}

impl<const N: usize> From<[u32; N]> for PageSelection {
    fn from(pages: [u32; N]) -> Self {
        Self::List(pages.to_vec())
    }
}

impl From<Vec<u32>> for PageSelection {
    fn from(pages: Vec<u32>) -> Self {
        Self::List(pages)
    }
}

impl From<&str> for PageSelection {
    fn from(ranges: &str) -> Self {
        Self::Ranges(ranges.to_owned())
    }
}

/// The answer of `POST /v1/ocr`: `{pages, model, document_annotation, usage_info}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrResponse {
    /// The pages read, in order.
    #[serde(default, deserialize_with = "de::null_default")]
    pub pages: Vec<OcrPage>,
    /// The model that read them.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// The document annotation (JSON text), when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_annotation: Option<String>,
    /// What the call cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_info: Option<OcrUsage>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl OcrResponse {
    /// Every page's Markdown, joined by a blank line.
    pub fn markdown(&self) -> String {
        let pages: Vec<&str> = self.pages.iter().map(|p| p.markdown.as_str()).collect();
        pages.join("\n\n")
    }

    /// The pages the server says it processed (`usage_info.pages_processed`), else
    /// the pages in the answer.
    pub fn pages_processed(&self) -> u64 {
        self.usage_info
            .as_ref()
            .map_or(self.pages.len() as u64, |u| u.pages_processed)
    }
}

/// One page read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrPage {
    /// The page's number in the document (0-based).
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub index: u64,
    /// The page as Markdown (images as `![id](id)` references).
    #[serde(default, deserialize_with = "de::null_default")]
    pub markdown: String,
    /// The images extracted from the page.
    #[serde(default, deserialize_with = "de::null_default")]
    pub images: Vec<OcrImage>,
    /// The tables extracted from the page, when asked apart.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    pub tables: Vec<OcrTable>,
    /// The page's hyperlinks.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::null_default"
    )]
    pub hyperlinks: Vec<String>,
    /// The page's header, when extracted apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The page's footer, when extracted apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<String>,
    /// The size of the page's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<PageDimensions>,
    /// Any other field (`blocks`, `confidence_scores`…), verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image extracted from a page: its id and bounding box, its bytes when asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrImage {
    /// The image's id (referenced in the page's Markdown).
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// Left edge, pixels.
    #[serde(default)]
    pub top_left_x: Option<i64>,
    /// Top edge, pixels.
    #[serde(default)]
    pub top_left_y: Option<i64>,
    /// Right edge, pixels.
    #[serde(default)]
    pub bottom_right_x: Option<i64>,
    /// Bottom edge, pixels.
    #[serde(default)]
    pub bottom_right_y: Option<i64>,
    /// The image as a base64 `data:` URL, when `include_image_base64` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
    /// The image's annotation (JSON text), when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_annotation: Option<String>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A table extracted from a page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrTable {
    /// The table's id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// The table in its format.
    #[serde(default, deserialize_with = "de::null_default")]
    pub content: String,
    /// `markdown` or `html`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub format: String,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The size of a page's image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageDimensions {
    /// Dots per inch.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub dpi: u64,
    /// Height, pixels.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub height: u64,
    /// Width, pixels.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub width: u64,
}

/// `usage_info`: what an OCR call cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrUsage {
    /// Pages processed: what the OCR budget is charged.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub pages_processed: u64,
    /// The document's size in bytes.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub doc_size_bytes: Option<u64>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The pages an OCR answer says it processed (`usage_info.pages_processed`), read
/// without decoding the rest; `None` when it does not say.
pub(crate) fn pages_processed_of(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Usage {
        pages_processed: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Envelope {
        usage_info: Option<Usage>,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()?
        .usage_info?
        .pages_processed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A PDF of `n` pages, as a minimal writer makes it (uncompressed objects).
    fn pdf(n: usize) -> Vec<u8> {
        let mut text = String::from("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n");
        text.push_str(&format!(
            "2 0 obj << /Type /Pages /Count {n} /Kids [] >> endobj\n"
        ));
        for i in 0..n {
            text.push_str(&format!(
                "{} 0 obj << /Type/Page /Parent 2 0 R >> endobj\n",
                i + 3
            ));
        }
        text.push_str("%%EOF\n");
        text.into_bytes()
    }

    #[test]
    fn request_serializes_without_absent_fields() {
        let request = OcrRequest::new("mistral-ocr-latest", OcrDocument::url("https://x/a.pdf"))
            .pages("0,2-4")
            .expected_pages(40);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "model": "mistral-ocr-latest",
                "document": {"type": "document_url", "document_url": "https://x/a.pdf"},
                "pages": "0,2-4",
            })
        );
        let image = OcrRequest::new("m", OcrDocument::image_url("https://x/a.png"));
        assert_eq!(
            serde_json::to_value(&image).unwrap()["document"],
            json!({"type": "image_url", "image_url": "https://x/a.png"})
        );
        let file = OcrRequest::new("m", OcrDocument::file("f-1"));
        assert_eq!(
            serde_json::to_value(&file).unwrap()["document"],
            json!({"type": "file", "file_id": "f-1"})
        );
    }

    #[test]
    fn pages_are_estimated_from_what_the_request_tells() {
        let by_url = |pages: Option<PageSelection>| {
            let mut r = OcrRequest::new("m", OcrDocument::url("https://x/a.pdf"));
            r.pages = pages;
            r
        };
        assert_eq!(by_url(None).estimated_pages(), DEFAULT_DOCUMENT_PAGES);
        assert_eq!(by_url(None).expected_pages(30).estimated_pages(), 30);
        assert_eq!(by_url(Some([0, 1, 1, 5].into())).estimated_pages(), 3);
        assert_eq!(by_url(Some("0,2-4, 9".into())).estimated_pages(), 5);
        // A selection this client cannot read: the document's default.
        assert_eq!(
            by_url(Some("first".into())).estimated_pages(),
            DEFAULT_DOCUMENT_PAGES
        );
        assert_eq!(
            by_url(Some("4-2".into())).estimated_pages(),
            DEFAULT_DOCUMENT_PAGES
        );
        // An inline PDF: its own pages, at most those named.
        let inline = OcrRequest::new("m", OcrDocument::pdf(&pdf(12)));
        assert_eq!(inline.estimated_pages(), 12);
        assert_eq!(inline.clone().pages([0, 1]).estimated_pages(), 2);
        assert_eq!(inline.pages("0-99").estimated_pages(), 12);
        // Images are one page, by URL or inline.
        assert_eq!(
            OcrRequest::new("m", OcrDocument::image("image/png", b"\x89PNG")).estimated_pages(),
            1
        );
        assert_eq!(
            OcrRequest::new("m", OcrDocument::url(data_url("image/jpeg", b"x"))).estimated_pages(),
            1
        );
        assert_eq!(
            OcrRequest::new("m", OcrDocument::file("f")).estimated_pages(),
            8
        );
    }

    #[test]
    fn pdf_pages_are_counted_or_left_unknown() {
        assert_eq!(pdf_pages(&pdf(1)), Some(1));
        assert_eq!(pdf_pages(&pdf(7)), Some(7));
        // Pages hidden in object streams: the page tree's count.
        let compressed = b"%PDF-1.7\n<< /Type /Pages /Count 23 /Kids [4 0 R] >>\n<< /Count 3 >>";
        assert_eq!(pdf_pages(compressed), Some(23));
        assert_eq!(pdf_pages(b"%PDF-1.7\nstream garbage"), None);
        assert_eq!(pdf_pages(b"GIF89a /Type /Page"), None);
        // A broken data URL says nothing.
        assert_eq!(
            OcrDocument::url("data:application/pdf;base64,@@@").known_pages(),
            None
        );
    }

    #[test]
    fn response_decodes_and_keeps_unknown_fields() {
        let body = json!({
            "pages": [{
                "index": 0,
                "markdown": "# Title\n\n![img-0.jpeg](img-0.jpeg)",
                "images": [{"id": "img-0.jpeg", "top_left_x": 10, "top_left_y": 20,
                            "bottom_right_x": 110, "bottom_right_y": 220, "image_base64": null}],
                "dimensions": {"dpi": 200, "height": 2200, "width": 1700},
                "blocks": [{"type": "title", "bbox": [1, 2, 3, 4]}],
            }, {
                "index": 1, "markdown": "body", "images": [], "dimensions": null,
            }],
            "model": "mistral-ocr-2505",
            "document_annotation": null,
            "usage_info": {"pages_processed": 2, "doc_size_bytes": 81_234, "pages_billed": 2},
            "request_latency_ms": 812,
        });
        let r: OcrResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(r.pages.len(), 2);
        assert_eq!(r.pages[0].images[0].bottom_right_y, Some(220));
        assert_eq!(r.pages[0].dimensions.unwrap().width, 1700);
        assert_eq!(r.pages[0].extra["blocks"][0]["type"], "title");
        assert_eq!(r.pages[1].dimensions, None);
        assert_eq!(r.extra["request_latency_ms"], 812);
        let usage = r.usage_info.as_ref().unwrap();
        assert_eq!(
            (usage.pages_processed, usage.doc_size_bytes),
            (2, Some(81_234))
        );
        assert_eq!(usage.extra["pages_billed"], 2);
        assert_eq!(r.pages_processed(), 2);
        assert_eq!(r.markdown(), "# Title\n\n![img-0.jpeg](img-0.jpeg)\n\nbody");
        let back: OcrResponse = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(pages_processed_of(body.to_string().as_bytes()), Some(2));
        assert_eq!(pages_processed_of(b"{\"pages\":[]}"), None);
        assert_eq!(pages_processed_of(b"not json"), None);
    }
}
