//! Reading an event stream after its call succeeded: bytes in, typed chunks out, the idle
//! timeout, the end-of-stream check and the final usage — all without I/O.
//!
//! The driver reads bytes from the connection with a read timeout that ends at
//! [`StreamReader::idle_deadline`], feeds them with [`StreamReader::feed`], and takes
//! items with [`StreamReader::next_item`]. At the end of the body it calls
//! [`StreamReader::end_of_input`]; when a read times out, [`StreamReader::idle_error`].
//! Once the stream is over, [`StreamReader::take_report`] gives the limiter the real
//! token count.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::action::{Report, Sizing, Ticket, TokenUsage};
use crate::action::{Retry, WaitReason};
use crate::error::{Error, StreamFailure};
use crate::models::ChatChunk;
use crate::ratelimits::RateLimits;
use crate::redact::Redactor;
use crate::sse::{SseDecoder, SseError, SseEvent, looks_like_error};
use crate::verdict::{Classification, Verdict, classify_event};

/// A stream item that may carry the final token usage.
pub trait StreamItem: DeserializeOwned {
    /// `usage.total_tokens`, when this item carries it (the last chunk does).
    fn total_tokens(&self) -> Option<u64>;
    /// The whole `usage` (prompt and completion tokens), when this item carries it.
    fn usage(&self) -> Option<TokenUsage> {
        self.total_tokens().map(|total_tokens| TokenUsage {
            total_tokens,
            ..TokenUsage::default()
        })
    }
    /// `usage.service_tier`, when this item carries it.
    fn service_tier(&self) -> Option<&str> {
        None
    }
}

impl StreamItem for ChatChunk {
    fn total_tokens(&self) -> Option<u64> {
        self.usage.as_ref().map(|u| u.total())
    }
    fn usage(&self) -> Option<TokenUsage> {
        let u = self.usage.as_ref()?;
        Some(TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
        })
    }
    fn service_tier(&self) -> Option<&str> {
        self.usage.as_ref()?.service_tier()
    }
}

impl StreamItem for serde_json::Value {
    fn total_tokens(&self) -> Option<u64> {
        self.get("usage")?.get("total_tokens")?.as_u64()
    }
    fn usage(&self) -> Option<TokenUsage> {
        let u = self.get("usage")?;
        let field = |name: &str| u.get(name).and_then(serde_json::Value::as_u64);
        Some(TokenUsage {
            prompt_tokens: field("prompt_tokens").unwrap_or(0),
            completion_tokens: field("completion_tokens").unwrap_or(0),
            total_tokens: field("total_tokens")?,
        })
    }
    fn service_tier(&self) -> Option<&str> {
        self.get("usage")?.get("service_tier")?.as_str()
    }
}

/// Decodes one event stream into items of type `T`.
#[derive(Debug)]
pub struct StreamReader<T> {
    decoder: SseDecoder,
    idle: Duration,
    last_bytes: Instant,
    state: ReadState,
    model: Option<String>,
    estimated_tokens: u64,
    used_tokens: Option<u64>,
    usage: Option<TokenUsage>,
    ticket: Option<Ticket>,
    size: Sizing,
    correlation_id: Option<String>,
    reported: bool,
    redactor: Redactor,
    /// An error event's classification, for the report that tells the budget.
    refusal: Option<Classification>,
    /// `usage.service_tier` of the last chunk that named one.
    service_tier: Option<String>,
    _item: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    Done,
    Failed,
}

impl<T: StreamItem> StreamReader<T> {
    /// A reader for a stream that opened at `now`. `model` and `estimated_tokens` are
    /// the call's (for the limiter's correction); `limits` the response's headers.
    pub fn new(
        model: Option<String>,
        estimated_tokens: u64,
        limits: &RateLimits,
        correlation_id: Option<String>,
        idle: Duration,
        now: Instant,
    ) -> Self {
        Self {
            decoder: SseDecoder::new(),
            idle,
            last_bytes: now,
            state: ReadState::Open,
            model,
            estimated_tokens,
            used_tokens: limits.query_cost,
            usage: None,
            ticket: None,
            size: Sizing::default(),
            correlation_id,
            reported: false,
            redactor: Redactor::generic(),
            refusal: None,
            service_tier: None,
            _item: PhantomData,
        }
    }

    /// Redacts every error of this stream with `redactor` (the call's: see
    /// [`crate::Reply::redactor`]), and fails the stream on an event that holds the
    /// key (a server echoing the request) instead of handing it out. Without it, only
    /// the generic patterns of [`crate::redact`] are removed.
    pub fn redacting(mut self, redactor: &Redactor) -> Self {
        self.redactor = redactor.clone();
        self
    }

    /// Reads the stream of `reply` (the head of a streamed call): its errors redacted as
    /// the call's ([`StreamReader::redacting`]), its usage reported against the shared
    /// limiter's admission the call went on.
    pub fn of_reply<V>(self, reply: &crate::Reply<V>) -> Self {
        let mut reader = self.redacting(&reply.redactor);
        (reader.ticket, reader.size) = reply.admission;
        reader
    }

    /// When the stream counts as stalled if no byte arrives before then.
    pub fn idle_deadline(&self) -> Instant {
        crate::call::later(self.last_bytes, self.idle)
    }

    /// The read timeout to use for the next read at `now` (zero when already stalled).
    pub fn read_timeout(&self, now: Instant) -> Duration {
        self.idle_deadline().saturating_duration_since(now)
    }

    /// `true` once the stream ended (with `[DONE]` or an error): stop reading.
    pub fn is_over(&self) -> bool {
        self.state != ReadState::Open
    }

    /// Tokens the stream used, once its last chunk said so.
    pub fn used_tokens(&self) -> Option<u64> {
        self.used_tokens
    }

    /// Feeds bytes read at `now`.
    pub fn feed(&mut self, now: Instant, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.last_bytes = self.last_bytes.max(now);
        }
        self.decoder.feed(bytes);
    }

    /// The next decoded item, if a whole one has arrived. After an error or `[DONE]`,
    /// always `None`.
    pub fn next_item(&mut self) -> Option<Result<T, Error>> {
        if self.state != ReadState::Open {
            return None;
        }
        match self.decoder.next_event()? {
            Ok(SseEvent::Done) => {
                self.state = ReadState::Done;
                None
            }
            Ok(SseEvent::Error(data)) => {
                if self.redactor.holds_secret(data.as_bytes()) {
                    let detail = "an event holds the API key (a server echoing the request?)";
                    return Some(Err(self.fail(StreamFailure::BadEvent, Some(detail.into()))));
                }
                Some(Err(self.refused(&data)))
            }
            Ok(SseEvent::Data(data)) => {
                if self.redactor.holds_secret(data.as_bytes()) {
                    let detail = "an event holds the API key (a server echoing the request?)";
                    return Some(Err(self.fail(StreamFailure::BadEvent, Some(detail.into()))));
                }
                if looks_like_error(&data) {
                    return Some(Err(self.refused(&data)));
                }
                Some(match serde_json::from_str::<T>(&data) {
                    Ok(item) => {
                        if let Some(usage) = item.usage() {
                            self.used_tokens = Some(usage.total_tokens);
                            self.usage = Some(usage);
                        }
                        if let Some(tier) = item.service_tier() {
                            self.service_tier = Some(crate::reply::bounded_tier(tier.into()));
                        }
                        Ok(item)
                    }
                    Err(e) => Err(self.fail(StreamFailure::BadEvent, Some(e.to_string()))),
                })
            }
            Err(SseError::EventTooLarge { limit }) => {
                Some(Err(self.fail(StreamFailure::EventTooLarge(limit), None)))
            }
            Err(e) => Some(Err(self.fail(StreamFailure::BadEvent, Some(e.to_string())))),
        }
    }

    /// The body ended. `Some(error)` when it ended before `[DONE]` (the stream was cut);
    /// call after [`StreamReader::next_item`] returned `None`.
    pub fn end_of_input(&mut self) -> Option<Error> {
        if self.state != ReadState::Open {
            return None;
        }
        while let Some(event) = self.decoder.finish() {
            if let Ok(SseEvent::Done) = event {
                self.state = ReadState::Done;
                return None;
            }
        }
        Some(self.fail(StreamFailure::Cut, None))
    }

    /// A read timed out at `now`: the stalled-stream error if the idle deadline has
    /// passed, `None` if the read woke early (read again).
    pub fn idle_error(&mut self, now: Instant) -> Option<Error> {
        if self.state != ReadState::Open || now < self.idle_deadline() {
            return None;
        }
        Some(self.fail(StreamFailure::Idle(self.idle), None))
    }

    /// The connection failed while reading (reset, TLS…): ends the stream.
    pub fn transport_error(&mut self, message: impl Into<String>) -> Error {
        self.fail(StreamFailure::Cut, Some(message.into()))
    }

    /// An error event: classified as a response with its body would be (a 429 in a
    /// stream is a 429), kept for the report that tells the budget, and the error that
    /// ends the stream.
    fn refused(&mut self, data: &str) -> Error {
        let mut c = classify_event(data, Some(self.estimated_tokens));
        let r = &self.redactor;
        c.info.excerpt = r.redact_owned(std::mem::take(&mut c.info.excerpt));
        c.info.message = r.redact_opt(c.info.message.take());
        c.info.code = r.redact_opt(c.info.code.take());
        c.info.correlation_id = r.redact_opt(self.correlation_id.clone());
        let detail = c.body.as_ref().map(|b| r.redact(&b.summary()));
        let wait = c.info.limits.retry_after;
        let event = c.clone().into_error(self.model.as_deref(), wait);
        self.refusal = Some(c);
        let mut error = self.fail(StreamFailure::ServerError, detail);
        if let Error::Stream { event: slot, .. } = &mut error {
            *slot = Some(Box::new(event));
        }
        error
    }

    fn fail(&mut self, failure: StreamFailure, detail: Option<String>) -> Error {
        self.state = ReadState::Failed;
        let detail = self.redactor.redact_opt(detail);
        let correlation_id = self.redactor.redact_opt(self.correlation_id.clone());
        let detail = match (&correlation_id, detail) {
            (Some(id), Some(d)) => Some(format!("{d} [correlation id {id}]")),
            (Some(id), None) => Some(format!("correlation id {id}")),
            (None, d) => d,
        };
        Error::Stream {
            failure,
            detail,
            event: None,
        }
    }

    /// Once the stream is over, the limiter report that corrects the call's token
    /// estimate with what the stream really used. At most once.
    ///
    /// A stream ended by an error event reports that event's classification instead
    /// (a 429 inside a stream is told to the budget as any 429, a wait its body named as
    /// the server's hint): without a ticket, since the admission was answered by the
    /// stream's head already, and without usage (none came).
    pub fn take_report(&mut self) -> Option<Report> {
        if self.reported || self.state == ReadState::Open {
            return None;
        }
        self.reported = true;
        if let Some(c) = self.refusal.take() {
            let retry = c.info.limits.retry_after.map(|wait| Retry {
                wait,
                why: WaitReason::ServerHint,
            });
            return Some(Report {
                model: self.model.clone(),
                limits: c.info.limits,
                verdict: c.verdict,
                retry,
                estimated_tokens: self.estimated_tokens,
                used_tokens: None,
                attempt: 0,
                correlation_id: self.correlation_id.clone(),
                ticket: None,
                usage: None,
                size: self.size,
                origin: c.info.origin,
                service_tier: None,
            });
        }
        Some(Report {
            model: self.model.clone(),
            limits: RateLimits::default(),
            verdict: Verdict::Usage,
            retry: None,
            estimated_tokens: self.estimated_tokens,
            used_tokens: self.used_tokens,
            attempt: 0,
            correlation_id: self.correlation_id.clone(),
            ticket: self.ticket,
            usage: self.usage,
            size: self.size,
            origin: crate::origin::Origin::Unknown,
            service_tier: self.service_tier.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"a\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}],\"p\":\"abc\"}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"a\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );

    fn reader(now: Instant) -> StreamReader<ChatChunk> {
        StreamReader::new(
            Some("m".into()),
            40,
            &RateLimits::default(),
            Some("corr".into()),
            Duration::from_secs(10),
            now,
        )
    }

    #[test]
    fn reads_chunks_split_anywhere_and_reports_usage() {
        let now = Instant::now();
        for split in 0..STREAM.len() {
            let mut r = reader(now);
            let mut texts = String::new();
            for part in [&STREAM.as_bytes()[..split], &STREAM.as_bytes()[split..]] {
                r.feed(now, part);
                while let Some(item) = r.next_item() {
                    texts.push_str(item.unwrap().text().unwrap_or(""));
                }
            }
            assert_eq!(texts, "Hello");
            assert!(r.is_over());
            assert_eq!(r.end_of_input(), None);
            let report = r.take_report().unwrap();
            assert_eq!(
                (report.verdict, report.used_tokens),
                (Verdict::Usage, Some(5))
            );
            assert!(r.take_report().is_none());
        }
    }

    #[test]
    fn the_end_report_names_the_tier_of_the_last_usage() {
        let now = Instant::now();
        let mut r = reader(now);
        let tiered = STREAM.replace(
            "\"total_tokens\":5}",
            "\"total_tokens\":5,\"service_tier\":\"standard\"}",
        );
        assert_ne!(tiered, STREAM);
        r.feed(now, tiered.as_bytes());
        while r.next_item().is_some() {}
        let report = r.take_report().unwrap();
        assert_eq!(report.service_tier.as_deref(), Some("standard"));
        assert_eq!(report.used_tokens, Some(5));
    }

    #[test]
    fn a_cut_stream_is_an_error() {
        let now = Instant::now();
        let mut r = reader(now);
        r.feed(
            now,
            &STREAM.as_bytes()[..STREAM.find("data: [DONE]").unwrap()],
        );
        while r.next_item().is_some() {}
        let err = r.end_of_input().unwrap();
        assert!(
            matches!(
                err,
                Error::Stream {
                    failure: StreamFailure::Cut,
                    ..
                }
            ),
            "{err}"
        );
        assert!(r.take_report().is_some());
    }

    #[test]
    fn a_stalled_stream_fails_after_the_idle_timeout_only() {
        let start = Instant::now();
        let mut r = reader(start);
        assert_eq!(r.read_timeout(start), Duration::from_secs(10));
        r.feed(start + Duration::from_secs(4), b"data: {\"id\":");
        assert_eq!(r.idle_deadline(), start + Duration::from_secs(14));
        assert!(
            r.idle_error(start + Duration::from_secs(13)).is_none(),
            "woke early"
        );
        let err = r.idle_error(start + Duration::from_secs(14)).unwrap();
        assert!(matches!(
            err,
            Error::Stream {
                failure: StreamFailure::Idle(_),
                ..
            }
        ));
        assert!(err.to_string().contains("corr"));
        assert!(r.next_item().is_none());
    }

    #[test]
    fn an_error_event_ends_the_stream_with_its_message() {
        let now = Instant::now();
        let mut r = reader(now);
        r.feed(now, b"data: {\"object\":\"error\",\"message\":\"Internal failure\",\"type\":\"internal_server_error\",\"code\":\"1000\"}\n\n");
        let err = r.next_item().unwrap().unwrap_err();
        assert!(err.to_string().contains("Internal failure"), "{err}");
        assert!(r.next_item().is_none());
    }

    #[test]
    fn a_429_after_the_first_chunk_is_classified_and_told_to_the_budget() {
        let first = &STREAM[..STREAM.find(": keep-alive").unwrap()];
        for (tail, origin, verdict) in [
            (
                "data: {\"error\":{\"message\":\"Rate limit exceeded\",\"type\":\"rate_limit_error\",\"code\":429,\"retry_after\":3}}\n\n",
                crate::Origin::Gateway(crate::Gateway::Proxy),
                Verdict::RateLimited,
            ),
            (
                "event: error\ndata: {\"object\":\"error\",\"message\":\"Rate limit exceeded\",\"type\":\"rate_limited\",\"code\":\"1300\",\"retry_after\":3}\n\n",
                crate::Origin::Mistral,
                Verdict::RateLimited,
            ),
        ] {
            let now = Instant::now();
            let mut r = reader(now);
            r.feed(now, format!("{first}{tail}").as_bytes());
            assert!(
                r.next_item().unwrap().is_ok(),
                "the first chunk is handed out"
            );
            let err = r.next_item().unwrap().unwrap_err();
            let Error::Stream {
                failure: StreamFailure::ServerError,
                event: Some(event),
                ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert!(matches!(**event, Error::RateLimited { .. }), "{event:?}");
            assert_eq!(err.origin(), origin);
            assert!(err.is_retryable() && !err.is_permanent());
            assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
            assert!(err.to_string().contains("Rate limit exceeded"), "{err}");
            assert!(r.next_item().is_none());
            let report = r.take_report().unwrap();
            assert_eq!((report.verdict, report.origin), (verdict, origin));
            assert_eq!(report.server_wait(), Some(Duration::from_secs(3)));
            assert_eq!((report.ticket, report.used_tokens), (None, None));
            assert!(r.take_report().is_none());
        }
    }

    #[test]
    fn a_spending_cap_inside_a_stream_is_permanent() {
        let now = Instant::now();
        let mut r = reader(now);
        r.feed(now, b"event: error\ndata: {\"error\":{\"message\":\"Budget has been exceeded!\",\"type\":\"budget_exceeded\"}}\n\n");
        let err = r.next_item().unwrap().unwrap_err();
        assert!(err.is_permanent() && !err.is_retryable(), "{err:?}");
        assert_eq!(
            err.origin(),
            crate::Origin::Gateway(crate::Gateway::LiteLlm)
        );
        assert_eq!(r.take_report().unwrap().verdict, Verdict::SpendingCap);
    }

    #[test]
    fn a_bad_event_is_an_error_not_a_panic() {
        let now = Instant::now();
        let mut r = reader(now);
        r.feed(now, b"data: {not json\n\n");
        assert!(matches!(
            r.next_item(),
            Some(Err(Error::Stream {
                failure: StreamFailure::BadEvent,
                ..
            }))
        ));
    }
}
