//! A successful response and its typed decoding.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Error, ResponseInfo};
use crate::ratelimits::RateLimits;
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
}

impl Success {
    /// Decodes the body as `T`. A body that does not decode is [`Error::Decode`], with
    /// an excerpt of the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            message: e.to_string(),
            response: Box::new(ResponseInfo {
                status: self.status.as_u16(),
                correlation_id: self.correlation_id.clone(),
                code: None,
                message: None,
                excerpt: excerpt(&self.body),
                limits: self.limits.clone(),
            }),
        })
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
