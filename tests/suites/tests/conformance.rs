//! The conformance suite: what both clients promise, as one table of scenarios.
//!
//! Each row of [`SCENARIOS`] names the emulator's setup, the faults queued, the call made
//! and what must come of it: success or which error, how many HTTP attempts, a bound on
//! the time taken. The same row runs against the blocking and the async client (one test
//! per scenario per client, `blocking::NAME` and `async_client::NAME`). On top of its own
//! expectations every row also checks (see `support::verify`): the attempts the result
//! reports are those the client counted and those the emulator saw, the key is in no
//! error, and the emulator's log shows no limit exceeded.
//!
//! Time bounds: lower bounds are tight where they prove behaviour (a spent window is
//! waited out, not retried after a blind backoff of at most 200 ms); upper bounds are
//! loose, for shared and noisy machines. Every retry policy starts from
//! `support::base_policy` (backoff base 20 ms, cap 200 ms).

#[macro_use]
#[path = "conformance/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use mistral_core::{Bucket, Error, RetryPolicy, StreamFailure, TransportKind, Verdict, Window};
use mistral_emulator::{Config, Era, Fault, Limits, Semantics};
use support::{
    Expect, Got, Key, MODEL, Observed, Scenario, Target, UNKNOWN_FIELD, Want, Work, same,
};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A key the emulator does not accept (and must never show up anywhere).
const WRONG_KEY: &str = "sk-conformance-WRONG-Qz7Wm3Kp9Xv2";

/// Ends "at once": one attempt, well under a second even on a busy machine (a retry of
/// these would wait a window of up to a minute).
const AT_ONCE: std::ops::Range<Duration> = Duration::ZERO..ms(2_000);
/// Quick: a few backoffs of this policy (20 ms, 40 ms, 80 ms… at most 200 ms each) on
/// loopback; the bound is several times that, for busy machines.
const QUICK: std::ops::Range<Duration> = Duration::ZERO..ms(1_500);

// ---------------------------------------------------------------------------------------
// Emulator setups
// ---------------------------------------------------------------------------------------

fn default_config() -> Config {
    Config {
        keys: vec![support::GOOD_KEY.to_owned()],
        hang_secs: 5,
        ..Config::default()
    }
}

/// 2 requests per 1-second sliding window; late-2025 headers name the window
/// (`x-ratelimit-*-req-1-second`), so one unit comes back every 500 ms.
fn two_per_second() -> Config {
    Config {
        era: Era::Late2025,
        semantics: Semantics::SlidingLog,
        window_secs: 1.0,
        ..default_config()
    }
    .model(MODEL, Limits::new(Some(2), None))
}

fn zero_allowance() -> Config {
    default_config().model(MODEL, Limits::zero())
}

/// 10 tokens a month: the first call (18 tokens) spends it.
fn tiny_month() -> Config {
    default_config().model(
        MODEL,
        Limits {
            tokens_month: Some(10),
            ..Limits::new(Some(300), Some(500_000))
        },
    )
}

/// Early 2025: `x-ratelimitbysize-*` token headers plus `ratelimitbysize-reset`; 1,200
/// tokens per fixed 1-second window (named `-1-second`). The warm-up (1,204 tokens)
/// spends the window; the reset header then says 1 s, which the client must wait (its
/// own estimate, 1 s × 6 / 1,200 = 5 ms, is less).
fn early_2025() -> Config {
    Config {
        era: Era::Early2025,
        semantics: Semantics::FixedWindow,
        window_secs: 1.0,
        ..default_config()
    }
    .model(MODEL, Limits::new(None, Some(1_200)))
}

/// Mid 2025: token headers only (`x-ratelimit-*-tokens-minute`); 1,200 tokens a minute
/// (a bucket). The warm-up (1,204 tokens) leaves it 4 in debt; the measured call (6
/// tokens) needs 250 ms of refill, and the headers say 60 s × 6 / 1,200 = 300 ms.
fn mid_2025() -> Config {
    Config {
        era: Era::Mid2025,
        window_secs: 60.0,
        ..default_config()
    }
    .model(MODEL, Limits::new(None, Some(1_200)))
}

/// Late 2025: `x-ratelimit-*-req-1-second`; 5 requests a second, a burst of 1: one
/// request comes back every 200 ms.
fn late_2025() -> Config {
    Config {
        era: Era::Late2025,
        window_secs: 1.0,
        ..default_config()
    }
    .model(
        MODEL,
        Limits {
            burst: Some(1),
            ..Limits::new(Some(5), None)
        },
    )
}

/// 2026: `x-ratelimit-*-req-minute`; 200 requests a minute, a burst of 1: one request
/// comes back every 300 ms.
fn y_2026() -> Config {
    Config {
        era: Era::Y2026,
        window_secs: 60.0,
        ..default_config()
    }
    .model(
        MODEL,
        Limits {
            burst: Some(1),
            ..Limits::new(Some(200), None)
        },
    )
}

// ---------------------------------------------------------------------------------------
// Policy tweaks
// ---------------------------------------------------------------------------------------

fn two_attempts(p: RetryPolicy) -> RetryPolicy {
    p.max_attempts(2)
}

fn three_attempts(p: RetryPolicy) -> RetryPolicy {
    p.max_attempts(3)
}

fn idle_300ms(p: RetryPolicy) -> RetryPolicy {
    p.stream_idle_timeout(ms(300))
}

fn hang_deadline(p: RetryPolicy) -> RetryPolicy {
    p.retry_unknown_outcome(true)
        .max_attempts(10)
        .attempt_timeout(Some(ms(300)))
        .deadline(Some(ms(1_000)))
}

/// Sends again a request whose outcome is unknown (the server may have run it).
fn resend_unknown(p: RetryPolicy) -> RetryPolicy {
    p.retry_unknown_outcome(true)
}

fn short_deadline(p: RetryPolicy) -> RetryPolicy {
    p.max_attempts(50).deadline(Some(ms(500)))
}

// ---------------------------------------------------------------------------------------
// Checks of a success
// ---------------------------------------------------------------------------------------

/// A chat of 5 prompt characters: 2 prompt tokens + 16 completion tokens.
fn chat_answered(g: &Got) -> Result<(), String> {
    ensure!(!g.text.is_empty(), "empty completion");
    ensure!(g.items == 1, "{} choices", g.items);
    let usage = g.usage.as_ref().ok_or("no usage")?;
    ensure!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ) == (2, 16, 18),
        "usage {usage:?}"
    );
    Ok(())
}

/// As [`chat_answered`], and the reply exposes the limits the emulator announced (its
/// default: 300 requests and 500,000 tokens a minute, one of each just spent).
fn answered_with_its_limits(g: &Got) -> Result<(), String> {
    chat_answered(g)?;
    let requests = g.limits.requests().ok_or("no request limit exposed")?;
    ensure!(
        (requests.limit, requests.remaining) == (Some(300), Some(299)),
        "requests {requests:?}"
    );
    let tokens = g.limits.tokens().ok_or("no token limit exposed")?;
    ensure!(
        (tokens.limit, tokens.remaining) == (Some(500_000), Some(500_000 - 18)),
        "tokens {tokens:?}"
    );
    Ok(())
}

/// The client's statistics keep the limits of its last response.
fn kept_the_last_limits(o: &Observed) -> Result<(), String> {
    let last = o.stats.last_limits.as_ref().ok_or("no last limits kept")?;
    let requests = last.requests().ok_or("no request limit kept")?;
    ensure!(requests.limit == Some(300), "last limits {last:?}");
    Ok(())
}

/// A `send` of a chat body: the emulator parsed the body as given (model and prompt, so
/// 2 + 16 tokens charged on the chat path), and the JSON came back whole.
fn sent_chat_answered(g: &Got) -> Result<(), String> {
    chat_answered(g)
}

/// The body a `send` posted arrived as given: the emulator read its model and charged its
/// prompt on the path it named.
fn body_arrived_as_given(o: &Observed) -> Result<(), String> {
    let measured = o.measured_entries();
    let entry = measured.first().ok_or("the call never arrived")?;
    ensure!(
        entry.method == "POST" && entry.path == support::CHAT_PATH,
        "{} {}",
        entry.method,
        entry.path
    );
    ensure!(
        entry.model.as_deref() == Some(MODEL) && entry.tokens == 18,
        "model {:?}, {} tokens",
        entry.model,
        entry.tokens
    );
    Ok(())
}

/// A collected stream is the whole response: the 16 words and the usage.
fn collected(g: &Got) -> Result<(), String> {
    let words = g.text.split_whitespace().count();
    ensure!(words == 16, "{words} words in {:?}", g.text);
    ensure!(g.items == 1, "{} choices", g.items);
    let usage = g.usage.as_ref().ok_or("no usage")?;
    ensure!(usage.total_tokens == 18, "usage {usage:?}");
    Ok(())
}

/// The stream asked its limiter once, for its model, and its last report is the usage the
/// stream announced (18 tokens), correcting the estimate made before it.
fn reported_the_streams_usage(o: &Observed) -> Result<(), String> {
    ensure!(o.asks.len() == 1, "{} asks: {:?}", o.asks.len(), o.asks);
    ensure!(
        o.asks[0].model.as_deref() == Some(MODEL),
        "asked for {:?}",
        o.asks[0].model
    );
    let last = o.reports.last().ok_or("nothing reported")?;
    ensure!(
        last.verdict == Verdict::Usage && last.used_tokens == Some(18),
        "reports: {:?}",
        o.reports
    );
    let usages = o
        .reports
        .iter()
        .filter(|r| r.verdict == Verdict::Usage)
        .count();
    ensure!(usages == 1, "{usages} usage reports: {:?}", o.reports);
    Ok(())
}

/// The key check went as `GET /v1/models`, once.
fn checked_the_key_on_models(o: &Observed) -> Result<(), String> {
    let measured = o.measured_entries();
    ensure!(measured.len() == 1, "{} requests", measured.len());
    let entry = measured[0];
    ensure!(
        entry.method == "GET" && entry.path == "/v1/models",
        "{} {}",
        entry.method,
        entry.path
    );
    Ok(())
}

/// The same for a chat of `max_tokens` 4: 2 + 4 tokens.
fn short_chat_answered(g: &Got) -> Result<(), String> {
    let usage = g.usage.as_ref().ok_or("no usage")?;
    ensure!(usage.total_tokens == 6, "usage {usage:?}");
    ensure!(g.text.split_whitespace().count() == 4, "text {:?}", g.text);
    Ok(())
}

fn embedded(g: &Got) -> Result<(), String> {
    ensure!(g.items == 1, "{} vectors", g.items);
    let usage = g.usage.as_ref().ok_or("no usage")?;
    ensure!(usage.total_tokens == 2, "usage {usage:?}");
    Ok(())
}

/// A stream: a role chunk then one chunk per word (16), concatenated into the text; the
/// usage arrives with the last chunk only and counts the words.
fn streamed(g: &Got) -> Result<(), String> {
    let words = g.text.split_whitespace().count();
    ensure!(words == 16, "{words} words in {:?}", g.text);
    ensure!(g.text.ends_with('.'), "the text is cut: {:?}", g.text);
    ensure!(g.items == 17, "{} chunks", g.items);
    ensure!(
        g.usage_first_at == Some(g.items - 1),
        "usage first seen at chunk {:?} of {}",
        g.usage_first_at,
        g.items
    );
    let usage = g.usage.as_ref().ok_or("no usage at the end")?;
    ensure!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ) == (2, 16, 18),
        "usage {usage:?}"
    );
    ensure!(
        g.used_tokens == Some(usage.total_tokens),
        "the stream says {:?} tokens used, its usage {}",
        g.used_tokens,
        usage.total_tokens
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Checks of what was observed
// ---------------------------------------------------------------------------------------

fn one_ambiguous_429(o: &Observed) -> Result<(), String> {
    let r = o.stats.rate_limited;
    ensure!(r.ambiguous == 1 && r.total() == 1, "429s counted: {r:?}");
    Ok(())
}

fn one_capacity_429(o: &Observed) -> Result<(), String> {
    let r = o.stats.rate_limited;
    ensure!(r.capacity == 1 && r.total() == 1, "429s counted: {r:?}");
    Ok(())
}

fn one_server_error(o: &Observed) -> Result<(), String> {
    ensure!(
        o.stats.server_errors == 1,
        "{} server errors counted",
        o.stats.server_errors
    );
    Ok(())
}

fn one_transport_error(o: &Observed) -> Result<(), String> {
    ensure!(
        o.stats.transport_errors == 1,
        "{} transport errors counted",
        o.stats.transport_errors
    );
    Ok(())
}

fn counted_no_allowance(o: &Observed) -> Result<(), String> {
    let r = o.stats.rate_limited;
    ensure!(r.no_allowance == 1 && r.total() == 1, "429s counted: {r:?}");
    Ok(())
}

fn counted_monthly_quota(o: &Observed) -> Result<(), String> {
    let r = o.stats.rate_limited;
    ensure!(
        r.monthly_quota == 1 && r.total() == 1,
        "429s counted: {r:?}"
    );
    Ok(())
}

/// Three chunks were handed out before the stream failed, and nothing was retried.
fn three_chunks_then_failure(o: &Observed) -> Result<(), String> {
    ensure!(o.chunks == 3, "{} chunks handed out, expected 3", o.chunks);
    Ok(())
}

/// The spent 2-per-second sliding window: the measured call was admitted only once the
/// first warm-up admission left the window; it took at least the window's remainder;
/// its attempts were spaced by at least one unit (500 ms), never hammering.
fn waited_out_the_window(o: &Observed) -> Result<(), String> {
    let window = ms(1_000);
    let unit = ms(500);
    let log = o.log.as_ref().ok_or("no log")?;
    let mut admitted: Vec<Duration> = log
        .entries()
        .iter()
        .filter(|e| e.admitted())
        .filter_map(|e| e.decided)
        .collect();
    admitted.sort();
    ensure!(
        admitted.len() == 3,
        "{} admitted, expected 3",
        admitted.len()
    );
    ensure!(
        admitted[2] >= admitted[0] + window,
        "admitted at {:?}, within the window of the first ({:?})",
        admitted[2],
        admitted[0]
    );
    let measured = o.measured_entries();
    let first = measured.first().ok_or("the measured call never arrived")?;
    let remainder = (admitted[0] + window).saturating_sub(first.arrived);
    ensure!(
        o.elapsed + ms(5) >= remainder,
        "took {:?}, the window had {remainder:?} left",
        o.elapsed
    );
    for pair in measured.windows(2) {
        let gap = pair[1].arrived.saturating_sub(pair[0].arrived);
        ensure!(
            gap + ms(1) >= unit,
            "retried {gap:?} after a refusal, less than one unit ({unit:?})"
        );
    }
    let r = o.stats.rate_limited;
    ensure!(
        r.window == u64::from(o.attempts - 1) && r.total() == r.window,
        "429s counted: {r:?}"
    );
    Ok(())
}

/// One 429 of a spent window (not ambiguous), and the reply waited at least `MS`
/// milliseconds before its retry: the window's own time, where a blind backoff of this
/// policy waits at most 20 ms after a first failure (200 ms at most ever).
fn waited_a_window<const MS: u64>(o: &Observed) -> Result<(), String> {
    let r = o.stats.rate_limited;
    ensure!(r.window == 1 && r.total() == 1, "429s counted: {r:?}");
    let got = o.got()?;
    ensure!(
        got.waited >= ms(MS),
        "waited {:?} before the retry, the window needs {:?}",
        got.waited,
        ms(MS)
    );
    Ok(())
}

/// Early 2025: as [`waited_a_window`], and the retry was admitted in the next fixed
/// window (after the 1-second boundary).
fn waited_for_the_reset(o: &Observed) -> Result<(), String> {
    waited_a_window::<990>(o)?;
    let measured = o.measured_entries();
    let last = measured.last().ok_or("the measured call never arrived")?;
    let at = last.decided.ok_or("the retry was never decided")?;
    ensure!(
        at >= ms(1_000),
        "the retry was admitted at {at:?}, before the window's reset"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Error matchers
// ---------------------------------------------------------------------------------------

fn is_no_allowance(e: &Error) -> bool {
    matches!(e, Error::NoAllowance { model: Some(m), .. } if m == MODEL)
        && e.status_u16() == Some(429)
}

fn is_monthly_quota(e: &Error) -> bool {
    matches!(
        e,
        Error::MonthlyQuota {
            limit: Some(10),
            remaining: Some(0),
            ..
        }
    )
}

fn is_unauthorized(e: &Error) -> bool {
    matches!(e, Error::Unauthorized { .. })
        && e.status_u16() == Some(401)
        && e.to_string().contains("MISTRAL_API_KEY")
        && support::leaked_piece(&format!("{e}\n{e:?}"), WRONG_KEY).is_none()
}

fn is_422_with_details(e: &Error) -> bool {
    let Error::BadRequest { details, response } = e else {
        return false;
    };
    response.status_u16() == Some(422)
        && details.iter().any(|d| {
            d.kind.as_deref() == Some("extra_forbidden")
                && d.loc.last().map(String::as_str) == Some(UNKNOWN_FIELD)
        })
}

fn is_html_502_after_two(e: &Error) -> bool {
    let Error::Server { trail, response } = e else {
        return false;
    };
    response.status_u16() == Some(502)
        && trail.attempts == 2
        && response.excerpt.contains("502 Bad Gateway")
}

fn is_connect_after_three(e: &Error) -> bool {
    matches!(
        e,
        Error::Transport {
            kind: TransportKind::Connect,
            trail,
            ..
        } if trail.attempts == 3
    )
}

fn is_idle(e: &Error) -> bool {
    matches!(
        e,
        Error::Stream {
            failure: StreamFailure::Idle(d),
            ..
        } if *d == ms(300)
    )
}

fn is_cut(e: &Error) -> bool {
    matches!(
        e,
        Error::Stream {
            failure: StreamFailure::Cut,
            ..
        }
    )
}

/// The deadline ended the call after timeouts: reached (a `Deadline` with the last
/// timeout), or about to be passed by the next wait (the last timeout itself).
fn is_deadline_after_timeouts(e: &Error) -> bool {
    let last = match e {
        Error::Deadline { deadline, last, .. } if *deadline == ms(1_000) => last.as_deref(),
        Error::Deadline { .. } => return false,
        other => Some(other),
    };
    matches!(
        last,
        Some(Error::OutcomeUnknown {
            kind: TransportKind::Timeout,
            ..
        })
    )
}

/// The emulator read the request, then reset the connection: the server may have run
/// it, so the call ends, not sent again.
fn is_unknown_after_a_reset(e: &Error) -> bool {
    matches!(
        e,
        Error::OutcomeUnknown {
            kind: TransportKind::Reset,
            trail,
            ..
        } if trail.attempts == 1
    ) && !e.is_retryable()
}

fn one_unknown_outcome(o: &Observed) -> Result<(), String> {
    one_transport_error(o)?;
    ensure!(
        (o.stats.outcome_unknown, o.stats.unknown_outcome_resent) == (1, 0),
        "unknown outcomes counted: {:?}",
        (o.stats.outcome_unknown, o.stats.unknown_outcome_resent)
    );
    Ok(())
}

fn one_unknown_outcome_resent(o: &Observed) -> Result<(), String> {
    one_transport_error(o)?;
    ensure!(
        (o.stats.outcome_unknown, o.stats.unknown_outcome_resent) == (0, 1),
        "unknown outcomes counted: {:?}",
        (o.stats.outcome_unknown, o.stats.unknown_outcome_resent)
    );
    Ok(())
}

/// The deadline ended the call after 503s: reached (a `Deadline` with the last 503), or
/// about to be passed by the next wait (the last 503 itself, with its trail).
fn is_deadline_after_503s(e: &Error) -> bool {
    match e {
        Error::Deadline { deadline, last, .. } => {
            *deadline == ms(500) && last.as_deref().and_then(Error::status_u16) == Some(503)
        }
        Error::Server { trail, .. } => e.status_u16() == Some(503) && trail.attempts >= 2,
        _ => false,
    }
}

fn is_decode(e: &Error) -> bool {
    let Error::Decode { response, .. } = e else {
        return false;
    };
    response.status_u16() == Some(200) && response.excerpt.contains("chat.completion")
}

fn is_rate_limited_requests(e: &Error) -> bool {
    matches!(
        e,
        Error::RateLimited {
            bucket: Some(Bucket::Requests),
            window: Some(Window::Seconds(1)),
            ..
        }
    )
}

// ---------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------

/// A scenario on the default emulator: one chat, no warm-up, no fault, the base policy.
const BASE: Scenario = Scenario {
    name: "",
    config: default_config,
    warmup: &[],
    faults: &[],
    key: Key::Emulator,
    target: Target::Emulator,
    work: Work::chat(),
    policy: same,
    record_limiter: false,
    expect: Expect {
        outcome: Want::Ok(chat_answered),
        attempts: 1..=1,
        time: QUICK,
        check: None,
    },
};

/// Retried once after `faults`, then answered; `check` says what the client counted.
const fn retried_once(
    name: &'static str,
    faults: &'static [Fault],
    check: support::ObservedCheck,
) -> Scenario {
    Scenario {
        name,
        faults,
        expect: Expect {
            outcome: Want::Ok(chat_answered),
            attempts: 2..=2,
            time: QUICK,
            check: Some(check),
        },
        ..BASE
    }
}

/// The clients' promises.
static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "success",
        expect: Expect {
            outcome: Want::Ok(answered_with_its_limits),
            check: Some(kept_the_last_limits),
            ..BASE.expect
        },
        ..BASE
    },
    Scenario {
        name: "send_posts_its_json_as_given",
        work: Work::send_chat(),
        expect: Expect {
            outcome: Want::Ok(sent_chat_answered),
            check: Some(body_arrived_as_given),
            ..BASE.expect
        },
        ..BASE
    },
    Scenario {
        name: "embeddings_success",
        work: Work::embeddings(),
        expect: Expect {
            outcome: Want::Ok(embedded),
            ..BASE.expect
        },
        ..BASE
    },
    retried_once(
        "ambiguous_429_then_success",
        &[Fault::Ambiguous429],
        one_ambiguous_429,
    ),
    Scenario {
        name: "spent_window_waited_out_not_retried_early",
        config: two_per_second,
        warmup: &[Work::chat(), Work::chat()],
        expect: Expect {
            outcome: Want::Ok(chat_answered),
            attempts: 2..=3,
            time: ms(900)..ms(5_000),
            check: Some(waited_out_the_window),
        },
        ..BASE
    },
    Scenario {
        name: "spent_window_without_retries_says_which_limit",
        config: two_per_second,
        warmup: &[Work::chat(), Work::chat()],
        policy: |p| p.max_attempts(1),
        expect: Expect {
            outcome: Want::Err(
                "RateLimited by the requests per 1 s limit",
                is_rate_limited_requests,
            ),
            attempts: 1..=1,
            time: AT_ONCE,
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "zero_allowance_ends_at_once",
        config: zero_allowance,
        expect: Expect {
            outcome: Want::Err("NoAllowance for the model", is_no_allowance),
            attempts: 1..=1,
            time: AT_ONCE,
            check: Some(counted_no_allowance),
        },
        ..BASE
    },
    Scenario {
        name: "monthly_quota_ends_at_once",
        config: tiny_month,
        warmup: &[Work::chat()],
        expect: Expect {
            outcome: Want::Err("MonthlyQuota (10 a month, 0 left)", is_monthly_quota),
            attempts: 1..=1,
            time: AT_ONCE,
            check: Some(counted_monthly_quota),
        },
        ..BASE
    },
    retried_once(
        "capacity_retried_then_success",
        &[Fault::Capacity],
        one_capacity_429,
    ),
    Scenario {
        name: "unauthorized_names_the_variable_not_the_key",
        key: Key::Other(WRONG_KEY),
        expect: Expect {
            outcome: Want::Err("Unauthorized naming MISTRAL_API_KEY", is_unauthorized),
            attempts: 1..=1,
            time: AT_ONCE,
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "verify_key_refused_names_the_variable_not_retried",
        key: Key::Other(WRONG_KEY),
        work: Work::verify_key(),
        expect: Expect {
            outcome: Want::Err("Unauthorized naming MISTRAL_API_KEY", is_unauthorized),
            attempts: 1..=1,
            time: AT_ONCE,
            check: Some(checked_the_key_on_models),
        },
        ..BASE
    },
    Scenario {
        name: "unknown_field_is_bad_request_with_details",
        work: Work::send_unknown_field(),
        expect: Expect {
            outcome: Want::Err(
                "BadRequest 422 with extra_forbidden details",
                is_422_with_details,
            ),
            attempts: 1..=1,
            time: AT_ONCE,
            check: None,
        },
        ..BASE
    },
    retried_once(
        "http_500_retried_then_success",
        &[Fault::Http500],
        one_server_error,
    ),
    retried_once(
        "http_502_html_retried_then_success",
        &[Fault::Http502Html],
        one_server_error,
    ),
    retried_once(
        "http_503_retried_then_success",
        &[Fault::Http503],
        one_server_error,
    ),
    Scenario {
        name: "html_error_surfaced_when_retries_exhausted",
        faults: &[Fault::Http502Html, Fault::Http502Html],
        policy: two_attempts,
        expect: Expect {
            outcome: Want::Err("Server 502 with the HTML excerpt", is_html_502_after_two),
            attempts: 2..=2,
            time: QUICK,
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "connection_refused_is_transport_connect",
        target: Target::DeadPort,
        policy: three_attempts,
        expect: Expect {
            outcome: Want::Err("Transport Connect after 3 attempts", is_connect_after_three),
            attempts: 3..=3,
            time: QUICK,
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "stream_success",
        work: Work::stream(),
        expect: Expect {
            outcome: Want::Ok(streamed),
            ..BASE.expect
        },
        ..BASE
    },
    Scenario {
        name: "stream_reports_its_usage_to_the_limiter",
        work: Work::stream(),
        record_limiter: true,
        expect: Expect {
            outcome: Want::Ok(streamed),
            check: Some(reported_the_streams_usage),
            ..BASE.expect
        },
        ..BASE
    },
    Scenario {
        name: "stream_collected_is_the_whole_response",
        work: Work::stream_collected(),
        expect: Expect {
            outcome: Want::Ok(collected),
            ..BASE.expect
        },
        ..BASE
    },
    Scenario {
        name: "ambiguous_429_before_stream_then_stream",
        work: Work::stream(),
        faults: &[Fault::Ambiguous429],
        expect: Expect {
            outcome: Want::Ok(streamed),
            attempts: 2..=2,
            time: QUICK,
            check: Some(one_ambiguous_429),
        },
        ..BASE
    },
    Scenario {
        name: "stalled_stream_fails_idle",
        work: Work::stream(),
        faults: &[Fault::StallAfter(3)],
        policy: idle_300ms,
        expect: Expect {
            outcome: Want::Err("Stream Idle(300 ms)", is_idle),
            attempts: 1..=1,
            time: ms(300)..ms(3_000),
            check: Some(three_chunks_then_failure),
        },
        ..BASE
    },
    Scenario {
        name: "cut_stream_fails_cut",
        work: Work::stream(),
        faults: &[Fault::CutAfter(3)],
        expect: Expect {
            outcome: Want::Err("Stream Cut", is_cut),
            attempts: 1..=1,
            time: QUICK,
            check: Some(three_chunks_then_failure),
        },
        ..BASE
    },
    Scenario {
        name: "deadline_reached_on_hangs",
        faults: &[Fault::Hang; 12],
        policy: hang_deadline,
        expect: Expect {
            outcome: Want::Err(
                "the deadline: reached or about to be, last an unknown outcome (Timeout)",
                is_deadline_after_timeouts,
            ),
            // 300 ms per attempt, under a 1 s deadline.
            attempts: 3..=4,
            time: ms(900)..ms(2_500),
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "deadline_reached_on_repeated_503",
        faults: &[Fault::Http503; 60],
        policy: short_deadline,
        expect: Expect {
            outcome: Want::Err(
                "the deadline: reached or about to be, last a 503",
                is_deadline_after_503s,
            ),
            attempts: 2..=50,
            // It may stop as soon as the next wait would cross the deadline (≤ 200 ms).
            time: ms(300)..ms(2_000),
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "malformed_json_is_decode_error",
        faults: &[Fault::MalformedJson],
        expect: Expect {
            outcome: Want::Err("Decode with the body's excerpt", is_decode),
            attempts: 1..=1,
            time: AT_ONCE,
            check: None,
        },
        ..BASE
    },
    Scenario {
        name: "reset_after_the_request_is_an_unknown_outcome",
        faults: &[Fault::Reset],
        expect: Expect {
            outcome: Want::Err(
                "OutcomeUnknown (Reset) after 1 attempt",
                is_unknown_after_a_reset,
            ),
            attempts: 1..=1,
            time: AT_ONCE,
            check: Some(one_unknown_outcome),
        },
        ..BASE
    },
    Scenario {
        policy: resend_unknown,
        ..retried_once(
            "reset_after_the_request_resent_when_allowed_then_success",
            &[Fault::Reset],
            one_unknown_outcome_resent,
        )
    },
    Scenario {
        name: "era_early_2025_waits_for_the_reset",
        config: early_2025,
        warmup: &[Work::chat().prompt(4_800).max_tokens(4)],
        work: Work::chat().max_tokens(4),
        expect: Expect {
            outcome: Want::Ok(short_chat_answered),
            attempts: 2..=2,
            time: ms(990)..ms(4_000),
            check: Some(waited_for_the_reset),
        },
        ..BASE
    },
    Scenario {
        name: "era_mid_2025_waits_for_the_token_window",
        config: mid_2025,
        warmup: &[Work::chat().prompt(4_800).max_tokens(4)],
        work: Work::chat().max_tokens(4),
        expect: Expect {
            outcome: Want::Ok(short_chat_answered),
            attempts: 2..=2,
            time: ms(300)..ms(3_000),
            check: Some(waited_a_window::<300>),
        },
        ..BASE
    },
    Scenario {
        name: "era_late_2025_waits_for_the_request_window",
        config: late_2025,
        warmup: &[Work::chat()],
        expect: Expect {
            outcome: Want::Ok(chat_answered),
            attempts: 2..=2,
            time: ms(200)..ms(3_000),
            check: Some(waited_a_window::<200>),
        },
        ..BASE
    },
    Scenario {
        name: "era_2026_waits_for_the_minute_window",
        config: y_2026,
        warmup: &[Work::chat()],
        expect: Expect {
            outcome: Want::Ok(chat_answered),
            attempts: 2..=2,
            time: ms(300)..ms(3_000),
            check: Some(waited_a_window::<300>),
        },
        ..BASE
    },
];

fn scenario(name: &str) -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario named {name}"))
}

/// One test per scenario per client (attributes, such as an `#[ignore]` naming a known
/// bug, go to both).
macro_rules! conformance {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        /// Scenarios run by the blocking client.
        mod blocking {
            $(
                #[test]
                $(#[$attr])*
                fn $name() {
                    crate::support::run_scenario(
                        crate::scenario(stringify!($name)),
                        crate::support::Driver::Blocking,
                    );
                }
            )*
        }

        /// Scenarios run by the async client.
        mod async_client {
            $(
                #[test]
                $(#[$attr])*
                fn $name() {
                    crate::support::run_scenario(
                        crate::scenario(stringify!($name)),
                        crate::support::Driver::Async,
                    );
                }
            )*
        }

        /// Every scenario with a test.
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

conformance! {
    success,
    send_posts_its_json_as_given,
    embeddings_success,
    ambiguous_429_then_success,
    spent_window_waited_out_not_retried_early,
    spent_window_without_retries_says_which_limit,
    zero_allowance_ends_at_once,
    monthly_quota_ends_at_once,
    capacity_retried_then_success,
    unauthorized_names_the_variable_not_the_key,
    verify_key_refused_names_the_variable_not_retried,
    unknown_field_is_bad_request_with_details,
    http_500_retried_then_success,
    http_502_html_retried_then_success,
    http_503_retried_then_success,
    html_error_surfaced_when_retries_exhausted,
    connection_refused_is_transport_connect,
    stream_success,
    stream_reports_its_usage_to_the_limiter,
    stream_collected_is_the_whole_response,
    ambiguous_429_before_stream_then_stream,
    stalled_stream_fails_idle,
    cut_stream_fails_cut,
    deadline_reached_on_hangs,
    deadline_reached_on_repeated_503,
    malformed_json_is_decode_error,
    reset_after_the_request_is_an_unknown_outcome,
    reset_after_the_request_resent_when_allowed_then_success,
    era_early_2025_waits_for_the_reset,
    era_mid_2025_waits_for_the_token_window,
    era_late_2025_waits_for_the_request_window,
    era_2026_waits_for_the_minute_window,
}

/// Every row of the table is run by both clients, and names are unique.
#[test]
fn every_scenario_is_tested_by_both_clients() {
    let table: BTreeSet<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    assert_eq!(table.len(), SCENARIOS.len(), "duplicate scenario names");
    assert!(!table.contains(""), "a scenario without a name");
    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    assert_eq!(table, tested, "table rows and tests differ");
}

/// The checks can fail: a scenario run against a setup that breaks its promise is caught
/// (here: the success scenario against an emulator that refuses every request).
#[test]
fn a_broken_promise_is_caught() {
    let broken = Scenario {
        name: "success_against_zero_allowance",
        config: zero_allowance,
        ..BASE
    };
    let observed = support::run_blocking(&broken);
    let failures = support::verify(&broken, &observed);
    assert!(
        failures.iter().any(|f| f.starts_with("expected success")),
        "{failures:?}"
    );
    let slow = Scenario {
        name: "success_in_no_time",
        expect: Expect {
            time: Duration::ZERO..Duration::from_nanos(1),
            attempts: 2..=2,
            ..BASE.expect
        },
        ..BASE
    };
    let observed = support::run_async(&slow);
    let failures = support::verify(&slow, &observed);
    assert_eq!(failures.len(), 2, "{failures:?}");
    // The checks every row gets: the key in the client's Debug, a stream that yields
    // after its error, a success without its correlation id.
    let mut observed = support::run_blocking(scenario("success"));
    assert!(support::verify(scenario("success"), &observed).is_empty());
    observed.client_debug = format!("Client {{ key: {:?} }}", observed.key);
    observed.ended_after_error = Some(false);
    if let Ok(got) = &mut observed.outcome {
        got.correlation_id = None;
    }
    let failures = support::verify(scenario("success"), &observed);
    for expected in [
        "the key (",
        "the stream yielded again",
        "the success does not carry",
    ] {
        assert!(
            failures.iter().any(|f| f.starts_with(expected)),
            "{expected}: {failures:?}"
        );
    }
}
