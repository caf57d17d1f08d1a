//! The API's error bodies, decoded leniently.
//!
//! Captured forms (see `mistral-api.md` §3):
//!
//! * gateway: `{"message":"Requests rate limit exceeded"}`
//! * API: `{"object":"error","message":"…","type":"…","param":null,"code":"1300","raw_status_code":429}`
//! * auth: `{"detail":"Unauthorized"}`, `{"message":"Unauthorized","request_id":"…"}`
//! * validation: `{"detail":[{type,loc,msg,input,ctx}]}` and the wrapped
//!   `{"object":"error","message":{"detail":[…]},"type":"invalid_request_error",…}`
//!
//! Bodies can also be HTML or empty: [`ApiErrorBody::parse`] then returns `None`, and
//! never panics. Do not match on the glossary's `type` names: the wire sends others.
//!
//! Gateways and proxies between the client and Mistral answer in forms of their own, kept
//! here as well: the OpenAI-style `{"error":{"message","type","code"}}` of LiteLLM and
//! other proxies ([`ApiErrorBody::wrapped`]), `{"error":"text"}`, and Google's
//! `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"retryDelay":"30s"}]}}`.
//! A wait named in the body (`retry_after` in seconds, `retry_after_ms`, `retryDelay`
//! such as `"30s"`, at the top, inside `error` or in its `details`) is
//! [`ApiErrorBody::retry_after`], bounded like a `Retry-After` header.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::de::value_to_u64;

/// A decoded error body. Every field is optional: use what is there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiErrorBody {
    /// Human-readable message. Object messages (the wrapped 422 form) are flattened into
    /// a readable string; a bare `detail` string (`{"detail":"Unauthorized"}`) lands here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `type` field (`rate_limited`, `service_tier_capacity_exceeded`,
    /// `invalid_model`, …).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The `code` field as text (`"1300"`, `"3505"`…); a number is rendered as text;
    /// `null` → `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Validation errors (422).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<FieldError>,
    /// The status the server meant (`raw_status_code`), when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_status_code: Option<u16>,
    /// `request_id`, when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The `object` field (`"error"` in the Mistral API's own bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The `status` field as text (Google's `"RESOURCE_EXHAUSTED"`), when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The wait the body names before trying again (`retry_after_ms`, else
    /// `retry_after` in seconds, else `retryDelay` such as `"30s"`), clamped to
    /// [`crate::ratelimits::MAX_HINT`]; negative, non-finite or unreadable values are
    /// ignored. Written back as `retry_after_ms`.
    #[serde(
        rename = "retry_after_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "millis"
    )]
    pub retry_after: Option<Duration>,
    /// `true` when the fields came from an `error` member (`{"error":{…}}` or
    /// `{"error":"…"}`): the OpenAI-style form proxies and gateways send, never the
    /// Mistral API's own.
    #[serde(skip)]
    pub wrapped: bool,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// One validation error of a 422: `{type, loc, msg, input, ctx}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Error type, e.g. `missing`, `extra_forbidden`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Where: path segments (`["body", "messages", "0", "content"]`); numbers as text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loc: Vec<String>,
    /// What is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// The offending input, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Extra context, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl FieldError {
    /// Decodes one `detail` entry. Non-object entries become a `msg`.
    pub fn from_value(v: &Value) -> Self {
        let Value::Object(o) = v else {
            return Self {
                msg: scalar_text(v),
                ..Self::default()
            };
        };
        let loc = match o.get("loc") {
            Some(Value::Array(items)) => items.iter().filter_map(scalar_text).collect(),
            Some(other) => scalar_text(other).into_iter().collect(),
            None => Vec::new(),
        };
        Self {
            kind: o.get("type").and_then(scalar_text),
            loc,
            msg: o
                .get("msg")
                .or_else(|| o.get("message"))
                .and_then(scalar_text),
            input: o.get("input").cloned(),
            ctx: o.get("ctx").filter(|c| !c.is_null()).cloned(),
        }
    }

    /// The location as a dotted path (`body.messages.0.content`).
    pub fn location(&self) -> String {
        self.loc.join(".")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.msg.as_deref().unwrap_or("invalid"))?;
        if !self.loc.is_empty() {
            write!(f, " at {}", self.location())?;
        }
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for FieldError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::from_value(&Value::deserialize(deserializer)?))
    }
}

/// The fields of an error object this client reads; everything else is skipped.
#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    message: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<Scalar>,
    #[serde(default)]
    code: Option<Scalar>,
    #[serde(default)]
    raw_status_code: Option<Scalar>,
    #[serde(default)]
    request_id: Option<Scalar>,
    #[serde(default)]
    detail: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    object: Option<Scalar>,
    #[serde(default)]
    status: Option<Scalar>,
    #[serde(default)]
    retry_after: Option<Scalar>,
    #[serde(default)]
    retry_after_ms: Option<Scalar>,
    #[serde(default, rename = "retryDelay")]
    retry_delay: Option<Scalar>,
    /// Google's `details: [{"@type": "…RetryInfo", "retryDelay": "30s"}]`.
    #[serde(default)]
    details: Option<Value>,
}

impl Fields {
    /// The wait the fields name: `retry_after_ms`, else `retry_after`, else `retryDelay`
    /// (here or in a `details` entry).
    fn retry_after(&mut self) -> Option<Duration> {
        let ms = self.retry_after_ms.take().and_then(|v| hint(v, 0.001));
        let secs = || self.retry_after.take().and_then(|v| hint(v, 1.0));
        let delay = || self.retry_delay.take().and_then(|v| hint(v, 1.0));
        ms.or_else(secs).or_else(delay).or_else(|| {
            let Some(Value::Array(details)) = &self.details else {
                return None;
            };
            details.iter().find_map(|d| {
                let v = d.get("retryDelay").or_else(|| d.get("retry_delay"))?;
                hint(Scalar::from_value(v), 1.0)
            })
        })
    }
}

/// A wait from a number of `unit` seconds, or a text such as `"30"`, `"30s"`, `"1.5s"`,
/// `"500ms"`, `"2m"`: clamped to [`crate::ratelimits::MAX_HINT`]; `None` for anything
/// negative, not finite or not a duration.
fn hint(value: Scalar, unit: f64) -> Option<Duration> {
    let secs = match value {
        Scalar::Number(n) => n.as_f64()? * unit,
        Scalar::Text(t) => {
            let t = t.trim();
            let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = t.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = t.strip_suffix('m') {
                (n, 60.0)
            } else {
                (t, unit)
            };
            number.trim().parse::<f64>().ok()? * scale
        }
        Scalar::Bool(_) | Scalar::Other => return None,
    };
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(crate::ratelimits::MAX_HINT.as_secs_f64())))
}

impl ApiErrorBody {
    /// Decodes an error body. `None` for an empty, non-JSON (HTML, plain text) or
    /// non-object body. Never panics.
    pub fn parse(bytes: &[u8]) -> Option<ApiErrorBody> {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() || !matches!(trimmed.first(), Some(b'{')) {
            return None;
        }
        // Only the fields we read are decoded; the rest are skipped without allocating.
        Self::from_fields(serde_json::from_slice(trimmed).ok()?)
    }

    /// Decodes an error body already parsed as JSON. `None` unless it is an object.
    pub fn from_value(value: &Value) -> Option<ApiErrorBody> {
        if !value.is_object() {
            return None;
        }
        Self::from_fields(Fields::deserialize(value).ok()?)
    }

    fn from_fields(mut f: Fields) -> Option<ApiErrorBody> {
        let retry_after = f.retry_after();
        // OpenAI-style `{"error":{…}}` wrapping, as proxies send (a wait named beside
        // it counts when the inner object names none).
        if f.message.is_none() && f.detail.is_none() {
            match &f.error {
                Some(inner @ Value::Object(_)) => {
                    let mut body = Self::from_value(inner)?;
                    body.wrapped = true;
                    body.retry_after = body.retry_after.or(retry_after);
                    return Some(body);
                }
                Some(Value::String(text)) => {
                    return Some(ApiErrorBody {
                        message: Some(text.clone()),
                        kind: f.kind.and_then(Scalar::into_text),
                        code: f.code.and_then(Scalar::into_text),
                        retry_after,
                        wrapped: true,
                        ..ApiErrorBody::default()
                    });
                }
                _ => {}
            }
        }
        // The decoded strings are moved, not copied.
        let mut body = ApiErrorBody {
            kind: f.kind.and_then(Scalar::into_text),
            code: f.code.and_then(Scalar::into_text),
            raw_status_code: f
                .raw_status_code
                .and_then(Scalar::into_u64)
                .and_then(|n| u16::try_from(n).ok()),
            request_id: f.request_id.and_then(Scalar::into_text),
            object: f.object.and_then(Scalar::into_text),
            status: f.status.and_then(Scalar::into_text),
            retry_after,
            ..ApiErrorBody::default()
        };
        let mut message = match f.message {
            Some(Value::String(text)) => Some(text),
            m => m.and_then(|m| flatten_message(&m, &mut body.detail)),
        };
        if let Some(detail) = &f.detail {
            let from_detail = flatten_message(detail, &mut body.detail);
            if message.is_none() {
                message = from_detail;
            }
        }
        body.message = message;
        Some(body)
    }

    /// A one-line description: `message (type …, code …)`.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or("(no message)"))?;
        match (&self.kind, &self.code) {
            (Some(k), Some(c)) => write!(f, " (type {k}, code {c})"),
            (Some(k), None) => write!(f, " (type {k})"),
            (None, Some(c)) => write!(f, " (code {c})"),
            (None, None) => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for ApiErrorBody {
    /// Lenient: any JSON object decodes (see [`ApiErrorBody::from_value`]); other JSON
    /// values are an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        Self::from_value(&v)
            .ok_or_else(|| serde::de::Error::custom("error body is not a JSON object"))
    }
}

/// A scalar as text: strings as-is, numbers and booleans rendered; `null`, arrays and
/// objects → `None`.
/// A field read as [`scalar_text`] and [`value_to_u64`] read a [`Value`], without
/// building one: a string is decoded once and moved, anything but a scalar skipped.
enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
    Other,
}

impl Scalar {
    fn from_value(v: &Value) -> Scalar {
        match v {
            Value::String(s) => Scalar::Text(s.clone()),
            Value::Number(n) => Scalar::Number(n.clone()),
            Value::Bool(b) => Scalar::Bool(*b),
            _ => Scalar::Other,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Scalar::Text(s) => Value::String(s),
            Scalar::Number(n) => Value::Number(n),
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Other => Value::Null,
        }
    }

    fn into_text(self) -> Option<String> {
        match self {
            Scalar::Text(s) => Some(s),
            other => scalar_text(&other.into_value()),
        }
    }

    fn into_u64(self) -> Option<u64> {
        value_to_u64(&self.into_value())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                // As a `Value` holds it (a non-finite float is `null` there).
                Ok(serde_json::Number::from_f64(v).map_or(Scalar::Other, Scalar::Number))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Scalar, A::Error> {
                // Read as a `Value` would be (the same checks), rare: not kept.
                while seq.next_element::<Value>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Scalar, A::Error> {
                while map.next_entry::<String, Value>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Turns a `message` or `detail` value into readable text, collecting validation errors
/// found on the way into `detail`.
fn flatten_message(v: &Value, detail: &mut Vec<FieldError>) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => scalar_text(v),
        Value::Array(items) => {
            let start = detail.len();
            detail.extend(items.iter().map(FieldError::from_value));
            let text = detail[start..]
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (!text.is_empty()).then_some(text)
        }
        Value::Object(o) => flatten_object(o, detail),
    }
}

fn flatten_object(o: &Map<String, Value>, detail: &mut Vec<FieldError>) -> Option<String> {
    let mut parts = Vec::new();
    for key in ["message", "msg", "detail"] {
        if let Some(text) = o.get(key).and_then(|v| flatten_message(v, detail)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        if o.is_empty() {
            None
        } else {
            Some(Value::Object(o.clone()).to_string())
        }
    } else {
        Some(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> ApiErrorBody {
        ApiErrorBody::parse(s.as_bytes()).expect("should parse")
    }

    #[test]
    fn rate_limit_gateway_form() {
        let b = parse(r#"{"message":"Requests rate limit exceeded"}"#);
        assert_eq!(
            b,
            ApiErrorBody {
                message: Some("Requests rate limit exceeded".into()),
                ..ApiErrorBody::default()
            }
        );
    }

    #[test]
    fn rate_limit_1300_form() {
        let b = parse(
            r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}"#,
        );
        assert_eq!(b.message.as_deref(), Some("Rate limit exceeded"));
        assert_eq!(b.kind.as_deref(), Some("rate_limited"));
        assert_eq!(b.code.as_deref(), Some("1300"));
        assert_eq!(b.raw_status_code, Some(429));
        assert!(b.detail.is_empty());
        assert_eq!(b.request_id, None);
        // Without raw_status_code.
        let b = parse(
            r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300"}"#,
        );
        assert_eq!(b.raw_status_code, None);
        assert_eq!(b.code.as_deref(), Some("1300"));
    }

    #[test]
    fn capacity_3505_forms() {
        let b = parse(
            r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"service_tier_capacity_exceeded","param":null,"code":"3505"}"#,
        );
        assert_eq!(b.kind.as_deref(), Some("service_tier_capacity_exceeded"));
        assert_eq!(b.code.as_deref(), Some("3505"));
        assert_eq!(
            b.message.as_deref(),
            Some("Service tier capacity exceeded for this model.")
        );
        // Older variant: type invalid_request_error, code null.
        let old = parse(
            r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"invalid_request_error","param":null,"code":null}"#,
        );
        assert_eq!(old.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(old.code, None);
    }

    #[test]
    fn unauthorized_both_forms() {
        let new = parse(r#"{"detail":"Unauthorized"}"#);
        assert_eq!(new.message.as_deref(), Some("Unauthorized"));
        assert!(new.detail.is_empty());
        let old = parse(r#"{"message":"Unauthorized","request_id":"0f4e7b9a2c1d4e6f8a9b"}"#);
        assert_eq!(old.message.as_deref(), Some("Unauthorized"));
        assert_eq!(old.request_id.as_deref(), Some("0f4e7b9a2c1d4e6f8a9b"));
    }

    #[test]
    fn bad_request_forms() {
        let b = parse(
            r#"{"object":"error","message":"Invalid model: bad model","type":"invalid_model","param":null,"code":"1500"}"#,
        );
        assert_eq!(b.message.as_deref(), Some("Invalid model: bad model"));
        assert_eq!(b.kind.as_deref(), Some("invalid_model"));
        assert_eq!(b.code.as_deref(), Some("1500"));

        let b = parse(
            r#"{"object":"error","message":"Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant","type":"invalid_request_message_order","param":null,"code":"3230"}"#,
        );
        assert_eq!(b.kind.as_deref(), Some("invalid_request_message_order"));
        assert_eq!(b.code.as_deref(), Some("3230"));

        let b = parse(
            r#"{"object":"error","message":"Invalid arguments","type":"invalid_request_invalid_args","param":null,"code":"3051"}"#,
        );
        assert_eq!(b.kind.as_deref(), Some("invalid_request_invalid_args"));
        assert_eq!(b.code.as_deref(), Some("3051"));
    }

    #[test]
    fn validation_422_plain_form() {
        let b = parse(
            r#"{"detail":[{"type":"extra_forbidden","loc":["body","foo"],"msg":"Extra inputs are not permitted","input":1,"ctx":null},{"type":"missing","loc":["body","messages",0,"content"],"msg":"Field required","input":{}}]}"#,
        );
        assert_eq!(b.detail.len(), 2);
        assert_eq!(
            b.detail[0],
            FieldError {
                kind: Some("extra_forbidden".into()),
                loc: vec!["body".into(), "foo".into()],
                msg: Some("Extra inputs are not permitted".into()),
                input: Some(json!(1)),
                ctx: None,
            }
        );
        assert_eq!(b.detail[1].location(), "body.messages.0.content");
        assert_eq!(
            b.message.as_deref(),
            Some(
                "Extra inputs are not permitted at body.foo (extra_forbidden); \
                 Field required at body.messages.0.content (missing)"
            )
        );
        assert_eq!(b.code, None);
    }

    #[test]
    fn validation_422_wrapped_form() {
        let b = parse(
            r#"{"object":"error","message":{"detail":[{"type":"greater_than_equal","loc":["body","max_tokens"],"msg":"Input should be greater than or equal to 0","input":-1,"ctx":{"ge":0}}]},"type":"invalid_request_error","param":null,"code":null,"raw_status_code":422}"#,
        );
        assert_eq!(b.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(b.code, None);
        assert_eq!(b.raw_status_code, Some(422));
        assert_eq!(b.detail.len(), 1);
        assert_eq!(b.detail[0].ctx, Some(json!({"ge": 0})));
        assert_eq!(b.detail[0].input, Some(json!(-1)));
        assert_eq!(
            b.message.as_deref(),
            Some(
                "Input should be greater than or equal to 0 at body.max_tokens (greater_than_equal)"
            )
        );
    }

    #[test]
    fn server_error_500() {
        let b = parse(
            r#"{"object":"error","message":"Service unavailable.","type":"internal_server_error","param":null,"code":"1000"}"#,
        );
        assert_eq!(b.kind.as_deref(), Some("internal_server_error"));
        assert_eq!(b.code.as_deref(), Some("1000"));
        assert_eq!(
            b.to_string(),
            "Service unavailable. (type internal_server_error, code 1000)"
        );
    }

    #[test]
    fn numeric_code_and_odd_message_object() {
        let b = parse(r#"{"message":{"reason":"x"},"code":1913,"raw_status_code":"403"}"#);
        assert_eq!(b.code.as_deref(), Some("1913"));
        assert_eq!(b.raw_status_code, Some(403));
        assert_eq!(b.message.as_deref(), Some(r#"{"reason":"x"}"#));
        // raw_status_code out of range is dropped, not wrapped.
        let b = parse(r#"{"raw_status_code":70000}"#);
        assert_eq!(b.raw_status_code, None);
    }

    #[test]
    fn openai_style_wrapping() {
        let b = parse(r#"{"error":{"message":"no","type":"t","code":"42"}}"#);
        assert_eq!(b.message.as_deref(), Some("no"));
        assert_eq!(b.code.as_deref(), Some("42"));
        assert!(b.wrapped);
        // Mistral's own form is not wrapped, and says it is an error object.
        let m = parse(r#"{"object":"error","message":"Rate limit exceeded","code":"1300"}"#);
        assert!(!m.wrapped);
        assert_eq!(m.object.as_deref(), Some("error"));
        // `{"error":"text"}`.
        let t = parse(r#"{"error":"quota exceeded","retry_after":4}"#);
        assert_eq!(t.message.as_deref(), Some("quota exceeded"));
        assert!(t.wrapped);
        assert_eq!(t.retry_after, Some(Duration::from_secs(4)));
    }

    #[test]
    fn google_form_status_code_and_retry_delay() {
        let b = parse(
            r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}]}}"#,
        );
        assert_eq!(b.code.as_deref(), Some("429"));
        assert_eq!(b.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(b.retry_after, Some(Duration::from_secs(30)));
        // The inner object's own wait beats one beside it.
        let b = parse(r#"{"error":{"message":"x","retry_after_ms":200},"retry_after":9}"#);
        assert_eq!(b.retry_after, Some(Duration::from_millis(200)));
        let b = parse(r#"{"error":{"message":"x"},"retry_after":9}"#);
        assert_eq!(b.retry_after, Some(Duration::from_secs(9)));
    }

    #[test]
    fn non_json_bodies_are_none() {
        for body in [
            &b""[..],
            b"   \n",
            b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>",
            b"no Route matched with those values",
            b"{\"message\": ",
            b"[1,2]",
            b"\"just a string\"",
            b"\xff\xfe\x00",
            b"null",
        ] {
            assert_eq!(ApiErrorBody::parse(body), None, "{body:?}");
        }
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        // Deterministic pseudo-random bytes plus every prefix of real bodies.
        let real = br#"{"object":"error","message":{"detail":[{"type":"missing","loc":["body",0],"msg":"x"}]},"code":null}"#;
        for end in 0..=real.len() {
            let _ = ApiErrorBody::parse(&real[..end]);
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut buf = vec![b'{'];
            for _ in 0..(x % 40) {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                buf.push((x >> 16) as u8);
            }
            let _ = ApiErrorBody::parse(&buf);
        }
        let deep = "{\"message\":".repeat(200) + "1" + &"}".repeat(200);
        let _ = ApiErrorBody::parse(deep.as_bytes());
        assert_eq!(
            ApiErrorBody::parse(real).unwrap().detail[0].loc,
            ["body", "0"]
        );
    }

    #[test]
    fn serde_deserialize_and_round_trip() {
        let b: ApiErrorBody = serde_json::from_str(
            r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429,"request_id":"r"}"#,
        )
        .unwrap();
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(
            s,
            r#"{"message":"Rate limit exceeded","type":"rate_limited","code":"1300","raw_status_code":429,"request_id":"r","object":"error"}"#
        );
        assert_eq!(ApiErrorBody::parse(s.as_bytes()), Some(b));
        assert!(serde_json::from_str::<ApiErrorBody>("[]").is_err());
        // A wait named in the body is written back as `retry_after_ms`, and read again.
        let hinted = parse(r#"{"error":{"message":"x","retryDelay":"1.5s"}}"#);
        let s = serde_json::to_string(&hinted).unwrap();
        assert_eq!(s, r#"{"message":"x","retry_after_ms":1500}"#);
        assert_eq!(
            ApiErrorBody::parse(s.as_bytes()).unwrap().retry_after,
            hinted.retry_after
        );
    }
}
