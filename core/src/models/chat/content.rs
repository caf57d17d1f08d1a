//! Message content: a plain string or typed chunks (text, images, references…).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::{char_count, de};

/// Message content: a plain string or an array of typed chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// An array of chunks (text, images, documents, …).
    Chunks(Vec<ContentChunk>),
}

impl Content {
    /// The content as a single string slice: the string itself, or the first top-level
    /// text chunk of a chunk array (reasoning models put `thinking` chunks before it).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            Self::Chunks(chunks) => chunks.iter().find_map(|c| match c {
                ContentChunk::Text { text } => Some(text.as_str()),
                _ => None,
            }),
        }
    }

    /// All top-level text of the content concatenated (thinking, images and unknown
    /// chunks skipped).
    pub fn joined_text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Chunks(chunks) => chunks
                .iter()
                .filter_map(|c| match c {
                    ContentChunk::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Characters of text this content sends (text chunks, thinking text; images and
    /// documents count by nothing here: their token cost is not knowable from the URL).
    pub fn text_chars(&self) -> usize {
        match self {
            Self::Text(s) => char_count(s),
            Self::Chunks(chunks) => chunks.iter().map(ContentChunk::text_chars).sum(),
        }
    }

    /// Appends `other` to this content (used when assembling a streamed answer): two
    /// strings are concatenated; otherwise both sides become chunk arrays.
    pub fn append(&mut self, other: Content) {
        match (&mut *self, other) {
            (Self::Text(a), Self::Text(b)) => a.push_str(&b),
            (Self::Chunks(a), Self::Chunks(b)) => a.extend(b),
            (Self::Chunks(a), Self::Text(b)) => a.push(ContentChunk::text(b)),
            (Self::Text(a), Self::Chunks(b)) => {
                let mut chunks = Vec::with_capacity(b.len() + 1);
                if !a.is_empty() {
                    chunks.push(ContentChunk::text(std::mem::take(a)));
                }
                chunks.extend(b);
                *self = Self::Chunks(chunks);
            }
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&String> for Content {
    fn from(s: &String) -> Self {
        Self::Text(s.clone())
    }
}

impl From<Vec<ContentChunk>> for Content {
    fn from(chunks: Vec<ContentChunk>) -> Self {
        Self::Chunks(chunks)
    }
}

/// One chunk of a content array, tagged by `type`.
///
/// Chunks this client does not know, or known chunk types whose shape does not match,
/// decode as [`ContentChunk::Other`] with the raw JSON, and serialize back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentChunk {
    /// `{"type":"text","text":…}`
    Text {
        /// The text.
        text: String,
    },
    /// `{"type":"image_url","image_url":"…" | {"url":…,"detail":…}}`
    ImageUrl {
        /// The image URL (http(s) or `data:` URL).
        image_url: ImageUrl,
    },
    /// `{"type":"document_url","document_url":…,"document_name"?:…}`
    DocumentUrl {
        /// The document URL.
        document_url: String,
        /// Optional file name shown to the model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document_name: Option<String>,
    },
    /// `{"type":"input_audio","input_audio":…}` (base64 audio or URL).
    InputAudio {
        /// The audio data or URL.
        input_audio: String,
    },
    /// `{"type":"thinking","thinking":[chunks],"closed"?:bool}` (reasoning models).
    Thinking {
        /// The reasoning chunks (usually text chunks).
        #[serde(default, deserialize_with = "de::null_default")]
        thinking: Vec<ContentChunk>,
        /// Whether the thinking block is complete.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        closed: Option<bool>,
    },
    /// Any other chunk, kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

impl ContentChunk {
    /// A text chunk.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// An image chunk from a URL (or `data:` URL).
    pub fn image_url(url: impl Into<String>) -> Self {
        Self::ImageUrl {
            image_url: ImageUrl::Url(url.into()),
        }
    }

    /// A document chunk from a URL.
    pub fn document_url(url: impl Into<String>) -> Self {
        Self::DocumentUrl {
            document_url: url.into(),
            document_name: None,
        }
    }

    pub(crate) fn text_chars(&self) -> usize {
        match self {
            Self::Text { text } => char_count(text),
            Self::Thinking { thinking, .. } => thinking.iter().map(Self::text_chars).sum(),
            _ => 0,
        }
    }
}

/// `image_url`: a bare URL string or `{url, detail?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    /// A bare URL.
    Url(String),
    /// A URL with an optional detail level (`"low"`, `"high"`, `"auto"`).
    Detailed {
        /// The URL.
        url: String,
        /// Detail level.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

impl ImageUrl {
    /// The URL, whichever form carries it.
    pub fn url(&self) -> &str {
        match self {
            Self::Url(u) | Self::Detailed { url: u, .. } => u,
        }
    }
}
