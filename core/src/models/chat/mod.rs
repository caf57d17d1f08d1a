//! `POST /v1/chat/completions`, by topic: [`content`] (strings and typed chunks),
//! [`messages`], [`tools`] (definitions, calls, `tool_choice`), [`format`](mod@format) (response
//! format, stop, prediction), [`request`] and [`response`]. Every type is re-exported
//! here, so `models::chat::ChatRequest` and the other paths stay as they were.

pub mod content;
pub mod format;
pub mod messages;
pub mod request;
pub mod response;
pub mod tools;

#[cfg(test)]
mod tests;

pub use self::content::{Content, ContentChunk, ImageUrl};
pub use self::format::{JsonSchema, Prediction, ResponseFormat, Stop};
pub use self::messages::{Message, Role};
pub use self::request::{ChatRequest, ServiceTier};
pub use self::response::{ChatChoice, ChatResponse, FinishReason, ResponseMessage};
pub use self::tools::{
    Function, FunctionCall, FunctionName, NamedToolChoice, Tool, ToolCall, ToolChoice,
    ToolChoiceMode, ToolType,
};
