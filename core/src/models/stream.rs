//! Streaming chat/FIM chunks (`data: <json>` events with `object:"chat.completion.chunk"`).

use serde::{Deserialize, Serialize};

use super::chat::{
    ChatChoice, ChatResponse, Content, FinishReason, ResponseMessage, Role, ToolCall,
};
use super::de;
use super::usage::Usage;

/// One streamed event: `{id, object, created?, model, choices[{index, delta, finish_reason?}],
/// usage?}`.
///
/// The undocumented padding field `p` (and any other unknown field) is ignored. The last
/// chunk carries `finish_reason` and the top-level `usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Completion id (the same on every chunk of a stream).
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// Unix time of creation.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<u64>,
    /// The model that answers.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// Per-choice deltas.
    #[serde(default, deserialize_with = "de::null_default")]
    pub choices: Vec<ChunkChoice>,
    /// Token usage (last chunk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatChunk {
    /// The first choice's text delta, if it is text (see [`Content::as_text`]).
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.delta.content.as_ref())
            .and_then(Content::as_text)
    }

    /// The first finish reason found among the choices (set on the last chunk).
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.choices.iter().find_map(|c| c.finish_reason.as_ref())
    }
}

/// One choice's increment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    #[serde(default, deserialize_with = "de::null_default")]
    pub index: u32,
    /// The increment.
    #[serde(default, deserialize_with = "de::null_default")]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

/// `delta{role?, content?, tool_calls?}`. Tool calls arrive whole in one delta.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A piece of text, or chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Complete tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// Folds the chunks of a stream into the [`ChatResponse`] a non-streamed call would have
/// returned: text concatenated per choice, tool calls collected, the last finish reason
/// and usage kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatStreamAccumulator {
    response: ChatResponse,
}

impl ChatStreamAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: ChatChunk) {
        let r = &mut self.response;
        if r.id.is_empty() {
            r.id = chunk.id;
        }
        if r.model.is_empty() {
            r.model = chunk.model;
        }
        if r.created.is_none() {
            r.created = chunk.created;
        }
        if chunk.usage.is_some() {
            r.usage = chunk.usage;
        }
        for c in chunk.choices {
            let pos = match r.choices.iter().position(|x| x.index == c.index) {
                Some(pos) => pos,
                None => {
                    r.choices.push(ChatChoice {
                        index: c.index,
                        message: ResponseMessage::default(),
                        finish_reason: None,
                    });
                    r.choices.len() - 1
                }
            };
            let choice = &mut r.choices[pos];
            let msg = &mut choice.message;
            if msg.role.is_none() {
                msg.role = c.delta.role;
            }
            if let Some(content) = c.delta.content {
                match &mut msg.content {
                    Some(existing) => existing.append(content),
                    None => msg.content = Some(content),
                }
            }
            if let Some(calls) = c.delta.tool_calls {
                msg.tool_calls.get_or_insert_with(Vec::new).extend(calls);
            }
            if c.finish_reason.is_some() {
                choice.finish_reason = c.finish_reason;
            }
        }
    }

    /// The response assembled so far (choices ordered by index).
    pub fn finish(self) -> ChatResponse {
        let mut r = self.response;
        r.object = "chat.completion".to_owned();
        r.choices.sort_by_key(|c| c.index);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunk_with_padding_field_decodes() {
        let data = r#"{"id":"8c6f4b0e1a7e4c1c9d6a0d0f5b4a8e11","object":"chat.completion.chunk","created":1718000000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}],"p":"abcdefghijklmnopqrstuvwxyz0123456789"}"#;
        let chunk: ChatChunk = serde_json::from_str(data).unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.created, Some(1_718_000_000));
        assert_eq!(chunk.text(), Some("Hel"));
        assert_eq!(chunk.choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(chunk.finish_reason(), None);
        assert_eq!(chunk.usage, None);
        // `p` is not kept: re-encoding drops it.
        assert!(!serde_json::to_string(&chunk).unwrap().contains("\"p\""));
    }

    #[test]
    fn last_chunk_and_tool_call_delta() {
        let chunk: ChatChunk = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [
                {"id": "null", "function": {"name": "f", "arguments": "{\"a\":1}"}, "index": 0}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
            "p": "pad"
        }))
        .unwrap();
        assert_eq!(chunk.finish_reason(), Some(&FinishReason::ToolCalls));
        let calls = chunk.choices[0].delta.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, r#"{"a":1}"#);
        assert_eq!(calls[0].index, Some(0));
        assert_eq!(chunk.usage.unwrap().total_tokens, 11);
    }

    #[test]
    fn accumulator_rebuilds_the_response() {
        let chunks = [
            json!({"id":"c1","object":"chat.completion.chunk","created":10,"model":"m",
                   "choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"p":"x"}),
            json!({"id":"c1","object":"chat.completion.chunk","created":10,"model":"m",
                   "choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}),
            json!({"id":"c1","object":"chat.completion.chunk","created":10,"model":"m",
                   "choices":[{"index":0,"delta":{"content":", world"},"finish_reason":"stop"}],
                   "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}),
        ];
        let mut acc = ChatStreamAccumulator::new();
        for c in chunks {
            acc.push(serde_json::from_value(c).unwrap());
        }
        let resp = acc.finish();
        assert_eq!(resp.id, "c1");
        assert_eq!(resp.object, "chat.completion");
        assert_eq!(resp.created, Some(10));
        assert_eq!(resp.text(), Some("Hello, world"));
        assert_eq!(resp.choices[0].message.role, Some(Role::Assistant));
        assert_eq!(resp.finish_reason(), Some(&FinishReason::Stop));
        assert_eq!(resp.usage.map(|u| u.total_tokens), Some(7));
    }

    #[test]
    fn round_trips() {
        let chunk = ChatChunk {
            id: "i".into(),
            object: "chat.completion.chunk".into(),
            created: None,
            model: "m".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: Some(Content::from("x")),
                    tool_calls: None,
                },
                finish_reason: None,
            }],
            usage: None,
        };
        let s = serde_json::to_string(&chunk).unwrap();
        assert_eq!(
            s,
            r#"{"id":"i","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"x"}}]}"#
        );
        assert_eq!(serde_json::from_str::<ChatChunk>(&s).unwrap(), chunk);
    }
}
