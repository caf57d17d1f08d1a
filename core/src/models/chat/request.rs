//! The request body of `POST /v1/chat/completions` and its builder.

use serde::{Deserialize, Serialize};

use super::*;
use crate::models::RequestSize;

open_enum! {
    /// `service_tier`: which capacity pool may serve the request. A value this client
    /// does not know is kept as written ([`ServiceTier::Other`]), never refused.
    ///
    /// The tier that served a call comes back as `usage.service_tier`
    /// ([`crate::models::Usage::service_tier`]) and is counted per tier in the clients'
    /// statistics (`Stats::service_tiers`). Both tiers spend the model's one budget:
    /// Mistral announces no limits per tier (no captured response has a header that
    /// names one), so the shared limiter keeps one budget per model; a header that
    /// named a tier would not be read as the model's limit. Only chat completions take
    /// the field (the FIM request has none in Mistral's SDKs, and the API refuses
    /// fields it does not know).
    pub enum ServiceTier {
        /// `auto`: priority capacity when the plan has it, standard otherwise.
        Auto => "auto",
        /// `standard_only`: never use priority capacity.
        StandardOnly => "standard_only",
    }
}

/// The body of `POST /v1/chat/completions`.
///
/// Build it with [`ChatRequest::new`] and the builder-style setters; every unset option
/// is omitted from the JSON. The fields are public for reading and direct edits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model id, e.g. `mistral-small-latest`.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stop sequence(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<u64>,
    /// Output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// How the model may use the tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Penalty on tokens already present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Penalty proportional to token frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Number of completions to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Expected output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// Allow several tool calls in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Prepend Mistral's safety prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_prompt: Option<bool>,
    /// Capacity pool (`auto` | `standard_only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
}

impl ChatRequest {
    /// A request for `model` with `messages` and no options.
    pub fn new(model: impl Into<String>, messages: impl Into<Vec<Message>>) -> Self {
        Self {
            model: model.into(),
            messages: messages.into(),
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: None,
            stop: None,
            random_seed: None,
            response_format: None,
            tools: None,
            tool_choice: None,
            presence_penalty: None,
            frequency_penalty: None,
            n: None,
            prediction: None,
            parallel_tool_calls: None,
            safe_prompt: None,
            service_tier: None,
        }
    }

    /// Appends a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
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

    /// Sets `max_tokens`. (Read it back with the `max_tokens` field or
    /// [`RequestSize::max_tokens`].)
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
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

    /// Sets `response_format`.
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// Sets `tools` (replacing any).
    pub fn tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Adds one tool.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.get_or_insert_with(Vec::new).push(tool);
        self
    }

    /// Sets `tool_choice`.
    pub fn tool_choice(mut self, choice: impl Into<ToolChoice>) -> Self {
        self.tool_choice = Some(choice.into());
        self
    }

    /// Sets `presence_penalty`.
    pub fn presence_penalty(mut self, penalty: f64) -> Self {
        self.presence_penalty = Some(penalty);
        self
    }

    /// Sets `frequency_penalty`.
    pub fn frequency_penalty(mut self, penalty: f64) -> Self {
        self.frequency_penalty = Some(penalty);
        self
    }

    /// Sets `n`.
    pub fn n(mut self, n: u32) -> Self {
        self.n = Some(n);
        self
    }

    /// Sets `prediction`.
    pub fn prediction(mut self, prediction: Prediction) -> Self {
        self.prediction = Some(prediction);
        self
    }

    /// Sets `parallel_tool_calls`.
    pub fn parallel_tool_calls(mut self, parallel: bool) -> Self {
        self.parallel_tool_calls = Some(parallel);
        self
    }

    /// Sets `safe_prompt`.
    pub fn safe_prompt(mut self, safe: bool) -> Self {
        self.safe_prompt = Some(safe);
        self
    }

    /// Sets `service_tier` (see [`ServiceTier`]).
    pub fn service_tier(mut self, tier: impl Into<ServiceTier>) -> Self {
        self.service_tier = Some(tier.into());
        self
    }

    /// Whether the request asks for a stream (`stream: true`).
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Characters of text input: every message ([`Message::text_chars`]) plus the tool
    /// definitions (name, description, parameters schema as JSON text).
    pub fn prompt_chars(&self) -> usize {
        let messages: usize = self.messages.iter().map(Message::text_chars).sum();
        let tools: usize = self
            .tools
            .as_deref()
            .map_or(0, |t| t.iter().map(Tool::text_chars).sum());
        messages + tools
    }
}

impl RequestSize for ChatRequest {
    fn prompt_chars(&self) -> usize {
        ChatRequest::prompt_chars(self)
    }

    fn max_tokens(&self) -> Option<u32> {
        self.max_tokens
    }

    fn is_stream(&self) -> bool {
        ChatRequest::is_stream(self)
    }
}
