//! `multipart/form-data` bodies (RFC 7578), for the endpoints that take an upload
//! (`POST /v1/files`, `POST /v1/audio/transcriptions`): a pure function of the fields,
//! producing the bytes and the `Content-Type` that names their boundary.
//!
//! The boundary is derived from the content (a hash of it), so the same form always
//! gives the same bytes, and it is checked against every part: a boundary that occurs
//! in the content is never used (the next candidate is taken).
//!
//! ```
//! use mistral_core::multipart::Form;
//!
//! let form = Form::new()
//!     .text("purpose", "batch")
//!     .file("file", "requests.jsonl", "application/x-ndjson", b"{\"custom_id\":\"1\"}\n".to_vec());
//! let (content_type, body) = form.finish();
//! let boundary = content_type.to_str()?.split("boundary=").nth(1).unwrap().to_owned();
//! let text = String::from_utf8(body.to_vec())?;
//! assert!(text.starts_with(&format!("--{boundary}\r\n")));
//! assert!(text.contains("name=\"purpose\"\r\n\r\nbatch\r\n"));
//! assert!(text.ends_with(&format!("--{boundary}--\r\n")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    name: String,
    /// The file name and content type of a file part (`None`: a text field).
    file: Option<(String, String)>,
    content: Bytes,
}

/// A `multipart/form-data` form: text fields and files, in the order added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    parts: Vec<Part>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text field.
    pub fn text(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parts.push(Part {
            name: name.into(),
            file: None,
            content: Bytes::from(value.into()),
        });
        self
    }

    /// Adds a file: its field name, file name, content type and bytes.
    pub fn file(
        mut self,
        name: impl Into<String>,
        file_name: impl Into<String>,
        content_type: impl Into<String>,
        content: impl Into<Bytes>,
    ) -> Self {
        self.parts.push(Part {
            name: name.into(),
            file: Some((file_name.into(), content_type.into())),
            content: content.into(),
        });
        self
    }

    /// The number of parts.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the form has no part.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The body's `Content-Type` (`multipart/form-data; boundary=…`) and its bytes.
    pub fn finish(&self) -> (HeaderValue, Bytes) {
        let boundary = self.boundary();
        let mut size = boundary.len() + 8;
        for part in &self.parts {
            size += part.content.len() + part.name.len() + boundary.len() + 128;
            if let Some((file, kind)) = &part.file {
                size += file.len() + kind.len();
            }
        }
        let mut body = BytesMut::with_capacity(size);
        for part in &self.parts {
            body.put_slice(b"--");
            body.put_slice(boundary.as_bytes());
            body.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
            body.put_slice(quoted(&part.name).as_bytes());
            body.put_slice(b"\"");
            if let Some((file, kind)) = &part.file {
                body.put_slice(b"; filename=\"");
                body.put_slice(quoted(file).as_bytes());
                body.put_slice(b"\"\r\nContent-Type: ");
                body.put_slice(header_text(kind).as_bytes());
            }
            body.put_slice(b"\r\n\r\n");
            body.put_slice(&part.content);
            body.put_slice(b"\r\n");
        }
        body.put_slice(b"--");
        body.put_slice(boundary.as_bytes());
        body.put_slice(b"--\r\n");
        let content_type = format!("multipart/form-data; boundary={boundary}");
        // The boundary is hex digits and dashes: always a valid header value.
        let content_type = HeaderValue::from_str(&content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("multipart/form-data"));
        (content_type, body.freeze())
    }

    /// A boundary found in no part: `mistral-` and a hash of the content (and of a
    /// counter, raised until the boundary is nowhere in the content).
    fn boundary(&self) -> String {
        let mut hasher = crc32fast::Hasher::new();
        for part in &self.parts {
            hasher.update(part.name.as_bytes());
            hasher.update(&part.content);
        }
        let seed = hasher.finalize();
        (0u32..)
            .map(|n| {
                let mut h = crc32fast::Hasher::new_with_initial(seed);
                h.update(&n.to_le_bytes());
                format!("mistral-{seed:08x}{:08x}{n}", h.finalize())
            })
            .find(|b| {
                !self
                    .parts
                    .iter()
                    .any(|p| contains(&p.content, b.as_bytes()))
            })
            .unwrap_or_default()
    }
}

/// A field or file name inside a quoted header parameter: quotes and line breaks are
/// escaped as browsers do (`%22`, `%0D`, `%0A`), so a name never ends the header.
fn quoted(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A header value with line breaks removed (a content type given by the caller).
fn header_text(text: &str) -> String {
    text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_and_files_in_order() {
        let form = Form::new()
            .text("model", "voxtral-mini-latest")
            .file("file", "a.mp3", "audio/mpeg", vec![0u8, 1, 2, 255])
            .text("language", "fr");
        let (kind, body) = form.finish();
        let kind = kind.to_str().unwrap().to_owned();
        let boundary = kind.strip_prefix("multipart/form-data; boundary=").unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
                 voxtral-mini-latest\r\n--{boundary}\r\nContent-Disposition: form-data; \
                 name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        expected.extend_from_slice(&[0, 1, 2, 255]);
        expected.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\n\
                 fr\r\n--{boundary}--\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(body.as_ref(), expected.as_slice());
        // The same form, the same bytes.
        assert_eq!(form.finish().1, body);
        assert_eq!(form.len(), 3);
    }

    #[test]
    fn the_boundary_is_never_in_the_content() {
        let first = Form::new().text("a", "x").boundary();
        // A part holding the boundary the form would have picked gets another one.
        let tricky = Form::new().text("a", "x").text("b", first.clone());
        let boundary = tricky.boundary();
        assert_ne!(
            boundary,
            Form::new().text("a", "x").text("b", "y").boundary()
        );
        assert!(
            !tricky
                .parts
                .iter()
                .any(|p| contains(&p.content, boundary.as_bytes()))
        );
    }

    #[test]
    fn names_cannot_break_the_headers() {
        let (_, body) = Form::new()
            .file("f\"\r\nX: y", "a\"b\nc.txt", "text/plain\r\nX-Evil: 1", "z")
            .finish();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("name=\"f%22%0D%0AX: y\"; filename=\"a%22b%0Ac.txt\""));
        assert!(text.contains("Content-Type: text/plainX-Evil: 1\r\n\r\nz"));
        assert!(!text.contains("\nX-Evil"));
    }
}
