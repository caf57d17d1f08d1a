//! Rate-limit header names and values per era (`mistral-api.md` §2).
//!
//! Every era names the window it really has, so a client that believes the headers paces
//! at the real rate: `minute` only for 60 s, else the window's length (`1-second`,
//! `10-second`, `5-minute`, [`window_name`]). Late 2025 names its request window in
//! seconds whatever its length (`-req-60-second`), as captured. Early 2025's captured
//! names say `minute` (`x-ratelimitbysize-*-minute`, and the bare `ratelimitbysize-limit`
//! and `-remaining`, which mean a minute); with another window it sends
//! `x-ratelimitbysize-*-N-second` (or `-N-minute`) and leaves the bare pair out, keeping
//! `ratelimitbysize-reset` (seconds until the window resets, whatever its length).

use std::time::Duration;

use super::config::Era;
use super::limits::{MeterView, Refusal, View};

/// The header pairs a response carries, in order.
pub(crate) type Headers = Vec<(String, String)>;

/// What a model's second limit counts: tokens, or an OCR model's pages (announced as
/// `x-ratelimit-{limit,remaining}-ocr-pages-<window>` and
/// `x-ratelimit-ocr-pages-query-cost` in every era, as `/v1/ocr` sends them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Unit {
    #[default]
    Tokens,
    Pages,
}

/// Name of a window in a header: `minute`, `N-minute` or `N-second` (whole seconds, at
/// least 1), so that a compressed window is never announced as a minute.
pub(crate) fn window_name(window: Duration) -> String {
    let secs = window.as_secs_f64().round().max(1.0) as u64;
    if secs == 60 {
        "minute".to_string()
    } else if secs.is_multiple_of(60) {
        format!("{}-minute", secs / 60)
    } else {
        format!("{secs}-second")
    }
}

/// (limit name, remaining name) of the request pair, if the era has one.
fn request_names(era: Era, window: Duration) -> Option<(String, String)> {
    match era {
        Era::Y2026 => {
            let w = window_name(window);
            Some((
                format!("x-ratelimit-limit-req-{w}"),
                format!("x-ratelimit-remaining-req-{w}"),
            ))
        }
        Era::Late2025 => {
            let secs = window.as_secs_f64().round().max(1.0) as u64;
            Some((
                format!("x-ratelimit-limit-req-{secs}-second"),
                format!("x-ratelimit-remaining-req-{secs}-second"),
            ))
        }
        Era::Mid2025 | Era::Early2025 => None,
    }
}

fn token_names(era: Era, unit: Unit, window: Duration) -> (String, String) {
    if unit == Unit::Pages {
        let w = window_name(window);
        return (
            format!("x-ratelimit-limit-ocr-pages-{w}"),
            format!("x-ratelimit-remaining-ocr-pages-{w}"),
        );
    }
    match era {
        Era::Early2025 => {
            let w = window_name(window);
            (
                format!("x-ratelimitbysize-limit-{w}"),
                format!("x-ratelimitbysize-remaining-{w}"),
            )
        }
        Era::Mid2025 | Era::Y2026 | Era::Late2025 => {
            let w = window_name(window);
            (
                format!("x-ratelimit-limit-tokens-{w}"),
                format!("x-ratelimit-remaining-tokens-{w}"),
            )
        }
    }
}

fn month_names(era: Era) -> (&'static str, &'static str) {
    match era {
        Era::Early2025 => (
            "x-ratelimitbysize-limit-month",
            "x-ratelimitbysize-remaining-month",
        ),
        _ => (
            "x-ratelimit-limit-tokens-month",
            "x-ratelimit-remaining-tokens-month",
        ),
    }
}

fn cost_name(era: Era, unit: Unit) -> &'static str {
    match era {
        _ if unit == Unit::Pages => "x-ratelimit-ocr-pages-query-cost",
        Era::Early2025 => "ratelimitbysize-query-cost",
        _ => "x-ratelimit-tokens-query-cost",
    }
}

fn push_requests(out: &mut Headers, era: Era, m: &MeterView, limit: u64, remaining: u64) {
    if let Some((l, r)) = request_names(era, m.window) {
        out.push((l, limit.to_string()));
        out.push((r, remaining.to_string()));
    }
}

fn push_cost(out: &mut Headers, era: Era, unit: Unit, m: &MeterView, limit: u64, remaining: u64) {
    let (l, r) = token_names(era, unit, m.window);
    out.push((l, limit.to_string()));
    out.push((r, remaining.to_string()));
    if era == Era::Early2025 && unit == Unit::Tokens {
        // The bare pair means "per minute": sent only when the window is one.
        if window_name(m.window) == "minute" {
            out.push(("ratelimitbysize-limit".into(), limit.to_string()));
            out.push(("ratelimitbysize-remaining".into(), remaining.to_string()));
        }
        let reset = m.reset_in.as_secs_f64().ceil() as u64;
        out.push(("ratelimitbysize-reset".into(), reset.to_string()));
    }
}

fn push_month(out: &mut Headers, era: Era, limit: u64, remaining: u64) {
    let (l, r) = month_names(era);
    out.push((l.into(), limit.to_string()));
    out.push((r.into(), remaining.to_string()));
}

/// Headers of an admitted request that cost `cost` tokens.
#[cfg(test)]
pub(crate) fn success(era: Era, view: &View, cost: u64) -> Headers {
    success_in(era, Unit::Tokens, view, cost)
}

/// Headers of an admitted request that cost `cost` of `unit`.
pub(crate) fn success_in(era: Era, unit: Unit, view: &View, cost: u64) -> Headers {
    let mut out = Headers::new();
    if let Some(m) = &view.requests {
        push_requests(&mut out, era, m, m.limit, m.remaining);
    }
    if let Some(m) = &view.tokens {
        push_cost(&mut out, era, unit, m, m.limit, m.remaining);
    }
    if let Some((limit, remaining)) = view.month {
        push_month(&mut out, era, limit, remaining);
    }
    if view.tokens.is_some() || view.month.is_some() {
        out.push((cost_name(era, unit).into(), cost.to_string()));
    }
    out
}

/// Headers of a refused request: they name the limit that refused it.
///
/// - request window spent: only the request pair, remaining 0 (nothing in eras without
///   request headers);
/// - token window spent: the token pair with remaining 0 (and the month pair);
/// - month spent: the month pair with remaining 0 and the token pair as it is;
/// - zero allowance: the zero limit's pair, `0`/`0` (eras without request names show a
///   zero request allowance as a zero token limit);
/// - too many in flight: the request and token pairs as they stand (no window is spent;
///   Mistral announces no concurrency limit).
#[cfg(test)]
pub(crate) fn refused(era: Era, view: &View, refusal: Refusal) -> Headers {
    refused_in(era, Unit::Tokens, view, refusal)
}

/// [`refused`] for a model whose second limit counts `unit`.
pub(crate) fn refused_in(era: Era, unit: Unit, view: &View, refusal: Refusal) -> Headers {
    let mut out = Headers::new();
    match refusal {
        Refusal::Concurrency => {
            if let Some(m) = &view.requests {
                push_requests(&mut out, era, m, m.limit, m.remaining);
            }
            if let Some(m) = &view.tokens {
                push_cost(&mut out, era, unit, m, m.limit, m.remaining);
            }
        }
        Refusal::Requests => {
            if let Some(m) = &view.requests {
                push_requests(&mut out, era, m, m.limit, 0);
            }
        }
        Refusal::Tokens => {
            if let Some(m) = &view.tokens {
                push_cost(&mut out, era, unit, m, m.limit, 0);
            }
            if let Some((limit, remaining)) = view.month {
                push_month(&mut out, era, limit, remaining);
            }
        }
        Refusal::Month => {
            if let Some(m) = &view.tokens {
                push_cost(&mut out, era, unit, m, m.limit, m.remaining);
            }
            if let Some((limit, _)) = view.month {
                push_month(&mut out, era, limit, 0);
            }
        }
        Refusal::ZeroAllowance => {
            if let Some(m) = view.requests.as_ref().filter(|m| m.limit == 0) {
                if request_names(era, m.window).is_some() {
                    push_requests(&mut out, era, m, 0, 0);
                } else {
                    push_cost(&mut out, era, unit, m, 0, 0);
                }
            }
            if let Some(m) = view.tokens.as_ref().filter(|m| m.limit == 0) {
                push_cost(&mut out, era, unit, m, 0, 0);
            }
            if view.month.is_some_and(|(limit, _)| limit == 0) {
                push_month(&mut out, era, 0, 0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(window_secs: u64) -> View {
        let m = |limit, remaining| MeterView {
            limit,
            remaining,
            window: Duration::from_secs(window_secs),
            reset_in: Duration::from_millis(1500),
        };
        View {
            requests: Some(m(10, 7)),
            tokens: Some(m(1000, 900)),
            month: Some((100_000, 99_000)),
        }
    }

    fn names(h: &Headers) -> Vec<&str> {
        h.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn names_per_era() {
        let h = success(Era::Y2026, &view(60), 12);
        assert_eq!(
            names(&h),
            [
                "x-ratelimit-limit-req-minute",
                "x-ratelimit-remaining-req-minute",
                "x-ratelimit-limit-tokens-minute",
                "x-ratelimit-remaining-tokens-minute",
                "x-ratelimit-limit-tokens-month",
                "x-ratelimit-remaining-tokens-month",
                "x-ratelimit-tokens-query-cost",
            ]
        );
        let h = success(Era::Late2025, &view(10), 12);
        assert_eq!(names(&h)[0], "x-ratelimit-limit-req-10-second");
        assert_eq!(names(&h)[2], "x-ratelimit-limit-tokens-10-second");
        let h = success(Era::Late2025, &view(300), 12);
        assert_eq!(names(&h)[3], "x-ratelimit-remaining-tokens-5-minute");
        let h = success(Era::Mid2025, &view(60), 12);
        assert_eq!(names(&h)[0], "x-ratelimit-limit-tokens-minute");
        assert_eq!(h.len(), 5);
        let h = success(Era::Early2025, &view(60), 12);
        assert!(names(&h).contains(&"ratelimitbysize-reset"));
        assert!(names(&h).contains(&"x-ratelimitbysize-remaining-month"));
        assert!(h.contains(&("ratelimitbysize-reset".into(), "2".into())));
    }

    #[test]
    fn a_compressed_window_is_never_called_a_minute() {
        let h = success(Era::Y2026, &view(1), 12);
        assert_eq!(names(&h)[0], "x-ratelimit-limit-req-1-second");
        assert_eq!(names(&h)[3], "x-ratelimit-remaining-tokens-1-second");
        let h = success(Era::Y2026, &view(600), 12);
        assert_eq!(names(&h)[1], "x-ratelimit-remaining-req-10-minute");
        let h = success(Era::Mid2025, &view(10), 12);
        assert_eq!(names(&h)[0], "x-ratelimit-limit-tokens-10-second");
        let h = refused(Era::Y2026, &view(6), Refusal::Requests);
        assert_eq!(
            h[1],
            ("x-ratelimit-remaining-req-6-second".into(), "0".into())
        );
        let h = success(Era::Late2025, &view(1), 12);
        assert_eq!(names(&h)[0], "x-ratelimit-limit-req-1-second");
        assert_eq!(names(&h)[2], "x-ratelimit-limit-tokens-1-second");
    }

    #[test]
    fn every_era_names_the_real_window() {
        for era in [Era::Early2025, Era::Mid2025, Era::Late2025, Era::Y2026] {
            for secs in [1, 10, 30, 90, 300] {
                for refusal in [None, Some(Refusal::Requests), Some(Refusal::Tokens)] {
                    let h = match refusal {
                        None => success(era, &view(secs), 12),
                        Some(r) => refused(era, &view(secs), r),
                    };
                    let w = window_name(Duration::from_secs(secs));
                    // Late 2025's request pair counts in seconds (`-req-300-second`).
                    let in_seconds = format!("-{secs}-second");
                    let real = |name: &str| {
                        name.ends_with(&format!("-{w}")) || name.ends_with(&in_seconds)
                    };
                    for name in names(&h) {
                        assert!(
                            !name.contains("minute") || real(name),
                            "{era:?}, a {secs}-s window: {name}"
                        );
                        assert!(
                            real(name)
                                || name.ends_with("-month")
                                || name.ends_with("query-cost")
                                || name == "ratelimitbysize-reset",
                            "{era:?}, a {secs}-s window: {name} names no window"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn early_2025_keeps_its_captured_names_for_a_minute_only() {
        let h = success(Era::Early2025, &view(60), 12);
        for name in [
            "x-ratelimitbysize-limit-minute",
            "x-ratelimitbysize-remaining-minute",
            "ratelimitbysize-limit",
            "ratelimitbysize-remaining",
            "ratelimitbysize-reset",
        ] {
            assert!(names(&h).contains(&name), "{name}: {h:?}");
        }
        let h = success(Era::Early2025, &view(1), 12);
        assert_eq!(
            names(&h),
            [
                "x-ratelimitbysize-limit-1-second",
                "x-ratelimitbysize-remaining-1-second",
                "ratelimitbysize-reset",
                "x-ratelimitbysize-limit-month",
                "x-ratelimitbysize-remaining-month",
                "ratelimitbysize-query-cost",
            ]
        );
        let h = refused(Era::Early2025, &view(10), Refusal::Tokens);
        assert!(h.contains(&("x-ratelimitbysize-remaining-10-second".into(), "0".into())));
    }

    #[test]
    fn a_concurrency_refusal_shows_the_windows_as_they_stand() {
        let h = refused(Era::Y2026, &view(60), Refusal::Concurrency);
        assert!(h.contains(&("x-ratelimit-remaining-req-minute".into(), "7".into())));
        assert!(h.contains(&("x-ratelimit-remaining-tokens-minute".into(), "900".into())));
    }

    #[test]
    fn refusals_name_their_limit() {
        let h = refused(Era::Y2026, &view(60), Refusal::Requests);
        assert_eq!(
            h,
            vec![
                ("x-ratelimit-limit-req-minute".into(), "10".into()),
                ("x-ratelimit-remaining-req-minute".into(), "0".into()),
            ]
        );
        let h = refused(Era::Y2026, &view(60), Refusal::Tokens);
        assert!(h.contains(&("x-ratelimit-remaining-tokens-minute".into(), "0".into())));
        assert!(refused(Era::Mid2025, &view(60), Refusal::Requests).is_empty());
    }

    #[test]
    fn ocr_pages_have_names_of_their_own_in_every_era() {
        for era in [Era::Early2025, Era::Mid2025, Era::Late2025, Era::Y2026] {
            let h = success_in(era, Unit::Pages, &view(60), 7);
            let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
            assert!(
                names.contains(&"x-ratelimit-limit-ocr-pages-minute"),
                "{era}: {names:?}"
            );
            assert!(names.contains(&"x-ratelimit-remaining-ocr-pages-minute"));
            assert!(h.contains(&("x-ratelimit-ocr-pages-query-cost".into(), "7".into())));
            assert!(
                !names
                    .iter()
                    .any(|n| n.contains("tokens-minute") || *n == "ratelimitbysize-limit")
            );
            let r = refused_in(era, Unit::Pages, &view(60), Refusal::Tokens);
            assert!(
                r.iter()
                    .any(|(n, v)| n == "x-ratelimit-remaining-ocr-pages-minute" && v == "0"),
                "{era}: {r:?}"
            );
        }
    }
}
