//! Rate-limit headers, parsed by name pattern into a [`RateLimits`] snapshot.
//!
//! Mistral renamed its headers four times (see `mistral-api.md` §2), so nothing here
//! depends on one particular name. Recognised, case-insensitively:
//!
//! - `x-ratelimit-(limit|remaining)-(req|requests|tokens|ocr-pages|pages)-<window>`,
//!   where `<window>` is `second`, `minute`, `hour`, `day`, `month`, `N-second(s)`,
//!   `N-minute(s)`, `N-hour(s)` (`ocr-pages`: the pages per minute of `/v1/ocr`);
//! - `x-ratelimitbysize-(limit|remaining)-(minute|month)` (tokens, early 2025);
//! - `ratelimitbysize-limit`, `ratelimitbysize-remaining` (tokens per minute),
//!   `ratelimitbysize-reset` (seconds until the minute window resets);
//! - `x-ratelimit-ocr-pages-query-cost` (pages charged for this OCR request) and any
//!   other `…query-cost` header (tokens charged for this request);
//! - `Retry-After` (delta-seconds, or an HTTP-date measured against the response's own
//!   `Date` header) and `retry-after-ms`;
//! - `Date` (the server's clock: when a calendar month ends, for the quota forecast).
//!
//! Values that are not decimal numbers are ignored; absurd ones are clamped, never
//! trusted to overflow anything.

use std::time::Duration;

use http::{HeaderMap, HeaderName, header};

/// Longest server hint taken at face value (a day). Longer hints are clamped to it.
pub const MAX_HINT: Duration = Duration::from_secs(86_400);

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Requests.
    Requests,
    /// Tokens (prompt and completion together).
    Tokens,
    /// Pages of documents read by OCR (`/v1/ocr`: `x-ratelimit-*-ocr-pages-minute`).
    Pages,
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bucket::Requests => "requests",
            Bucket::Tokens => "tokens",
            Bucket::Pages => "pages",
        })
    }
}

/// The window a limit is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// A window of this many seconds (a minute is 60).
    Seconds(u32),
    /// A calendar month: a consumption cap, not a pace.
    Month,
}

impl Window {
    /// One minute.
    pub const MINUTE: Window = Window::Seconds(60);

    /// The window's length, or `None` for a month (which is a cap, not a pace).
    pub fn duration(self) -> Option<Duration> {
        match self {
            Window::Seconds(s) => Some(Duration::from_secs(u64::from(s))),
            Window::Month => None,
        }
    }

    /// `true` for the monthly cap.
    pub fn is_month(self) -> bool {
        matches!(self, Window::Month)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Window::Seconds(60) => f.write_str("minute"),
            Window::Seconds(s) => write!(f, "{s} s"),
            Window::Month => f.write_str("month"),
        }
    }
}

/// One limit the server announced: what it counts, over which window, the limit and what
/// remains of it (either may be absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// What is counted.
    pub bucket: Bucket,
    /// Over which window.
    pub window: Window,
    /// The limit, when announced.
    pub limit: Option<u64>,
    /// What remains of it, when announced.
    pub remaining: Option<u64>,
}

impl Quota {
    /// `true` when the server says nothing remains.
    pub fn is_spent(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// Every rate-limit fact one response carried. Available for every response, successes
/// included. Empty when the response carried no such header (as `GET /v1/models` does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Announced limits, in header order, one entry per (bucket, window).
    pub quotas: Vec<Quota>,
    /// Tokens this request was charged (`x-ratelimit-tokens-query-cost`).
    pub query_cost: Option<u64>,
    /// OCR pages this request was charged (`x-ratelimit-ocr-pages-query-cost`).
    pub page_cost: Option<u64>,
    /// Time until the minute window resets (`ratelimitbysize-reset`, early 2025 only).
    pub reset: Option<Duration>,
    /// The server's explicit hint (`retry-after-ms`, else `Retry-After`; for a refusal,
    /// else a wait its body named), clamped to [`MAX_HINT`].
    pub retry_after: Option<Duration>,
    /// The response's `Date` header: the server's clock when it answered (what a
    /// monthly quota's end is reckoned from, [`crate::forecast`]).
    pub date: Option<std::time::SystemTime>,
}

enum Field {
    Limit(Bucket, Window),
    Remaining(Bucket, Window),
    QueryCost,
    PageCost,
    Reset,
}

impl RateLimits {
    /// Parses every recognised header of `headers`. Never fails: unknown or malformed
    /// headers are skipped.
    pub fn parse(headers: &HeaderMap) -> RateLimits {
        let mut limits = RateLimits {
            quotas: Vec::with_capacity(4),
            ..RateLimits::default()
        };
        for (name, value) in headers {
            let Some(field) = classify_name(name.as_str()) else {
                continue;
            };
            let Some(number) = value.to_str().ok().and_then(parse_count) else {
                continue;
            };
            match field {
                Field::Limit(bucket, window) => limits.entry(bucket, window).limit = Some(number),
                Field::Remaining(bucket, window) => {
                    limits.entry(bucket, window).remaining = Some(number)
                }
                Field::QueryCost => limits.query_cost = Some(number),
                Field::PageCost => limits.page_cost = Some(number),
                Field::Reset => limits.reset = Some(clamp_secs(number)),
            }
        }
        limits.retry_after = retry_after(headers);
        limits.date = header_str(headers, &header::DATE)
            .and_then(|d| httpdate::parse_http_date(d.trim()).ok());
        limits
    }

    fn entry(&mut self, bucket: Bucket, window: Window) -> &mut Quota {
        let index = match self
            .quotas
            .iter()
            .position(|q| q.bucket == bucket && q.window == window)
        {
            Some(index) => index,
            None => {
                self.quotas.push(Quota {
                    bucket,
                    window,
                    limit: None,
                    remaining: None,
                });
                self.quotas.len() - 1
            }
        };
        &mut self.quotas[index]
    }

    /// `true` when no rate-limit header was recognised.
    pub fn is_empty(&self) -> bool {
        self.quotas.is_empty()
            && self.query_cost.is_none()
            && self.page_cost.is_none()
            && self.reset.is_none()
            && self.retry_after.is_none()
    }

    /// The quota for exactly this bucket and window.
    pub fn quota(&self, bucket: Bucket, window: Window) -> Option<&Quota> {
        self.quotas
            .iter()
            .find(|q| q.bucket == bucket && q.window == window)
    }

    /// The pacing quota (not monthly) of `bucket` with the shortest window.
    pub fn pace(&self, bucket: Bucket) -> Option<&Quota> {
        self.quotas
            .iter()
            .filter(|q| q.bucket == bucket && !q.window.is_month())
            .min_by_key(|q| q.window)
    }

    /// The request quota with the shortest window (requests per minute in 2026).
    pub fn requests(&self) -> Option<&Quota> {
        self.pace(Bucket::Requests)
    }

    /// The token quota with the shortest window (tokens per minute).
    pub fn tokens(&self) -> Option<&Quota> {
        self.pace(Bucket::Tokens)
    }

    /// The OCR page quota with the shortest window (pages per minute).
    pub fn pages(&self) -> Option<&Quota> {
        self.pace(Bucket::Pages)
    }

    /// The pacing quota of what a request costs beyond being one: its tokens, or, for
    /// an answer that announces no token limit, its OCR pages (an OCR model's budget
    /// counts pages where the others count tokens: `/v1/ocr` answers announce
    /// `ocr-pages`, never `tokens`).
    pub fn cost(&self) -> Option<&Quota> {
        self.tokens().or_else(|| self.pages())
    }

    /// The monthly token cap, when announced.
    pub fn month(&self) -> Option<&Quota> {
        self.quota(Bucket::Tokens, Window::Month)
            .or_else(|| self.quota(Bucket::Requests, Window::Month))
    }
}

fn classify_name(name: &str) -> Option<Field> {
    if let Some(rest) = name.strip_prefix("x-ratelimit-") {
        if rest.ends_with("query-cost") {
            return Some(match rest.contains("pages") {
                true => Field::PageCost,
                false => Field::QueryCost,
            });
        }
        // `<kind>-<bucket>-<window>`, the window possibly with a `-` of its own
        // (`10-second`): prefixes, not splits (every response has several of these).
        let (limit, rest) = match rest.strip_prefix("limit-") {
            Some(rest) => (true, rest),
            None => (false, rest.strip_prefix("remaining-")?),
        };
        let (bucket, window) = [
            ("req-", Bucket::Requests),
            ("requests-", Bucket::Requests),
            ("request-", Bucket::Requests),
            ("tokens-", Bucket::Tokens),
            ("token-", Bucket::Tokens),
            ("ocr-pages-", Bucket::Pages),
            ("pages-", Bucket::Pages),
        ]
        .into_iter()
        .find_map(|(prefix, bucket)| Some((bucket, rest.strip_prefix(prefix)?)))?;
        let window = parse_window(window)?;
        return Some(match limit {
            true => Field::Limit(bucket, window),
            false => Field::Remaining(bucket, window),
        });
    }
    if let Some(rest) = name.strip_prefix("x-ratelimitbysize-") {
        if rest == "query-cost" {
            return Some(Field::QueryCost);
        }
        let (kind, window) = rest.split_once('-')?;
        return field(kind, Bucket::Tokens, parse_window(window)?);
    }
    if let Some(rest) = name.strip_prefix("ratelimitbysize-") {
        return match rest {
            "limit" => Some(Field::Limit(Bucket::Tokens, Window::MINUTE)),
            "remaining" => Some(Field::Remaining(Bucket::Tokens, Window::MINUTE)),
            "reset" => Some(Field::Reset),
            "query-cost" => Some(Field::QueryCost),
            _ => None,
        };
    }
    None
}

fn field(kind: &str, bucket: Bucket, window: Window) -> Option<Field> {
    match kind {
        "limit" => Some(Field::Limit(bucket, window)),
        "remaining" => Some(Field::Remaining(bucket, window)),
        _ => None,
    }
}

/// `minute`, `month`, `10-second`, `5-minute`, `2-seconds`…
fn parse_window(text: &str) -> Option<Window> {
    let (count, unit) = match text.split_once('-') {
        Some((n, unit)) => (n.parse::<u32>().ok().filter(|n| *n > 0)?, unit),
        None => (1, text),
    };
    let unit_secs: u32 = match unit.trim_end_matches('s') {
        "second" | "sec" => 1,
        "minute" | "min" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "month" if count == 1 => return Some(Window::Month),
        _ => return None,
    };
    let secs = count.checked_mul(unit_secs)?;
    (secs <= 31 * 86_400).then_some(Window::Seconds(secs))
}

/// A non-negative decimal count. Fractions are floored; negative, non-finite and
/// non-numeric values are rejected; huge values saturate.
fn parse_count(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = text.parse().ok()?;
    // `as` saturates for finite values above u64::MAX.
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

fn clamp_secs(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_HINT)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    // Names known at compile time: a lookup by `&str` would parse the name each time.
    const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
    if let Some(ms) = header_str(headers, &RETRY_AFTER_MS).and_then(parse_count) {
        return Some(Duration::from_millis(ms).min(MAX_HINT));
    }
    let text = header_str(headers, &header::RETRY_AFTER)?.trim();
    if let Some(secs) = parse_count(text) {
        return Some(clamp_secs(secs));
    }
    // An HTTP-date, measured against the response's own Date header (never our clock).
    let at = httpdate::parse_http_date(text).ok()?;
    let date = httpdate::parse_http_date(header_str(headers, &header::DATE)?.trim()).ok()?;
    Some(
        at.duration_since(date)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HINT),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn q(bucket: Bucket, window: Window, limit: u64, remaining: u64) -> Quota {
        Quota {
            bucket,
            window,
            limit: Some(limit),
            remaining: Some(remaining),
        }
    }

    #[test]
    fn era_early_2025() {
        let l = RateLimits::parse(&headers(&[
            ("x-ratelimitbysize-limit-minute", "500000"),
            ("x-ratelimitbysize-remaining-minute", "499950"),
            ("x-ratelimitbysize-limit-month", "1000000000"),
            ("x-ratelimitbysize-remaining-month", "999999950"),
            ("ratelimitbysize-limit", "500000"),
            ("ratelimitbysize-remaining", "499950"),
            ("ratelimitbysize-reset", "42"),
            ("ratelimitbysize-query-cost", "50"),
        ]));
        assert_eq!(
            l.tokens(),
            Some(&q(Bucket::Tokens, Window::MINUTE, 500_000, 499_950))
        );
        assert_eq!(
            l.month(),
            Some(&q(
                Bucket::Tokens,
                Window::Month,
                1_000_000_000,
                999_999_950
            ))
        );
        assert_eq!(l.quotas.len(), 2, "duplicates merge: {:?}", l.quotas);
        assert_eq!(l.reset, Some(Duration::from_secs(42)));
        assert_eq!(l.query_cost, Some(50));
        assert_eq!(l.requests(), None);
    }

    #[test]
    fn era_mid_2025() {
        let l = RateLimits::parse(&headers(&[
            ("x-ratelimit-limit-tokens-minute", "50000"),
            ("x-ratelimit-remaining-tokens-minute", "0"),
            ("x-ratelimit-limit-tokens-month", "4000000"),
            ("x-ratelimit-remaining-tokens-month", "3999000"),
            ("x-ratelimit-tokens-query-cost", "17"),
        ]));
        assert_eq!(
            l.tokens(),
            Some(&q(Bucket::Tokens, Window::MINUTE, 50_000, 0))
        );
        assert!(l.tokens().unwrap().is_spent());
        assert_eq!(l.query_cost, Some(17));
    }

    #[test]
    fn era_late_2025_with_second_windows() {
        let l = RateLimits::parse(&headers(&[
            ("x-ratelimit-limit-req-10-second", "10"),
            ("x-ratelimit-remaining-req-10-second", "3"),
            ("x-ratelimit-limit-req-60-second", "40"),
            ("x-ratelimit-remaining-req-60-second", "33"),
            ("x-ratelimit-limit-tokens-5-minute", "100000"),
            ("x-ratelimit-remaining-tokens-5-minute", "99000"),
        ]));
        assert_eq!(
            l.requests(),
            Some(&q(Bucket::Requests, Window::Seconds(10), 10, 3))
        );
        assert_eq!(
            l.quota(Bucket::Requests, Window::Seconds(60)),
            Some(&q(Bucket::Requests, Window::MINUTE, 40, 33))
        );
        assert_eq!(
            l.tokens(),
            Some(&q(Bucket::Tokens, Window::Seconds(300), 100_000, 99_000))
        );
    }

    #[test]
    fn era_2026_mixed_case() {
        let l = RateLimits::parse(&headers(&[
            ("X-RateLimit-Limit-Req-Minute", "50"),
            ("x-ratelimit-remaining-req-minute", "49"),
            ("x-ratelimit-limit-tokens-minute", "50000"),
            ("x-ratelimit-remaining-tokens-minute", "49000"),
            ("x-ratelimit-limit-tokens-month", "0"),
        ]));
        assert_eq!(
            l.requests(),
            Some(&q(Bucket::Requests, Window::MINUTE, 50, 49))
        );
        assert_eq!(l.month().unwrap().limit, Some(0));
        assert_eq!(l.month().unwrap().remaining, None);
    }

    #[test]
    fn ocr_pages_are_a_bucket_of_their_own() {
        let l = RateLimits::parse(&headers(&[
            ("x-ratelimit-limit-req-minute", "60"),
            ("x-ratelimit-remaining-req-minute", "59"),
            ("x-ratelimit-limit-ocr-pages-minute", "1000"),
            ("x-ratelimit-remaining-ocr-pages-minute", "993"),
            ("x-ratelimit-ocr-pages-query-cost", "7"),
        ]));
        assert_eq!(
            l.pages(),
            Some(&q(Bucket::Pages, Window::MINUTE, 1000, 993))
        );
        assert_eq!(l.cost(), l.pages());
        assert_eq!(l.tokens(), None);
        assert_eq!((l.page_cost, l.query_cost), (Some(7), None));
        assert_eq!(Bucket::Pages.to_string(), "pages");
        // A token quota is the cost of an answer that announces one.
        let t = RateLimits::parse(&headers(&[
            ("x-ratelimit-limit-tokens-minute", "50000"),
            ("x-ratelimit-tokens-query-cost", "12"),
        ]));
        assert_eq!(t.cost(), t.tokens());
        assert_eq!((t.page_cost, t.query_cost), (None, Some(12)));
    }

    #[test]
    fn retry_after_forms() {
        let secs = RateLimits::parse(&headers(&[("retry-after", "7")]));
        assert_eq!(secs.retry_after, Some(Duration::from_secs(7)));
        let ms = RateLimits::parse(&headers(&[
            ("retry-after", "7"),
            ("retry-after-ms", "1500"),
        ]));
        assert_eq!(ms.retry_after, Some(Duration::from_millis(1500)));
        let date = RateLimits::parse(&headers(&[
            ("date", "Sat, 28 Nov 2026 10:00:00 GMT"),
            ("retry-after", "Sat, 28 Nov 2026 10:00:30 GMT"),
        ]));
        assert_eq!(date.retry_after, Some(Duration::from_secs(30)));
        let past = RateLimits::parse(&headers(&[
            ("date", "Sat, 28 Nov 2026 10:00:30 GMT"),
            ("retry-after", "Sat, 28 Nov 2026 10:00:00 GMT"),
        ]));
        assert_eq!(past.retry_after, Some(Duration::ZERO));
        let no_date = RateLimits::parse(&headers(&[(
            "retry-after",
            "Sat, 28 Nov 2026 10:00:30 GMT",
        )]));
        assert_eq!(no_date.retry_after, None);
    }

    #[test]
    fn absurd_values_are_clamped_or_ignored() {
        let l = RateLimits::parse(&headers(&[
            ("retry-after", "99999999999999999999999"),
            ("x-ratelimit-limit-req-minute", "-5"),
            ("x-ratelimit-remaining-req-minute", "lots"),
            ("x-ratelimit-limit-tokens-minute", "1e400"),
            ("x-ratelimit-limit-req-99999999999-second", "3"),
            ("x-ratelimit-limit-bananas-minute", "3"),
            ("x-ratelimit-limit-req-fortnight", "3"),
            ("x-ratelimit-remaining-tokens-minute", "12.7"),
        ]));
        assert_eq!(l.retry_after, Some(MAX_HINT));
        assert_eq!(l.requests(), None);
        assert_eq!(l.tokens().unwrap().limit, None);
        assert_eq!(l.tokens().unwrap().remaining, Some(12));
    }

    /// No header announces limits per service tier; should one come with the tier in its
    /// name, it is not read as the model's own limit (the budget stays the model's).
    #[test]
    fn headers_named_for_a_tier_are_not_the_models_limits() {
        let l = RateLimits::parse(&headers(&[
            ("x-ratelimit-limit-req-minute", "60"),
            ("x-ratelimit-remaining-req-minute", "59"),
            ("x-ratelimit-limit-req-minute-priority", "10"),
            ("x-ratelimit-remaining-req-minute-priority", "0"),
            ("x-ratelimit-limit-priority-req-minute", "10"),
            ("x-ratelimit-remaining-priority-tokens-minute", "0"),
        ]));
        assert_eq!(l.quotas, [q(Bucket::Requests, Window::MINUTE, 60, 59)]);
    }

    #[test]
    fn no_headers_means_empty() {
        let l = RateLimits::parse(&headers(&[("content-type", "application/json")]));
        assert!(l.is_empty());
        assert_eq!(l, RateLimits::default());
    }

    #[test]
    fn windows_parse() {
        for (text, window) in [
            ("minute", Window::MINUTE),
            ("second", Window::Seconds(1)),
            ("10-second", Window::Seconds(10)),
            ("2-seconds", Window::Seconds(2)),
            ("5-minute", Window::Seconds(300)),
            ("hour", Window::Seconds(3600)),
            ("month", Window::Month),
        ] {
            assert_eq!(parse_window(text), Some(window), "{text}");
        }
        for bad in ["0-second", "x-second", "fortnight", "2-month", ""] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }
}
