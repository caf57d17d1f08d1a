//! `POST /v1/agents/completions`: a chat completion by an agent (its model, instructions
//! and tools set on Mistral's side), answered in the chat shape
//! ([`crate::models::ChatResponse`]).
//!
//! # Its budget
//!
//! An agent spends the budget of the model it runs on, which the request does not name.
//! Name it with [`AgentCompletionRequest::budget`] to share that model's budget with the
//! rest of the program; otherwise the call goes in a budget of the agent's own (named
//! by its id), which learns the limits the agent's answers announce.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RequestSize;
use super::chat::{Message, Prediction, ResponseFormat, Stop, Tool, ToolChoice};

/// The body of `POST /v1/agents/completions`.
///
/// ```
/// use mistral_core::models::{AgentCompletionRequest, Message};
///
/// let request = AgentCompletionRequest::new("ag_0123", vec![Message::user("Hi")])
///     .max_tokens(64)
///     .budget("mistral-medium-latest");
/// let body = serde_json::to_value(&request)?;
/// assert_eq!(body["agent_id"], "ag_0123");
/// assert!(body.get("budget").is_none(), "the budget is the client's, never sent");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCompletionRequest {
    /// The agent's id.
    pub agent_id: String,
    /// The conversation.
    pub messages: Vec<Message>,
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
    /// Tools the model may call (beside the agent's own).
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
    /// Metadata kept with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, Value>>,
    /// Other fields (`prompt_mode`, `reasoning_effort`, `prompt_cache_key`…), sent as
    /// given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// The budget the call spends: the agent's model (never sent; see the module docs).
    #[serde(skip)]
    pub budget: Option<String>,
}

impl AgentCompletionRequest {
    /// A request to agent `agent_id` with `messages` and no options.
    pub fn new(agent_id: impl Into<String>, messages: impl Into<Vec<Message>>) -> Self {
        Self {
            agent_id: agent_id.into(),
            messages: messages.into(),
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
            metadata: None,
            extra: BTreeMap::new(),
            budget: None,
        }
    }

    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets `stream` (the typed client methods set it themselves).
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Names the budget the call spends: the model the agent runs on.
    pub fn budget(mut self, model: impl Into<String>) -> Self {
        self.budget = Some(model.into());
        self
    }

    /// The budget the call spends: [`AgentCompletionRequest::budget`], else the agent's
    /// id.
    pub fn budget_id(&self) -> &str {
        self.budget.as_deref().unwrap_or(&self.agent_id)
    }
}

impl RequestSize for AgentCompletionRequest {
    fn prompt_chars(&self) -> usize {
        let tools: usize = self
            .tools
            .as_deref()
            .map_or(0, |t| t.iter().map(Tool::text_chars).sum());
        self.messages.iter().map(Message::text_chars).sum::<usize>() + tools
    }

    fn max_tokens(&self) -> Option<u32> {
        self.max_tokens
    }

    fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }
}
