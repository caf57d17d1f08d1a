//! The messages of a conversation, tagged by role.

use serde::{Deserialize, Serialize};

use super::*;
use crate::models::char_count;

open_enum! {
    /// The author of a message.
    pub enum Role {
        /// `system`
        System => "system",
        /// `user`
        User => "user",
        /// `assistant`
        Assistant => "assistant",
        /// `tool`
        Tool => "tool",
    }
}

/// One message of a conversation, tagged by `role`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    /// Instructions for the model.
    System {
        /// The instructions.
        content: Content,
    },
    /// A user turn.
    User {
        /// What the user says (text, images, documents…).
        content: Content,
    },
    /// A model turn (a previous answer, or a prefix the model must continue).
    Assistant {
        /// The text of the turn; absent when the turn only calls tools.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
        /// Tool calls the model made in this turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool_calls: Option<Vec<ToolCall>>,
        /// `true`: the model must continue this message (must be the last message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<bool>,
    },
    /// The result of a tool call.
    Tool {
        /// The tool's output.
        content: Content,
        /// The id of the [`ToolCall`] this answers.
        tool_call_id: String,
        /// The name of the function that was called.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<Content>) -> Self {
        Self::System {
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<Content>) -> Self {
        Self::User {
            content: content.into(),
        }
    }

    /// An assistant message with text content.
    pub fn assistant(content: impl Into<Content>) -> Self {
        Self::Assistant {
            content: Some(content.into()),
            tool_calls: None,
            prefix: None,
        }
    }

    /// An assistant message the model must continue (`prefix: true`).
    pub fn assistant_prefix(content: impl Into<Content>) -> Self {
        Self::Assistant {
            content: Some(content.into()),
            tool_calls: None,
            prefix: Some(true),
        }
    }

    /// An assistant message that only calls tools.
    pub fn assistant_tool_calls(tool_calls: Vec<ToolCall>) -> Self {
        Self::Assistant {
            content: None,
            tool_calls: Some(tool_calls),
            prefix: None,
        }
    }

    /// A tool result answering the tool call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<Content>) -> Self {
        Self::Tool {
            content: content.into(),
            tool_call_id: tool_call_id.into(),
            name: None,
        }
    }

    /// A tool result that also names the function that was called.
    pub fn tool_named(
        tool_call_id: impl Into<String>,
        name: impl Into<String>,
        content: impl Into<Content>,
    ) -> Self {
        Self::Tool {
            content: content.into(),
            tool_call_id: tool_call_id.into(),
            name: Some(name.into()),
        }
    }

    /// The message's role.
    pub fn role(&self) -> Role {
        match self {
            Self::System { .. } => Role::System,
            Self::User { .. } => Role::User,
            Self::Assistant { .. } => Role::Assistant,
            Self::Tool { .. } => Role::Tool,
        }
    }

    /// The message's content, if it has any.
    pub fn content(&self) -> Option<&Content> {
        match self {
            Self::System { content } | Self::User { content } | Self::Tool { content, .. } => {
                Some(content)
            }
            Self::Assistant { content, .. } => content.as_ref(),
        }
    }

    /// Characters of text this message sends: content, tool-call names and arguments,
    /// tool ids and names.
    pub fn text_chars(&self) -> usize {
        let content = self.content().map_or(0, Content::text_chars);
        let extra = match self {
            Self::Assistant {
                tool_calls: Some(calls),
                ..
            } => calls.iter().map(ToolCall::text_chars).sum(),
            Self::Tool {
                tool_call_id, name, ..
            } => char_count(tool_call_id) + name.as_deref().map_or(0, char_count),
            _ => 0,
        };
        content + extra
    }
}

impl From<ResponseMessage> for Message {
    /// Turns a model answer into an assistant message, to continue the conversation.
    fn from(m: ResponseMessage) -> Self {
        Self::Assistant {
            content: m.content,
            tool_calls: m.tool_calls,
            prefix: None,
        }
    }
}
