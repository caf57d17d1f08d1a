//! `POST /v1/fim/completions`: fill-in-the-middle (code completion).

use serde::{Deserialize, Serialize};

use super::chat::{ChatResponse, Stop};
use super::{RequestSize, char_count};

/// The FIM response has the chat-completion shape.
pub type FimResponse = ChatResponse;

/// The body of `POST /v1/fim/completions`. Unset options are omitted from the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FimRequest {
    /// Model id, e.g. `codestral-latest`.
    pub model: String,
    /// The code before the cursor.
    pub prompt: String,
    /// The code after the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Minimum generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stream the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stop sequence(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<u64>,
}

impl FimRequest {
    /// A request completing after `prompt`, with no options.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            prompt: prompt.into(),
            suffix: None,
            max_tokens: None,
            min_tokens: None,
            temperature: None,
            top_p: None,
            stream: None,
            stop: None,
            random_seed: None,
        }
    }

    /// Sets `suffix`.
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = Some(suffix.into());
        self
    }

    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets `min_tokens`.
    pub fn min_tokens(mut self, min_tokens: u32) -> Self {
        self.min_tokens = Some(min_tokens);
        self
    }

    /// Sets `temperature`.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets `top_p`.
    pub fn top_p(mut self, top_p: f64) -> Self {
        self.top_p = Some(top_p);
        self
    }

    /// Sets `stream`.
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Sets `stop`.
    pub fn stop(mut self, stop: impl Into<Stop>) -> Self {
        self.stop = Some(stop.into());
        self
    }

    /// Sets `random_seed`.
    pub fn random_seed(mut self, seed: u64) -> Self {
        self.random_seed = Some(seed);
        self
    }

    /// Whether the request asks for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Characters of `prompt` plus `suffix`.
    pub fn prompt_chars(&self) -> usize {
        char_count(&self.prompt) + self.suffix.as_deref().map_or(0, char_count)
    }
}

impl RequestSize for FimRequest {
    fn prompt_chars(&self) -> usize {
        FimRequest::prompt_chars(self)
    }

    fn max_tokens(&self) -> Option<u32> {
        self.max_tokens
    }

    fn is_stream(&self) -> bool {
        FimRequest::is_stream(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_request_has_no_nulls() {
        let req = FimRequest::new("codestral-latest", "def f(");
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"codestral-latest","prompt":"def f("}"#
        );
        assert!(!req.is_stream());
    }

    #[test]
    fn full_request_round_trips() {
        let req = FimRequest::new("codestral-latest", "def add(a, b):")
            .suffix("\nprint(add(1, 2))")
            .max_tokens(32)
            .min_tokens(1)
            .temperature(0.0)
            .top_p(1.0)
            .stream(true)
            .stop("\n\n")
            .random_seed(3);
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"model":"codestral-latest","prompt":"def add(a, b):",
                   "suffix":"\nprint(add(1, 2))","max_tokens":32,"min_tokens":1,
                   "temperature":0.0,"top_p":1.0,"stream":true,"stop":"\n\n","random_seed":3})
        );
        assert_eq!(serde_json::from_value::<FimRequest>(v).unwrap(), req);
        assert!(req.is_stream());
        assert_eq!(req.prompt_chars(), 14 + 17);
        assert_eq!(RequestSize::max_tokens(&req), Some(32));
    }

    #[test]
    fn response_is_chat_shaped() {
        let resp: FimResponse = serde_json::from_value(json!({
            "id": "f", "object": "chat.completion", "created": 1, "model": "codestral-latest",
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "\n    return a + b", "tool_calls": null, "prefix": false},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
        }))
        .unwrap();
        assert_eq!(resp.text(), Some("\n    return a + b"));
        assert_eq!(resp.usage.unwrap().completion_tokens, 8);
    }
}
