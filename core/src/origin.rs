//! Who refused a request: the Mistral API, a gateway in between, this client's own shared
//! budget, or nobody the response names ([`Origin`]); and whether a refusal is a spending
//! cap that no wait fixes ([`is_spending_cap`]).
//!
//! What tells them apart, in order ([`origin_of`]):
//!
//! | the response carries | origin |
//! |---|---|
//! | Mistral's error body (`"object":"error"`, code `1300`/`3505`, type `rate_limited`…), its `{"message":"Requests rate limit exceeded"}`, or its `x-ratelimit-*` headers | [`Origin::Mistral`] |
//! | nginx's own HTML page (`<center>nginx</center>`) | [`Origin::Gateway`]`(`[`Gateway::Nginx`]`)` |
//! | Cloudflare's page or headers (`cf-ray`, `server: cloudflare`) | [`Gateway::Cloudflare`] |
//! | Envoy's `local_rate_limited` or `x-envoy-ratelimited` | [`Gateway::Envoy`] |
//! | LiteLLM's headers (`x-litellm-*`) or its `budget_exceeded` type | [`Gateway::LiteLlm`] |
//! | another `{"error":{…}}` (the OpenAI-style form proxies send) | [`Gateway::Proxy`] |
//! | another HTML page | [`Gateway::Html`] |
//! | nothing of the above (empty, plain text, an unknown JSON) | [`Origin::Unknown`] |
//!
//! A refusal of this client's shared limiter (no request sent) is
//! [`Origin::SharedBudget`]; the call sets it, never [`origin_of`].

use std::fmt;

use http::{HeaderMap, HeaderName};

use crate::models::ApiErrorBody;
use crate::ratelimits::{Bucket, RateLimits};

/// Who refused a request ([`crate::Error::origin`], [`crate::ResponseInfo::origin`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// Nothing in the response says who (an empty body without rate-limit headers, an
    /// unknown one), or no refusal at all.
    #[default]
    Unknown,
    /// The Mistral API: its own error body, or its rate-limit headers.
    Mistral,
    /// A gateway or proxy between this client and the API, in a form of its own.
    Gateway(Gateway),
    /// This client's own shared budget (the limiter): no request was sent.
    SharedBudget,
}

/// Which gateway answered ([`Origin::Gateway`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Gateway {
    /// nginx's own page (`limit_req`, `limit_conn`: 429, or 503 by default).
    Nginx,
    /// Cloudflare (its page, `cf-ray`, `server: cloudflare`).
    Cloudflare,
    /// Envoy (`local_rate_limited`, `x-envoy-ratelimited`).
    Envoy,
    /// The LiteLLM proxy (`x-litellm-*` headers, its `budget_exceeded` errors).
    LiteLlm,
    /// Another proxy's OpenAI-style JSON (`{"error":{"message","type","code"}}`).
    Proxy,
    /// Another HTML page.
    Html,
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gateway::Nginx => "nginx",
            Gateway::Cloudflare => "Cloudflare",
            Gateway::Envoy => "Envoy",
            Gateway::LiteLlm => "LiteLLM",
            Gateway::Proxy => "a proxy's JSON error",
            Gateway::Html => "an HTML page",
        })
    }
}

impl fmt::Display for Origin {
    /// `the Mistral API`, `a gateway (nginx)`, `this client's shared budget`, `an
    /// unknown server`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Unknown => f.write_str("an unknown server"),
            Origin::Mistral => f.write_str("the Mistral API"),
            Origin::Gateway(g) => write!(f, "a gateway in between ({g})"),
            Origin::SharedBudget => f.write_str("this client's shared budget"),
        }
    }
}

impl Origin {
    /// A short name for logs and metrics: `mistral`, `gateway:nginx`, `shared_budget`,
    /// `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Unknown => "unknown",
            Origin::Mistral => "mistral",
            Origin::Gateway(Gateway::Nginx) => "gateway:nginx",
            Origin::Gateway(Gateway::Cloudflare) => "gateway:cloudflare",
            Origin::Gateway(Gateway::Envoy) => "gateway:envoy",
            Origin::Gateway(Gateway::LiteLlm) => "gateway:litellm",
            Origin::Gateway(Gateway::Proxy) => "gateway:proxy",
            Origin::Gateway(Gateway::Html) => "gateway:html",
            Origin::SharedBudget => "shared_budget",
        }
    }

    /// `true` for a gateway in between.
    pub fn is_gateway(&self) -> bool {
        matches!(self, Origin::Gateway(_))
    }
}

/// Who answered a refusal, from its headers, its body and the body as parsed (see the
/// module docs for the order).
pub fn origin_of(
    headers: &HeaderMap,
    limits: &RateLimits,
    body: &[u8],
    parsed: Option<&ApiErrorBody>,
) -> Origin {
    const ENVOY: HeaderName = HeaderName::from_static("x-envoy-ratelimited");
    const CF_RAY: HeaderName = HeaderName::from_static("cf-ray");
    if let Some(b) = parsed
        && is_mistral_body(b)
    {
        return Origin::Mistral;
    }
    // A body of the gateway's own beats headers a proxy passed through.
    let head = lowercase_head(body);
    let html = head.trim_start().starts_with('<');
    if html && (head.contains("<center>nginx") || head.contains(">nginx<")) {
        return Origin::Gateway(Gateway::Nginx);
    }
    let server = headers
        .get(http::header::SERVER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if (html && head.contains("cloudflare"))
        || server.starts_with("cloudflare")
        || (html && headers.contains_key(CF_RAY))
    {
        return Origin::Gateway(Gateway::Cloudflare);
    }
    if head.trim_start().starts_with("local_rate_limited") || headers.contains_key(ENVOY) {
        return Origin::Gateway(Gateway::Envoy);
    }
    let litellm = headers
        .keys()
        .any(|name| name.as_str().starts_with("x-litellm-"));
    if litellm || parsed.is_some_and(|b| b.kind.as_deref() == Some("budget_exceeded")) {
        return Origin::Gateway(Gateway::LiteLlm);
    }
    if parsed.is_some_and(|b| b.wrapped) {
        return Origin::Gateway(Gateway::Proxy);
    }
    if html && server.starts_with("nginx") {
        return Origin::Gateway(Gateway::Nginx);
    }
    if html {
        return Origin::Gateway(Gateway::Html);
    }
    if !limits.quotas.is_empty() {
        return Origin::Mistral;
    }
    Origin::Unknown
}

/// The Mistral API's own forms: `"object":"error"` (or its codes and types without it),
/// and its gateway's `{"message":"Requests rate limit exceeded"}`.
fn is_mistral_body(b: &ApiErrorBody) -> bool {
    if b.wrapped {
        return false;
    }
    b.object.as_deref() == Some("error")
        || matches!(b.code.as_deref(), Some("1300" | "3505"))
        || matches!(
            b.kind.as_deref(),
            Some("rate_limited" | "service_tier_capacity_exceeded")
        )
        || mistral_bucket(b).is_some()
}

/// The bucket Mistral's gateway names in its message (`Requests rate limit exceeded`,
/// `Tokens rate limit exceeded`), when a 429 carries no header that says.
pub fn mistral_bucket(b: &ApiErrorBody) -> Option<Bucket> {
    if b.wrapped {
        return None;
    }
    let message = b.message.as_deref()?.trim().to_ascii_lowercase();
    let rest = message.strip_suffix("rate limit exceeded")?.trim();
    match rest {
        "requests" | "request" => Some(Bucket::Requests),
        "tokens" | "token" => Some(Bucket::Tokens),
        _ => None,
    }
}

/// Whether a refusal's body says a spending cap is reached: a budget, a quota or a
/// monthly limit that no wait within a call fixes (`insufficient_quota`,
/// `budget_exceeded`, "Budget has been exceeded", "You exceeded your current quota", a
/// monthly spend limit…). A quota named per minute, second, hour or day is a rate limit,
/// not a cap.
pub fn is_spending_cap(b: &ApiErrorBody) -> bool {
    let named = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|k| CAP_KINDS.iter().any(|c| c.eq_ignore_ascii_case(k)))
    };
    let message = b.message.as_deref().unwrap_or("");
    // Every phrase holds one of these words: most messages (a rate limit's) are done
    // after four searches, without a lowercased copy.
    let worded = || {
        ["budget", "quota", "monthly", "spend"]
            .iter()
            .any(|w| contains_ignore_ascii_case(message, w))
            && {
                let message = message.to_ascii_lowercase();
                CAP_WORDS.iter().any(|w| message.contains(w))
            }
    };
    let paced = || {
        let message = message.to_ascii_lowercase();
        CAP_PACED.iter().any(|p| message.contains(p))
    };
    (named(&b.kind) || named(&b.code) || worded()) && !paced()
}

/// The types and codes of a spending cap ([`is_spending_cap`]), in any case.
const CAP_KINDS: [&str; 7] = [
    "insufficient_quota",
    "budget_exceeded",
    "billing_hard_limit_reached",
    "spend_limit_exceeded",
    "spending_limit_exceeded",
    "quota_exceeded",
    "credit_balance_too_low",
];

/// Phrases of a spending cap's message, lowercase.
const CAP_WORDS: [&str; 13] = [
    "budget has been exceeded",
    "budget exceeded",
    "exceeded budget",
    "exceeded your budget",
    "max budget",
    "exceeded your current quota",
    "insufficient quota",
    "insufficient_quota",
    "monthly limit",
    "monthly spend",
    "spending limit",
    "spend limit",
    "quota exceeded",
];

/// A message that names one of these is a rate's, not a cap's.
const CAP_PACED: [&str; 7] = [
    "per minute",
    "per second",
    "per hour",
    "per day",
    "/min",
    "rpm",
    "tpm",
];

/// Whether `haystack` holds `needle` (ASCII lowercase), ignoring ASCII case.
pub(crate) fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// The start of a body, lowercased (for the pages' markers).
fn lowercase_head(body: &[u8]) -> String {
    let head = &body[..body.len().min(1024)];
    String::from_utf8_lossy(head).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The check as it was written first (a lowercased copy, every phrase searched):
    /// the faster one must answer as it does.
    #[rustfmt::skip]
    fn reference(b: &ApiErrorBody) -> bool {
        const KINDS: [&str; 7] = [
            "insufficient_quota",
            "budget_exceeded",
            "billing_hard_limit_reached",
            "spend_limit_exceeded",
            "spending_limit_exceeded",
            "quota_exceeded",
            "credit_balance_too_low",
        ];
        let named = |v: &Option<String>| {
            v.as_deref()
                .is_some_and(|k| KINDS.contains(&k.to_ascii_lowercase().as_str()))
        };
        let message = b.message.as_deref().unwrap_or("").to_ascii_lowercase();
        let paced = [
            "per minute",
            "per second",
            "per hour",
            "per day",
            "/min",
            "rpm",
            "tpm",
        ]
        .iter()
        .any(|p| message.contains(p));
        if paced {
            return false;
        }
        if named(&b.kind) || named(&b.code) {
            return true;
        }
        const WORDS: [&str; 12] = [
            "budget has been exceeded",
            "budget exceeded",
            "exceeded budget",
            "exceeded your budget",
            "max budget",
            "exceeded your current quota",
            "insufficient quota",
            "insufficient_quota",
            "monthly limit",
            "monthly spend",
            "spending limit",
            "spend limit",
        ];
        WORDS.iter().any(|w| message.contains(w)) || message.contains("quota exceeded")
    }

    fn body(kind: Option<&str>, code: Option<&str>, message: Option<&str>) -> ApiErrorBody {
        ApiErrorBody {
            kind: kind.map(str::to_owned),
            code: code.map(str::to_owned),
            message: message.map(str::to_owned),
            ..ApiErrorBody::default()
        }
    }

    #[test]
    fn caps_and_rates_are_told_apart() {
        let cases = [
            (None, None, Some("Rate limit exceeded"), false),
            (Some("insufficient_quota"), None, None, true),
            (Some("Budget_Exceeded"), None, None, true),
            (None, Some("QUOTA_EXCEEDED"), None, true),
            (
                None,
                None,
                Some("Budget has been EXCEEDED for this key"),
                true,
            ),
            (None, None, Some("You exceeded your current quota"), true),
            (
                None,
                None,
                Some("Quota exceeded: 60 requests per minute"),
                false,
            ),
            (Some("insufficient_quota"), None, Some("100 RPM"), false),
            (None, None, Some("monthly spend reached"), true),
            (None, None, Some("spend"), false),
            (None, None, Some("Spend limit reached"), true),
            (None, None, Some("max budget"), true),
            (None, None, Some("insufficient quota"), true),
            (None, None, None, false),
        ];
        for (kind, code, message, cap) in cases {
            let b = body(kind, code, message);
            assert_eq!(is_spending_cap(&b), cap, "{b:?}");
            assert_eq!(reference(&b), cap, "{b:?}");
        }
    }

    fn text() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("budget".to_string()),
            Just("Budget".to_string()),
            Just("exceeded".to_string()),
            Just("QUOTA".to_string()),
            Just("quota".to_string()),
            Just("insufficient".to_string()),
            Just("insufficient_quota".to_string()),
            Just("monthly".to_string()),
            Just("Spend".to_string()),
            Just("spending".to_string()),
            Just("limit".to_string()),
            Just("per minute".to_string()),
            Just("RPM".to_string()),
            Just("/min".to_string()),
            Just("has been".to_string()),
            Just("your current".to_string()),
            Just("max".to_string()),
            "[a-zA-Z_é ]{0,5}",
        ];
        prop::collection::vec(word, 0..7).prop_map(|w| w.join(" "))
    }

    fn kind() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just("insufficient_quota".to_string()),
            Just("Billing_Hard_Limit_Reached".to_string()),
            Just("rate_limited".to_string()),
            "[a-z_]{0,8}",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

        #[test]
        fn the_check_answers_as_the_reference(
            kind in kind(),
            code in kind(),
            message in prop::option::of(text()),
        ) {
            let b = body(kind.as_deref(), code.as_deref(), message.as_deref());
            prop_assert_eq!(is_spending_cap(&b), reference(&b), "{:?}", b);
        }
    }
}
