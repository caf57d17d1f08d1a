//! `POST /v1/classifications` (text) and `POST /v1/chat/classifications` (chats): a
//! classifier model's scores per target, per input. Their budget is the model's, in
//! tokens, like moderations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::Message;
use super::input::TextInput;
use super::usage::Usage;
use super::{RequestSize, de};

/// The body of `POST /v1/classifications`.
///
/// ```
/// use mistral_core::models::ClassificationRequest;
///
/// let request = ClassificationRequest::new("ft:classifier:my-intents", ["refund please", "hello"]);
/// assert_eq!(
///     serde_json::to_value(&request)?,
///     serde_json::json!({"model": "ft:classifier:my-intents", "input": ["refund please", "hello"]})
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationRequest {
    /// A classifier model id (a fine-tuned classifier, or `mistral-moderation-latest`).
    pub model: String,
    /// The text(s) to classify.
    pub input: TextInput,
    /// Metadata kept with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, Value>>,
}

impl ClassificationRequest {
    /// A request classifying `input` (a string, or a list of strings) with `model`.
    pub fn new(model: impl Into<String>, input: impl Into<TextInput>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            metadata: None,
        }
    }
}

impl RequestSize for ClassificationRequest {
    fn prompt_chars(&self) -> usize {
        self.input.chars()
    }

    /// A classifier generates no tokens: always `None`.
    fn max_tokens(&self) -> Option<u32> {
        None
    }
}

/// The body of `POST /v1/chat/classifications`: one chat or several.
///
/// ```
/// use mistral_core::models::{ChatClassificationRequest, Message};
///
/// let chat = vec![Message::user("I want my money back"), Message::assistant("Sorry to hear that")];
/// let request = ChatClassificationRequest::new("ft:classifier:my-intents", chat);
/// assert_eq!(
///     serde_json::to_value(&request)?["input"]["messages"][0],
///     serde_json::json!({"role": "user", "content": "I want my money back"})
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatClassificationRequest {
    /// A classifier model id.
    pub model: String,
    /// The chat(s) to classify.
    pub input: ChatClassificationInput,
}

impl ChatClassificationRequest {
    /// A request classifying one chat (its messages) with `model`.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            input: ChatClassificationInput::One(InstructRequest { messages }),
        }
    }

    /// A request classifying several chats with `model`, one result each.
    pub fn many(model: impl Into<String>, chats: Vec<Vec<Message>>) -> Self {
        Self {
            model: model.into(),
            input: ChatClassificationInput::Many(
                chats
                    .into_iter()
                    .map(|messages| InstructRequest { messages })
                    .collect(),
            ),
        }
    }
}

impl RequestSize for ChatClassificationRequest {
    fn prompt_chars(&self) -> usize {
        let chats: &[InstructRequest] = match &self.input {
            ChatClassificationInput::One(chat) => std::slice::from_ref(chat),
            ChatClassificationInput::Many(chats) => chats,
        };
        chats
            .iter()
            .flat_map(|c| &c.messages)
            .map(Message::text_chars)
            .sum()
    }

    /// A classifier generates no tokens: always `None`.
    fn max_tokens(&self) -> Option<u32> {
        None
    }
}

/// `input` of a chat classification: one chat or a list of chats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatClassificationInput {
    /// One chat.
    One(InstructRequest),
    /// Several chats.
    Many(Vec<InstructRequest>),
}

/// One chat to classify: `{messages}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructRequest {
    /// The chat's messages.
    pub messages: Vec<Message>,
}

/// The answer of both classification endpoints: `{id, model, results}`, one result per
/// input, each mapping a target (a classifier may have several) to its scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassificationResponse {
    /// Response id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// The model used.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// One result per input, in input order: target name → its scores.
    #[serde(default, deserialize_with = "de::null_default")]
    pub results: Vec<BTreeMap<String, TargetScores>>,
    /// Token usage, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One target's scores for one input: label → score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetScores {
    /// Label → score in `[0, 1]`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub scores: BTreeMap<String, f64>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl TargetScores {
    /// The label with the highest score, and its score.
    pub fn top(&self) -> Option<(&str, f64)> {
        self.scores
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(label, score)| (label.as_str(), *score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_count_the_text_sent() {
        let text = ClassificationRequest::new("m", ["ab", "cde"]);
        assert_eq!(
            (text.prompt_chars(), RequestSize::max_tokens(&text)),
            (5, None)
        );
        let chats = ChatClassificationRequest::many(
            "m",
            vec![
                vec![Message::user("abcd")],
                vec![Message::user("ef"), Message::assistant("g")],
            ],
        );
        assert_eq!(chats.prompt_chars(), 7);
        assert_eq!(
            serde_json::to_value(&chats).unwrap()["input"][1]["messages"][1],
            json!({"role": "assistant", "content": "g"})
        );
    }

    #[test]
    fn response_decodes_keeps_unknown_fields_and_finds_the_top_label() {
        let r: ClassificationResponse = serde_json::from_value(json!({
            "id": "cls-1",
            "model": "ft:classifier:intents",
            "results": [{
                "intent": {"scores": {"refund": 0.91, "greeting": 0.04, "other": 0.05}},
                "language": {"scores": {"en": 0.99, "fr": 0.01}, "calibrated": true}
            }],
            "usage": {"prompt_tokens": 4, "total_tokens": 4, "completion_tokens": 0},
            "object": "classification"
        }))
        .unwrap();
        let first = &r.results[0];
        assert_eq!(first["intent"].top(), Some(("refund", 0.91)));
        assert_eq!(first["language"].extra["calibrated"], true);
        assert_eq!(r.extra["object"], "classification");
        assert_eq!(r.usage.as_ref().unwrap().total_tokens, 4);
        let back: ClassificationResponse =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(TargetScores::default().top(), None);
    }
}
