//! Token usage reported by the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::de;

/// Token usage of one call: `usage{prompt_tokens, completion_tokens, total_tokens}`.
///
/// Decoding is lenient: a missing or `null` count decodes as 0, and fields this client
/// does not know (the service tier that served the call, audio seconds, cache details…)
/// are kept in [`extra`](Self::extra) rather than rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the input.
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub prompt_tokens: u64,
    /// Tokens generated (0 for embeddings and moderations).
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens` as the server counted them; this is what the
    /// token bucket is charged (`x-ratelimit-tokens-query-cost`).
    #[serde(default, deserialize_with = "de::lenient_u64")]
    pub total_tokens: u64,
    /// Any other usage field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Usage {
    /// Usage with the three standard counts and no extra fields.
    pub fn new(prompt_tokens: u64, completion_tokens: u64, total_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            extra: BTreeMap::new(),
        }
    }

    /// `usage.service_tier`: which capacity pool served the call, as the server named it
    /// (any text kept as sent: the values are not documented), when it said. Kept in
    /// [`extra`](Self::extra), read from there.
    pub fn service_tier(&self) -> Option<&str> {
        self.extra.get("service_tier").and_then(Value::as_str)
    }

    /// The total, or `prompt + completion` when the server left the total at 0.
    pub fn total(&self) -> u64 {
        if self.total_tokens > 0 {
            self.total_tokens
        } else {
            self.prompt_tokens.saturating_add(self.completion_tokens)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_standard_usage() {
        let u: Usage =
            serde_json::from_str(r#"{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}"#)
                .unwrap();
        assert_eq!(u, Usage::new(10, 5, 15));
        assert_eq!(u.total(), 15);
    }

    #[test]
    fn extra_fields_are_tolerated_and_kept() {
        let u: Usage = serde_json::from_value(json!({
            "prompt_tokens": 7,
            "total_tokens": 7,
            "prompt_audio_seconds": null,
            "service_tier": "standard",
            "prompt_tokens_details": {"cached_tokens": 0}
        }))
        .unwrap();
        assert_eq!(u.prompt_tokens, 7);
        assert_eq!(u.completion_tokens, 0, "missing count defaults to 0");
        assert_eq!(u.total_tokens, 7);
        assert_eq!(u.extra.get("service_tier"), Some(&json!("standard")));
        assert_eq!(u.service_tier(), Some("standard"));
        assert_eq!(Usage::new(1, 1, 2).service_tier(), None);
        assert_eq!(u.extra.len(), 3);
    }

    #[test]
    fn null_counts_and_missing_total() {
        let u: Usage =
            serde_json::from_str(r#"{"prompt_tokens":3,"completion_tokens":null}"#).unwrap();
        assert_eq!(u.completion_tokens, 0);
        assert_eq!(u.total_tokens, 0);
        assert_eq!(u.total(), 3);
    }

    #[test]
    fn round_trips() {
        let mut u = Usage::new(1, 2, 3);
        u.extra.insert("service_tier".into(), json!("priority"));
        let s = serde_json::to_string(&u).unwrap();
        assert_eq!(
            s,
            r#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"service_tier":"priority"}"#
        );
        assert_eq!(serde_json::from_str::<Usage>(&s).unwrap(), u);
    }
}
