//! Conversations: `POST /v1/conversations` (start) and `POST /v1/conversations/{id}`
//! (append), not streamed.
//!
//! # Rule
//!
//! - A start names a `model` or an `agent_id` (an agent runs on
//!   [`crate::Config::agent_model`]); neither, or both, is a 422. `stream: true` is a 400
//!   (the emulator does not stream conversations).
//! - Prompt tokens: ⌈chars/4⌉ of the new inputs' text (a string, message contents, text
//!   chunks, function results) and of the `instructions`, at least 1, **plus every token
//!   of the conversation so far** (the server reads the whole history: an append costs
//!   more than its new text). Completion: as for chat (the natural length, capped by
//!   `completion_args.max_tokens`).
//! - A stored conversation (`store` not false) can be appended to; an unknown id is a 404.
//!   A conversation is stored (and its history grown) only when the call is admitted.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::api::{self, Field, Invalid, Rule};
use super::config::Config;
use super::limits::lock;
use super::rng::{fnv1a, hex32};

const START: &[Field] = &[
    ("inputs", Rule::Any, false, true),
    ("stream", Rule::Bool, true, false),
    ("store", Rule::Bool, true, false),
    ("handoff_execution", Rule::Str, true, false),
    ("instructions", Rule::Str, true, false),
    ("tools", Rule::List, true, false),
    ("completion_args", Rule::Object, true, false),
    ("guardrails", Rule::List, true, false),
    ("name", Rule::Str, true, false),
    ("description", Rule::Str, true, false),
    ("metadata", Rule::Object, true, false),
    ("agent_id", Rule::Str, true, false),
    ("agent_version", Rule::Any, true, false),
    ("model", Rule::Str, true, false),
];

const APPEND: &[Field] = &[
    ("inputs", Rule::Any, false, true),
    ("stream", Rule::Bool, false, false),
    ("store", Rule::Bool, false, false),
    ("handoff_execution", Rule::Str, false, false),
    ("completion_args", Rule::Object, false, false),
    ("tool_confirmations", Rule::List, true, false),
];

/// A stored conversation.
#[derive(Clone, Debug)]
struct Stored {
    model: String,
    agent_id: Option<String>,
    /// Tokens of every turn so far (prompt and completion).
    history: u64,
}

/// The conversations the emulator keeps.
#[derive(Debug, Default)]
pub(crate) struct Conversations {
    map: Mutex<HashMap<String, Stored>>,
}

/// A validated start or append.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// The model charged (the conversation's).
    pub model: String,
    pub agent_id: Option<String>,
    pub conversation_id: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub store: bool,
    pub seed: u64,
}

impl Job {
    pub(crate) fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

fn invalid(status: u16, loc: &str, msg: &str, model: Option<String>) -> Invalid {
    Invalid {
        status,
        body: json!({"detail": [{"type": "value_error", "loc": ["body", loc], "msg": msg, "input": null}]}),
        model,
    }
}

/// The text of `inputs` (a string or a list of entries), and its tokens.
fn input_tokens(inputs: &Value) -> Result<(String, u64), &'static str> {
    let mut text = String::new();
    let mut tokens = 0;
    let mut add = |s: &str, text: &mut String| {
        text.push_str(s);
        tokens += (s.chars().count() as u64).div_ceil(4);
    };
    match inputs {
        Value::String(s) => add(s, &mut text),
        Value::Array(entries) if !entries.is_empty() => {
            for entry in entries {
                let Some(entry) = entry.as_object() else {
                    return Err("Each entry should be an object");
                };
                match entry.get("content") {
                    Some(Value::String(s)) => add(s, &mut text),
                    Some(Value::Array(chunks)) => {
                        for chunk in chunks {
                            if let Some(s) = chunk.get("text").and_then(Value::as_str) {
                                add(s, &mut text);
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(result) = entry.get("result").and_then(Value::as_str) {
                    add(result, &mut text);
                }
            }
        }
        _ => return Err("Input should be a string or a non-empty list of entries"),
    }
    Ok((text, tokens))
}

fn max_tokens(object: &Map<String, Value>) -> Option<u64> {
    object.get("completion_args")?.get("max_tokens")?.as_u64()
}

fn completion(config: &Config, text: &str, object: &Map<String, Value>) -> u64 {
    let natural = api::natural_completion(text, config.completion_tokens, config.completion_spread);
    max_tokens(object).map_or(natural, |m| m.min(natural))
}

impl Conversations {
    /// Validates a start; `seq` numbers the new conversation's id.
    pub(crate) fn start(&self, body: &[u8], config: &Config, seq: u64) -> Result<Job, Invalid> {
        let object = api::validate(body, START)?;
        let text_of = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_string);
        let (model, agent_id) = (text_of("model"), text_of("agent_id"));
        let named = model.clone().or(agent_id.clone());
        if model.is_some() == agent_id.is_some() {
            let msg = "Exactly one of model and agent_id should be given";
            return Err(invalid(422, "model", msg, named));
        }
        if object.get("stream").and_then(Value::as_bool) == Some(true) {
            let msg = "The emulator does not stream conversations";
            return Err(invalid(400, "stream", msg, named));
        }
        let inputs = object.get("inputs").cloned().unwrap_or(Value::Null);
        let (mut text, tokens) =
            input_tokens(&inputs).map_err(|m| invalid(422, "inputs", m, named.clone()))?;
        let instructions = text_of("instructions").unwrap_or_default();
        text.push_str(&instructions);
        let prompt = tokens + (instructions.chars().count() as u64).div_ceil(4);
        Ok(Job {
            model: model.unwrap_or_else(|| config.agent_model.clone()),
            agent_id,
            conversation_id: format!("conv_{}", hex32(config.seed ^ 0xC0DE, seq)),
            prompt_tokens: prompt.max(1),
            completion_tokens: completion(config, &text, &object),
            store: object.get("store").and_then(Value::as_bool) != Some(false),
            seed: fnv1a(text.as_bytes()),
        })
    }

    /// Validates an append to `id`; 404 for a conversation the emulator does not keep.
    pub(crate) fn append(&self, id: &str, body: &[u8], config: &Config) -> Result<Job, Invalid> {
        let object = api::validate(body, APPEND)?;
        let Some(stored) = lock(&self.map).get(id).cloned() else {
            return Err(Invalid {
                status: 404,
                body: json!({"object": "error", "message": format!("Conversation {id} not found"),
                             "type": "invalid_request_error", "param": null, "code": null}),
                model: None,
            });
        };
        let named = Some(stored.model.clone());
        if object.get("stream").and_then(Value::as_bool) == Some(true) {
            let msg = "The emulator does not stream conversations";
            return Err(invalid(400, "stream", msg, named));
        }
        let inputs = object.get("inputs").cloned().unwrap_or(Value::Null);
        let (text, tokens) = input_tokens(&inputs).map_err(|m| invalid(422, "inputs", m, named))?;
        Ok(Job {
            model: stored.model,
            agent_id: stored.agent_id,
            conversation_id: id.to_string(),
            prompt_tokens: stored.history + tokens.max(1),
            completion_tokens: completion(config, &text, &object),
            store: object.get("store").and_then(Value::as_bool) != Some(false),
            seed: fnv1a(text.as_bytes()) ^ stored.history,
        })
    }

    /// Keeps what an admitted `job` added to its conversation.
    pub(crate) fn served(&self, job: &Job) {
        if !job.store {
            return;
        }
        lock(&self.map).insert(
            job.conversation_id.clone(),
            Stored {
                model: job.model.clone(),
                agent_id: job.agent_id.clone(),
                history: job.total_tokens(),
            },
        );
    }
}

/// The answer: one `message.output` entry, the usage.
pub(crate) fn response(job: &Job, id: &str, created: u64) -> Value {
    let words = usize::try_from(job.completion_tokens).unwrap_or(usize::MAX);
    let content = match words {
        0 => String::new(),
        n => api::sentence(job.seed, n),
    };
    let at = rfc3339(created);
    json!({
        "object": "conversation.response",
        "conversation_id": job.conversation_id,
        "outputs": [{
            "object": "entry",
            "type": "message.output",
            "created_at": at,
            "completed_at": at,
            "agent_id": job.agent_id,
            "model": job.model,
            "id": format!("msg_{id}"),
            "role": "assistant",
            "content": content,
        }],
        "usage": {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "total_tokens": job.total_tokens(),
            "connector_tokens": null,
            "connectors": null,
        },
        "guardrails": null,
    })
}

/// Unix seconds as an RFC 3339 UTC date-time.
fn rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_costs_the_history_too() {
        let config = Config::default();
        let store = Conversations::default();
        let body = json!({"model": "m", "inputs": "abcdefgh", "instructions": "be"}).to_string();
        let start = store.start(body.as_bytes(), &config, 1).unwrap();
        assert_eq!((start.prompt_tokens, start.completion_tokens), (2 + 1, 16));
        store.served(&start);
        let body = json!({"inputs": [{"role": "user", "content": "abcd"}],
                          "completion_args": {"max_tokens": 4}})
        .to_string();
        let next = store
            .append(&start.conversation_id, body.as_bytes(), &config)
            .unwrap();
        assert_eq!((next.prompt_tokens, next.completion_tokens), (19 + 1, 4));
        assert_eq!(next.model, "m");
        let reply = response(&next, "x", 0);
        assert_eq!(reply["usage"]["total_tokens"], 24);
        assert_eq!(reply["outputs"][0]["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        let missing = store
            .append("conv_nope", body.as_bytes(), &config)
            .unwrap_err();
        assert_eq!(missing.status, 404);
    }

    #[test]
    fn a_start_names_a_model_or_an_agent() {
        let config = Config::default();
        let store = Conversations::default();
        let agent = json!({"agent_id": "ag_1", "inputs": "hi"}).to_string();
        assert_eq!(
            store.start(agent.as_bytes(), &config, 1).unwrap().model,
            config.agent_model
        );
        for bad in [
            json!({"inputs": "hi"}),
            json!({"inputs": "hi", "model": "m", "agent_id": "a"}),
            json!({"inputs": [], "model": "m"}),
            json!({"inputs": "hi", "model": "m", "unknown": 1}),
        ] {
            assert_eq!(
                store
                    .start(bad.to_string().as_bytes(), &config, 1)
                    .unwrap_err()
                    .status,
                422,
                "{bad}"
            );
        }
        let stream = json!({"inputs": "hi", "model": "m", "stream": true}).to_string();
        assert_eq!(
            store
                .start(stream.as_bytes(), &config, 1)
                .unwrap_err()
                .status,
            400
        );
    }
}
