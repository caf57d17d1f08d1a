//! What an attempt came to: every response becomes a [`Verdict`] ([`classify`]), and
//! the same word goes from the call's decision through its report to the limiter.
//!
//! The table this implements is `mistral-api.md` §3. For a 429, in order:
//!
//! | what the 429 carries | verdict |
//! |---|---|
//! | type `service_tier_capacity_exceeded`, code `3505`, or a "capacity exceeded" message | [`Verdict::Capacity`] |
//! | a `limit-*` header equal to 0 | [`Verdict::NoAllowance`] |
//! | `remaining-*-month` = 0 | [`Verdict::MonthlyQuota`] |
//! | `remaining-*` = 0 for a minute / N-second window | [`Verdict::WindowSpent`] |
//! | `remaining-*-month` below this request's expected cost | [`Verdict::MonthlyQuota`] |
//! | a body that names a spending cap (`insufficient_quota`, `budget_exceeded`, "Budget has been exceeded"…) | [`Verdict::SpendingCap`] |
//! | none of the above | [`Verdict::RateLimited`] (ambiguous) |
//!
//! A spending cap is also what a 402, or a 400/403 whose body names one (LiteLLM's
//! `budget_exceeded` is a 400), means; and nginx's own 503 page (what `limit_req` sends
//! by default) is a gateway's rate limit ([`Verdict::RateLimited`]), not a server error.
//!
//! Every refusal also says who refused (`info.origin`: [`ResponseInfo::origin`], see
//! [`crate::origin`]), and a wait its body names (`retry_after`, `retry_after_ms`,
//! `retryDelay`) counts as a `Retry-After` header when the headers name none
//! ([`RateLimits::retry_after`]).
//!
//! An error that arrives inside a stream after its first chunk is classified the same
//! way ([`classify_event`]), with the status its body names.
//!
//! Bodies may be JSON in any captured form, HTML, or empty: classification never fails
//! because a body does not parse.

use http::{HeaderMap, HeaderName, StatusCode};

use std::time::Duration;

use crate::error::{Error, ResponseInfo, Trail, TransportKind};
use crate::models::ApiErrorBody;
use crate::origin::{
    Gateway, Origin, contains_ignore_ascii_case, is_spending_cap, mistral_bucket, origin_of,
};
use crate::ratelimits::{Quota, RateLimits};

/// What a response (or an attempt without one) means for the call that got it: the one
/// word [`classify`] gives, the call acts on, and its [`crate::Report`] hands to the
/// shared limiter. A new kind of response is a new variant here, its rule in
/// [`classify`], its error in [`Classification::into_error`], and what a limiter learns
/// from it in [`Verdict::limiter_signal`] (an exhaustive match: the compiler asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// 2xx.
    Success,
    /// 429: a pacing window (minute, N seconds) is spent. Wait for it.
    WindowSpent {
        /// The spent quota (remaining 0).
        quota: Quota,
    },
    /// 429 that does not say which limit (no headers): ambiguous.
    RateLimited,
    /// 429 with a limit of 0: this model has no allowance on this plan.
    NoAllowance {
        /// The zero quota.
        quota: Quota,
    },
    /// 429 with the monthly quota spent.
    MonthlyQuota {
        /// The monthly quota.
        quota: Quota,
    },
    /// 429 because Mistral is short of capacity (`3505`): not the caller's limit.
    Capacity,
    /// A spending cap is reached (a gateway's budget, an `insufficient_quota`, a monthly
    /// spend limit): no wait within a call fixes it; never retried.
    SpendingCap,
    /// 401: the key was refused.
    Unauthorized,
    /// 403: the key may not use this model.
    Forbidden,
    /// 408: the server gave up waiting for the request.
    RequestTimeout,
    /// Other 4xx (400, 404, 422…): the request is wrong (a 404: its URL; the error is
    /// [`Error::NotFound`]).
    BadRequest,
    /// 5xx.
    ServerError {
        /// `true` for 500, 502, 503 and 504, which another attempt may not get (the
        /// call retries them); `false` for the others (501 Not Implemented, 505 HTTP
        /// Version Not Supported, …), which it would.
        transient: bool,
    },
    /// 3xx: a redirect. Never followed (the `Authorization` header must not go where a
    /// response points); ends the call.
    Redirect,
    /// 1xx or another status this API does not send.
    Unexpected,
    /// No response at all (never from [`classify`]).
    Transport(TransportKind),
    /// The real token count of an earlier success, known only later (at the end of a
    /// stream): the limiter corrects the estimate with it (never from [`classify`]).
    Usage,
}

impl Verdict {
    /// A short name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::WindowSpent { .. } => "window_spent",
            Verdict::RateLimited => "rate_limited",
            Verdict::NoAllowance { .. } => "no_allowance",
            Verdict::MonthlyQuota { .. } => "monthly_quota",
            Verdict::Capacity => "capacity",
            Verdict::SpendingCap => "spending_cap",
            Verdict::Unauthorized => "unauthorized",
            Verdict::Forbidden => "forbidden",
            Verdict::RequestTimeout => "request_timeout",
            Verdict::BadRequest => "bad_request",
            Verdict::ServerError { .. } => "server_error",
            Verdict::Redirect => "redirect",
            Verdict::Unexpected => "unexpected",
            Verdict::Transport(_) => "transport",
            Verdict::Usage => "usage",
        }
    }

    /// The quota the verdict names (a spent window, a zero allowance, the month).
    pub fn quota(&self) -> Option<Quota> {
        match self {
            Verdict::WindowSpent { quota }
            | Verdict::NoAllowance { quota }
            | Verdict::MonthlyQuota { quota } => Some(*quota),
            _ => None,
        }
    }

    /// `true` for the 429 family that concerns the caller's own limits.
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            Verdict::WindowSpent { .. }
                | Verdict::RateLimited
                | Verdict::NoAllowance { .. }
                | Verdict::MonthlyQuota { .. }
        )
    }

    /// What a shared limiter learns from this verdict. Exhaustive on purpose: a new
    /// verdict must be given a signal here, so no limiter maps it to "nothing" by
    /// default.
    pub fn limiter_signal(&self) -> LimiterSignal {
        match self {
            Verdict::Success => LimiterSignal::Served,
            Verdict::WindowSpent { quota } => LimiterSignal::WindowSpent { quota: *quota },
            Verdict::RateLimited => LimiterSignal::RateLimited,
            Verdict::NoAllowance { .. } => LimiterSignal::NoAllowance,
            Verdict::MonthlyQuota { .. } => LimiterSignal::MonthlyQuota,
            Verdict::Usage => LimiterSignal::Usage,
            // Mistral short of capacity is not the caller's limit; a spending cap is the
            // gateway's (its key's, its team's), not the model's budget; the others say
            // nothing about any limit.
            Verdict::Capacity
            | Verdict::SpendingCap
            | Verdict::Unauthorized
            | Verdict::Forbidden
            | Verdict::RequestTimeout
            | Verdict::BadRequest
            | Verdict::ServerError { .. }
            | Verdict::Redirect
            | Verdict::Unexpected
            | Verdict::Transport(_) => LimiterSignal::Nothing,
        }
    }
}

/// What a [`Verdict`] tells a shared limiter about the budget ([`Verdict::limiter_signal`]).
///
/// Not `#[non_exhaustive]`, unlike [`Verdict`]: a limiter matches every case, and the
/// core decides which case each verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterSignal {
    /// The request was served: the answer's headers and usage say how much is left.
    Served,
    /// A pacing window is spent.
    WindowSpent {
        /// The spent quota.
        quota: Quota,
    },
    /// A 429 that did not say which limit.
    RateLimited,
    /// The model has no allowance on this plan: no wait fixes it.
    NoAllowance,
    /// The monthly quota is spent: no wait fixes it.
    MonthlyQuota,
    /// The real token count of an earlier success (the end of a stream).
    Usage,
    /// Nothing about the budget (a server error, Mistral's capacity, a refused key, a
    /// transport failure…).
    Nothing,
}

/// A classified response: the verdict and everything worth keeping from the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// What the response means.
    pub verdict: Verdict,
    /// The parsed error body, when the body was a JSON error.
    pub body: Option<ApiErrorBody>,
    /// Status, correlation id, body excerpt, rate limits and who refused
    /// ([`ResponseInfo::origin`]).
    pub info: ResponseInfo,
    /// A redirect's `Location` header, as sent (not yet redacted).
    pub location: Option<String>,
}

impl Classification {
    /// The error a refused attempt ends its call with, when it does (its trail is
    /// filled in by the call, and a 404's path): `model` is the call's, `wait` the retry
    /// it planned. Redact `info` and `location` first (the call does).
    pub fn into_error(self, model: Option<&str>, wait: Option<Duration>) -> Error {
        let c = self;
        let info = c.info;
        let response = Box::new(info);
        match c.verdict {
            Verdict::WindowSpent { quota } => Error::RateLimited {
                bucket: Some(quota.bucket),
                window: Some(quota.window),
                limit: quota.limit,
                remaining: quota.remaining,
                retry_after: wait.or(response.limits.retry_after),
                shared: false,
                trail: Trail::default(),
                response,
            },
            Verdict::RateLimited => Error::RateLimited {
                bucket: c.body.as_ref().and_then(mistral_bucket),
                window: None,
                limit: None,
                remaining: None,
                retry_after: response.limits.retry_after.or(wait),
                shared: false,
                trail: Trail::default(),
                response,
            },
            Verdict::NoAllowance { quota } => Error::NoAllowance {
                model: model.map(str::to_owned),
                bucket: Some(quota.bucket),
                response,
            },
            Verdict::MonthlyQuota { quota } => Error::MonthlyQuota {
                limit: quota.limit,
                remaining: quota.remaining,
                response,
            },
            Verdict::Capacity => Error::Capacity {
                trail: Trail::default(),
                response,
            },
            Verdict::SpendingCap => Error::SpendingCap { response },
            Verdict::Unauthorized => Error::Unauthorized { response },
            Verdict::Forbidden => Error::Forbidden { response },
            Verdict::BadRequest if response.status == Some(http::StatusCode::NOT_FOUND) => {
                Error::NotFound {
                    path: String::new(),
                    response,
                }
            }
            Verdict::BadRequest | Verdict::RequestTimeout => Error::BadRequest {
                details: c.body.map(|b| b.detail).unwrap_or_default(),
                response,
            },
            Verdict::Redirect => Error::Redirect {
                location: c.location,
                response,
            },
            Verdict::Success
            | Verdict::ServerError { .. }
            | Verdict::Unexpected
            | Verdict::Transport(_)
            | Verdict::Usage => Error::Server {
                trail: Trail::default(),
                response,
            },
        }
    }
}

/// Classifies one response.
///
/// `expected_cost` is the number of tokens the request is expected to use; it lets a
/// monthly quota whose remainder is below the cost be told from a passing refusal.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expected_cost: Option<u64>,
) -> Classification {
    let mut limits = RateLimits::parse(headers);
    let parsed = if status.is_success() {
        None
    } else {
        ApiErrorBody::parse(body)
    };
    let origin = match status.is_success() {
        true => Origin::Unknown,
        false => origin_of(headers, &limits, body, parsed.as_ref()),
    };
    // A wait the body names counts as a header's (the headers' own comes first).
    limits.retry_after = limits
        .retry_after
        .or(parsed.as_ref().and_then(|b| b.retry_after));
    let cap = parsed.as_ref().is_some_and(is_spending_cap);
    let verdict = match status.as_u16() {
        200..=299 => Verdict::Success,
        429 => classify_429(&limits, parsed.as_ref(), expected_cost, cap),
        402 => Verdict::SpendingCap,
        400 | 403 if cap => Verdict::SpendingCap,
        401 => Verdict::Unauthorized,
        403 => Verdict::Forbidden,
        408 => Verdict::RequestTimeout,
        400..=499 => Verdict::BadRequest,
        503 if origin == Origin::Gateway(Gateway::Nginx) => Verdict::RateLimited,
        500 | 502..=504 => Verdict::ServerError { transient: true },
        500..=599 => Verdict::ServerError { transient: false },
        300..=399 => Verdict::Redirect,
        _ => Verdict::Unexpected,
    };
    let info = ResponseInfo {
        origin,
        status: Some(status),
        correlation_id: correlation_id(headers, parsed.as_ref()),
        code: parsed.as_ref().and_then(|b| b.code.clone()),
        message: parsed.as_ref().and_then(|b| b.message.clone()),
        excerpt: if status.is_success() {
            String::new()
        } else {
            excerpt(body)
        },
        limits,
    };
    let location = (verdict == Verdict::Redirect)
        .then(|| headers.get(http::header::LOCATION))
        .flatten()
        .map(|l| bounded(&String::from_utf8_lossy(l.as_bytes()), 256));
    Classification {
        verdict,
        body: parsed,
        info,
        location,
    }
}

/// A 429's verdict; `cap`: its body says a spending cap is reached.
fn classify_429(
    limits: &RateLimits,
    body: Option<&ApiErrorBody>,
    expected_cost: Option<u64>,
    cap: bool,
) -> Verdict {
    if body.is_some_and(is_capacity) {
        return Verdict::Capacity;
    }
    if let Some(quota) = limits.quotas.iter().find(|q| q.limit == Some(0)) {
        return Verdict::NoAllowance { quota: *quota };
    }
    let month = limits.quotas.iter().find(|q| q.window.is_month());
    if let Some(quota) = month.filter(|q| q.is_spent()) {
        return Verdict::MonthlyQuota { quota: *quota };
    }
    // Of the spent pacing windows, the one that takes longest to come back decides.
    let spent = limits
        .quotas
        .iter()
        .filter(|q| !q.window.is_month() && q.is_spent())
        .max_by_key(|q| q.window);
    if let Some(quota) = spent {
        return Verdict::WindowSpent { quota: *quota };
    }
    if let (Some(quota), Some(cost)) = (month, expected_cost)
        && quota.remaining.is_some_and(|r| r < cost)
    {
        return Verdict::MonthlyQuota { quota: *quota };
    }
    if cap {
        return Verdict::SpendingCap;
    }
    Verdict::RateLimited
}

/// Classifies an error that arrived inside a stream after its first chunk (an SSE
/// `data: {"error":…}`, a `data: {"object":"error",…}` or any `event: error`) the way
/// [`classify`] classifies a response: with the status the body names
/// ([`event_status`]), no headers (the stream's head was a success) and the event's
/// data as the body. Data that names no status is classified as a 500 (a server error).
pub fn classify_event(data: &str, expected_cost: Option<u64>) -> Classification {
    let parsed = ApiErrorBody::parse(data.as_bytes());
    let status = parsed
        .as_ref()
        .and_then(event_status)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    classify(status, &HeaderMap::new(), data.as_bytes(), expected_cost)
}

/// The HTTP status an error event's body names: `raw_status_code`, a numeric `code` of
/// 400–599 (`"code": 429`), Google's `status` (`RESOURCE_EXHAUSTED` is 429,
/// `UNAVAILABLE` 503), or a type or code that names a rate limit (`rate_limited`,
/// `rate_limit_error`, `1300`: 429), a capacity shortage (`3505`, `overloaded_error`:
/// 429 with the capacity type, 503 otherwise), a spending cap (402) or a server error
/// (`server_error`, `internal_server_error`, `api_error`: 500).
pub fn event_status(b: &ApiErrorBody) -> Option<StatusCode> {
    let from = |n: u64| {
        u16::try_from(n)
            .ok()
            .filter(|n| (400..=599).contains(n))
            .and_then(|n| StatusCode::from_u16(n).ok())
    };
    if let Some(s) = b.raw_status_code.and_then(|n| from(u64::from(n))) {
        return Some(s);
    }
    if let Some(s) = b
        .code
        .as_deref()
        .and_then(|c| c.parse().ok())
        .and_then(from)
    {
        return Some(s);
    }
    let named = |v: &Option<String>, names: &[&str]| {
        v.as_deref()
            .is_some_and(|k| names.contains(&k.to_ascii_lowercase().as_str()))
    };
    let status = match () {
        _ if named(&b.status, &["resource_exhausted"]) => 429,
        _ if named(&b.status, &["unavailable"]) => 503,
        _ if is_spending_cap(b) => 402,
        _ if is_capacity(b) => 429,
        _ if named(&b.kind, &["overloaded_error", "overloaded"]) => 503,
        _ if named(
            &b.kind,
            &[
                "rate_limited",
                "rate_limit_error",
                "rate_limit_exceeded",
                "too_many_requests",
                "requests",
                "tokens",
            ],
        ) || named(&b.code, &["1300", "rate_limit_exceeded"])
            || mistral_bucket(b).is_some() =>
        {
            429
        }
        _ => return None,
    };
    StatusCode::from_u16(status).ok()
}

fn is_capacity(body: &ApiErrorBody) -> bool {
    body.kind.as_deref() == Some("service_tier_capacity_exceeded")
        || body.code.as_deref() == Some("3505")
        || body
            .message
            .as_deref()
            .is_some_and(|m| contains_ignore_ascii_case(m, "capacity exceeded"))
}

fn correlation_id(headers: &HeaderMap, body: Option<&ApiErrorBody>) -> Option<String> {
    // Names known at compile time: a lookup by `&str` would parse the name each time.
    const NAMES: [HeaderName; 3] = [
        HeaderName::from_static("mistral-correlation-id"),
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("x-kong-request-id"),
    ];
    NAMES
        .iter()
        .find_map(|name| headers.get(name)?.to_str().ok())
        .map(|s| bounded(s, 128))
        .or_else(|| body.and_then(|b| b.request_id.clone()))
}

/// The start of a body as readable text: lossy UTF-8, whitespace runs collapsed, at
/// most [`ResponseInfo::EXCERPT_LIMIT`] bytes.
pub fn excerpt(body: &[u8]) -> String {
    match plain_excerpt(body) {
        Some(text) => text.to_owned(),
        None => general_excerpt(body),
    }
}

/// [`excerpt`] of any body.
fn general_excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(ResponseInfo::EXCERPT_LIMIT * 2)];
    let text = String::from_utf8_lossy(head);
    let limit = ResponseInfo::EXCERPT_LIMIT;
    let mut out = String::with_capacity(text.len().min(limit) + 3);
    let mut truncated = head.len() < body.len();
    for word in text.split_whitespace() {
        let gap = usize::from(!out.is_empty());
        if out.len() + gap + word.len() > limit {
            if out.len() + gap < limit {
                if gap == 1 {
                    out.push(' ');
                }
                out.push_str(&bounded(word, limit - out.len()));
            }
            truncated = true;
            break;
        }
        if gap == 1 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if truncated {
        out.push('…');
    }
    out
}

/// A body that is already its own excerpt: short enough, ASCII, with no whitespace but
/// single spaces between words (what a JSON error body usually is).
fn plain_excerpt(body: &[u8]) -> Option<&str> {
    // ASCII whitespace is `\t`..=`\r` and the space (what `split_whitespace` splits on,
    // for ASCII).
    let plain = body.len() <= ResponseInfo::EXCERPT_LIMIT
        && body.is_ascii()
        && body.first() != Some(&b' ')
        && body.last() != Some(&b' ')
        && memchr::memchr3(b'\t', b'\n', b'\r', body).is_none()
        && memchr::memchr2(0x0b, 0x0c, body).is_none()
        && !memchr::memchr_iter(b' ', body).any(|at| body.get(at + 1) == Some(&b' '));
    plain.then(|| std::str::from_utf8(body).ok()).flatten()
}

fn bounded(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimits::{Bucket, MAX_HINT, Window};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn verdict(status: u16, pairs: &[(&str, &str)], body: &str) -> Verdict {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            body.as_bytes(),
            Some(100),
        )
        .verdict
    }

    const GATEWAY_429: &str = r#"{"message":"Requests rate limit exceeded"}"#;
    const CODE_1300: &str = r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}"#;
    const CODE_1300_BARE: &str = r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300"}"#;
    const CAPACITY: &str = r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"service_tier_capacity_exceeded","param":null,"code":"3505"}"#;
    const CAPACITY_OLD: &str = r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"invalid_request_error","param":null,"code":null}"#;

    fn quota(bucket: Bucket, window: Window, limit: u64, remaining: Option<u64>) -> Quota {
        Quota {
            bucket,
            window,
            limit: Some(limit),
            remaining,
        }
    }

    #[test]
    fn row_429_gateway_form_without_headers_is_ambiguous() {
        assert_eq!(verdict(429, &[], GATEWAY_429), Verdict::RateLimited);
    }

    #[test]
    fn row_429_code_1300_without_headers_is_ambiguous() {
        assert_eq!(verdict(429, &[], CODE_1300), Verdict::RateLimited);
        assert_eq!(verdict(429, &[], CODE_1300_BARE), Verdict::RateLimited);
    }

    #[test]
    fn row_429_capacity_in_both_forms() {
        assert_eq!(verdict(429, &[], CAPACITY), Verdict::Capacity);
        assert_eq!(verdict(429, &[], CAPACITY_OLD), Verdict::Capacity);
        // Capacity is not the caller's limit even when limit headers come along.
        let h = [
            ("x-ratelimit-limit-req-minute", "50"),
            ("x-ratelimit-remaining-req-minute", "20"),
        ];
        assert_eq!(verdict(429, &h, CAPACITY), Verdict::Capacity);
    }

    #[test]
    fn row_429_zero_allowance() {
        let h = [
            ("x-ratelimit-limit-req-minute", "0"),
            ("x-ratelimit-remaining-req-minute", "0"),
        ];
        assert_eq!(
            verdict(429, &h, CODE_1300),
            Verdict::NoAllowance {
                quota: quota(Bucket::Requests, Window::MINUTE, 0, Some(0))
            }
        );
        let tokens = [("x-ratelimit-limit-tokens-minute", "0")];
        assert!(matches!(
            verdict(429, &tokens, GATEWAY_429),
            Verdict::NoAllowance { .. }
        ));
    }

    #[test]
    fn row_429_monthly_quota() {
        let h = [
            ("x-ratelimit-limit-tokens-minute", "50000"),
            ("x-ratelimit-remaining-tokens-minute", "42000"),
            ("x-ratelimit-limit-tokens-month", "1000000"),
            ("x-ratelimit-remaining-tokens-month", "0"),
        ];
        assert_eq!(
            verdict(429, &h, CODE_1300),
            Verdict::MonthlyQuota {
                quota: quota(Bucket::Tokens, Window::Month, 1_000_000, Some(0))
            }
        );
        // Early-2025 names.
        let early = [
            ("x-ratelimitbysize-limit-month", "1000000"),
            ("x-ratelimitbysize-remaining-month", "0"),
        ];
        assert!(matches!(
            verdict(429, &early, GATEWAY_429),
            Verdict::MonthlyQuota { .. }
        ));
    }

    #[test]
    fn row_429_month_below_the_request_cost() {
        let h = [
            ("x-ratelimit-limit-tokens-month", "1000000"),
            ("x-ratelimit-remaining-tokens-month", "40"),
        ];
        assert!(matches!(
            verdict(429, &h, CODE_1300),
            Verdict::MonthlyQuota { .. }
        ));
        let enough = [
            ("x-ratelimit-limit-tokens-month", "1000000"),
            ("x-ratelimit-remaining-tokens-month", "4000"),
        ];
        assert_eq!(verdict(429, &enough, CODE_1300), Verdict::RateLimited);
    }

    #[test]
    fn row_429_request_window_spent() {
        let h = [
            ("x-ratelimit-limit-req-minute", "4"),
            ("x-ratelimit-remaining-req-minute", "0"),
        ];
        assert_eq!(
            verdict(429, &h, CODE_1300),
            Verdict::WindowSpent {
                quota: quota(Bucket::Requests, Window::MINUTE, 4, Some(0))
            }
        );
    }

    #[test]
    fn row_429_token_window_spent() {
        let h = [
            ("x-ratelimit-limit-tokens-minute", "50000"),
            ("x-ratelimit-remaining-tokens-minute", "0"),
            ("x-ratelimit-limit-tokens-month", "1000000"),
            ("x-ratelimit-remaining-tokens-month", "500000"),
        ];
        assert_eq!(
            verdict(429, &h, GATEWAY_429),
            Verdict::WindowSpent {
                quota: quota(Bucket::Tokens, Window::MINUTE, 50_000, Some(0))
            }
        );
    }

    #[test]
    fn row_429_late_2025_ten_second_window() {
        let h = [
            ("x-ratelimit-limit-req-10-second", "10"),
            ("x-ratelimit-remaining-req-10-second", "0"),
        ];
        assert_eq!(
            verdict(429, &h, CODE_1300),
            Verdict::WindowSpent {
                quota: quota(Bucket::Requests, Window::Seconds(10), 10, Some(0))
            }
        );
    }

    #[test]
    fn row_401_both_forms() {
        assert_eq!(
            verdict(401, &[], r#"{"detail":"Unauthorized"}"#),
            Verdict::Unauthorized
        );
        let c = classify(
            StatusCode::UNAUTHORIZED,
            &headers(&[("www-authenticate", "Key")]),
            br#"{"message":"Unauthorized","request_id":"abc123"}"#,
            None,
        );
        assert_eq!(c.verdict, Verdict::Unauthorized);
        assert_eq!(c.info.correlation_id.as_deref(), Some("abc123"));
    }

    #[test]
    fn row_400_with_codes() {
        for (body, code) in [
            (
                r#"{"object":"error","message":"Invalid model: bad model","type":"invalid_model","param":null,"code":"1500"}"#,
                "1500",
            ),
            (
                r#"{"object":"error","message":"Unexpected role","type":"invalid_request_message_order","param":null,"code":"3230"}"#,
                "3230",
            ),
            (
                r#"{"object":"error","message":"Invalid args","type":"invalid_request_invalid_args","param":null,"code":"3051"}"#,
                "3051",
            ),
        ] {
            let c = classify(
                StatusCode::BAD_REQUEST,
                &HeaderMap::new(),
                body.as_bytes(),
                None,
            );
            assert_eq!(c.verdict, Verdict::BadRequest);
            assert_eq!(c.info.code.as_deref(), Some(code));
            assert!(c.info.message.is_some());
        }
    }

    #[test]
    fn row_403() {
        let body = r#"{"object":"error","message":"Model not allowed","type":"forbidden","param":null,"code":"1913"}"#;
        let c = classify(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            body.as_bytes(),
            None,
        );
        assert_eq!(c.verdict, Verdict::Forbidden);
        assert_eq!(c.info.code.as_deref(), Some("1913"));
    }

    #[test]
    fn row_404_gateway() {
        let c = classify(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            br#"{"message":"no Route matched with those values"}"#,
            None,
        );
        assert_eq!(c.verdict, Verdict::BadRequest);
        assert_eq!(c.info.status_u16(), Some(404));
        // Not a "bad request": the URL is wrong, and the error says where to look.
        let e = c.into_error(None, None);
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(e.is_permanent() && !e.is_retryable());
        let text = e.to_string();
        assert!(text.starts_with("not found (404)"), "{text}");
        assert!(
            text.contains("base URL") && text.contains("no Route matched"),
            "{text}"
        );
    }

    #[test]
    fn row_422_both_forms() {
        let plain = r#"{"detail":[{"type":"extra_forbidden","loc":["body","foo"],"msg":"Extra inputs are not permitted","input":1}]}"#;
        let wrapped = r#"{"object":"error","message":{"detail":[{"type":"missing","loc":["body","model"],"msg":"Field required","input":{}}]},"type":"invalid_request_error","param":null,"code":null,"raw_status_code":422}"#;
        for body in [plain, wrapped] {
            let c = classify(
                StatusCode::UNPROCESSABLE_ENTITY,
                &HeaderMap::new(),
                body.as_bytes(),
                None,
            );
            assert_eq!(c.verdict, Verdict::BadRequest);
            assert_eq!(c.body.unwrap().detail.len(), 1, "{body}");
        }
    }

    #[test]
    fn row_5xx() {
        let body = r#"{"object":"error","message":"Service unavailable.","type":"internal_server_error","param":null,"code":"1000"}"#;
        for status in [500, 502, 503, 504] {
            assert_eq!(
                verdict(status, &[], body),
                Verdict::ServerError { transient: true }
            );
        }
        assert_eq!(
            verdict(500, &[], &body.replace("1000", "3000")),
            Verdict::ServerError { transient: true }
        );
        for status in [501, 505, 520, 599] {
            assert_eq!(
                verdict(status, &[], body),
                Verdict::ServerError { transient: false }
            );
        }
    }

    #[test]
    fn row_html_and_empty_bodies() {
        let html =
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>cloudflare</body></html>";
        let c = classify(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            html.as_bytes(),
            None,
        );
        assert_eq!(c.verdict, Verdict::ServerError { transient: true });
        assert!(c.body.is_none());
        assert!(
            c.info
                .excerpt
                .starts_with("<html> <head><title>502 Bad Gateway")
        );
        assert_eq!(verdict(429, &[], ""), Verdict::RateLimited);
        assert_eq!(
            verdict(429, &[], "<html>Too Many Requests</html>"),
            Verdict::RateLimited
        );
        assert_eq!(
            verdict(503, &[], ""),
            Verdict::ServerError { transient: true }
        );
    }

    #[test]
    fn success_keeps_limits_and_correlation_id() {
        let c = classify(
            StatusCode::OK,
            &headers(&[
                ("mistral-correlation-id", "corr-1"),
                ("x-ratelimit-limit-req-minute", "50"),
                ("x-ratelimit-remaining-req-minute", "49"),
            ]),
            b"{}",
            None,
        );
        assert_eq!(c.verdict, Verdict::Success);
        assert_eq!(c.info.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(c.info.limits.requests().unwrap().remaining, Some(49));
    }

    #[test]
    fn each_verdict_tells_a_limiter_what_it_learns() {
        let spent = quota(Bucket::Requests, Window::MINUTE, 4, Some(0));
        for (verdict, signal) in [
            (Verdict::Success, LimiterSignal::Served),
            (
                Verdict::WindowSpent { quota: spent },
                LimiterSignal::WindowSpent { quota: spent },
            ),
            (Verdict::RateLimited, LimiterSignal::RateLimited),
            (
                Verdict::NoAllowance { quota: spent },
                LimiterSignal::NoAllowance,
            ),
            (
                Verdict::MonthlyQuota { quota: spent },
                LimiterSignal::MonthlyQuota,
            ),
            (Verdict::Usage, LimiterSignal::Usage),
            // Mistral's capacity is not the caller's limit.
            (Verdict::Capacity, LimiterSignal::Nothing),
            (
                Verdict::ServerError { transient: true },
                LimiterSignal::Nothing,
            ),
            (
                Verdict::Transport(TransportKind::Reset),
                LimiterSignal::Nothing,
            ),
        ] {
            assert_eq!(verdict.limiter_signal(), signal, "{verdict:?}");
        }
    }

    // ---- Who refused (item: a 429's origin, kept). ----

    const NGINX_429: &str = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n";
    const NGINX_503: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
    const CLOUDFLARE_429: &str = "<!DOCTYPE html><html><head><title>Access denied | api.example.com used Cloudflare to restrict access</title></head><body><h1>Error 1015</h1><p>You are being rate limited</p></body></html>";
    const LITELLM_429: &str = r#"{"error":{"message":"Rate limit exceeded for key: sk-...abcd. Limit type: requests. Current limit: 10, Remaining: 0.","type":"rate_limit_error","param":null,"code":"429"}}"#;
    const LITELLM_BUDGET: &str = r#"{"error":{"message":"Budget has been exceeded! Current cost: 10.02, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"400"}}"#;
    const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    const GOOGLE_429: &str = r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Generate Content API requests per minute'","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}]}}"#;

    fn classified(status: u16, pairs: &[(&str, &str)], body: &str) -> Classification {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            body.as_bytes(),
            Some(100),
        )
    }

    /// One row: `(status, headers, body, verdict, origin)`.
    type Row<'a> = (u16, &'a [(&'a str, &'a str)], &'a str, Verdict, Origin);

    /// One row per form a refusal takes.
    #[test]
    fn rows_who_refused() {
        let nginx = Origin::Gateway(Gateway::Nginx);
        let window = [
            ("x-ratelimit-limit-req-minute", "4"),
            ("x-ratelimit-remaining-req-minute", "0"),
        ];
        let rows: Vec<Row<'_>> = vec![
            (429, &[], CODE_1300, Verdict::RateLimited, Origin::Mistral),
            (
                429,
                &[],
                CODE_1300_BARE,
                Verdict::RateLimited,
                Origin::Mistral,
            ),
            (429, &[], GATEWAY_429, Verdict::RateLimited, Origin::Mistral),
            (429, &[], CAPACITY, Verdict::Capacity, Origin::Mistral),
            (
                429,
                &window,
                "",
                Verdict::WindowSpent {
                    quota: quota(Bucket::Requests, Window::MINUTE, 4, Some(0)),
                },
                Origin::Mistral,
            ),
            (429, &[], "", Verdict::RateLimited, Origin::Unknown),
            (429, &[], NGINX_429, Verdict::RateLimited, nginx),
            (503, &[], NGINX_503, Verdict::RateLimited, nginx),
            // Mistral's window headers passed through do not make nginx's page Mistral's.
            (
                429,
                &window,
                NGINX_429,
                Verdict::WindowSpent {
                    quota: quota(Bucket::Requests, Window::MINUTE, 4, Some(0)),
                },
                nginx,
            ),
            (
                429,
                &[("server", "cloudflare"), ("cf-ray", "8a1b2c3d4e5f-CDG")],
                CLOUDFLARE_429,
                Verdict::RateLimited,
                Origin::Gateway(Gateway::Cloudflare),
            ),
            (
                429,
                &[("x-envoy-ratelimited", "true")],
                "",
                Verdict::RateLimited,
                Origin::Gateway(Gateway::Envoy),
            ),
            (
                429,
                &[],
                "local_rate_limited",
                Verdict::RateLimited,
                Origin::Gateway(Gateway::Envoy),
            ),
            (
                429,
                &[],
                LITELLM_429,
                Verdict::RateLimited,
                Origin::Gateway(Gateway::Proxy),
            ),
            (
                429,
                &[("x-litellm-version", "1.74.0")],
                LITELLM_429,
                Verdict::RateLimited,
                Origin::Gateway(Gateway::LiteLlm),
            ),
            (
                429,
                &[],
                r#"{"error":{"message":"Too many requests","type":"rate_limit_error"}}"#,
                Verdict::RateLimited,
                Origin::Gateway(Gateway::Proxy),
            ),
            (
                429,
                &[],
                GOOGLE_429,
                Verdict::RateLimited,
                Origin::Gateway(Gateway::Proxy),
            ),
            // Spending caps: never a wait.
            (
                400,
                &[],
                LITELLM_BUDGET,
                Verdict::SpendingCap,
                Origin::Gateway(Gateway::LiteLlm),
            ),
            (
                429,
                &[],
                LITELLM_BUDGET,
                Verdict::SpendingCap,
                Origin::Gateway(Gateway::LiteLlm),
            ),
            (
                429,
                &[],
                OPENAI_QUOTA,
                Verdict::SpendingCap,
                Origin::Gateway(Gateway::Proxy),
            ),
            (402, &[], "", Verdict::SpendingCap, Origin::Unknown),
            (
                429,
                &[],
                r#"{"message":"Monthly limit reached for this workspace"}"#,
                Verdict::SpendingCap,
                Origin::Unknown,
            ),
            (
                403,
                &[],
                r#"{"error":"quota exceeded for this key"}"#,
                Verdict::SpendingCap,
                Origin::Gateway(Gateway::Proxy),
            ),
            // A 403 that names no cap stays a 403; a plain 503 a server error.
            (
                403,
                &[],
                r#"{"object":"error","message":"Model not allowed","type":"forbidden","param":null,"code":"1913"}"#,
                Verdict::Forbidden,
                Origin::Mistral,
            ),
            (
                503,
                &[],
                "upstream connect error",
                Verdict::ServerError { transient: true },
                Origin::Unknown,
            ),
        ];
        for (status, pairs, body, verdict, origin) in rows {
            let c = classified(status, pairs, body);
            assert_eq!(
                (c.verdict, c.info.origin),
                (verdict, origin),
                "{status} {pairs:?} {body}"
            );
        }
    }

    #[test]
    fn the_errors_say_who_refused_and_which_limit() {
        let e = classified(429, &[], NGINX_429).into_error(None, Some(Duration::from_secs(1)));
        assert_eq!(e.origin(), Origin::Gateway(Gateway::Nginx));
        assert!(
            e.to_string()
                .contains("refused by a gateway in between (nginx)"),
            "{e}"
        );
        assert!(e.is_retryable());
        // Mistral's gateway form names its bucket even without headers.
        let e = classified(429, &[], GATEWAY_429).into_error(None, None);
        assert!(
            matches!(
                e,
                Error::RateLimited {
                    bucket: Some(Bucket::Requests),
                    window: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("by the requests limit"), "{e}");
        assert!(e.to_string().contains("refused by the Mistral API"), "{e}");
        // A spending cap is permanent, and says so.
        let e = classified(400, &[], LITELLM_BUDGET).into_error(Some("m"), None);
        assert!(matches!(e, Error::SpendingCap { .. }), "{e:?}");
        assert!(e.is_permanent() && !e.is_retryable());
        let text = e.to_string();
        assert!(
            text.starts_with("spending cap reached at a gateway in between (LiteLLM)"),
            "{text}"
        );
        assert!(
            text.contains("retrying will not help") && text.contains("Budget has been exceeded"),
            "{text}"
        );
        assert_eq!(
            Verdict::SpendingCap.limiter_signal(),
            LimiterSignal::Nothing
        );
    }

    #[test]
    fn rows_retry_hints_in_bodies_count_like_headers() {
        let hint = |status: u16, pairs: &[(&str, &str)], body: &str| {
            classified(status, pairs, body).info.limits.retry_after
        };
        let secs = Duration::from_secs;
        for (body, want) in [
            (
                r#"{"error":{"message":"slow down","type":"rate_limit_error","retry_after":7}}"#,
                Some(secs(7)),
            ),
            (
                r#"{"error":{"message":"slow down"},"retry_after":"3"}"#,
                Some(secs(3)),
            ),
            (
                r#"{"message":"slow down","retry_after_ms":1500}"#,
                Some(Duration::from_millis(1500)),
            ),
            (
                r#"{"message":"x","retry_after":9,"retry_after_ms":250}"#,
                Some(Duration::from_millis(250)),
            ),
            (
                r#"{"error":{"message":"x","retryDelay":"1.5s"}}"#,
                Some(Duration::from_millis(1500)),
            ),
            (
                r#"{"error":{"message":"x","retryDelay":"500ms"}}"#,
                Some(Duration::from_millis(500)),
            ),
            (GOOGLE_429, Some(secs(30))),
            // Absurd values: clamped to a day, or ignored.
            (r#"{"message":"x","retry_after":1e30}"#, Some(MAX_HINT)),
            (
                r#"{"message":"x","retry_after":"99999999999999999999s"}"#,
                Some(MAX_HINT),
            ),
            (r#"{"message":"x","retry_after":-5}"#, None),
            (r#"{"message":"x","retry_after":"soon"}"#, None),
            (r#"{"message":"x","retry_after":"inf"}"#, None),
            (r#"{"message":"x","retry_after":"NaN"}"#, None),
            (r#"{"message":"x","retry_after":true}"#, None),
            (r#"{"message":"x","retry_after":[1]}"#, None),
            (CODE_1300, None),
        ] {
            assert_eq!(hint(429, &[], body), want, "{body}");
        }
        // A header's own wait comes first.
        let body = r#"{"error":{"message":"x","retry_after":7}}"#;
        assert_eq!(hint(429, &[("retry-after", "2")], body), Some(secs(2)));
        // And the call waits it out: a server hint, longer than its backoff.
        let e = classified(429, &[], body).into_error(None, None);
        assert_eq!(e.retry_after(), Some(secs(7)));
    }

    #[test]
    fn rows_error_events_inside_a_stream() {
        let event = |data: &str| {
            let c = classify_event(data, Some(10));
            (c.verdict, c.info.origin, c.info.limits.retry_after)
        };
        let proxy = Origin::Gateway(Gateway::Proxy);
        for (data, want) in [
            (CODE_1300, (Verdict::RateLimited, Origin::Mistral, None)),
            (
                CODE_1300_BARE,
                (Verdict::RateLimited, Origin::Mistral, None),
            ),
            (CAPACITY, (Verdict::Capacity, Origin::Mistral, None)),
            (
                r#"{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","code":429,"retry_after":2}}"#,
                (Verdict::RateLimited, proxy, Some(Duration::from_secs(2))),
            ),
            (
                r#"{"error":{"message":"Too many requests","type":"rate_limit_error"}}"#,
                (Verdict::RateLimited, proxy, None),
            ),
            (
                GOOGLE_429,
                (Verdict::RateLimited, proxy, Some(Duration::from_secs(30))),
            ),
            (
                LITELLM_BUDGET,
                (
                    Verdict::SpendingCap,
                    Origin::Gateway(Gateway::LiteLlm),
                    None,
                ),
            ),
            (OPENAI_QUOTA, (Verdict::SpendingCap, proxy, None)),
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                (Verdict::ServerError { transient: true }, proxy, None),
            ),
            (
                r#"{"object":"error","message":"Service unavailable.","type":"internal_server_error","param":null,"code":"1000"}"#,
                (
                    Verdict::ServerError { transient: true },
                    Origin::Mistral,
                    None,
                ),
            ),
            (
                "not json",
                (
                    Verdict::ServerError { transient: true },
                    Origin::Unknown,
                    None,
                ),
            ),
        ] {
            assert_eq!(event(data), want, "{data}");
        }
    }

    proptest::proptest! {
        /// The shortcut for a plain body gives what the general rule gives.
        #[test]
        fn a_plain_excerpt_is_the_general_one(
            body in "[ a-z{}\"\t\n\r\x0b\x0cé\u{a0}\u{3000}]{0,8}|[ a-z]{190,1100}"
        ) {
            if let Some(plain) = plain_excerpt(body.as_bytes()) {
                proptest::prop_assert_eq!(plain, general_excerpt(body.as_bytes()));
            }
            proptest::prop_assert_eq!(excerpt(body.as_bytes()), general_excerpt(body.as_bytes()));
        }
    }

    #[test]
    fn excerpt_is_bounded_and_marks_truncation() {
        let long = "x".repeat(10_000);
        let e = excerpt(long.as_bytes());
        assert!(e.len() <= ResponseInfo::EXCERPT_LIMIT + '…'.len_utf8());
        assert!(e.ends_with('…'));
        let multibyte = "é".repeat(1000);
        assert!(excerpt(multibyte.as_bytes()).ends_with('…'));
        assert_eq!(excerpt(b"\xff\xfe"), "\u{fffd}\u{fffd}");
    }
}
