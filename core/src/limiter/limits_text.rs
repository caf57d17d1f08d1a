//! Limits written as text, as the `MISTRAL_LIMITS` environment variable spells them, so a
//! fleet's limits can be set without code:
//!
//! ```text
//! MISTRAL_LIMITS="mistral-small-latest=300/60s,500000t/60s; *=60/1m"
//! ```
//!
//! - Entries are separated by `;`: `<model>=<limit>[,<limit>]`; the model `*` sets the
//!   limits of every model not listed. A model listed twice is an error.
//! - A limit is `<count>/<window>`: requests, or tokens with a `t` after the count
//!   (`500000t/60s`; `r` for requests is accepted too), or an OCR model's pages with a
//!   `p` (`mistral-ocr-latest=1000p/60s`: its budget counts pages where the others count
//!   tokens, so `p` and `t` are the same limit). At most one of each per model.
//! - A window is a whole number with a unit, `ms`, `s`, `m` (or `min`) or `h`; the number
//!   may be left out for one unit (`300/m`). Counts and windows are at least 1.
//! - Whitespace around every part is ignored; an empty value sets nothing.
//!
//! A model with configured limits keeps them whatever the server announces (see
//! [`super::Limits`]).

use std::time::Duration;

use super::{LimiterConfig, Limits};

/// The environment variable both clients' `from_env` read limits from.
pub const LIMITS_VAR: &str = "MISTRAL_LIMITS";

pub use crate::error::LimitsError;

/// Parses a limits text (see the module docs).
pub fn parse_limits(text: &str) -> Result<LimiterConfig, LimitsError> {
    let mut config = LimiterConfig::default();
    let mut seen_default = false;
    for (index, raw) in text.split(';').enumerate() {
        let entry = index + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let Some((model, limits)) = raw.split_once('=') else {
            return Err(LimitsError::NoEquals {
                entry,
                text: raw.to_owned(),
            });
        };
        let model = model.trim();
        if model.is_empty() {
            return Err(LimitsError::NoModel { entry });
        }
        let parsed = parse_entry(entry, model, limits)?;
        let duplicate = if model == "*" {
            std::mem::replace(&mut seen_default, true)
        } else {
            config.models.contains_key(model)
        };
        if duplicate {
            return Err(LimitsError::Duplicate {
                entry,
                model: model.to_owned(),
            });
        }
        if model == "*" {
            config.default = Some(parsed);
        } else {
            config.models.insert(model.to_owned(), parsed);
        }
    }
    Ok(config)
}

fn parse_entry(entry: usize, model: &str, text: &str) -> Result<Limits, LimitsError> {
    let mut limits = Limits::default();
    let mut any = false;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        any = true;
        let bad = || LimitsError::BadLimit {
            entry,
            text: part.to_owned(),
        };
        let (count, window) = part.split_once('/').ok_or_else(bad)?;
        let count = count.trim();
        let (count, tokens) = match count.strip_suffix(['t', 'T', 'p', 'P']) {
            Some(c) => (c.trim_end(), true),
            None => (
                count.strip_suffix(['r', 'R']).unwrap_or(count).trim_end(),
                false,
            ),
        };
        let n = count
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| LimitsError::BadCount {
                entry,
                text: count.to_owned(),
            })?;
        let window = parse_window(window.trim()).ok_or_else(|| LimitsError::BadWindow {
            entry,
            text: window.trim().to_owned(),
        })?;
        let slot = if tokens {
            &mut limits.tokens
        } else {
            &mut limits.requests
        };
        if slot.replace((n, window)).is_some() {
            return Err(LimitsError::Twice {
                entry,
                model: model.to_owned(),
                what: if tokens { "tokens" } else { "requests" },
            });
        }
    }
    if !any {
        return Err(LimitsError::NoLimit {
            entry,
            model: model.to_owned(),
        });
    }
    Ok(limits)
}

fn parse_window(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = if number.is_empty() {
        1
    } else {
        number.parse::<u64>().ok()?
    };
    let millis_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" | "sec" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    let millis = number.checked_mul(millis_per_unit)?;
    (millis >= 1).then(|| Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let config = parse_limits("mistral-small-latest=300/60s,500000t/60s; *=60/1m").unwrap();
        assert_eq!(
            config.limits_for("mistral-small-latest"),
            Some(
                Limits::requests(300, Duration::from_secs(60))
                    .with_tokens(500_000, Duration::from_secs(60))
            )
        );
        assert_eq!(
            config.limits_for("other"),
            Some(Limits::requests(60, Duration::from_secs(60)))
        );
        let pages = parse_limits("mistral-ocr-latest=60/m,1000p/m").unwrap();
        assert_eq!(
            pages.models["mistral-ocr-latest"],
            Limits::requests(60, Duration::from_secs(60))
                .with_tokens(1000, Duration::from_secs(60))
        );
        let tokens_only = parse_limits(" m = 20000T / h ;").unwrap();
        assert_eq!(
            tokens_only.models["m"],
            Limits {
                requests: None,
                tokens: Some((20_000, Duration::from_secs(3600)))
            }
        );
        assert_eq!(
            parse_limits("m=5r/500ms").unwrap().models["m"],
            Limits::requests(5, Duration::from_millis(500))
        );
        assert_eq!(parse_limits("").unwrap(), LimiterConfig::default());
        assert_eq!(parse_limits(" ; ").unwrap(), LimiterConfig::default());
    }

    #[test]
    fn bad_text_gets_a_typed_error_that_names_the_entry() {
        use LimitsError as E;
        let err = |s: &str| parse_limits(s).unwrap_err();
        assert!(matches!(err("m"), E::NoEquals { entry: 1, .. }));
        assert!(matches!(err("a=1/s;=1/s"), E::NoModel { entry: 2 }));
        assert!(matches!(err("m="), E::NoLimit { entry: 1, .. }));
        assert!(matches!(err("m=1/s;m=2/s"), E::Duplicate { entry: 2, .. }));
        assert!(matches!(err("*=1/s;*=2/s"), E::Duplicate { entry: 2, .. }));
        assert!(matches!(err("m=300"), E::BadLimit { entry: 1, .. }));
        assert!(matches!(err("m=0/s"), E::BadCount { .. }));
        assert!(matches!(err("m=-1/s"), E::BadCount { .. }));
        assert!(matches!(err("m=x/s"), E::BadCount { .. }));
        assert!(matches!(err("m=1/60"), E::BadWindow { .. }));
        assert!(matches!(err("m=1/0s"), E::BadWindow { .. }));
        assert!(matches!(err("m=1/1d"), E::BadWindow { .. }));
        assert!(matches!(
            err("m=1/99999999999999999999h"),
            E::BadWindow { .. }
        ));
        assert!(matches!(
            err("m=1/s,2/m"),
            E::Twice {
                what: "requests",
                ..
            }
        ));
        assert!(matches!(
            err("m=1t/s,2t/m"),
            E::Twice { what: "tokens", .. }
        ));
        // The messages (in `error.rs`, which imports nothing of the limiter) spell the
        // variable's name out: it is this one.
        for text in [
            "m",
            "a=1/s;=1/s",
            "m=",
            "m=1/s;m=2/s",
            "m=300",
            "m=0/s",
            "m=1/60",
        ] {
            let message = err(text).to_string();
            assert!(message.starts_with(LIMITS_VAR), "{message}");
        }
        let message = err("a=1/s; b=3/fortnight").to_string();
        assert!(message.contains("MISTRAL_LIMITS entry 2"), "{message}");
        assert!(message.contains("`fortnight`"), "{message}");
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_gets_a_typed_error_never_a_panic(
            text in "[a-z*=;,/0-9tTrsmh .\\-]{0,40}"
        ) {
            let _ = parse_limits(&text);
        }

        #[test]
        fn what_parses_is_what_was_written(
            n in 1u64..1_000_000, tokens in 1u64..10_000_000, secs in 1u64..3600
        ) {
            let config = parse_limits(&format!("m={n}/{secs}s,{tokens}t/{secs}s")).unwrap();
            let window = Duration::from_secs(secs);
            proptest::prop_assert_eq!(
                config.models["m"],
                Limits::requests(n, window).with_tokens(tokens, window)
            );
        }
    }
}
