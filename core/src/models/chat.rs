//! `POST /v1/chat/completions`: request, messages, content chunks, tools, tool choice,
//! response format, response, choices and tool calls.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::usage::Usage;
use super::{RequestSize, char_count, de};

// ---------------------------------------------------------------------------------------
// Open enums
// ---------------------------------------------------------------------------------------

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

open_enum! {
    /// `service_tier`: which capacity pool may serve the request.
    pub enum ServiceTier {
        /// `auto`: priority capacity when the plan has it, standard otherwise.
        Auto => "auto",
        /// `standard_only`: never use priority capacity.
        StandardOnly => "standard_only",
    }
}

open_enum! {
    /// The `type` of a tool (only `function` exists today; the default).
    #[derive(Default)]
    pub enum ToolType {
        /// `function`
        #[default]
        Function => "function",
    }
}

// ---------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------

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

    fn text_chars(&self) -> usize {
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

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------

/// A tool the model may call: `{type:"function", function:{name, description?, parameters}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function definition.
    pub function: Function,
}

impl Tool {
    /// A function tool. `parameters` is a JSON Schema object.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: ToolType::Function,
            function: Function {
                name: name.into(),
                description: Some(description.into()),
                parameters,
                strict: None,
            },
        }
    }

    fn text_chars(&self) -> usize {
        let f = &self.function;
        char_count(&f.name)
            + f.description.as_deref().map_or(0, char_count)
            + char_count(&f.parameters.to_string())
    }
}

/// A function definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// Function name (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// What the function does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default)]
    pub parameters: Value,
    /// Whether the arguments must follow the schema strictly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A tool call made by the model.
///
/// Responses carry **no** `type` field (it decodes as `None`) and `arguments` is a JSON
/// string; an object is accepted too and kept as its JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id (9 characters `[A-Za-z0-9]`); empty when the server sent none.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// `function` when present; responses omit it.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    /// The function called and its arguments.
    #[serde(default, deserialize_with = "de::null_default")]
    pub function: FunctionCall,
    /// Position of the call in a streamed delta, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl ToolCall {
    /// A function call, as sent back in an assistant message.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: Some(ToolType::Function),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
            index: None,
        }
    }

    fn text_chars(&self) -> usize {
        char_count(&self.id)
            + char_count(&self.function.name)
            + char_count(&self.function.arguments)
    }
}

/// The function part of a tool call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Name of the function.
    #[serde(default, deserialize_with = "de::null_default")]
    pub name: String,
    /// The arguments as JSON text (an object on the wire is re-encoded as text).
    #[serde(default, deserialize_with = "de::string_or_json")]
    pub arguments: String,
}

impl FunctionCall {
    /// Decodes the arguments into `T`.
    pub fn parse_arguments<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        let text = if self.arguments.trim().is_empty() {
            "{}"
        } else {
            self.arguments.as_str()
        };
        serde_json::from_str(text)
    }
}

/// `tool_choice`: a mode, or one named function the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"auto" | "none" | "any" | "required"`.
    Mode(ToolChoiceMode),
    /// `{type:"function", function:{name}}`.
    Named(NamedToolChoice),
}

impl ToolChoice {
    /// Forces a call to the function `name`.
    pub fn function(name: impl Into<String>) -> Self {
        Self::Named(NamedToolChoice {
            kind: ToolType::Function,
            function: FunctionName { name: name.into() },
        })
    }
}

impl From<ToolChoiceMode> for ToolChoice {
    fn from(mode: ToolChoiceMode) -> Self {
        Self::Mode(mode)
    }
}

/// The tool-choice modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    /// The model decides.
    Auto,
    /// No tool call.
    None,
    /// The model must call some tool.
    Any,
    /// The model must call some tool (alias of `any`).
    Required,
}

/// `{type:"function", function:{name}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    /// Always `function`.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function to call.
    pub function: FunctionName,
}

/// `{name}` of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionName {
    /// Function name.
    pub name: String,
}

// ---------------------------------------------------------------------------------------
// Response format, stop, prediction
// ---------------------------------------------------------------------------------------

/// `response_format`: `text`, `json_object`, or `json_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema: `{"type":"json_schema","json_schema":{…}}`.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchema,
    },
}

impl ResponseFormat {
    /// A strict `json_schema` format.
    pub fn json_schema(name: impl Into<String>, schema: Value) -> Self {
        Self::JsonSchema {
            json_schema: JsonSchema {
                name: name.into(),
                schema,
                strict: Some(true),
                description: None,
            },
        }
    }
}

/// A named JSON Schema for structured output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchema {
    /// Schema name.
    pub name: String,
    /// The JSON Schema.
    #[serde(alias = "schema_definition")]
    pub schema: Value,
    /// Whether the output must follow the schema strictly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// What the schema describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `stop`: one stop sequence or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several sequences.
    Many(Vec<String>),
}

impl From<&str> for Stop {
    fn from(s: &str) -> Self {
        Self::One(s.to_owned())
    }
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Self::One(s)
    }
}

impl From<Vec<String>> for Stop {
    fn from(v: Vec<String>) -> Self {
        Self::Many(v)
    }
}

impl From<Vec<&str>> for Stop {
    fn from(v: Vec<&str>) -> Self {
        Self::Many(v.into_iter().map(str::to_owned).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Stop {
    fn from(v: [&str; N]) -> Self {
        Self::Many(v.into_iter().map(str::to_owned).collect())
    }
}

/// `prediction`: expected output, to speed up generation: `{"type":"content","content":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// Always `content` today.
    #[serde(rename = "type", default = "Prediction::default_kind")]
    pub kind: String,
    /// The predicted text.
    #[serde(default)]
    pub content: String,
}

impl Prediction {
    /// A `content` prediction.
    pub fn content(content: impl Into<String>) -> Self {
        Self {
            kind: Self::default_kind(),
            content: content.into(),
        }
    }

    fn default_kind() -> String {
        "content".to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------

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

    /// Sets `service_tier`.
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

// ---------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_request_has_no_nulls() {
        let req = ChatRequest::new("mistral-small-latest", vec![Message::user("hi")]);
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"mistral-small-latest","messages":[{"role":"user","content":"hi"}]}"#
        );
        assert!(!req.is_stream());
        assert_eq!(RequestSize::max_tokens(&req), None);
    }

    #[test]
    fn full_request_serializes_every_field() {
        let req = ChatRequest::new(
            "mistral-large-latest",
            [
                Message::system("be brief"),
                Message::user(vec![
                    ContentChunk::text("what is this?"),
                    ContentChunk::image_url("https://x/y.png"),
                ]),
                Message::assistant_tool_calls(vec![ToolCall::new("abcDEF123", "f", "{}")]),
                Message::tool("abcDEF123", "42"),
                Message::assistant_prefix("The answer"),
            ],
        )
        .temperature(0.5)
        .top_p(0.9)
        .max_tokens(64)
        .stream(true)
        .stop(["\n\n", "END"])
        .random_seed(7)
        .response_format(ResponseFormat::json_schema(
            "answer",
            json!({"type":"object"}),
        ))
        .tool(Tool::function(
            "f",
            "does f",
            json!({"type":"object","properties":{}}),
        ))
        .tool_choice(ToolChoice::function("f"))
        .presence_penalty(0.1)
        .frequency_penalty(0.2)
        .n(1)
        .prediction(Prediction::content("The answer is"))
        .parallel_tool_calls(false)
        .safe_prompt(true)
        .service_tier(ServiceTier::StandardOnly);

        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({
                "model": "mistral-large-latest",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": "https://x/y.png"}
                    ]},
                    {"role": "assistant", "tool_calls": [
                        {"id": "abcDEF123", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "content": "42", "tool_call_id": "abcDEF123"},
                    {"role": "assistant", "content": "The answer", "prefix": true}
                ],
                "temperature": 0.5,
                "top_p": 0.9,
                "max_tokens": 64,
                "stream": true,
                "stop": ["\n\n", "END"],
                "random_seed": 7,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "answer", "schema": {"type": "object"}, "strict": true}},
                "tools": [{"type": "function", "function": {
                    "name": "f", "description": "does f",
                    "parameters": {"type": "object", "properties": {}}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "presence_penalty": 0.1,
                "frequency_penalty": 0.2,
                "n": 1,
                "prediction": {"type": "content", "content": "The answer is"},
                "parallel_tool_calls": false,
                "safe_prompt": true,
                "service_tier": "standard_only"
            })
        );
        assert!(req.is_stream());
        assert_eq!(RequestSize::max_tokens(&req), Some(64));
        // Round trip.
        let back: ChatRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn prompt_chars_counts_text_input() {
        let req = ChatRequest::new(
            "m",
            vec![
                Message::system("abc"), // 3
                Message::user(vec![
                    ContentChunk::text("héllo"),                // 5
                    ContentChunk::image_url("https://ignored"), // 0
                ]),
                Message::assistant_tool_calls(vec![ToolCall::new("id", "fn", "{}")]), // 2+2+2
                Message::tool("id", "ok"),                                            // 2+2
            ],
        );
        assert_eq!(req.prompt_chars(), 3 + 5 + 6 + 4);
        assert_eq!(
            RequestSize::estimated_prompt_tokens(&req),
            18_u64.div_ceil(4)
        );
        let with_tool = req.tool(Tool::function("f", "d", json!({})));
        assert_eq!(with_tool.prompt_chars(), 18 + 1 + 1 + 2);
    }

    #[test]
    fn tool_choice_forms() {
        for (mode, wire) in [
            (ToolChoiceMode::Auto, "\"auto\""),
            (ToolChoiceMode::None, "\"none\""),
            (ToolChoiceMode::Any, "\"any\""),
            (ToolChoiceMode::Required, "\"required\""),
        ] {
            let tc = ToolChoice::from(mode);
            assert_eq!(serde_json::to_string(&tc).unwrap(), wire);
            assert_eq!(serde_json::from_str::<ToolChoice>(wire).unwrap(), tc);
        }
        let named: ToolChoice =
            serde_json::from_str(r#"{"type":"function","function":{"name":"get_weather"}}"#)
                .unwrap();
        assert_eq!(named, ToolChoice::function("get_weather"));
    }

    #[test]
    fn response_format_forms() {
        assert_eq!(
            serde_json::to_value(ResponseFormat::Text).unwrap(),
            json!({"type":"text"})
        );
        assert_eq!(
            serde_json::to_value(ResponseFormat::JsonObject).unwrap(),
            json!({"type":"json_object"})
        );
        let rf: ResponseFormat = serde_json::from_value(json!({
            "type": "json_schema",
            "json_schema": {"name": "n", "schema_definition": {"type": "object"}, "description": "d"}
        }))
        .unwrap();
        let ResponseFormat::JsonSchema { json_schema } = rf else {
            panic!("expected json_schema");
        };
        assert_eq!(json_schema.name, "n");
        assert_eq!(json_schema.schema, json!({"type":"object"}));
        assert_eq!(json_schema.strict, None);
        assert_eq!(json_schema.description.as_deref(), Some("d"));
    }

    #[test]
    fn content_chunks_decode_with_fallback() {
        let c: Content = serde_json::from_value(json!([
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "https://i", "detail": "high"}},
            {"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
            {"type": "document_url", "document_url": "https://d.pdf", "document_name": "d"},
            {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}], "closed": true},
            {"type": "audio_of_the_future", "x": 1},
            {"type": "text"},
            {"no_type": true}
        ]))
        .unwrap();
        let Content::Chunks(chunks) = &c else {
            panic!("expected chunks")
        };
        assert_eq!(chunks.len(), 8);
        assert_eq!(chunks[0], ContentChunk::text("a"));
        assert_eq!(
            chunks[1],
            ContentChunk::ImageUrl {
                image_url: ImageUrl::Detailed {
                    url: "https://i".into(),
                    detail: Some("high".into())
                }
            }
        );
        let ContentChunk::ImageUrl { image_url } = &chunks[2] else {
            panic!("expected image")
        };
        assert_eq!(image_url.url(), "data:image/png;base64,AAAA");
        assert!(
            matches!(&chunks[3], ContentChunk::DocumentUrl { document_name: Some(n), .. } if n == "d")
        );
        assert!(
            matches!(&chunks[4], ContentChunk::Thinking { thinking, closed: Some(true) } if thinking.len() == 1)
        );
        assert_eq!(
            chunks[5],
            ContentChunk::Other(json!({"type": "audio_of_the_future", "x": 1}))
        );
        assert_eq!(chunks[6], ContentChunk::Other(json!({"type": "text"})));
        assert_eq!(chunks[7], ContentChunk::Other(json!({"no_type": true})));
        // Unknown chunks serialize back verbatim.
        assert_eq!(
            serde_json::to_value(&chunks[5]).unwrap(),
            json!({"type": "audio_of_the_future", "x": 1})
        );
        assert_eq!(c.as_text(), Some("a"));
        assert_eq!(c.text_chars(), 1 + 3);
    }

    #[test]
    fn messages_round_trip_every_role() {
        let msgs = vec![
            Message::system("s"),
            Message::user("u"),
            Message::assistant("a"),
            Message::tool_named("abc123XYZ", "f", "r"),
        ];
        let v = serde_json::to_value(&msgs).unwrap();
        assert_eq!(
            v,
            json!([
                {"role":"system","content":"s"},
                {"role":"user","content":"u"},
                {"role":"assistant","content":"a"},
                {"role":"tool","content":"r","tool_call_id":"abc123XYZ","name":"f"}
            ])
        );
        let back: Vec<Message> = serde_json::from_value(v).unwrap();
        assert_eq!(back, msgs);
        assert_eq!(
            back.iter().map(Message::role).collect::<Vec<_>>(),
            [Role::System, Role::User, Role::Assistant, Role::Tool]
        );
    }

    #[test]
    fn response_with_untyped_tool_calls_and_string_arguments() {
        // Captured shape: tool calls without `type`, `arguments` a JSON string, plus
        // unknown fields at every level.
        let body = r#"{
            "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
            "object": "chat.completion",
            "created": 1702256327,
            "model": "mistral-large-latest",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{
                        "id": "D681PevKs",
                        "function": {"name": "retrieve_payment_status",
                                     "arguments": "{\"transaction_id\": \"T1001\"}"}
                    }],
                    "prefix": false
                },
                "finish_reason": "tool_calls",
                "logprobs": null
            }],
            "usage": {"prompt_tokens": 118, "completion_tokens": 35, "total_tokens": 153},
            "some_new_field": {"x": 1}
        }"#;
        let resp: ChatResponse = serde_json::from_str(body).unwrap();
        assert_eq!(resp.model, "mistral-large-latest");
        assert_eq!(resp.created, Some(1_702_256_327));
        assert_eq!(resp.finish_reason(), Some(&FinishReason::ToolCalls));
        assert_eq!(resp.text(), Some(""));
        let calls = resp.tool_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "D681PevKs");
        assert_eq!(calls[0].kind, None);
        assert_eq!(calls[0].function.name, "retrieve_payment_status");
        let args: Value = calls[0].function.parse_arguments().unwrap();
        assert_eq!(args, json!({"transaction_id": "T1001"}));
        assert_eq!(resp.usage.as_ref().map(|u| u.total_tokens), Some(153));

        // The answer goes back into the conversation as an assistant message.
        let msg = Message::from(resp.choices[0].message.clone());
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"role":"assistant","content":"","tool_calls":[{"id":"D681PevKs",
                "function":{"name":"retrieve_payment_status",
                            "arguments":"{\"transaction_id\": \"T1001\"}"}}]})
        );
    }

    #[test]
    fn arguments_as_object_are_kept_as_json_text() {
        let call: ToolCall = serde_json::from_value(json!({
            "id": "abc",
            "type": "function",
            "function": {"name": "f", "arguments": {"a": 1}}
        }))
        .unwrap();
        assert_eq!(call.kind, Some(ToolType::Function));
        assert_eq!(call.function.arguments, r#"{"a":1}"#);
        let parsed: Value = call.function.parse_arguments().unwrap();
        assert_eq!(parsed, json!({"a": 1}));
    }

    #[test]
    fn text_response_and_open_finish_reason() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello!",
                 "tool_calls": null}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "x"},
                 "finish_reason": "brand_new_reason"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        }))
        .unwrap();
        assert_eq!(resp.text(), Some("Hello!"));
        assert_eq!(resp.finish_reason(), Some(&FinishReason::Stop));
        assert_eq!(
            resp.choices[1].finish_reason,
            Some(FinishReason::Other("brand_new_reason".into()))
        );
        assert!(resp.tool_calls().is_empty());
        for (s, fr) in [
            ("length", FinishReason::Length),
            ("model_length", FinishReason::ModelLength),
            ("error", FinishReason::Error),
        ] {
            assert_eq!(
                serde_json::from_value::<FinishReason>(json!(s)).unwrap(),
                fr
            );
            assert_eq!(fr.as_str(), s);
        }
        // Round trip of the whole response.
        let again: ChatResponse =
            serde_json::from_value(serde_json::to_value(&resp).unwrap()).unwrap();
        assert_eq!(again, resp);
    }

    #[test]
    fn chunked_response_content_text() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "x", "model": "magistral-small-latest",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "let me think"}]},
                    {"type": "text", "text": "Paris"},
                    {"type": "text", "text": "."}
                ]}}]
        }))
        .unwrap();
        assert_eq!(resp.text(), Some("Paris"));
        assert_eq!(
            resp.choices[0]
                .message
                .content
                .as_ref()
                .unwrap()
                .joined_text(),
            "Paris."
        );
        assert_eq!(resp.usage, None);
        assert_eq!(resp.object, "");
    }

    #[test]
    fn null_and_missing_response_fields_decode() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": null, "model": "m", "created": null,
            "choices": [{"message": {"content": null}, "finish_reason": null}]
        }))
        .unwrap();
        assert_eq!(resp.id, "");
        assert_eq!(resp.created, None);
        assert_eq!(resp.choices[0].index, 0);
        assert_eq!(resp.text(), None);
        assert_eq!(resp.finish_reason(), None);
    }

    #[test]
    fn service_tier_is_open() {
        assert_eq!(
            serde_json::to_string(&ServiceTier::Auto).unwrap(),
            r#""auto""#
        );
        assert_eq!(
            serde_json::from_str::<ServiceTier>(r#""priority""#).unwrap(),
            ServiceTier::Other("priority".into())
        );
        let req = ChatRequest::new("m", vec![]).service_tier("standard_only");
        assert_eq!(req.service_tier, Some(ServiceTier::StandardOnly));
    }

    #[test]
    fn content_append_merges() {
        let mut c = Content::from("Hel");
        c.append(Content::from("lo"));
        assert_eq!(c, Content::from("Hello"));
        c.append(Content::Chunks(vec![ContentChunk::image_url("u")]));
        assert_eq!(
            c,
            Content::Chunks(vec![
                ContentChunk::text("Hello"),
                ContentChunk::image_url("u")
            ])
        );
        c.append(Content::from("!"));
        assert_eq!(c.joined_text(), "Hello!");
    }
}
