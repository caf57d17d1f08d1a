//! `POST /v1/ocr`: validation, the pages a request costs, and the answer.
//!
//! # Pages rule (the emulator's own, independent of any client)
//!
//! - An image (`image_url`, or a `document_url` that is an image `data:` URL) is 1 page.
//! - A PDF sent inline (`data:application/pdf;base64,…`) has as many pages as it has
//!   `/Type /Page` objects (or, when none is visible, its largest `/Count`); a document by
//!   URL or by file id (the emulator fetches nothing) has [`crate::Config::document_pages`].
//! - `pages` (a list, or `"0,2-4"`) keeps the named pages that exist; none left is a 422.
//!
//! The cost charged to the model's limits is the pages processed, and the answer says so
//! (`usage_info.pages_processed`, `x-ratelimit-ocr-pages-query-cost`).

use base64::Engine;
use serde_json::{Map, Value, json};

use super::api::{self, Field, Invalid, Rule};
use super::rng::fnv1a;

const FIELDS: &[Field] = &[
    ("model", Rule::Str, true, true),
    ("id", Rule::Str, false, false),
    ("document", Rule::Object, false, true),
    ("pages", Rule::Any, true, false),
    ("include_image_base64", Rule::Bool, true, false),
    ("image_limit", Rule::Int, true, false),
    ("image_min_size", Rule::Int, true, false),
    ("bbox_annotation_format", Rule::Object, true, false),
    ("document_annotation_format", Rule::Object, true, false),
    ("document_annotation_prompt", Rule::Str, true, false),
    ("table_format", Rule::Str, true, false),
    ("extract_header", Rule::Bool, false, false),
    ("extract_footer", Rule::Bool, false, false),
    ("include_blocks", Rule::Bool, false, false),
    ("confidence_scores_granularity", Rule::Str, true, false),
];

/// A validated OCR request.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub model: String,
    /// The page numbers read, in order.
    pub pages: Vec<u64>,
    /// The document's size, when it came inline.
    pub doc_size: Option<u64>,
    /// The document is an image (its page holds one extracted image).
    pub image: bool,
    pub include_image_base64: bool,
    /// Seed of the generated text.
    pub seed: u64,
}

fn invalid(loc: &[Value], msg: &str, input: &Value, model: Option<String>) -> Invalid {
    let mut full = vec![json!("body")];
    full.extend_from_slice(loc);
    Invalid {
        status: 422,
        body: json!({"detail": [{"type": "value_error", "loc": full, "msg": msg, "input": input}]}),
        model,
    }
}

/// Validates an OCR body; `url_pages` is the length of a document the emulator cannot
/// read (by URL or file id).
pub(crate) fn parse(body: &[u8], url_pages: u64) -> Result<Job, Invalid> {
    let object = api::validate(body, FIELDS)?;
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mistral-ocr-latest")
        .to_string();
    let document = object.get("document").cloned().unwrap_or(Value::Null);
    let (length, doc_size, image) = document_pages(&document, url_pages).ok_or_else(|| {
        invalid(
            &[json!("document")],
            "Input should be a FileChunk, a DocumentURLChunk or an ImageURLChunk",
            &document,
            Some(model.clone()),
        )
    })?;
    let pages = match object.get("pages") {
        None | Some(Value::Null) => (0..length).collect(),
        Some(selection) => {
            let named = selected(selection).ok_or_else(|| {
                invalid(
                    &[json!("pages")],
                    "Pages should be a list of integers or a string of numbers and ranges",
                    selection,
                    Some(model.clone()),
                )
            })?;
            let kept: Vec<u64> = named.into_iter().filter(|p| *p < length).collect();
            if kept.is_empty() {
                return Err(invalid(
                    &[json!("pages")],
                    &format!("No page of the selection exists: the document has {length}"),
                    selection,
                    Some(model),
                ));
            }
            kept
        }
    };
    // The same document and pages, the same text, whoever sends them (and whatever
    // else their body holds).
    let seed = fnv1a(document.to_string().as_bytes()) ^ fnv1a(format!("{pages:?}").as_bytes());
    Ok(Job {
        model,
        pages,
        doc_size,
        image,
        include_image_base64: flag(&object, "include_image_base64"),
        seed,
    })
}

fn flag(object: &Map<String, Value>, name: &str) -> bool {
    object.get(name).and_then(Value::as_bool) == Some(true)
}

/// (pages, size in bytes when inline, is an image) of a document chunk; `None` when it
/// is no chunk of the three kinds.
fn document_pages(document: &Value, url_pages: u64) -> Option<(u64, Option<u64>, bool)> {
    let kind = document.get("type").and_then(Value::as_str);
    let url = |field: &str| -> Option<String> {
        match document.get(field)? {
            Value::String(s) => Some(s.clone()),
            other => other.get("url")?.as_str().map(str::to_string),
        }
    };
    match kind {
        Some("image_url") | None if document.get("image_url").is_some() => {
            let url = url("image_url")?;
            Some((1, inline(&url).map(|(_, b)| b.len() as u64), true))
        }
        Some("document_url") | None if document.get("document_url").is_some() => {
            let url = url("document_url")?;
            match inline(&url) {
                Some((mime, bytes)) if mime.starts_with("image/") => {
                    Some((1, Some(bytes.len() as u64), true))
                }
                Some((_, bytes)) => Some((count_pages(&bytes), Some(bytes.len() as u64), false)),
                None => Some((url_pages.max(1), None, false)),
            }
        }
        Some("file") | None if document.get("file_id").is_some() => {
            document.get("file_id")?.as_str()?;
            Some((url_pages.max(1), None, false))
        }
        _ => None,
    }
}

/// The media type and bytes of a base64 `data:` URL.
fn inline(url: &str) -> Option<(String, Vec<u8>)> {
    let (head, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mime = head.strip_suffix(";base64")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    Some((mime.to_ascii_lowercase(), bytes))
}

/// The pages of a PDF's bytes: its page objects, else its page tree's count, else 1.
fn count_pages(bytes: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(bytes);
    let mut objects = 0;
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("/Type") {
        rest = &rest[at + 5..];
        let after = rest.trim_start();
        if let Some(tail) = after.strip_prefix("/Page")
            && !tail.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            objects += 1;
        }
    }
    if objects > 0 {
        return objects;
    }
    text.match_indices("/Count")
        .filter_map(|(at, _)| {
            let digits: String = text[at + 6..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(1)
        .max(1)
}

/// The page numbers a `pages` value names, sorted and without repeats.
fn selected(value: &Value) -> Option<Vec<u64>> {
    let mut pages = Vec::new();
    match value {
        Value::Array(list) => {
            for v in list {
                pages.push(v.as_u64()?);
            }
        }
        Value::String(text) => {
            for part in text.split(',').map(str::trim) {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let a: u64 = a.trim().parse().ok()?;
                        let b: u64 = b.trim().parse().ok()?;
                        if b < a || b - a > 10_000 {
                            return None;
                        }
                        pages.extend(a..=b);
                    }
                    None => pages.push(part.parse().ok()?),
                }
            }
        }
        _ => return None,
    }
    pages.sort_unstable();
    pages.dedup();
    Some(pages)
}

/// The answer to `job`: one page per page read, `usage_info` with the pages processed.
pub(crate) fn response(job: &Job) -> Value {
    let pages: Vec<Value> = job
        .pages
        .iter()
        .map(|&index| {
            let text = api::sentence(job.seed ^ index.rotate_left(29), 12);
            let mut markdown = format!("# Page {}\n\n{text}", index + 1);
            let mut images = Vec::new();
            if job.image {
                let id = "img-0.jpeg";
                markdown.push_str(&format!("\n\n![{id}]({id})"));
                let base64 = job.include_image_base64.then(|| {
                    let bytes = job.seed.to_le_bytes();
                    format!(
                        "data:image/jpeg;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    )
                });
                images.push(json!({
                    "id": id,
                    "top_left_x": 24, "top_left_y": 40,
                    "bottom_right_x": 920, "bottom_right_y": 610,
                    "image_base64": base64,
                }));
            }
            let dimensions = match job.image {
                true => json!({"dpi": 72, "height": 1080, "width": 1920}),
                false => json!({"dpi": 200, "height": 2200, "width": 1700}),
            };
            json!({
                "index": index,
                "markdown": markdown,
                "images": images,
                "tables": [],
                "hyperlinks": [],
                "header": null,
                "footer": null,
                "dimensions": dimensions,
                // A field of the 2026 API that not every client knows.
                "confidence_scores": null,
            })
        })
        .collect();
    json!({
        "pages": pages,
        "model": job.model,
        "document_annotation": null,
        "usage_info": {
            "pages_processed": job.pages.len(),
            "doc_size_bytes": job.doc_size,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf(n: usize) -> String {
        let mut text = String::from("%PDF-1.4\n<< /Type /Pages /Count 99 >>\n");
        for _ in 0..n {
            text.push_str("<< /Type /Page >>\n");
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        format!("data:application/pdf;base64,{encoded}")
    }

    fn job(body: Value) -> Result<Job, Invalid> {
        parse(body.to_string().as_bytes(), 3)
    }

    #[test]
    fn pages_follow_the_rule() {
        let j = job(json!({"model": "mistral-ocr-latest",
            "document": {"type": "document_url", "document_url": pdf(5)}}))
        .unwrap();
        assert_eq!(j.pages, vec![0, 1, 2, 3, 4]);
        let j = job(json!({"model": "m", "pages": "1,3-9",
            "document": {"type": "document_url", "document_url": pdf(5)}}))
        .unwrap();
        assert_eq!(j.pages, vec![1, 3, 4]);
        let j =
            job(json!({"model": "m", "document": {"document_url": "https://x/a.pdf"}})).unwrap();
        assert_eq!(j.pages.len(), 3);
        let j = job(json!({"model": "m", "document": {"type": "image_url", "image_url": {"url": "https://x/a.png"}}})).unwrap();
        assert_eq!((j.pages.len(), j.image), (1, true));
        let j = job(
            json!({"model": "m", "document": {"type": "file", "file_id": "f"}, "pages": [0, 0, 2]}),
        )
        .unwrap();
        assert_eq!(j.pages, vec![0, 2]);
        let body = response(&j);
        assert_eq!(body["usage_info"]["pages_processed"], 2);
        assert_eq!(body["pages"][1]["index"], 2);
    }

    #[test]
    fn bad_requests_are_422() {
        for body in [
            json!({"model": "m"}),
            json!({"model": "m", "document": {"type": "video", "url": "x"}}),
            json!({"model": "m", "document": {"type": "file", "file_id": "f"}, "pages": "x"}),
            json!({"model": "m", "document": {"type": "file", "file_id": "f"}, "pages": [7]}),
            json!({"model": "m", "document": {"type": "file", "file_id": "f"}, "unknown": 1}),
        ] {
            assert_eq!(job(body.clone()).unwrap_err().status, 422, "{body}");
        }
    }
}
