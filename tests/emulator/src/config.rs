//! What the emulator is told to be: keys, era, limits per model, faults.
//!
//! Everything is a plain serde struct with a [`Default`], so a JSON file (`--config`) can
//! set any part of it and leave the rest as it is. Unknown fields in the file are refused,
//! so a typo does not silently fall back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The key accepted by a default [`Config`].
pub const DEFAULT_KEY: &str = "test-key-0123456789";

/// Which captured generation of Mistral's wire format the emulator speaks
/// (`mistral-api.md` §2 and §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Era {
    /// `x-ratelimitbysize-*` and `ratelimitbysize-*` headers (token windows only, the
    /// only era with a `ratelimitbysize-reset` header); 401 with `{"message","request_id"}`
    /// and `Www-Authenticate: Key`; 429 gateway body by default. The captured names say
    /// `minute`; a token window other than a minute is named for its length
    /// (`x-ratelimitbysize-limit-10-second`) and the bare `ratelimitbysize-limit` /
    /// `-remaining` pair, which means a minute, is not sent.
    #[serde(rename = "early-2025", alias = "Early2025", alias = "early2025")]
    Early2025,
    /// `x-ratelimit-{limit,remaining}-tokens-{minute,month}` and
    /// `x-ratelimit-tokens-query-cost`, no request headers; early 401 form; gateway 429.
    /// A token window other than a minute is named for its length (`N-second`,
    /// `N-minute`).
    #[serde(rename = "mid-2025", alias = "Mid2025", alias = "mid2025")]
    Mid2025,
    /// Mid 2025 plus `x-ratelimit-{limit,remaining}-req-N-second`, where `N` is the
    /// configured request window (whole seconds, at least 1); the token window is named
    /// `minute`, `N-minute` or `N-second` after the configured token window.
    /// `{"detail":"Unauthorized"}`; 1300 body.
    #[serde(rename = "late-2025", alias = "Late2025", alias = "late2025")]
    Late2025,
    /// `x-ratelimit-{limit,remaining}-req-minute`, `-tokens-minute`, `-tokens-month`,
    /// `x-ratelimit-tokens-query-cost`; a window other than a minute is named for its
    /// length (`-req-10-second`, `-tokens-5-minute`), so a compressed window is never
    /// announced as a minute. `{"detail":"Unauthorized"}`; 1300 body. The default.
    #[default]
    #[serde(rename = "2026", alias = "Y2026", alias = "y2026")]
    Y2026,
}

impl Era {
    /// Parses a command-line spelling: `early-2025`, `mid-2025`, `late-2025`, `2026`
    /// (the variant names are accepted too, case-insensitively).
    pub fn parse(text: &str) -> Option<Era> {
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "early-2025" | "early2025" => Some(Era::Early2025),
            "mid-2025" | "mid2025" => Some(Era::Mid2025),
            "late-2025" | "late2025" => Some(Era::Late2025),
            "2026" | "y2026" => Some(Era::Y2026),
            _ => None,
        }
    }

    /// The 429 body this era sends for a window refusal unless told otherwise.
    pub fn default_rate_limit_body(self) -> RateLimitBody {
        match self {
            Era::Early2025 | Era::Mid2025 => RateLimitBody::Gateway,
            Era::Late2025 | Era::Y2026 => RateLimitBody::Code1300,
        }
    }
}

impl fmt::Display for Era {
    /// The command-line spelling [`Era::parse`] reads back: `early-2025`, `mid-2025`,
    /// `late-2025`, `2026`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Era::Early2025 => "early-2025",
            Era::Mid2025 => "mid-2025",
            Era::Late2025 => "late-2025",
            Era::Y2026 => "2026",
        })
    }
}

/// How a limit of `N` per window is enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Semantics {
    /// A continuously refilled bucket: capacity = burst (requests) or the limit (tokens),
    /// refilled at `limit / window`. Starts full.
    #[default]
    #[serde(alias = "Bucket")]
    Bucket,
    /// A counter reset at window boundaries; windows are aligned on the emulator's start.
    #[serde(alias = "FixedWindow")]
    FixedWindow,
    /// At most `N` in any trailing window (a log of admissions).
    #[serde(alias = "SlidingLog")]
    SlidingLog,
    /// A leaky bucket with no burst, exactly as nginx `limit_req` without `burst`: the
    /// rate is `N / window` in milli-requests per second, `excess` is kept in
    /// thousandths of a request, and a request `ms` milliseconds (whole, on the
    /// millisecond clock) after the last admitted one gets `excess' = max(0, excess -
    /// rate × ms / 1000 + 1000)`; it is refused when `excess' > 0` (the state is then left
    /// as it was), else admitted and `excess'` and its time stored. So a request sooner
    /// than `1 / rate` after the previous admitted one is refused. The first request is
    /// always admitted. `burst` is ignored. Tokens follow the same rule with a request's
    /// cost in place of 1, checked before the charge ("already exhausted": refused only
    /// while the previous admissions' tokens have not drained). Headers, when sent,
    /// announce the limit per window and `remaining` 1 when a request would be admitted
    /// now, else 0 (nginx itself announces nothing).
    #[serde(alias = "Leaky", alias = "leaky-bucket")]
    Leaky,
}

impl Semantics {
    /// Parses `bucket`, `fixed-window` (`fixed`), `sliding-log` (`sliding`), `leaky`
    /// (`leaky-bucket`, `nginx`).
    pub fn parse(text: &str) -> Option<Semantics> {
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "leaky" | "leaky-bucket" | "nginx" => Some(Semantics::Leaky),
            "bucket" | "token-bucket" => Some(Semantics::Bucket),
            "fixed" | "fixed-window" | "fixedwindow" => Some(Semantics::FixedWindow),
            "sliding" | "sliding-log" | "slidinglog" | "sliding-window" => {
                Some(Semantics::SlidingLog)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Semantics {
    /// The command-line spelling [`Semantics::parse`] reads back: `bucket`,
    /// `fixed-window`, `sliding-log`, `leaky`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Semantics::Bucket => "bucket",
            Semantics::FixedWindow => "fixed-window",
            Semantics::SlidingLog => "sliding-log",
            Semantics::Leaky => "leaky",
        })
    }
}

/// The body of a 429 sent for a spent window (zero allowance and the monthly quota always
/// use [`RateLimitBody::Code1300`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RateLimitBody {
    /// `{"message":"Requests rate limit exceeded"}` (the gateway, 2024 to mid 2025).
    #[serde(rename = "gateway", alias = "Gateway")]
    Gateway,
    /// `{"object":"error","message":"Rate limit exceeded","type":"rate_limited",
    /// "param":null,"code":"1300","raw_status_code":429}`.
    #[serde(rename = "1300", alias = "Code1300")]
    Code1300,
    /// A proxy's OpenAI-style body, as LiteLLM sends:
    /// `{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","param":null,
    /// "code":"429","retry_after":N}}`, `N` the emulator's own wait until the limit
    /// admits again (whole seconds, rounded up, at least 1; absent when not known).
    #[serde(rename = "proxy", alias = "Proxy")]
    Proxy,
}

/// The limits of one model (shared by every key of the organisation).
///
/// `None` means "no such limit" (and no header for it); `Some(0)` is a zero allowance:
/// every request for the model is refused with 429, forever.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests per request window.
    pub requests: Option<u64>,
    /// Bucket capacity for [`Semantics::Bucket`] (default: `requests`). Ignored by the
    /// other semantics.
    pub burst: Option<u64>,
    /// Tokens (prompt + completion) per token window.
    pub tokens: Option<u64>,
    /// OCR pages per token window, for an OCR model (`mistral-ocr-latest`): its requests
    /// are charged their pages on this limit, announced as
    /// `x-ratelimit-{limit,remaining}-ocr-pages-<window>` (takes the place of `tokens`).
    pub pages: Option<u64>,
    /// Tokens per month (the month never rolls over while the emulator runs).
    pub tokens_month: Option<u64>,
    /// The request window in seconds (default: [`Config::window_secs`]).
    pub window_secs: Option<f64>,
    /// The token window in seconds (default: [`Config::token_window_secs`], else the
    /// request window).
    pub token_window_secs: Option<f64>,
    /// At most this many requests of the model in flight at once: a request holds its
    /// place from admission until its response has been handed over whole (see
    /// [`Config::latency_ms`]); one more is refused with 429 (the window body, and the
    /// rate-limit headers as they stand, none of them spent). `None`: no such limit.
    pub concurrency: Option<u64>,
}

impl Limits {
    /// `requests` per window and `tokens` per window, nothing else.
    pub fn new(requests: Option<u64>, tokens: Option<u64>) -> Limits {
        Limits {
            requests,
            tokens,
            ..Limits::default()
        }
    }

    /// A zero allowance: every request refused.
    pub fn zero() -> Limits {
        Limits::new(Some(0), Some(0))
    }
}

/// A change of the limits (or of the background consumer) at a set time of the run.
///
/// `limits_factor` scales every model's limits as configured at the start (requests,
/// burst, tokens, concurrency; not the monthly quota; a non-zero limit stays at least
/// 1): 2.0 is a tier upgrade, 0.5 a downgrade. The meters keep their state (what was
/// spent stays spent) and the log checks later admissions against the new limits.
/// `background_share` sets the background consumer's share ([`Config::background_share`]),
/// "another program of the organisation starts spending half of it".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Change {
    /// When, in seconds since the emulator's start.
    pub at_secs: f64,
    /// Scale of the limits configured at the start (ignored unless finite and > 0).
    pub limits_factor: Option<f64>,
    /// New background share (0..=1).
    pub background_share: Option<f64>,
}

impl Change {
    /// Parses a command-line spelling: `SECS:xFACTOR`, `SECS:background=SHARE`, or both
    /// separated by a comma (`5:x2`, `5:x0.5,background=0.5`).
    pub fn parse(text: &str) -> Result<Change, String> {
        let (at, what) = text.split_once(':').ok_or_else(|| {
            format!("expected SECS:xFACTOR or SECS:background=SHARE, got {text:?}")
        })?;
        let at_secs: f64 = at
            .trim()
            .parse()
            .map_err(|_| format!("cannot read {at:?} as seconds"))?;
        if !(at_secs.is_finite() && at_secs >= 0.0) {
            return Err(format!("{at:?} is not a time"));
        }
        let mut change = Change {
            at_secs,
            ..Change::default()
        };
        for part in what.split(',').map(str::trim) {
            if let Some(factor) = part.strip_prefix('x') {
                let f: f64 = factor
                    .parse()
                    .map_err(|_| format!("cannot read {factor:?} as a factor"))?;
                if !(f.is_finite() && f > 0.0) {
                    return Err(format!("factor {factor} is not above 0"));
                }
                change.limits_factor = Some(f);
            } else if let Some(share) = part.strip_prefix("background=") {
                let s: f64 = share
                    .parse()
                    .map_err(|_| format!("cannot read {share:?} as a share"))?;
                if !(0.0..=1.0).contains(&s) {
                    return Err(format!("share {share} is not between 0 and 1"));
                }
                change.background_share = Some(s);
            } else {
                return Err(format!(
                    "unknown change {part:?} (xFACTOR or background=SHARE)"
                ));
            }
        }
        Ok(change)
    }
}

/// Something that goes wrong on purpose with one request.
///
/// "Replacing" faults answer instead of the emulator (before authentication; the request
/// is not charged to any limit): the status faults, [`Fault::Reset`], [`Fault::Close`],
/// [`Fault::Hang`], [`Fault::MalformedJson`], [`Fault::Ambiguous429`],
/// [`Fault::Capacity`], [`Fault::Proxy429`], [`Fault::SpendingCap`]. "Modifying" faults
/// let the request be served (and charged) normally and then spoil the delivery:
/// [`Fault::DelayMs`], [`Fault::StallAfter`], [`Fault::CutAfter`],
/// [`Fault::StreamError`], [`Fault::StreamErrorEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fault {
    /// 500 with `{"object":"error","message":"Service unavailable.",
    /// "type":"internal_server_error","param":null,"code":"1000"}`.
    Http500,
    /// 502 with an HTML body (a proxy in front).
    Http502Html,
    /// 503 with a plain-text proxy body.
    Http503,
    /// 504 with an HTML body.
    Http504,
    /// Read the whole request, then close the TCP connection with a RST (SO_LINGER 0)
    /// without answering.
    Reset,
    /// Read the whole request, then close the TCP connection (FIN) without answering.
    Close,
    /// Read the whole request and never answer; the connection is closed after
    /// [`Config::hang_secs`].
    Hang,
    /// Serve normally, then stop sending after this many body frames (SSE events for a
    /// stream; half the body for a plain response) and keep the connection open for
    /// [`Config::hang_secs`].
    StallAfter(u32),
    /// Serve normally, then close the connection after this many body frames (a stream
    /// without `[DONE]`; a plain body shorter than its Content-Length).
    CutAfter(u32),
    /// 200 with a JSON body cut in the middle (valid HTTP, invalid JSON).
    MalformedJson,
    /// Wait this many milliseconds, then serve normally.
    DelayMs(u64),
    /// 401 in the era's form.
    Status401,
    /// 400 `invalid_request_message_order`, code 3230.
    Status400,
    /// 403, code 1913 (model not allowed for this account).
    Status403,
    /// 404 `{"message":"no Route matched with those values"}`.
    Status404,
    /// 422 in the `{"object":"error","message":{"detail":[…]},…}` form.
    Status422,
    /// 429 `{"message":"Requests rate limit exceeded"}` without any rate-limit header.
    Ambiguous429,
    /// 429 with the 2026 body (`"code":"1300"`, `"type":"rate_limited"`) and no
    /// rate-limit header.
    Bare1300,
    /// 429 `service_tier_capacity_exceeded`, code 3505.
    Capacity,
    /// 429 from a proxy in between, in its OpenAI-style form with a wait in the body:
    /// `{"error":{"message":"Rate limit exceeded","type":"rate_limit_error",
    /// "param":null,"code":"429","retry_after":1}}`.
    Proxy429,
    /// 429 from a gateway whose spending cap is reached (LiteLLM's form):
    /// `{"error":{"message":"Budget has been exceeded! Current cost: 10.02, Max budget:
    /// 10.0","type":"budget_exceeded","param":null,"code":"429"}}`.
    SpendingCap,
    /// Serve a stream normally, then after this many events send a proxy's 429 as an
    /// event (`data: {"error":{"message":"Rate limit exceeded","type":"rate_limit_error",
    /// "code":429,"retry_after":1}}`) and end the body (no `[DONE]`). A plain response
    /// is served whole.
    StreamError(u32),
    /// The same with an event of type `error` carrying the 2026 body (`event: error`,
    /// `data: {"object":"error",…,"code":"1300","raw_status_code":429}`).
    StreamErrorEvent(u32),
}

impl Fault {
    /// True for the faults that answer instead of the emulator (see the type's docs).
    pub fn replaces_response(self) -> bool {
        !matches!(
            self,
            Fault::DelayMs(_)
                | Fault::StallAfter(_)
                | Fault::CutAfter(_)
                | Fault::StreamError(_)
                | Fault::StreamErrorEvent(_)
        )
    }

    /// Parses a command-line spelling: `500`, `502`, `503`, `504`, `reset`, `close`,
    /// `hang`, `stall:N`, `cut:N`, `malformed`, `delay:MS`, `401`, `400`, `403`, `404`,
    /// `422`, `429`, `1300`, `capacity`, `proxy429`, `cap`, `stream-error:N`,
    /// `stream-error-event:N`.
    pub fn parse(text: &str) -> Option<Fault> {
        let lower = text.to_ascii_lowercase();
        let (name, arg) = match lower.split_once(':') {
            Some((n, a)) => (n.to_string(), Some(a.to_string())),
            None => (lower.clone(), None),
        };
        let number = |a: Option<String>| a.and_then(|a| a.parse::<u64>().ok());
        Some(match name.as_str() {
            "500" | "http500" => Fault::Http500,
            "502" | "http502html" | "http502" => Fault::Http502Html,
            "503" | "http503" => Fault::Http503,
            "504" | "http504" => Fault::Http504,
            "reset" => Fault::Reset,
            "close" => Fault::Close,
            "hang" => Fault::Hang,
            "stall" | "stallafter" => Fault::StallAfter(u32::try_from(number(arg)?).ok()?),
            "cut" | "cutafter" => Fault::CutAfter(u32::try_from(number(arg)?).ok()?),
            "malformed" | "malformedjson" => Fault::MalformedJson,
            "delay" | "delayms" => Fault::DelayMs(number(arg)?),
            "401" => Fault::Status401,
            "400" => Fault::Status400,
            "403" => Fault::Status403,
            "404" => Fault::Status404,
            "422" => Fault::Status422,
            "429" | "ambiguous429" => Fault::Ambiguous429,
            "1300" | "bare1300" => Fault::Bare1300,
            "capacity" | "3505" => Fault::Capacity,
            "proxy429" | "proxy-429" => Fault::Proxy429,
            "cap" | "spending-cap" | "budget" => Fault::SpendingCap,
            "stream-error" | "streamerror" => Fault::StreamError(u32::try_from(number(arg)?).ok()?),
            "stream-error-event" | "streamerrorevent" => {
                Fault::StreamErrorEvent(u32::try_from(number(arg)?).ok()?)
            }
            _ => return None,
        })
    }
}

/// The emulator's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Accepted API keys (`Authorization: Bearer <key>`). Default: [`DEFAULT_KEY`].
    pub keys: Vec<String>,
    /// Wire generation: header names, 401 and 429 forms. Default [`Era::Y2026`].
    pub era: Era,
    /// How limits are enforced. Default [`Semantics::Bucket`].
    pub semantics: Semantics,
    /// Request window in seconds (default 60).
    pub window_secs: f64,
    /// Token window in seconds (default: the request window).
    pub token_window_secs: Option<f64>,
    /// Limits of any model not named in `models` (default: 300 requests and 500,000
    /// tokens per window, no monthly cap).
    pub default_limits: Limits,
    /// Limits per model name.
    pub models: BTreeMap<String, Limits>,
    /// When true, a model not named in `models` gets 400 `invalid_model` (code 1500).
    pub strict_models: bool,
    /// Send rate-limit headers at all (default true). False: clients must learn the
    /// limits from 429s alone.
    pub headers: bool,
    /// Send `Retry-After` (whole seconds, rounded up) on window refusals (default false,
    /// as on the real API).
    pub retry_after: bool,
    /// Also send `retry-after-ms` on window refusals (default false).
    pub retry_after_ms: bool,
    /// 429 body for a spent window; `None`: the era's default.
    pub rate_limit_body: Option<RateLimitBody>,
    /// Share (0..=1) of inference requests answered with a 3505 capacity 429, decided by
    /// a seeded draw per request number (not charged to any limit).
    pub capacity_rate: f64,
    /// Use the older capacity body (type `invalid_request_error`, code null).
    pub capacity_legacy_body: bool,
    /// Seed of every random draw (capacity, random faults, ids).
    pub seed: u64,
    /// Share (0..=1) of every model's request and token budget spent continuously by a
    /// background consumer inside the emulator ("another program of the organisation").
    pub background_share: f64,
    /// How often the background consumer wakes up, in milliseconds (default 10).
    pub background_tick_ms: u64,
    /// Faults by request number (0-based arrival order of every HTTP request the
    /// emulator receives, whatever the path).
    pub faults: Vec<(u64, Fault)>,
    /// Share (0..=1) of requests hit by a fault drawn from `random_faults` (seeded).
    pub fault_rate: f64,
    /// The faults `fault_rate` draws from (uniformly).
    pub random_faults: Vec<Fault>,
    /// Default dimension of embedding vectors (default 16).
    pub embedding_dim: usize,
    /// Pages of a document sent to `/v1/ocr` by URL or file id, which the emulator does
    /// not fetch (default 3; an inline PDF's pages are counted).
    pub document_pages: u64,
    /// The model every agent runs on (`/v1/agents/completions`, a conversation with an
    /// agent): what their calls are charged to (default `mistral-medium-latest`).
    pub agent_model: String,
    /// Seconds of audio sent to `/v1/audio/transcriptions` by URL, which the emulator
    /// does not fetch (default 30; an upload's length is read from it).
    pub audio_seconds: u64,
    /// Natural length of a completion in tokens (default 16); `max_tokens` caps it.
    pub completion_tokens: u32,
    /// How much a completion's natural length varies around `completion_tokens`, as a
    /// fraction (0: every completion has that length; 0.6: from 40 % to 160 % of it, by a
    /// hash of the prompt, so the client cannot know it in advance). Default 0.
    pub completion_spread: f64,
    /// The organisation has priority capacity: a chat request with `service_tier: "auto"`
    /// is served by the `priority` tier (`usage.service_tier: "priority"`); without it,
    /// and for `standard_only` or no `service_tier`, by `standard` (default true). Both
    /// tiers share the model's limits: no header announces limits per tier.
    pub priority_tier: bool,
    /// Delay between SSE events, in milliseconds (default 0).
    pub stream_chunk_delay_ms: u64,
    /// Service time of every admitted inference request, in milliseconds: the response
    /// head leaves this long after admission (default 0). The request holds its place
    /// under [`Limits::concurrency`] meanwhile.
    pub latency_ms: u64,
    /// Up to this many milliseconds more, drawn per request from the seed (uniform;
    /// default 0).
    pub latency_jitter_ms: u64,
    /// Changes of the limits or the background share during the run.
    pub schedule: Vec<Change>,
    /// How long [`Fault::Hang`] and [`Fault::StallAfter`] hold a connection (default 300).
    pub hang_secs: u64,
    /// Largest accepted request body (default 4 MiB; larger → 413).
    pub max_body_bytes: usize,
    /// Most log entries kept (default 1,000,000); later ones are counted, not kept
    /// ([`crate::Log::dropped`]).
    pub max_log_entries: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            keys: vec![DEFAULT_KEY.to_string()],
            era: Era::Y2026,
            semantics: Semantics::Bucket,
            window_secs: 60.0,
            token_window_secs: None,
            default_limits: Limits::new(Some(300), Some(500_000)),
            models: BTreeMap::new(),
            strict_models: false,
            headers: true,
            retry_after: false,
            retry_after_ms: false,
            rate_limit_body: None,
            capacity_rate: 0.0,
            capacity_legacy_body: false,
            seed: 0x5EED,
            background_share: 0.0,
            background_tick_ms: 10,
            faults: Vec::new(),
            fault_rate: 0.0,
            random_faults: Vec::new(),
            embedding_dim: 16,
            document_pages: 3,
            agent_model: "mistral-medium-latest".into(),
            audio_seconds: 30,
            completion_tokens: 16,
            completion_spread: 0.0,
            priority_tier: true,
            stream_chunk_delay_ms: 0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            schedule: Vec::new(),
            hang_secs: 300,
            max_body_bytes: 4 << 20,
            max_log_entries: 1_000_000,
        }
    }
}

impl Config {
    /// Adds (or replaces) the limits of one model; builder style.
    pub fn model(mut self, name: &str, limits: Limits) -> Config {
        self.models.insert(name.to_string(), limits);
        self
    }

    /// The limits that apply to `model`.
    pub fn limits_for(&self, model: &str) -> &Limits {
        self.models.get(model).unwrap_or(&self.default_limits)
    }

    /// The body a window refusal gets.
    pub fn window_body(&self) -> RateLimitBody {
        self.rate_limit_body
            .unwrap_or_else(|| self.era.default_rate_limit_body())
    }

    /// Resolves `limits` against this config's windows and semantics.
    pub fn effective(&self, limits: &Limits) -> EffectiveLimits {
        let window = limits.window_secs.unwrap_or(self.window_secs);
        let token_window = limits
            .token_window_secs
            .or(self.token_window_secs)
            .unwrap_or(window);
        EffectiveLimits {
            semantics: self.semantics,
            requests: limits.requests,
            burst: limits.burst.or(limits.requests).unwrap_or(0),
            tokens: limits.pages.or(limits.tokens),
            tokens_month: limits.tokens_month,
            concurrency: limits.concurrency,
            request_window: secs(window),
            token_window: secs(token_window),
        }
    }
}

/// Limits of one model resolved against the config (windows and semantics filled in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// How the limits are enforced.
    pub semantics: Semantics,
    /// Requests per `request_window` (`None`: unlimited, `Some(0)`: zero allowance).
    pub requests: Option<u64>,
    /// Request bucket capacity ([`Semantics::Bucket`] only).
    pub burst: u64,
    /// Tokens per `token_window`.
    pub tokens: Option<u64>,
    /// Tokens per month.
    pub tokens_month: Option<u64>,
    /// Most requests in flight at once.
    pub concurrency: Option<u64>,
    /// The request window.
    pub request_window: Duration,
    /// The token window.
    pub token_window: Duration,
}

impl EffectiveLimits {
    /// True when some limit is zero: nothing is ever admitted.
    pub fn is_zero_allowance(&self) -> bool {
        self.requests == Some(0)
            || self.tokens == Some(0)
            || self.tokens_month == Some(0)
            || self.concurrency == Some(0)
    }

    /// These limits scaled by `factor` (see [`Change`]): requests, burst, tokens and
    /// concurrency; a zero stays zero, anything else stays at least 1; the monthly quota
    /// is kept. A factor that is not finite and above 0 changes nothing.
    pub fn scaled(&self, factor: f64) -> EffectiveLimits {
        if !(factor.is_finite() && factor > 0.0) {
            return self.clone();
        }
        let scale = |n: u64| {
            if n == 0 {
                0
            } else {
                ((n as f64 * factor).round() as u64).max(1)
            }
        };
        EffectiveLimits {
            requests: self.requests.map(scale),
            burst: scale(self.burst),
            tokens: self.tokens.map(scale),
            concurrency: self.concurrency.map(scale),
            ..self.clone()
        }
    }
}

/// Seconds (possibly fractional, possibly nonsense) to a usable window: at least 1 ms.
fn secs(value: f64) -> Duration {
    if value.is_finite() && value > 0.001 {
        Duration::from_secs_f64(value.min(1e9))
    } else {
        Duration::from_millis(1)
    }
}
