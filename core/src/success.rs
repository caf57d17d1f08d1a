//! A successful response and its typed decoding.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Error, ResponseInfo};
use crate::ratelimits::RateLimits;
use crate::redact::Redactor;
use crate::verdict::excerpt;

/// A 2xx response, with what the call went through to get it.
#[derive(Debug, Clone)]
pub struct Success {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (empty for a stream: its events are read by the driver).
    pub body: Bytes,
    /// Rate limits the response announced.
    pub limits: RateLimits,
    /// The `mistral-correlation-id`.
    pub correlation_id: Option<String>,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Time spent waiting before the successful attempt.
    pub waited: Duration,
    /// The call's redaction, for errors decoding or streaming this response.
    pub(crate) redactor: Redactor,
}

impl Success {
    /// The redaction of the call that got this response: a driver hands it to the
    /// [`crate::StreamReader`] of a stream ([`crate::StreamReader::redacting`]).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Decodes the body as `T`. A body that does not decode is [`Error::Decode`], with
    /// an excerpt of the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        // serde's messages quote the values they refused: redacted like the excerpt.
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            message: self.redactor.redact(&e.to_string()),
            response: Box::new(ResponseInfo {
                status: Some(self.status),
                correlation_id: self.correlation_id.clone(),
                code: None,
                message: None,
                excerpt: self.redactor.redact(&excerpt(&self.body)),
                limits: self.limits.clone(),
            }),
        })
    }
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
        return Err(
            "the response holds the API key: not an answer from Mistral (a proxy or \
                    server echoing the request?)"
                .into(),
        );
    }
    let Some(path) = path else {
        return Ok(());
    };
    let required = [
        ("/chat/completions", "choices"),
        ("/fim/completions", "choices"),
        ("/embeddings", "data"),
        ("/models", "data"),
        ("/moderations", "results"),
        ("/chat/moderations", "results"),
    ]
    .into_iter()
    .find(|(suffix, _)| path.trim_end_matches('/').ends_with(suffix))
    .map(|(_, field)| field);
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

/// Tokens a success body reports in `usage.total_tokens`, read without decoding the rest.
pub(crate) fn usage_total(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Usage {
        total_tokens: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()?
        .usage?
        .total_tokens
}

/// A decoded response with what it took to get it: the limits the server announced,
/// the correlation id, attempts and time waited. Dereferences to the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The decoded body.
    pub value: T,
    /// Rate limits the response announced (limit and remaining per bucket).
    pub limits: RateLimits,
    /// The `mistral-correlation-id`.
    pub correlation_id: Option<String>,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Time spent waiting before the successful attempt.
    pub waited: Duration,
}

impl<T> Reply<T> {
    /// The decoded body, without the rest.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for Reply<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl Success {
    /// Decodes the body into a [`Reply`].
    pub fn into_reply<T: DeserializeOwned>(self) -> Result<Reply<T>, Error> {
        let value = self.decode()?;
        Ok(Reply {
            value,
            limits: self.limits,
            correlation_id: self.correlation_id,
            attempts: self.attempts,
            waited: self.waited,
        })
    }
}
