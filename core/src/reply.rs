//! A call's answer: [`Reply`], the 2xx response as it came or decoded, with what the call
//! went through to get it; and the checks a 2xx body must pass to count as one.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::action::{Sizing, Ticket, TokenUsage};
use crate::error::{Error, ResponseInfo, Trail};
use crate::ratelimits::RateLimits;
use crate::redact::Redactor;
use crate::verdict::excerpt;

mod shape;

/// A call's answer: a 2xx response and what the call went through to get it (the same
/// [`Trail`] an error carries). `Reply<Bytes>` (the default) is the body as it came, the
/// one a call ends with; [`Reply::decode`] turns it into a `Reply<T>` of the typed
/// answer, which dereferences to the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T = Bytes> {
    /// The body: as it came (empty for a stream, whose events the driver reads), or
    /// decoded.
    pub value: T,
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers (a value that holds the key is marked sensitive).
    pub headers: HeaderMap,
    /// Rate limits the response announced (limit and remaining per bucket).
    pub limits: RateLimits,
    /// The `mistral-correlation-id`.
    pub correlation_id: Option<String>,
    /// Attempts made, time waited before the successful one, time from the start of the
    /// call to its answer.
    pub trail: Trail,
    /// The call's redaction, for errors decoding or streaming this response.
    pub(crate) redactor: Redactor,
    /// The admission the successful attempt went on, and the request's size (for the
    /// usage a stream reports at its end).
    pub(crate) admission: (Option<Ticket>, Sizing),
}

impl<T> Reply<T> {
    /// The redaction of the call that got this response: a driver hands it to the
    /// [`crate::StreamReader`] of a stream ([`crate::StreamReader::redacting`]).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The shared limiter's admission the successful attempt went on, if any.
    pub fn ticket(&self) -> Option<Ticket> {
        self.admission.0
    }

    /// The value, without the rest.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The same reply around another value.
    fn with<U>(self, value: U) -> Reply<U> {
        Reply {
            value,
            status: self.status,
            headers: self.headers,
            limits: self.limits,
            correlation_id: self.correlation_id,
            trail: self.trail,
            redactor: self.redactor,
            admission: self.admission,
        }
    }
}

impl<T> std::ops::Deref for Reply<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl Reply<Bytes> {
    /// Decodes the body as `T`, keeping the rest. A body that does not decode is
    /// [`Error::Decode`], with an excerpt of the body.
    pub fn decode<T: DeserializeOwned>(self) -> Result<Reply<T>, Error> {
        let value = self.decode_value()?;
        Ok(self.with(value))
    }

    /// Decodes the body as `T` (see [`Reply::decode`]), without the rest.
    pub fn decode_value<T: DeserializeOwned>(&self) -> Result<T, Error> {
        // serde's messages quote the values they refused: redacted like the excerpt.
        serde_json::from_slice(&self.value).map_err(|e| Error::Decode {
            message: self.redactor.redact(&e.to_string()),
            response: Box::new(ResponseInfo {
                status: Some(self.status),
                correlation_id: self.correlation_id.clone(),
                code: None,
                message: None,
                excerpt: self.redactor.redact(&excerpt(&self.value)),
                limits: self.limits.clone(),
                origin: crate::origin::Origin::Unknown,
            }),
        })
    }
}

/// What [`inspect_success`] found in a 2xx body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inspected {
    /// Whether it is an answer to its request (the message says why not).
    pub(crate) check: Result<(), String>,
    /// The `usage` it reports.
    pub(crate) usage: Option<TokenUsage>,
    /// That usage's `service_tier` (none without a usage).
    pub(crate) tier: Option<String>,
}

/// What a 2xx body of a request to `path` must be to count as an answer, the `usage` it
/// reports and that usage's tier, in one pass over the body: [`check_success_body`],
/// [`usage_of`] and [`service_tier_of`] give the same answers, each parsing the body on
/// its own (a [`serde_json::Value`] for the first), and stay the reference (the tests
/// compare them) and the path for a body this pass refuses, so every message is theirs.
pub(crate) fn inspect_success(path: Option<&str>, body: &[u8], redactor: &Redactor) -> Inspected {
    let required = path.and_then(required_field);
    let scan = match body.is_empty() {
        true => None,
        false => shape::Shape::of(body, required),
    };
    let Some(scan) = scan else {
        // Empty, or not JSON (or JSON this pass does not take): the reference answers.
        let usage = usage_of(body);
        return Inspected {
            check: check_success_body(path, body, redactor),
            usage,
            tier: usage.and_then(|_| service_tier_of(body)),
        };
    };
    let check = if redactor.holds_secret(body) {
        Err(HOLDS_THE_KEY.into())
    } else {
        match (path, required) {
            (None, _) | (Some(_), None) => Ok(()),
            (Some(_), Some(field)) => match scan.field {
                Some(shape::Kind::List) => Ok(()),
                Some(_) => Err(format!("the response's `{field}` is not a list")),
                None if scan.top == shape::Kind::Object => Err(format!(
                    "the response is not the expected answer: it has no `{field}`"
                )),
                None => Err(format!(
                    "the response is not the expected answer: a JSON {} instead of an object \
                     with `{field}`",
                    scan.top.name()
                )),
            },
        }
    };
    Inspected {
        check,
        usage: scan.usage,
        tier: scan.tier,
    }
}

const HOLDS_THE_KEY: &str = "the response holds the API key: not an answer from Mistral (a \
                             proxy or server echoing the request?)";

/// The field a 2xx answer to `path` cannot lack (`choices` for chat and FIM
/// completions, `data` for embeddings and the model list, `results` for moderations and
/// classifications, `pages` for OCR, `outputs` for a conversation's start; an append,
/// whose path ends with the conversation's id, is checked as JSON only).
fn required_field(path: &str) -> Option<&'static str> {
    [
        ("/chat/completions", "choices"),
        ("/fim/completions", "choices"),
        ("/embeddings", "data"),
        ("/models", "data"),
        ("/moderations", "results"),
        ("/chat/moderations", "results"),
        ("/ocr", "pages"),
        ("/classifications", "results"),
        ("/agents/completions", "choices"),
        ("/conversations", "outputs"),
    ]
    .into_iter()
    .find(|(suffix, _)| path.trim_end_matches('/').ends_with(suffix))
    .map(|(_, field)| field)
}

/// What a 2xx body of a request to `path` must be to count as an answer: a JSON
/// document (when it has a body at all), holding no API key, and for the typed
/// endpoints an object with the field their answer cannot lack (`choices` for chat and
/// FIM completions, `data` for embeddings and the model list, `results` for
/// moderations). `Err` says what is wrong.
///
/// `path` is `None` for a stream, whose body only must not hold the key.
pub(crate) fn check_success_body(
    path: Option<&str>,
    body: &[u8],
    redactor: &Redactor,
) -> Result<(), String> {
    if redactor.holds_secret(body) {
        return Err(HOLDS_THE_KEY.into());
    }
    let Some(path) = path else {
        return Ok(());
    };
    let required = required_field(path);
    if body.is_empty() && required.is_none() {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let what = if body.is_empty() { "empty" } else { "not JSON" };
        redactor.redact(&format!("the 2xx response body is {what} ({e})"))
    })?;
    let Some(field) = required else {
        return Ok(());
    };
    match value.get(field) {
        Some(serde_json::Value::Array(_)) => Ok(()),
        Some(_) => Err(format!("the response's `{field}` is not a list")),
        None if value.is_object() => Err(format!(
            "the response is not the expected answer: it has no `{field}`"
        )),
        None => Err(format!(
            "the response is not the expected answer: a JSON {} instead of an object with \
             `{field}`",
            kind_of(&value)
        )),
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "object",
    }
}

/// The `usage` a success body reports, read without decoding the rest (`None` when it
/// has no `usage` with a `total_tokens`).
/// `usage.service_tier` of a 2xx body, when it names one (a body without the words
/// `"service_tier"` is not parsed again).
pub(crate) fn service_tier_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        service_tier: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        usage: Option<Raw>,
    }
    let tier = serde_json::from_slice::<Envelope>(body)
        .ok()?
        .usage?
        .service_tier?;
    Some(bounded_tier(tier))
}

/// A tier name as statistics keep it: at most 64 bytes (a server's text, not ours).
pub(crate) fn bounded_tier(mut tier: String) -> String {
    if tier.len() > 64 {
        let mut end = 64;
        while !tier.is_char_boundary(end) {
            end -= 1;
        }
        tier.truncate(end);
    }
    tier
}

pub(crate) fn usage_of(body: &[u8]) -> Option<TokenUsage> {
    #[derive(serde::Deserialize)]
    struct Raw {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        total_tokens: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        usage: Option<Raw>,
    }
    let raw = serde_json::from_slice::<Envelope>(body).ok()?.usage?;
    let total = raw.total_tokens?;
    Some(TokenUsage {
        prompt_tokens: raw.prompt_tokens.unwrap_or(0),
        completion_tokens: raw.completion_tokens.unwrap_or(0),
        total_tokens: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "sk-Secret-Qz7Wm3Kp9Xv2";
    const PATHS: [Option<&str>; 5] = [
        None,
        Some("/v1/chat/completions"),
        Some("/v1/embeddings"),
        Some("/v1/models/"),
        Some("/v1/files"),
    ];

    /// The one pass says what the two reference parses say, message for message.
    fn same_as_the_reference(body: &[u8]) {
        let redactor = Redactor::of_secret(KEY);
        for path in PATHS {
            let usage = usage_of(body);
            let reference = Inspected {
                check: check_success_body(path, body, &redactor),
                usage,
                tier: usage.and_then(|_| service_tier_of(body)),
            };
            assert_eq!(
                inspect_success(path, body, &redactor),
                reference,
                "{path:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_one_pass_answers_as_the_reference() {
        let bodies: &[&str] = &[
            "",
            " ",
            "{}",
            "[]",
            "null",
            "true",
            "12",
            "-1.5e3",
            "\"text\"",
            r#"{"choices":[]}"#,
            r#"{"choices":{}}"#,
            r#"{"choices":null}"#,
            r#"{"choices":[],"choices":"x"}"#,
            r#"{"choices":"x","choices":[]}"#,
            r#"{"data":[1,2],"usage":{"total_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":null,"total_tokens":3,"other":{"a":[1]}}}"#,
            r#"{"usage":{"total_tokens":null}}"#,
            r#"{"usage":{"total_tokens":-3}}"#,
            r#"{"usage":{"total_tokens":3.0}}"#,
            r#"{"usage":{"total_tokens":"3"}}"#,
            r#"{"usage":{"total_tokens":3,"total_tokens":4}}"#,
            r#"{"usage":{"total_tokens":99999999999999999999}}"#,
            r#"{"usage":null}"#,
            r#"{"usage":null,"usage":{"total_tokens":3}}"#,
            r#"{"usage":{"total_tokens":3},"usage":{"total_tokens":4}}"#,
            r#"{"usage":[1,2,3]}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":[1,2,3,4]}"#,
            r#"{"usage":[null,2,3]}"#,
            r#"{"usage":"x"}"#,
            r#"[{"total_tokens":3}]"#,
            r#"[{"total_tokens":3},1]"#,
            r#"[null]"#,
            r#"{"choices":[],"id":"\u00e9\ud83d\ude00"}"#,
            r#"{"choices":[],"id":"\ud800"}"#,
            r#"{"choices":[],"n":1e400}"#,
            r#"{"choices":[]} x"#,
            r#"{"choices":[],}"#,
            r#"{"choices":[]"#,
            "<html>502</html>",
            r#"{"choices":[],"echo":"Bearer sk-Secret-Qz7Wm3Kp9Xv2"}"#,
            r#"{"usage":{"total_tokens":5},"echo":"sk-Secret-Qz7Wm3Kp9Xv2"}"#,
            r#"{"usage":{"total_tokens":5,"service_tier":"priority"}}"#,
            r#"{"usage":{"service_tier":"standard"}}"#,
            r#"{"usage":{"total_tokens":5,"service_tier":null}}"#,
            r#"{"usage":{"total_tokens":5,"service_tier":3}}"#,
            r#"{"usage":{"total_tokens":5,"service_tier":"a","service_tier":"b"}}"#,
            r#"{"usage":{"total_tokens":5,"service_tier":{"x":1}}}"#,
            r#"{"usage":{"total_tokens":5,"service_tier":"\u00e9t\u00e9"}}"#,
            r#"[{"total_tokens":5,"service_tier":"flex"}]"#,
            r#"{"usage":[null,2,3]}"#,
        ];
        for body in bodies {
            same_as_the_reference(body.as_bytes());
        }
        same_as_the_reference(b"{\"choices\":[],\"id\":\"\xff\"}");
        let deep = format!(
            "{{\"choices\":[],\"d\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        same_as_the_reference(deep.as_bytes());
    }

    fn json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            "[a-z_\\\\\"é]{0,6}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let key = prop_oneof![
                Just("usage".to_string()),
                Just("choices".to_string()),
                Just("data".to_string()),
                Just("total_tokens".to_string()),
                Just("prompt_tokens".to_string()),
                Just("service_tier".to_string()),
                "[a-z]{0,3}".prop_map(|s| s),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key, inner), 0..4).prop_map(|v| {
                    let fields: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn any_document_gets_the_reference_answer(body in json(), cut in any::<prop::sample::Index>()) {
            same_as_the_reference(body.as_bytes());
            // A cut document (not JSON) too.
            let bytes = body.as_bytes();
            same_as_the_reference(&bytes[..cut.index(bytes.len() + 1)]);
        }

        #[test]
        fn any_bytes_get_the_reference_answer(body in prop::collection::vec(any::<u8>(), 0..64)) {
            same_as_the_reference(&body);
        }
    }
}
