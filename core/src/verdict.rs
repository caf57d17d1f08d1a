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
//! | none of the above | [`Verdict::RateLimited`] (ambiguous) |
//!
//! Bodies may be JSON in any captured form, HTML, or empty: classification never fails
//! because a body does not parse.

use http::{HeaderMap, HeaderName, StatusCode};

use std::time::Duration;

use crate::error::{Error, ResponseInfo, Trail, TransportKind};
use crate::models::ApiErrorBody;
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
            // Mistral short of capacity is not the caller's limit; the others say
            // nothing about any limit.
            Verdict::Capacity
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
    /// Status, correlation id, body excerpt and rate limits.
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
                bucket: None,
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
    let limits = RateLimits::parse(headers);
    let parsed = if status.is_success() {
        None
    } else {
        ApiErrorBody::parse(body)
    };
    let verdict = match status.as_u16() {
        200..=299 => Verdict::Success,
        429 => classify_429(&limits, parsed.as_ref(), expected_cost),
        401 => Verdict::Unauthorized,
        403 => Verdict::Forbidden,
        408 => Verdict::RequestTimeout,
        400..=499 => Verdict::BadRequest,
        500 | 502..=504 => Verdict::ServerError { transient: true },
        500..=599 => Verdict::ServerError { transient: false },
        300..=399 => Verdict::Redirect,
        _ => Verdict::Unexpected,
    };
    let info = ResponseInfo {
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

fn classify_429(
    limits: &RateLimits,
    body: Option<&ApiErrorBody>,
    expected_cost: Option<u64>,
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
    Verdict::RateLimited
}

fn is_capacity(body: &ApiErrorBody) -> bool {
    body.kind.as_deref() == Some("service_tier_capacity_exceeded")
        || body.code.as_deref() == Some("3505")
        || body
            .message
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains("capacity exceeded"))
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
    use crate::ratelimits::{Bucket, Window};

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
