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

/// The `usage` a success body reports, read without decoding the rest (`None` when it
/// has no `usage` with a `total_tokens`).
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
