//! `POST /v1/moderations`: text moderation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::input::TextInput;
use super::usage::Usage;
use super::{RequestSize, de};

/// The body of `POST /v1/moderations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationRequest {
    /// Model id, e.g. `mistral-moderation-latest`.
    pub model: String,
    /// Text(s) to classify.
    pub input: TextInput,
}

impl ModerationRequest {
    /// A request classifying `input` (a string, or a list of strings) with `model`.
    pub fn new(model: impl Into<String>, input: impl Into<TextInput>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
        }
    }

    /// Total characters of the input text(s).
    pub fn prompt_chars(&self) -> usize {
        self.input.chars()
    }
}

impl RequestSize for ModerationRequest {
    fn prompt_chars(&self) -> usize {
        ModerationRequest::prompt_chars(self)
    }

    /// Moderation generates no tokens: always `None`.
    fn max_tokens(&self) -> Option<u32> {
        None
    }
}

/// `{id, model, results[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModerationResponse {
    /// Response id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// The model used.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// One result per input, in input order.
    #[serde(default, deserialize_with = "de::null_default")]
    pub results: Vec<ModerationResult>,
    /// Token usage, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The verdict for one input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModerationResult {
    /// Category name → flagged.
    #[serde(default, deserialize_with = "de::null_default")]
    pub categories: BTreeMap<String, bool>,
    /// Category name → score in `[0, 1]`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub category_scores: BTreeMap<String, f64>,
}

impl ModerationResult {
    /// Whether any category is flagged.
    pub fn flagged(&self) -> bool {
        self.categories.values().any(|&b| b)
    }

    /// The flagged categories.
    pub fn flagged_categories(&self) -> impl Iterator<Item = &str> {
        self.categories
            .iter()
            .filter(|(_, b)| **b)
            .map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_serializes() {
        let req = ModerationRequest::new("mistral-moderation-latest", ["a", "bcd"]);
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"mistral-moderation-latest","input":["a","bcd"]}"#
        );
        assert_eq!(req.prompt_chars(), 4);
        assert_eq!(RequestSize::max_tokens(&req), None);
        let one = ModerationRequest::new("m", "x");
        assert_eq!(
            serde_json::to_value(&one).unwrap(),
            json!({"model": "m", "input": "x"})
        );
    }

    #[test]
    fn response_decodes() {
        let resp: ModerationResponse = serde_json::from_value(json!({
            "id": "mod-1",
            "model": "mistral-moderation-2411",
            "results": [{
                "categories": {"sexual": false, "hate_and_discrimination": false,
                               "violence_and_threats": true, "pii": false},
                "category_scores": {"sexual": 0.0001, "hate_and_discrimination": 0.002,
                                    "violence_and_threats": 0.91, "pii": 0.0}
            }],
            "usage": {"prompt_tokens": 9, "total_tokens": 9, "completion_tokens": 0},
            "extra": 1
        }))
        .unwrap();
        let r = &resp.results[0];
        assert!(r.flagged());
        assert_eq!(
            r.flagged_categories().collect::<Vec<_>>(),
            vec!["violence_and_threats"]
        );
        assert_eq!(r.category_scores["violence_and_threats"], 0.91);
        let back: ModerationResponse =
            serde_json::from_value(serde_json::to_value(&resp).unwrap()).unwrap();
        assert_eq!(back, resp);
    }
}
