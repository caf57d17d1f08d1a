//! Typed Mistral API models (serde).
//!
//! Two rules shape every type here:
//!
//! * **Requests are strict on the wire.** The API answers 422 to unknown fields and to
//!   `null` where its schema has no null, so every optional request field is *omitted*
//!   when absent (`skip_serializing_if = "Option::is_none"`), never sent as `null`.
//! * **Responses are decoded leniently.** Unknown fields are ignored, most fields have a
//!   default, enums that the API may extend (finish reasons, roles, service tiers, …) are
//!   open (`Other(String)`), and shapes that were captured in several forms (a tool call
//!   without `type`, `arguments` as a string or an object, `code` as a string or a number,
//!   `message` as a string or an object) all decode.
//!
//! Model ids are plain strings: the list of models changes every month.
//!
//! The request types implement [`RequestSize`], which the rate limiter uses to estimate
//! the token cost of a call before it is sent.

/// Defines an open string enum: known variants plus `Other(String)` for values this
/// client does not know yet. Serializes as the bare string.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this client does not know (kept verbatim).
            Other(String),
        }

        impl $name {
            /// The wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )*
                    Self::Other(s) => s.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $wire => Self::$variant, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $( $wire => Self::$variant, )*
                    _ => Self::Other(s),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                Ok(Self::from(s))
            }
        }
    };
}

mod de;

pub mod agents;
pub mod audio;
pub mod batch;
pub mod chat;
pub mod classifiers;
pub mod conversations;
pub mod embeddings;
pub mod error_body;
pub mod fim;
pub mod input;
pub mod model_list;
pub mod moderations;
pub mod ocr;
pub mod stream;
pub mod usage;

pub use self::agents::AgentCompletionRequest;
pub use self::audio::{
    AudioSource, TranscriptionRequest, TranscriptionResponse, TranscriptionSegment,
};
pub use self::batch::{
    BatchJob, BatchJobRequest, BatchRequest, BatchResponse, BatchResult, BatchStatus, FileObject,
    FilePurpose, FileUpload, batch_jsonl,
};
pub use self::chat::{
    ChatChoice, ChatRequest, ChatResponse, Content, ContentChunk, FinishReason, Function,
    FunctionCall, FunctionName, ImageUrl, JsonSchema, Message, NamedToolChoice, Prediction,
    ResponseFormat, ResponseMessage, Role, ServiceTier, Stop, Tool, ToolCall, ToolChoice,
    ToolChoiceMode, ToolType,
};
pub use self::classifiers::{
    ChatClassificationInput, ChatClassificationRequest, ClassificationRequest,
    ClassificationResponse, InstructRequest, TargetScores,
};
pub use self::conversations::{
    CompletionArgs, ConversationAppendRequest, ConversationEntry, ConversationInputs,
    ConversationRequest, ConversationResponse,
};
pub use self::embeddings::{
    EmbeddingData, EmbeddingRequest, EmbeddingResponse, EncodingFormat, OutputDtype,
};
pub use self::error_body::{ApiErrorBody, FieldError};
pub use self::fim::{FimRequest, FimResponse};
pub use self::input::TextInput;
pub use self::model_list::{ModelCapabilities, ModelCard, ModelList};
pub use self::moderations::{ModerationRequest, ModerationResponse, ModerationResult};
pub use self::ocr::{
    DEFAULT_DOCUMENT_PAGES, OcrDocument, OcrImage, OcrPage, OcrRequest, OcrResponse, OcrTable,
    OcrUsage, PageDimensions, PageSelection,
};
pub use self::stream::{ChatChunk, ChatStreamAccumulator, ChunkChoice, Delta};
pub use self::usage::Usage;

/// What the rate limiter needs to know about a request before sending it.
///
/// Implemented by every request type of this module. The numbers are inputs to an
/// *estimate*: the server's tokenizer decides the real cost.
pub trait RequestSize {
    /// Total characters (Unicode scalar values) of the text the request sends as input:
    /// message contents, tool definitions and arguments, prompts, suffixes, inputs.
    fn prompt_chars(&self) -> usize;

    /// The request's cap on generated tokens (`max_tokens`), if it sets one. `None` for
    /// endpoints that generate no tokens (embeddings, moderations) and for generation
    /// requests that leave the cap to the server.
    fn max_tokens(&self) -> Option<u32>;

    /// Whether the request asks for a streamed (`text/event-stream`) response.
    fn is_stream(&self) -> bool {
        false
    }

    /// A rough prompt-token estimate: one token per four characters, rounded up.
    fn estimated_prompt_tokens(&self) -> u64 {
        (self.prompt_chars() as u64).div_ceil(4)
    }
}

/// Number of Unicode scalar values in `s`.
pub(crate) fn char_count(s: &str) -> usize {
    s.chars().count()
}

/// A borrowed request converts into an owned one by cloning it, so `client.chat(&request)`
/// keeps working where the caller needs the request afterwards; pass it by value to
/// avoid the copy.
macro_rules! from_ref {
    ($($t:ty),*) => {$(
        impl From<&$t> for $t {
            fn from(request: &$t) -> Self {
                request.clone()
            }
        }
    )*};
}
from_ref!(
    ChatRequest,
    FimRequest,
    EmbeddingRequest,
    ModerationRequest,
    OcrRequest,
    ClassificationRequest,
    ChatClassificationRequest,
    AgentCompletionRequest,
    ConversationRequest,
    ConversationAppendRequest,
    FileUpload,
    BatchJobRequest,
    TranscriptionRequest
);
