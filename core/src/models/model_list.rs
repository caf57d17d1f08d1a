//! `GET /v1/models`: the model cards. Card fields come and go, so everything decodes
//! leniently and defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::de;

/// `{object:"list", data:[card…]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// The model cards.
    #[serde(default, deserialize_with = "de::null_default")]
    pub data: Vec<ModelCard>,
}

impl ModelList {
    /// The card whose id or one of whose aliases is `id`.
    pub fn find(&self, id: &str) -> Option<&ModelCard> {
        self.data
            .iter()
            .find(|m| m.id == id)
            .or_else(|| self.data.iter().find(|m| m.aliases.iter().any(|a| a == id)))
    }

    /// The ids of all models.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.data.iter().map(|m| m.id.as_str())
    }
}

/// One model card.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model id (a string: ids change every month).
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Unix time of creation.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<u64>,
    /// Owner (`mistralai`, or the organisation for fine-tunes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    /// What the model can do.
    #[serde(default, deserialize_with = "de::null_default")]
    pub capabilities: ModelCapabilities,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Context window in tokens.
    #[serde(
        default,
        deserialize_with = "de::lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_context_length: Option<u64>,
    /// Other ids that resolve to this model.
    #[serde(default, deserialize_with = "de::null_default")]
    pub aliases: Vec<String>,
    /// Deprecation date (RFC 3339 text), if the model is deprecated.
    #[serde(
        default,
        deserialize_with = "de::opt_string_or_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub deprecation: Option<String>,
    /// The model replacing a deprecated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_replacement_model: Option<String>,
    /// Default sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model_temperature: Option<f64>,
    /// `base` or `fine-tuned`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `capabilities{…}`: known flags (missing, `null` or non-boolean → `false`) plus any
/// other flag verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCapabilities {
    /// Chat completions.
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub completion_chat: bool,
    /// Fill-in-the-middle.
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub completion_fim: bool,
    /// Tool calls.
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub function_calling: bool,
    /// Fine-tuning.
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub fine_tuning: bool,
    /// Image input.
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub vision: bool,
    /// Classification / moderation.
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub classification: bool,
    /// Any other capability flag.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl ModelCapabilities {
    /// Whether the flag `name` is `true`, known or not.
    pub fn has(&self, name: &str) -> bool {
        match name {
            "completion_chat" => self.completion_chat,
            "completion_fim" => self.completion_fim,
            "function_calling" => self.function_calling,
            "fine_tuning" => self.fine_tuning,
            "vision" => self.vision,
            "classification" => self.classification,
            other => self.other.get(other) == Some(&Value::Bool(true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_cards_leniently() {
        let list: ModelList = serde_json::from_value(json!({
            "object": "list",
            "data": [
                {
                    "id": "mistral-small-2506",
                    "object": "model",
                    "created": 1750000000,
                    "owned_by": "mistralai",
                    "capabilities": {
                        "completion_chat": true, "completion_fim": false,
                        "function_calling": true, "fine_tuning": false,
                        "vision": true, "classification": false,
                        "ocr": true, "audio": null
                    },
                    "name": "mistral-small-2506",
                    "description": "Small",
                    "max_context_length": 131072,
                    "aliases": ["mistral-small-latest"],
                    "deprecation": null,
                    "deprecation_replacement_model": null,
                    "default_model_temperature": 0.3,
                    "type": "base",
                    "brand_new_field": [1, 2]
                },
                {"id": "ft:open-mistral-7b:abc", "capabilities": {"fine_tuning": null},
                 "aliases": null, "type": "fine-tuned", "deprecation": "2026-01-01T00:00:00Z"},
                {"id": "bare"}
            ]
        }))
        .unwrap();
        assert_eq!(list.data.len(), 3);
        let small = list.find("mistral-small-latest").unwrap();
        assert_eq!(small.id, "mistral-small-2506");
        assert!(small.capabilities.completion_chat && small.capabilities.vision);
        assert!(!small.capabilities.completion_fim);
        assert!(small.capabilities.has("ocr"));
        assert!(!small.capabilities.has("audio"));
        assert_eq!(small.max_context_length, Some(131_072));
        assert_eq!(small.kind.as_deref(), Some("base"));
        assert_eq!(small.deprecation, None);

        let ft = list.find("ft:open-mistral-7b:abc").unwrap();
        assert!(ft.aliases.is_empty());
        assert!(!ft.capabilities.fine_tuning);
        assert_eq!(ft.deprecation.as_deref(), Some("2026-01-01T00:00:00Z"));

        let bare = list.find("bare").unwrap();
        assert_eq!(bare.created, None);
        assert_eq!(bare.capabilities, ModelCapabilities::default());
        assert_eq!(list.ids().collect::<Vec<_>>().len(), 3);
        assert!(list.find("nope").is_none());
    }

    #[test]
    fn round_trips() {
        let card = ModelCard {
            id: "m".into(),
            aliases: vec!["m-latest".into()],
            max_context_length: Some(32_000),
            kind: Some("base".into()),
            ..ModelCard::default()
        };
        let list = ModelList {
            object: "list".into(),
            data: vec![card],
        };
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["data"][0]["type"], json!("base"));
        assert!(v["data"][0].get("created").is_none(), "absent → omitted");
        assert_eq!(serde_json::from_value::<ModelList>(v).unwrap(), list);
    }
}
