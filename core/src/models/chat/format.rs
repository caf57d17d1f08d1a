//! Output controls: `response_format` (JSON, JSON Schema), `stop` and `prediction`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
