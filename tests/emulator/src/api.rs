//! Request validation and deterministic response bodies.
//!
//! # Usage rule
//!
//! - Chat: `prompt_tokens` = Σ over messages of ⌈chars(text of the content)/4⌉ (string
//!   content, or the `text` of text chunks; every other chunk counts 1 token), at least 1.
//! - FIM: ⌈chars(prompt + suffix)/4⌉, at least 1.
//! - Embeddings and moderations: Σ over inputs of ⌈chars/4⌉, at least 1;
//!   `completion_tokens` = 0.
//! - Completions: `completion_tokens` = min(`max_tokens` (if given), the configured
//!   natural length, default 16); `finish_reason` is `length` when `max_tokens` cut it,
//!   else `stop`.
//! - The cost charged to the token limits is `total_tokens` = prompt + completion.
//!
//! Content is one word per completion token, drawn from a fixed vocabulary by a generator
//! seeded with a hash of the model, the prompt and `random_seed`.
//!
//! # Validation
//!
//! Like the real API (FastAPI/pydantic behind the gateway): unknown top-level fields give
//! 422 `extra_forbidden`; a missing required field 422 `missing`; `null` in a field whose
//! schema has no null, or a value of the wrong type, 422 `*_type`; a body that is not
//! JSON 422 `json_invalid`. All errors found are reported together.

use serde_json::{Map, Value, json};

use super::rng::{XorShift, fnv1a};

/// Inference endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Fim,
    Embeddings,
    Moderations,
    ChatModerations,
    Classifications,
    ChatClassifications,
    /// `/v1/agents/completions`: a chat by an agent (`agent_id`, no `model`).
    AgentCompletions,
}

impl Endpoint {
    pub(crate) fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::Chat,
            "/v1/fim/completions" => Endpoint::Fim,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/moderations" => Endpoint::Moderations,
            "/v1/chat/moderations" => Endpoint::ChatModerations,
            "/v1/classifications" => Endpoint::Classifications,
            "/v1/chat/classifications" => Endpoint::ChatClassifications,
            "/v1/agents/completions" => Endpoint::AgentCompletions,
            _ => return None,
        })
    }
}

/// How a field is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    Str,
    Bool,
    Num,
    Int,
    Object,
    List,
    /// A string or a list of strings.
    StrOrList,
    /// Anything but null.
    Any,
    Messages,
}

/// (name, rule, nullable, required)
pub(crate) type Field = (&'static str, Rule, bool, bool);

const CHAT: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("messages", Rule::Messages, false, true),
    ("temperature", Rule::Num, true, false),
    ("top_p", Rule::Num, false, false),
    ("max_tokens", Rule::Int, true, false),
    ("stream", Rule::Bool, false, false),
    ("stop", Rule::StrOrList, false, false),
    ("random_seed", Rule::Int, true, false),
    ("response_format", Rule::Object, true, false),
    ("tools", Rule::List, true, false),
    ("tool_choice", Rule::Any, false, false),
    ("presence_penalty", Rule::Num, false, false),
    ("frequency_penalty", Rule::Num, false, false),
    ("n", Rule::Int, true, false),
    ("prediction", Rule::Object, true, false),
    ("parallel_tool_calls", Rule::Bool, false, false),
    ("safe_prompt", Rule::Bool, false, false),
    ("service_tier", Rule::Str, true, false),
];

const AGENTS: &[Field] = &[
    ("agent_id", Rule::Str, false, true),
    ("messages", Rule::Messages, false, true),
    ("max_tokens", Rule::Int, true, false),
    ("stream", Rule::Bool, false, false),
    ("stop", Rule::StrOrList, false, false),
    ("random_seed", Rule::Int, true, false),
    ("metadata", Rule::Object, true, false),
    ("response_format", Rule::Object, false, false),
    ("tools", Rule::List, true, false),
    ("tool_choice", Rule::Any, false, false),
    ("presence_penalty", Rule::Num, false, false),
    ("frequency_penalty", Rule::Num, false, false),
    ("n", Rule::Int, true, false),
    ("prediction", Rule::Object, false, false),
    ("parallel_tool_calls", Rule::Bool, false, false),
    ("prompt_mode", Rule::Str, true, false),
    ("reasoning_effort", Rule::Str, false, false),
    ("prompt_cache_key", Rule::Str, true, false),
];

const FIM: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("prompt", Rule::Str, false, true),
    ("suffix", Rule::Str, true, false),
    ("temperature", Rule::Num, true, false),
    ("top_p", Rule::Num, false, false),
    ("max_tokens", Rule::Int, true, false),
    ("min_tokens", Rule::Int, true, false),
    ("stream", Rule::Bool, false, false),
    ("stop", Rule::StrOrList, false, false),
    ("random_seed", Rule::Int, true, false),
];

const EMBEDDINGS: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("input", Rule::StrOrList, false, true),
    ("output_dimension", Rule::Int, true, false),
    ("output_dtype", Rule::Str, true, false),
    ("encoding_format", Rule::Str, true, false),
];

const MODERATIONS: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("input", Rule::StrOrList, false, true),
];

const CLASSIFICATIONS: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("input", Rule::StrOrList, false, true),
    ("metadata", Rule::Object, true, false),
];

/// `input`: one `{messages}` or a list of them (checked further in [`build`]).
const CHAT_CLASSIFICATIONS: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("input", Rule::Any, false, true),
];

const CHAT_MODERATIONS: &[Field] = &[
    ("model", Rule::Str, false, true),
    ("input", Rule::List, false, true),
];

/// A validated inference request.
#[derive(Clone, Debug)]
pub(crate) struct Parsed {
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `max_tokens` cut the completion.
    pub truncated: bool,
    /// Seed of the generated content.
    pub content_seed: u64,
    /// Inputs of embeddings and moderations.
    pub inputs: Vec<String>,
    pub dimension: usize,
    /// What a chat completion answers with (text for every other endpoint).
    pub answer: Answer,
    /// The `usage.service_tier` a chat completion answers with (see
    /// [`crate::Config::priority_tier`]); `None` for the other endpoints.
    pub served_tier: Option<&'static str>,
}

/// What a chat completion answers with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    /// Generated words.
    Text,
    /// A call of one of the request's tools (`tools` present, `tool_choice` not `none`,
    /// and the last message not a tool result): the function named by `tool_choice`, or
    /// the first, with arguments generated from its `parameters` schema.
    ToolCall { name: String, arguments: Value },
    /// `response_format` `json_object` (an object) or `json_schema` (an instance of its
    /// schema).
    Json(Value),
}

impl Parsed {
    pub(crate) fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A validation failure: status and body.
#[derive(Clone, Debug)]
pub(crate) struct Invalid {
    pub status: u16,
    pub body: Value,
    /// The model, when the body named one.
    pub model: Option<String>,
}

fn detail(kind: &str, loc: &[Value], msg: &str, input: &Value) -> Value {
    let mut full = vec![json!("body")];
    full.extend_from_slice(loc);
    json!({"type": kind, "loc": full, "msg": msg, "input": input})
}

fn type_error(rule: Rule) -> (&'static str, &'static str) {
    match rule {
        Rule::Str => ("string_type", "Input should be a valid string"),
        Rule::Bool => ("bool_type", "Input should be a valid boolean"),
        Rule::Num => ("float_type", "Input should be a valid number"),
        Rule::Int => ("int_type", "Input should be a valid integer"),
        Rule::Object => ("dict_type", "Input should be a valid dictionary"),
        Rule::List | Rule::Messages => ("list_type", "Input should be a valid list"),
        Rule::StrOrList => ("string_type", "Input should be a valid string"),
        Rule::Any => ("none_required", "Input should not be None"),
    }
}

fn check_field(name: &str, rule: Rule, value: &Value, errors: &mut Vec<Value>) {
    let ok = match rule {
        Rule::Str => value.is_string(),
        Rule::Bool => value.is_boolean(),
        Rule::Num => value.is_number(),
        Rule::Int => value.is_u64() || value.is_i64(),
        Rule::Object => value.is_object(),
        Rule::List => value.is_array(),
        Rule::StrOrList => {
            value.is_string()
                || value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string))
        }
        Rule::Any => !value.is_null(),
        Rule::Messages => {
            if let Some(list) = value.as_array() {
                check_messages(list, errors);
                true
            } else {
                false
            }
        }
    };
    if !ok {
        let (kind, msg) = type_error(rule);
        errors.push(detail(kind, &[json!(name)], msg, value));
    }
}

const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

fn check_messages(list: &[Value], errors: &mut Vec<Value>) {
    for (i, message) in list.iter().enumerate() {
        let Some(object) = message.as_object() else {
            errors.push(detail(
                "model_attributes_type",
                &[json!("messages"), json!(i)],
                "Input should be a valid dictionary or object to extract fields from",
                message,
            ));
            continue;
        };
        let role = object.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            errors.push(detail(
                "union_tag_invalid",
                &[json!("messages"), json!(i)],
                "Input tag found using 'role' does not match any of the expected tags: 'system', 'user', 'assistant', 'tool'",
                message,
            ));
            continue;
        }
        match object.get("content") {
            None | Some(Value::Null) if role == "assistant" => {}
            None => errors.push(detail(
                "missing",
                &[json!("messages"), json!(i), json!(role), json!("content")],
                "Field required",
                message,
            )),
            Some(Value::String(_)) | Some(Value::Array(_)) => {}
            Some(other) => errors.push(detail(
                "string_type",
                &[json!("messages"), json!(i), json!(role), json!("content")],
                "Input should be a valid string",
                other,
            )),
        }
    }
}

fn ceil4(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn content_tokens(content: Option<&Value>, text: &mut String) -> u64 {
    match content {
        Some(Value::String(s)) => {
            text.push_str(s);
            ceil4(s.chars().count())
        }
        Some(Value::Array(chunks)) => {
            let mut chars = 0;
            let mut others = 0;
            for chunk in chunks {
                match chunk.get("text").and_then(Value::as_str) {
                    Some(s) => {
                        text.push_str(s);
                        chars += s.chars().count();
                    }
                    None => others += 1,
                }
            }
            ceil4(chars) + others
        }
        _ => 0,
    }
}

/// How completions are made: their natural length (`tokens`, varied by `spread`, a
/// fraction, by a hash of the prompt) and the tier a chat request is served by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Completion {
    pub tokens: u32,
    pub spread: f64,
    /// The organisation has priority capacity ([`crate::Config::priority_tier`]).
    pub priority_tier: bool,
}

impl From<u32> for Completion {
    fn from(tokens: u32) -> Self {
        Completion {
            tokens,
            spread: 0.0,
            priority_tier: true,
        }
    }
}

/// The natural length of the completion of a prompt whose text is `text`: `tokens`,
/// varied by `spread` (a fraction, 0 to 1) by a hash of the text (the same prompt, the
/// same length), at least 1 when varied.
pub fn natural_completion(text: &str, tokens: u32, spread: f64) -> u64 {
    if spread > 0.0 {
        let base = f64::from(tokens);
        let spread = spread.min(1.0);
        let u = (fnv1a(text.as_bytes()) % 10_000) as f64 / 10_000.0;
        (base * (1.0 - spread + 2.0 * spread * u)).round().max(1.0) as u64
    } else {
        u64::from(tokens)
    }
}

/// Checks a JSON body against `fields` as the real API does (see the module docs):
/// the object, or every error found in one 422.
pub(crate) fn validate(body: &[u8], fields: &[Field]) -> Result<Map<String, Value>, Invalid> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let position = e.column();
            return Err(Invalid {
                status: 422,
                body: json!({"detail": [{
                    "type": "json_invalid",
                    "loc": ["body", position],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": e.to_string()},
                }]}),
                model: None,
            });
        }
    };
    let Value::Object(object) = value else {
        return Err(Invalid {
            status: 422,
            body: json!({"detail": [{
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": value,
            }]}),
            model: None,
        });
    };
    let mut errors = Vec::new();
    for &(name, rule, nullable, required) in fields {
        match object.get(name) {
            None if required => errors.push(detail(
                "missing",
                &[json!(name)],
                "Field required",
                &Value::Object(object.clone()),
            )),
            None => {}
            Some(Value::Null) if nullable => {}
            Some(v) => check_field(name, rule, v, &mut errors),
        }
    }
    for (name, v) in &object {
        if !fields.iter().any(|f| f.0 == name) {
            errors.push(detail(
                "extra_forbidden",
                &[json!(name)],
                "Extra inputs are not permitted",
                v,
            ));
        }
    }
    if !errors.is_empty() {
        let model = object
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string);
        return Err(Invalid {
            status: 422,
            body: json!({ "detail": errors }),
            model,
        });
    }
    Ok(object)
}

/// Validates a body for `endpoint`. `completion_len` is the natural completion length,
/// `default_dimension` the embedding size when the request does not say.
pub(crate) fn parse(
    endpoint: Endpoint,
    body: &[u8],
    completion_len: impl Into<Completion>,
    default_dimension: usize,
) -> Result<Parsed, Invalid> {
    let completion_len = completion_len.into();
    let fields = match endpoint {
        Endpoint::Chat => CHAT,
        Endpoint::AgentCompletions => AGENTS,
        Endpoint::Fim => FIM,
        Endpoint::Embeddings => EMBEDDINGS,
        Endpoint::Moderations => MODERATIONS,
        Endpoint::ChatModerations => CHAT_MODERATIONS,
        Endpoint::Classifications => CLASSIFICATIONS,
        Endpoint::ChatClassifications => CHAT_CLASSIFICATIONS,
    };
    let object = validate(body, fields)?;
    if endpoint == Endpoint::ChatClassifications {
        check_chats(&object)?;
    }
    let object = &object;
    // An agent's model is the emulator's to say (`crate::Config::agent_model`): named by
    // the agent's id until then.
    let model = object
        .get("model")
        .or_else(|| object.get("agent_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let model = model.unwrap_or_default();
    Ok(build(
        endpoint,
        object,
        model,
        completion_len,
        default_dimension,
    ))
}

fn build(
    endpoint: Endpoint,
    object: &Map<String, Value>,
    model: String,
    completion_len: Completion,
    default_dimension: usize,
) -> Parsed {
    let mut text = String::new();
    let mut inputs = Vec::new();
    let prompt_tokens = match endpoint {
        Endpoint::Chat | Endpoint::AgentCompletions => object
            .get("messages")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|m| content_tokens(m.get("content"), &mut text))
                    .sum()
            })
            .unwrap_or(0),
        Endpoint::Fim => {
            let prompt = object.get("prompt").and_then(Value::as_str).unwrap_or("");
            let suffix = object.get("suffix").and_then(Value::as_str).unwrap_or("");
            text.push_str(prompt);
            text.push_str(suffix);
            ceil4(prompt.chars().count() + suffix.chars().count())
        }
        Endpoint::Embeddings | Endpoint::Moderations | Endpoint::Classifications => {
            match object.get("input") {
                Some(Value::String(s)) => inputs.push(s.clone()),
                Some(Value::Array(list)) => {
                    inputs.extend(list.iter().filter_map(Value::as_str).map(str::to_string))
                }
                _ => {}
            }
            inputs.iter().map(|s| ceil4(s.chars().count())).sum()
        }
        Endpoint::ChatModerations => {
            let mut total = 0;
            let mut stack: Vec<&Value> = object
                .get("input")
                .and_then(Value::as_array)
                .map(|l| l.iter().collect())
                .unwrap_or_default();
            while let Some(v) = stack.pop() {
                match v {
                    Value::Array(l) => stack.extend(l.iter()),
                    Value::Object(_) => total += content_tokens(v.get("content"), &mut text),
                    _ => {}
                }
            }
            inputs.push(text.clone());
            total
        }
        Endpoint::ChatClassifications => {
            // One input per chat: its messages' text.
            let chats: Vec<&Value> = match object.get("input") {
                Some(Value::Array(list)) => list.iter().collect(),
                Some(one) => vec![one],
                None => Vec::new(),
            };
            let mut total = 0;
            for chat in chats {
                let mut chat_text = String::new();
                for message in chat["messages"].as_array().into_iter().flatten() {
                    total += content_tokens(message.get("content"), &mut chat_text);
                }
                text.push_str(&chat_text);
                inputs.push(chat_text);
            }
            total
        }
    }
    .max(1);
    let generates = matches!(
        endpoint,
        Endpoint::Chat | Endpoint::Fim | Endpoint::AgentCompletions
    );
    let max_tokens = object.get("max_tokens").and_then(Value::as_u64);
    let natural = natural_completion(&text, completion_len.tokens, completion_len.spread);
    let completion_tokens = if generates {
        max_tokens.map_or(natural, |m| m.min(natural))
    } else {
        0
    };
    let seed_value = object.get("random_seed").and_then(Value::as_u64);
    let content_seed = fnv1a(model.as_bytes())
        ^ fnv1a(text.as_bytes()).rotate_left(17)
        ^ seed_value.unwrap_or(0).rotate_left(41);
    let dimension = object
        .get("output_dimension")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|&d| d > 0 && d <= 8192)
        .unwrap_or(default_dimension.max(1));
    let answer = if matches!(endpoint, Endpoint::Chat | Endpoint::AgentCompletions) {
        chat_answer(object, content_seed)
    } else {
        Answer::Text
    };
    let served_tier = (endpoint == Endpoint::Chat).then(|| {
        served_tier(
            object.get("service_tier").and_then(Value::as_str),
            completion_len.priority_tier,
        )
    });
    Parsed {
        served_tier,
        answer,
        endpoint,
        model,
        stream: generates && object.get("stream").and_then(Value::as_bool) == Some(true),
        prompt_tokens,
        completion_tokens,
        truncated: generates && completion_tokens < natural,
        content_seed,
        inputs,
        dimension,
    }
}

/// What a chat request asks to be answered with (see [`Answer`]).
fn chat_answer(object: &Map<String, Value>, seed: u64) -> Answer {
    let mut rng = XorShift::new(seed ^ 0x7001);
    let tools: Vec<&Value> = object
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let choice = object.get("tool_choice");
    let after_tool = object
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("tool");
    let forced = matches!(choice.and_then(Value::as_str), Some("any" | "required"));
    let off = choice.and_then(Value::as_str) == Some("none");
    if !tools.is_empty() && !off && (!after_tool || forced) {
        let named = choice
            .and_then(|c| c.get("function"))
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        let tool = named
            .and_then(|n| {
                tools
                    .iter()
                    .find(|t| t["function"]["name"].as_str() == Some(n))
            })
            .or(tools.first())
            .copied();
        if let Some(function) = tool.and_then(|t| t.get("function")) {
            let name = function["name"].as_str().unwrap_or("").to_owned();
            let schema = function.get("parameters").cloned().unwrap_or(json!({}));
            let mut arguments = instance(&schema, &mut rng, 0);
            if !arguments.is_object() {
                arguments = json!({});
            }
            return Answer::ToolCall { name, arguments };
        }
    }
    let format = object.get("response_format");
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => Answer::Json(json!({"answer": word(&mut rng)})),
        Some("json_schema") => {
            let schema = format
                .and_then(|f| f.get("json_schema"))
                .and_then(|j| j.get("schema"))
                .cloned()
                .unwrap_or(json!({"type": "object"}));
            Answer::Json(instance(&schema, &mut rng, 0))
        }
        _ => Answer::Text,
    }
}

fn word(rng: &mut XorShift) -> String {
    VOCABULARY[(rng.next_u64() % VOCABULARY.len() as u64) as usize].to_owned()
}

/// A value that fits a JSON schema (the common subset: `type` (or a list of them),
/// `properties`, `required`, `items`, `enum`, `const`, `anyOf`/`oneOf`/`allOf` (the
/// first), `minimum`/`maximum`, `minItems`, `minLength`); every property is filled.
fn instance(schema: &Value, rng: &mut XorShift, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return instance(first, rng, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), instance(sub, rng, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..n.min(16))
                    .map(|_| instance(&items, rng, depth + 1))
                    .collect(),
            )
        }
        "integer" | "number" => {
            let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(1);
            let max = schema
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(min + 99)
                .max(min);
            let span = (max - min) as u64 + 1;
            json!(min + (rng.next_u64() % span) as i64)
        }
        "boolean" => json!(rng.next_u64().is_multiple_of(2)),
        "null" => Value::Null,
        _ => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(1) as usize;
            let mut text = word(rng);
            while text.chars().count() < min {
                text.push(' ');
                text.push_str(&word(rng));
            }
            json!(text)
        }
    }
}

/// A tool call id as Mistral makes them: 9 characters `[A-Za-z0-9]`.
fn tool_call_id(seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = XorShift::new(seed ^ 0x1d);
    (0..9)
        .map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// The tool calls of a response (no `type` field; `arguments` a JSON string).
fn tool_calls(parsed: &Parsed) -> Value {
    match &parsed.answer {
        Answer::ToolCall { name, arguments } => json!([{
            "id": tool_call_id(parsed.content_seed),
            "function": {"name": name, "arguments": arguments.to_string()},
            "index": 0,
        }]),
        _ => Value::Null,
    }
}

/// The message text: generated words, or the JSON text of a JSON answer, or empty
/// beside a tool call.
fn content(parsed: &Parsed) -> String {
    match &parsed.answer {
        Answer::Text => words(parsed).concat(),
        Answer::Json(v) => v.to_string(),
        Answer::ToolCall { .. } => String::new(),
    }
}

const VOCABULARY: &[&str] = &[
    "the", "wind", "carries", "bright", "river", "stone", "quiet", "morning", "light", "over",
    "green", "hills", "where", "old", "songs", "rest", "under", "silver", "clouds", "and", "small",
    "birds", "follow", "slow", "paths", "toward", "warm", "evening", "fields", "of", "golden",
    "grain",
];

/// `n` words of the vocabulary drawn from `seed`, the last ending the sentence.
pub(crate) fn sentence(seed: u64, n: usize) -> String {
    let mut rng = XorShift::new(seed);
    let words: Vec<String> = (0..n.max(1)).map(|_| word(&mut rng)).collect();
    format!("{}.", words.join(" "))
}

/// The completion's words, one per completion token.
pub(crate) fn words(parsed: &Parsed) -> Vec<String> {
    let mut rng = XorShift::new(parsed.content_seed);
    let n = parsed.completion_tokens as usize;
    (0..n)
        .map(|i| {
            let word = VOCABULARY[(rng.next_u64() % VOCABULARY.len() as u64) as usize];
            if i + 1 == n {
                format!("{word}.")
            } else {
                format!("{word} ")
            }
        })
        .collect()
}

fn usage(parsed: &Parsed) -> Value {
    let mut usage = json!({
        "prompt_tokens": parsed.prompt_tokens,
        "completion_tokens": parsed.completion_tokens,
        "total_tokens": parsed.total_tokens(),
    });
    if let Some(tier) = parsed.served_tier {
        usage["service_tier"] = json!(tier);
    }
    usage
}

/// The tier that serves a chat request: `priority` for `service_tier: "auto"` when the
/// organisation has priority capacity (`priority`), `standard` otherwise (absent,
/// `standard_only`, `auto` without it, any other value).
pub(crate) fn served_tier(asked: Option<&str>, priority: bool) -> &'static str {
    match asked {
        Some("auto") if priority => "priority",
        _ => "standard",
    }
}

fn finish_reason(parsed: &Parsed) -> &'static str {
    match parsed.answer {
        Answer::ToolCall { .. } => "tool_calls",
        Answer::Json(_) => "stop",
        Answer::Text if parsed.truncated => "length",
        Answer::Text => "stop",
    }
}

/// The JSON body of a plain (non-streaming) completion, embedding or moderation.
pub(crate) fn response(parsed: &Parsed, id: &str, created: u64) -> Value {
    match parsed.endpoint {
        Endpoint::Chat | Endpoint::Fim | Endpoint::AgentCompletions => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": parsed.model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content(parsed),
                    "tool_calls": tool_calls(parsed),
                },
                "finish_reason": finish_reason(parsed),
            }],
            "usage": usage(parsed),
        }),
        Endpoint::Embeddings => {
            let data: Vec<Value> = parsed
                .inputs
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    json!({
                        "object": "embedding",
                        "embedding": embedding(text, parsed.dimension),
                        "index": i,
                    })
                })
                .collect();
            json!({
                "id": id,
                "object": "list",
                "model": parsed.model,
                "usage": usage(parsed),
                "data": data,
            })
        }
        Endpoint::Moderations | Endpoint::ChatModerations => {
            let results: Vec<Value> = parsed.inputs.iter().map(|_| moderation()).collect();
            json!({"id": id, "model": parsed.model, "results": results, "usage": usage(parsed)})
        }
        Endpoint::Classifications | Endpoint::ChatClassifications => {
            let results: Vec<Value> = parsed.inputs.iter().map(|t| classification(t)).collect();
            json!({"id": id, "model": parsed.model, "results": results, "usage": usage(parsed)})
        }
    }
}

/// The labels of the emulator's classifier, one target (`intent`) and their order.
pub(crate) const INTENTS: [&str; 3] = ["question", "request", "other"];

/// Scores of an input over [`INTENTS`] (summing to 1, drawn from the text), and a second
/// target, `language`.
fn classification(text: &str) -> Value {
    let mut rng = XorShift::new(fnv1a(text.as_bytes()) ^ 0xC1A5);
    let raw: Vec<f64> = INTENTS
        .iter()
        .map(|_| 0.05 + rng.next_signed().abs())
        .collect();
    let sum: f64 = raw.iter().sum();
    let scores: Map<String, Value> = INTENTS
        .iter()
        .zip(&raw)
        .map(|(label, r)| (label.to_string(), json!(((r / sum) * 1e4).round() / 1e4)))
        .collect();
    json!({
        "intent": {"scores": scores},
        "language": {"scores": {"en": 0.97, "fr": 0.03}},
    })
}

/// `input` of a chat classification: `{messages: [...]}` or a non-empty list of them.
fn check_chats(object: &Map<String, Value>) -> Result<(), Invalid> {
    let input = object.get("input").cloned().unwrap_or(Value::Null);
    let chats: Vec<&Value> = match &input {
        Value::Array(list) if !list.is_empty() => list.iter().collect(),
        Value::Object(_) => vec![&input],
        _ => Vec::new(),
    };
    let mut errors = Vec::new();
    if chats.is_empty() {
        errors.push(detail(
            "model_type",
            &[json!("input")],
            "Input should be an InstructRequest or a list of them",
            &input,
        ));
    }
    for (i, chat) in chats.iter().enumerate() {
        match chat.get("messages").and_then(Value::as_array) {
            Some(messages) => check_messages(messages, &mut errors),
            None => errors.push(detail(
                "missing",
                &[json!("input"), json!(i), json!("messages")],
                "Field required",
                chat,
            )),
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Invalid {
            status: 422,
            body: json!({ "detail": errors }),
            model: object
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
    }
}

fn moderation() -> Value {
    let categories = [
        "sexual",
        "hate_and_discrimination",
        "violence_and_threats",
        "dangerous_and_criminal_content",
        "selfharm",
        "health",
        "financial",
        "law",
        "pii",
    ];
    let flags: Map<String, Value> = categories
        .iter()
        .map(|c| (c.to_string(), json!(false)))
        .collect();
    let scores: Map<String, Value> = categories
        .iter()
        .map(|c| (c.to_string(), json!(0.001)))
        .collect();
    json!({"categories": flags, "category_scores": scores})
}

/// A deterministic unit vector for `text`.
pub(crate) fn embedding(text: &str, dimension: usize) -> Vec<f32> {
    let mut rng = XorShift::new(fnv1a(text.as_bytes()));
    let raw: Vec<f64> = (0..dimension).map(|_| rng.next_signed()).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// The SSE events of a streamed completion (without the `[DONE]` line).
pub(crate) fn stream_events(parsed: &Parsed, id: &str, created: u64) -> Vec<String> {
    let words = words(parsed);
    let chunk = |delta: Value, finish: Option<&str>, usage: Option<Value>, pad: usize| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": parsed.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "p": &"abcdefghijklmnopqrstuvwxyz0123456789"[..(pad % 30) + 3],
        });
        if let (Some(u), Some(object)) = (usage, v.as_object_mut()) {
            object.insert("usage".into(), u);
        }
        format!("data: {v}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        None,
        None,
        0,
    )];
    match &parsed.answer {
        Answer::Text => {}
        // A tool call arrives whole in one delta; a JSON answer in one piece.
        Answer::ToolCall { .. } => {
            events.push(chunk(
                json!({"content": "", "tool_calls": tool_calls(parsed)}),
                Some(finish_reason(parsed)),
                Some(usage(parsed)),
                1,
            ));
            return events;
        }
        Answer::Json(_) => {
            events.push(chunk(
                json!({"content": content(parsed)}),
                Some(finish_reason(parsed)),
                Some(usage(parsed)),
                1,
            ));
            return events;
        }
    }
    let n = words.len();
    for (i, word) in words.iter().enumerate() {
        if i + 1 < n {
            events.push(chunk(json!({"content": word}), None, None, i + 1));
        } else {
            events.push(chunk(
                json!({"content": word}),
                Some(finish_reason(parsed)),
                Some(usage(parsed)),
                i + 1,
            ));
        }
    }
    if n == 0 {
        events.push(chunk(
            json!({"content": ""}),
            Some(finish_reason(parsed)),
            Some(usage(parsed)),
            1,
        ));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Parsed, Invalid> {
        parse(Endpoint::Chat, body.to_string().as_bytes(), 16, 16)
    }

    #[test]
    fn usage_names_the_tier_that_served_a_chat() {
        let tier = |body: Value, priority: bool| {
            let completion = Completion {
                tokens: 4,
                spread: 0.0,
                priority_tier: priority,
            };
            let endpoint = match body.get("messages") {
                Some(_) => Endpoint::Chat,
                None => Endpoint::Embeddings,
            };
            let p = parse(endpoint, body.to_string().as_bytes(), completion, 4).unwrap();
            let usage = usage(&p);
            usage.get("service_tier").cloned()
        };
        let chat = |t: Option<&str>| {
            let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            if let Some(t) = t {
                v["service_tier"] = json!(t);
            }
            v
        };
        assert_eq!(tier(chat(Some("auto")), true), Some(json!("priority")));
        assert_eq!(tier(chat(Some("auto")), false), Some(json!("standard")));
        assert_eq!(
            tier(chat(Some("standard_only")), true),
            Some(json!("standard"))
        );
        assert_eq!(tier(chat(None), true), Some(json!("standard")));
        assert_eq!(tier(json!({"model": "e", "input": "x"}), true), None);
    }

    #[test]
    fn usage_follows_the_rule() {
        let p = chat(json!({"model": "m", "messages": [
            {"role": "system", "content": "12345"},
            {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": "x"}]}
        ], "max_tokens": 5}))
        .map_err(|e| e.body)
        .unwrap();
        assert_eq!(p.prompt_tokens, 2 + 1 + 1);
        assert_eq!(p.completion_tokens, 5);
        assert!(p.truncated);
        assert_eq!(words(&p).len(), 5);
        let p = chat(json!({"model": "m", "messages": [{"role": "user", "content": ""}]}))
            .map_err(|e| e.body)
            .unwrap();
        assert_eq!((p.prompt_tokens, p.completion_tokens), (1, 16));
    }

    #[test]
    fn unknown_missing_null_and_garbage() {
        let e = chat(json!({"model": "m", "messages": [], "foo": 1})).unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.body["detail"][0]["type"], "extra_forbidden");
        assert_eq!(e.body["detail"][0]["loc"], json!(["body", "foo"]));
        let e = chat(json!({"messages": []})).unwrap_err();
        assert_eq!(e.body["detail"][0]["type"], "missing");
        let e = chat(json!({"model": "m", "messages": [], "stream": null})).unwrap_err();
        assert_eq!(e.body["detail"][0]["type"], "bool_type");
        assert!(chat(json!({"model": "m", "messages": [], "max_tokens": null})).is_ok());
        let e = parse(Endpoint::Chat, b"{nope", 16, 16).unwrap_err();
        assert_eq!(e.body["detail"][0]["type"], "json_invalid");
        let e = parse(Endpoint::Chat, b"[1]", 16, 16).unwrap_err();
        assert_eq!(e.status, 422);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 16);
        assert_eq!(a, embedding("hello", 16));
        assert_ne!(a, embedding("hellp", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn classifications_score_every_input_and_check_chats() {
        let p = parse(
            Endpoint::Classifications,
            json!({"model": "m", "input": ["abcd", "efghi"], "metadata": null})
                .to_string()
                .as_bytes(),
            16,
            16,
        )
        .map_err(|e| e.body)
        .unwrap();
        assert_eq!((p.prompt_tokens, p.completion_tokens), (1 + 2, 0));
        let body = response(&p, "id", 0);
        assert_eq!(body["results"].as_array().unwrap().len(), 2);
        let chats =
            json!({"model": "m", "input": {"messages": [{"role": "user", "content": "abcd"}]}});
        let p = parse(
            Endpoint::ChatClassifications,
            chats.to_string().as_bytes(),
            16,
            16,
        )
        .map_err(|e| e.body)
        .unwrap();
        assert_eq!((p.prompt_tokens, p.inputs.len()), (1, 1));
        for bad in [
            json!([]),
            json!({"msgs": []}),
            json!([{"messages": [{"role": "x"}]}]),
        ] {
            let body = json!({"model": "m", "input": bad}).to_string();
            let e = parse(Endpoint::ChatClassifications, body.as_bytes(), 16, 16).unwrap_err();
            assert_eq!(e.status, 422, "{bad}");
        }
    }
}
