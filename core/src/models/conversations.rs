//! Conversations: `POST /v1/conversations` (start one, with a model or an agent) and
//! `POST /v1/conversations/{id}` (append to it). Mistral keeps the history (unless
//! `store` is false); each call sends only the new entries and answers with the
//! conversation's id, the entries it produced (`outputs`) and the tokens used.
//!
//! # Their budget
//!
//! A conversation spends its model's budget. A start names it (`model`) or runs an
//! agent, whose model the request does not name; an append names nothing. The budget is
//! [`ConversationRequest::budget`] / [`ConversationAppendRequest::budget`] when set (the
//! model, to share its budget with the rest of the program), else the start's `model`,
//! else the agent's id, else (an append) the conversation's id: a budget of its own,
//! which learns the limits the answers announce. An append's answer usually costs more
//! than its estimate (the server counts the whole history as prompt): the answer's
//! `usage` corrects it, as for every call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::Content;
use super::usage::Usage;
use super::{RequestSize, char_count, de};

/// `inputs`: a text (one user message) or a list of entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConversationInputs {
    /// One user message.
    Text(String),
    /// Entries (messages, function results…).
    Entries(Vec<ConversationEntry>),
}

impl ConversationInputs {
    /// Characters of text the inputs send.
    pub fn text_chars(&self) -> usize {
        match self {
            Self::Text(text) => char_count(text),
            Self::Entries(entries) => entries.iter().map(ConversationEntry::text_chars).sum(),
        }
    }
}

impl From<&str> for ConversationInputs {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for ConversationInputs {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<ConversationEntry>> for ConversationInputs {
    fn from(entries: Vec<ConversationEntry>) -> Self {
        Self::Entries(entries)
    }
}

/// One entry of a conversation, tagged by `type`: `message.input`, `message.output`,
/// `function.call`, `function.result`, `tool.execution`, `agent.handoff`… One lenient
/// shape for all: the fields an entry of its type has are set, every other field of
/// the answer is kept in [`ConversationEntry::extra`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationEntry {
    /// The entry's type (`message.output`…); absent on an input the server types itself.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `user` or `assistant` (messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text or chunks (messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// The entry's id (answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The model that produced it (answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent that produced it (answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The call a function call or result belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The function called (function calls) or the tool run (tool executions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A function call's arguments (a JSON text or object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// A function result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When it was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When it was completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Any other field (`object`, `prefix`, `info`…), verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ConversationEntry {
    /// A user message.
    pub fn user(content: impl Into<Content>) -> Self {
        Self::message("user", content)
    }

    /// An assistant message (a prefix, or a turn of history).
    pub fn assistant(content: impl Into<Content>) -> Self {
        Self::message("assistant", content)
    }

    fn message(role: &str, content: impl Into<Content>) -> Self {
        Self {
            kind: Some("message.input".into()),
            role: Some(role.into()),
            content: Some(content.into()),
            ..Self::default()
        }
    }

    /// The result of the function call `tool_call_id`.
    pub fn function_result(tool_call_id: impl Into<String>, result: impl Into<String>) -> Self {
        Self {
            kind: Some("function.result".into()),
            tool_call_id: Some(tool_call_id.into()),
            result: Some(result.into()),
            ..Self::default()
        }
    }

    /// Whether it is a message the conversation produced (`message.output`).
    pub fn is_output_message(&self) -> bool {
        self.kind.as_deref() == Some("message.output")
    }

    /// The entry's text (see [`Content::joined_text`]), if it has content.
    pub fn text(&self) -> Option<String> {
        self.content.as_ref().map(Content::joined_text)
    }

    fn text_chars(&self) -> usize {
        let content = self.content.as_ref().map_or(0, Content::text_chars);
        let result = self.result.as_deref().map_or(0, char_count);
        content + result
    }
}

/// The completion arguments of a conversation (`completion_args`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionArgs {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Seed for sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<u64>,
    /// Other arguments (`stop`, `response_format`, `tool_choice`…), as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The body of `POST /v1/conversations`: start a conversation.
///
/// ```
/// use mistral_core::models::ConversationRequest;
///
/// let start = ConversationRequest::with_model("mistral-medium-latest", "Who wrote Candide?")
///     .store(true)
///     .max_tokens(100);
/// let body = serde_json::to_value(&start)?;
/// assert_eq!(body["inputs"], "Who wrote Candide?");
/// assert_eq!(body["completion_args"]["max_tokens"], 100);
/// assert_eq!(start.budget_id(), "mistral-medium-latest");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRequest {
    /// What the user says (or the entries to start with).
    pub inputs: ConversationInputs,
    /// The model (or an agent: [`ConversationRequest::agent_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent (or a model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Keep the conversation on Mistral's side (appendable; the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// `server` (the default) or `client`: who runs a handoff to another agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_execution: Option<String>,
    /// Instructions (a system prompt) for a conversation with a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Tools (functions, `web_search`, `code_interpreter`…), as the API takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Completion arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_args: Option<CompletionArgs>,
    /// The conversation's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The conversation's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Metadata kept with the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, Value>>,
    /// Other fields (`agent_version`, `guardrails`…), sent as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// The budget the call spends (never sent; see the module docs).
    #[serde(skip)]
    pub budget: Option<String>,
}

impl ConversationRequest {
    fn new(inputs: ConversationInputs) -> Self {
        Self {
            inputs,
            model: None,
            agent_id: None,
            store: None,
            handoff_execution: None,
            instructions: None,
            tools: None,
            completion_args: None,
            name: None,
            description: None,
            metadata: None,
            extra: BTreeMap::new(),
            budget: None,
        }
    }

    /// A conversation with `model`, started by `inputs`.
    pub fn with_model(model: impl Into<String>, inputs: impl Into<ConversationInputs>) -> Self {
        Self {
            model: Some(model.into()),
            ..Self::new(inputs.into())
        }
    }

    /// A conversation with the agent `agent_id`, started by `inputs`.
    pub fn with_agent(agent_id: impl Into<String>, inputs: impl Into<ConversationInputs>) -> Self {
        Self {
            agent_id: Some(agent_id.into()),
            ..Self::new(inputs.into())
        }
    }

    /// Sets `store`.
    pub fn store(mut self, store: bool) -> Self {
        self.store = Some(store);
        self
    }

    /// Sets `instructions`.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// Sets `completion_args.max_tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.completion_args
            .get_or_insert_with(Default::default)
            .max_tokens = Some(max_tokens);
        self
    }

    /// Names the budget the call spends (an agent's model).
    pub fn budget(mut self, model: impl Into<String>) -> Self {
        self.budget = Some(model.into());
        self
    }

    /// The budget the call spends: [`ConversationRequest::budget`], else `model`, else
    /// the agent's id (else `conversations`, for a request that names neither, which
    /// the API refuses).
    pub fn budget_id(&self) -> &str {
        self.budget
            .as_deref()
            .or(self.model.as_deref())
            .or(self.agent_id.as_deref())
            .unwrap_or("conversations")
    }
}

impl RequestSize for ConversationRequest {
    fn prompt_chars(&self) -> usize {
        self.inputs.text_chars() + self.instructions.as_deref().map_or(0, char_count)
    }

    fn max_tokens(&self) -> Option<u32> {
        self.completion_args.as_ref().and_then(|a| a.max_tokens)
    }
}

/// The body of `POST /v1/conversations/{id}`: append to a conversation.
///
/// ```
/// use mistral_core::models::ConversationAppendRequest;
///
/// let next = ConversationAppendRequest::new("And who wrote Zadig?").budget("mistral-medium-latest");
/// assert_eq!(serde_json::to_value(&next)?, serde_json::json!({"inputs": "And who wrote Zadig?"}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationAppendRequest {
    /// What the user says next (or the entries to append, function results…).
    pub inputs: ConversationInputs,
    /// Keep the new entries on Mistral's side (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// `server` (the default) or `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_execution: Option<String>,
    /// Completion arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_args: Option<CompletionArgs>,
    /// Other fields (`tool_confirmations`…), sent as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// The budget the call spends (never sent; see the module docs).
    #[serde(skip)]
    pub budget: Option<String>,
}

impl ConversationAppendRequest {
    /// An append of `inputs`.
    pub fn new(inputs: impl Into<ConversationInputs>) -> Self {
        Self {
            inputs: inputs.into(),
            store: None,
            handoff_execution: None,
            completion_args: None,
            extra: BTreeMap::new(),
            budget: None,
        }
    }

    /// Sets `completion_args.max_tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.completion_args
            .get_or_insert_with(Default::default)
            .max_tokens = Some(max_tokens);
        self
    }

    /// Names the budget the call spends (the conversation's model).
    pub fn budget(mut self, model: impl Into<String>) -> Self {
        self.budget = Some(model.into());
        self
    }
}

impl RequestSize for ConversationAppendRequest {
    fn prompt_chars(&self) -> usize {
        self.inputs.text_chars()
    }

    fn max_tokens(&self) -> Option<u32> {
        self.completion_args.as_ref().and_then(|a| a.max_tokens)
    }
}

/// The answer of a start or an append: `{object, conversation_id, outputs, usage}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationResponse {
    /// `conversation.response`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// The conversation's id (what an append names).
    #[serde(default, deserialize_with = "de::null_default")]
    pub conversation_id: String,
    /// The entries this call produced.
    #[serde(default, deserialize_with = "de::null_default")]
    pub outputs: Vec<ConversationEntry>,
    /// Tokens used (`connector_tokens` and the like in its `extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Any other field (`guardrails`…), verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ConversationResponse {
    /// The text of the last message the conversation produced.
    pub fn text(&self) -> Option<String> {
        self.outputs
            .iter()
            .rev()
            .find(|e| e.is_output_message())
            .and_then(ConversationEntry::text)
    }

    /// The model that produced the last output that names one: the budget to name in
    /// the next append ([`ConversationAppendRequest::budget`]).
    pub fn model(&self) -> Option<&str> {
        self.outputs.iter().rev().find_map(|e| e.model.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_serialize_what_is_set_and_name_their_budget() {
        let start = ConversationRequest::with_agent(
            "ag_1",
            vec![
                ConversationEntry::user("Hello"),
                ConversationEntry::function_result("call_1", "{\"ok\":true}"),
            ],
        );
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({
                "inputs": [
                    {"type": "message.input", "role": "user", "content": "Hello"},
                    {"type": "function.result", "tool_call_id": "call_1", "result": "{\"ok\":true}"},
                ],
                "agent_id": "ag_1",
            })
        );
        assert_eq!(start.budget_id(), "ag_1");
        assert_eq!(start.prompt_chars(), 5 + 11);
        assert_eq!(
            start.clone().budget("mistral-large-latest").budget_id(),
            "mistral-large-latest"
        );
        let append = ConversationAppendRequest::new("Next").max_tokens(9);
        assert_eq!(
            serde_json::to_value(&append).unwrap(),
            json!({"inputs": "Next", "completion_args": {"max_tokens": 9}})
        );
        assert_eq!(
            (append.prompt_chars(), RequestSize::max_tokens(&append)),
            (4, Some(9))
        );
    }

    #[test]
    fn response_decodes_every_entry_and_keeps_unknown_fields() {
        let r: ConversationResponse = serde_json::from_value(json!({
            "object": "conversation.response",
            "conversation_id": "conv_0197",
            "outputs": [
                {"object": "entry", "type": "tool.execution", "name": "web_search",
                 "id": "tool_1", "arguments": "{}", "info": {"q": "x"}},
                {"object": "entry", "type": "function.call", "tool_call_id": "c1",
                 "name": "lookup", "arguments": "{\"id\":1}", "id": "fc_1"},
                {"object": "entry", "type": "message.output", "created_at": "2026-01-01T00:00:00Z",
                 "completed_at": null, "model": "mistral-medium-2505", "agent_id": null,
                 "id": "msg_1", "role": "assistant",
                 "content": [{"type": "text", "text": "Voltaire."}, {"type": "tool_reference", "tool": "web_search", "title": "x"}]},
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                      "connector_tokens": null, "connectors": null},
            "guardrails": null,
        }))
        .unwrap();
        assert_eq!(r.conversation_id, "conv_0197");
        assert_eq!(r.text().as_deref(), Some("Voltaire."));
        assert_eq!(r.model(), Some("mistral-medium-2505"));
        assert_eq!(r.outputs[0].extra["info"]["q"], "x");
        assert_eq!(r.outputs[1].arguments, Some(json!("{\"id\":1}")));
        assert!(r.extra.contains_key("guardrails"));
        assert!(
            r.usage
                .as_ref()
                .unwrap()
                .extra
                .contains_key("connector_tokens")
        );
        let back: ConversationResponse =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
