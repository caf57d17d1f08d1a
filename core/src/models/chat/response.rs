//! The response of a chat (or FIM) completion: choices, messages, finish reasons.

use serde::{Deserialize, Serialize};

use super::*;
use crate::models::de;
use crate::models::usage::Usage;

open_enum! {
    /// Why the model stopped generating.
    pub enum FinishReason {
        /// `stop`: natural end or a stop sequence.
        Stop => "stop",
        /// `length`: `max_tokens` reached.
        Length => "length",
        /// `model_length`: the model's context length reached.
        ModelLength => "model_length",
        /// `error`: generation failed server-side.
        Error => "error",
        /// `tool_calls`: the model called tools.
        ToolCalls => "tool_calls",
    }
}

/// The body of a chat (or FIM) completion: `{id, object, created, model, choices, usage}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Completion id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// `chat.completion`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// Unix time of creation.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<u64>,
    /// The model that answered.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// The answers (one unless `n` > 1).
    #[serde(default, deserialize_with = "de::null_default")]
    pub choices: Vec<ChatChoice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// The first choice's text (see [`Content::as_text`]), if any.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_ref())
            .and_then(Content::as_text)
    }

    /// The first choice's tool calls (empty when none).
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.choices
            .first()
            .and_then(|c| c.message.tool_calls.as_deref())
            .unwrap_or(&[])
    }

    /// The first choice's finish reason.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.choices.first().and_then(|c| c.finish_reason.as_ref())
    }
}

/// One answer of a completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Position among the choices.
    #[serde(default, deserialize_with = "de::null_default")]
    pub index: u32,
    /// The generated message.
    #[serde(default, deserialize_with = "de::null_default")]
    pub message: ResponseMessage,
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

/// The message of a response choice: `{role, content, tool_calls}` (all lenient).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// Normally `assistant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Text or chunks; `None` when the model only called tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl ResponseMessage {
    /// The text of the message (see [`Content::as_text`]).
    pub fn text(&self) -> Option<&str> {
        self.content.as_ref().and_then(Content::as_text)
    }
}
