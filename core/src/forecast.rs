//! The quota forecast: for each budget (a model), what the server last said remains of
//! each limit, when each one resets, the rate it is being spent at, and when, at that
//! rate, it runs out. Sans-IO: a [`Tracker`] learns from what it is shown (the answers'
//! reports, the fleet's spend counters), at instants it is given.
//!
//! # Where the numbers come from
//!
//! - **Remaining**: the last answer's `x-ratelimit-remaining-*` headers, with how long
//!   ago it said so ([`QuotaForecast::said`]). Nothing is extrapolated.
//! - **Resets**: a monthly quota at the start of the next calendar month, UTC, reckoned
//!   from the server's own clock (the answer's `Date`: Mistral documents no reset time,
//!   the calendar month is an assumption); a minute or N-second window at the
//!   `ratelimitbysize-reset` it announced (early 2025 only), otherwise it refills as it
//!   rolls, within one window ([`Reset::Rolling`]).
//! - **Rate**: the faster of two measures ([`QuotaForecast::rate_source`]). The
//!   fleet's: what the spend counters it is shown grew by over the last minute — a
//!   client's own (every answer it got: one request, its `usage` tokens), or a shared
//!   store's counters of every admission of every process (`mistral limits`). The
//!   server's, which sees everyone who spends the budget (other programs of the
//!   organisation too): for the month, how fast its `remaining` fell between answers;
//!   for a window, what the window holds spent (`limit − remaining`) over its length.
//! - **Runs out**: the month's remaining over the rate, unless the month ends first; a
//!   window's remaining over what the rate takes beyond the window's own refill
//!   (`limit / window`): a rate the window refills faster than is
//!   [`RunsOut::NotAtThisRate`].
//!
//! The tracker also says, once per budget, when a monthly quota will run out within a
//! day at the current rate ([`Tracker::observe`] returns a [`MonthAlarm`]); the clients
//! log it at WARN.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::action::Report;
use crate::ratelimits::{Bucket, Quota, RateLimits, Window};
use crate::verdict::Verdict;

/// How far back the fleet's rate looks.
pub const RATE_SPAN: Duration = Duration::from_secs(60);

/// How far back the server's monthly decrease looks.
pub const MONTH_SPAN: Duration = Duration::from_secs(3600);

/// The shortest span a rate is measured over (a shorter one says little).
pub const MIN_SPAN: Duration = Duration::from_secs(1);

/// A monthly quota that runs out sooner than this at the current rate is said at WARN.
pub const ALARM_WITHIN: Duration = Duration::from_secs(86_400);

/// The most budgets a tracker keeps (the ones seen least recently go first).
pub const MAX_BUDGETS: usize = 256;

/// Samples kept per series (a rate needs its oldest and newest within the span).
const MAX_SAMPLES: usize = 256;

/// A budget's spend so far: cumulative counters, sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    /// Requests sent (admitted) so far.
    pub requests: u64,
    /// Tokens spent so far.
    pub tokens: u64,
}

/// When a limit comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reset {
    /// In this long (a month's end, or a window's announced reset).
    In(Duration),
    /// It refills as its window rolls: all of it within this long.
    Rolling(Duration),
    /// Not known (a month without the server's `Date`).
    Unknown,
}

/// When a limit runs out at the current rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunsOut {
    /// The server says nothing remains.
    Spent,
    /// In this long.
    In(Duration),
    /// Not at this rate: the window refills faster than it is spent, or the month ends
    /// first.
    NotAtThisRate,
    /// Not known (no rate measured yet, no limit announced).
    Unknown,
}

/// Which measure the rate is ([`QuotaForecast::rate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateSource {
    /// The fleet's own spend counters (a client's answers, a shared store's admissions).
    Fleet,
    /// The server's numbers, which count everyone spending the budget.
    Server,
    /// No rate measured yet.
    None,
}

/// The forecast of one limit of a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaForecast {
    /// What it counts.
    pub bucket: Bucket,
    /// Over which window.
    pub window: Window,
    /// The limit, when announced.
    pub limit: Option<u64>,
    /// What the server last said remains, when it said.
    pub remaining: Option<u64>,
    /// How long ago it said so.
    pub said: Duration,
    /// When it comes back.
    pub resets: Reset,
    /// The rate it is being spent at, per second (requests or tokens), when measured.
    pub rate: Option<f64>,
    /// Which measure that rate is.
    pub rate_source: RateSource,
    /// When it runs out at that rate.
    pub runs_out: RunsOut,
}

/// The forecast of one budget ([`Tracker::forecast`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The budget (its model).
    pub model: String,
    /// One entry per limit the server announced, requests first, shortest window first.
    pub quotas: Vec<QuotaForecast>,
    /// The fleet's spend rate over the last [`RATE_SPAN`]: requests and tokens per
    /// second (`None` until measured over [`MIN_SPAN`]).
    pub fleet: Option<(f64, f64)>,
}

impl Forecast {
    /// The monthly token quota's forecast, when announced.
    pub fn month(&self) -> Option<&QuotaForecast> {
        month_among(&self.quotas, |q| (q.bucket, q.window))
    }
}

/// A monthly quota that will run out within [`ALARM_WITHIN`] at the current rate:
/// said once per budget ([`Tracker::observe`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MonthAlarm {
    /// The budget.
    pub model: String,
    /// The month's forecast.
    pub quota: QuotaForecast,
    /// When it runs out.
    pub runs_out_in: Duration,
}

#[derive(Debug, Clone)]
struct Seen {
    quota: Quota,
    at: Instant,
}

#[derive(Debug, Clone, Default)]
struct Track {
    /// The latest word on each limit.
    quotas: Vec<Seen>,
    /// The month's end as the server's clock had it, and when that was read.
    date: Option<(SystemTime, Instant)>,
    /// A window's announced reset (`ratelimitbysize-reset`) and when.
    reset: Option<(Duration, Instant)>,
    /// The fleet's cumulative spend, sampled.
    spent: VecDeque<(Instant, Spent)>,
    /// The month's remaining, as answers said it (for the server's rate).
    month: VecDeque<(Instant, u64)>,
    /// This client's own counters (when it feeds its answers).
    own: Spent,
    /// Last touched (for [`MAX_BUDGETS`]).
    touched: Option<Instant>,
}

/// What a client (or `mistral limits`) knows of each budget, kept for the forecast.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    budgets: BTreeMap<String, Track>,
    alarmed: BTreeSet<String>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns from one report of a client's call (or stream's end) at `now`: the limits
    /// its answer announced, and what it spent (a success: one request and its `usage`
    /// tokens; a stream's end: its tokens). Returns the alarm, once per budget, when
    /// the budget's monthly quota will run out within [`ALARM_WITHIN`].
    pub fn observe(&mut self, now: Instant, report: &Report) -> Option<MonthAlarm> {
        let model = report.model.as_deref()?;
        let track = self.track(model, now)?;
        let spent = match report.verdict {
            // A stream's head reports no usage: its tokens come with its end.
            Verdict::Success => Some((1, report.usage.and(report.used_tokens))),
            Verdict::Usage => Some((0, report.used_tokens)),
            _ => None,
        };
        if let Some((requests, tokens)) = spent {
            if track.spent.is_empty() {
                // Where the counters stood before: the first spend counts in the rate.
                track.spent.push_back((now, track.own));
            }
            track.own.requests += requests;
            track.own.tokens = track.own.tokens.saturating_add(tokens.unwrap_or(0));
            let own = track.own;
            push(&mut track.spent, (now, own), RATE_SPAN, now);
        }
        learn(track, now, &report.limits);
        self.alarm(model, now)
    }

    /// Learns what an answer announced at `now`, without any spend (a probe's answer).
    pub fn observe_limits(&mut self, now: Instant, model: &str, limits: &RateLimits) {
        if let Some(track) = self.track(model, now) {
            learn(track, now, limits);
        }
    }

    /// Learns the fleet's cumulative spend at `now` (a shared store's admission
    /// counters: every process's requests and tokens), in place of a client's own.
    pub fn observe_fleet(&mut self, now: Instant, model: &str, spent: Spent) {
        if let Some(track) = self.track(model, now) {
            push(&mut track.spent, (now, spent), RATE_SPAN, now);
        }
    }

    /// The budgets it knows, in name order.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.budgets.keys().map(String::as_str)
    }

    /// The forecast of `model`'s budget at `now` (`None`: nothing seen of it).
    pub fn forecast(&self, model: &str, now: Instant) -> Option<Forecast> {
        let track = self.budgets.get(model)?;
        let fleet = fleet_rate(&track.spent, now);
        let mut quotas: Vec<QuotaForecast> = track
            .quotas
            .iter()
            .map(|seen| quota_forecast(track, seen, fleet, now))
            .collect();
        quotas.sort_by_key(|q| (q.bucket, q.window));
        Some(Forecast {
            model: model.to_owned(),
            quotas,
            fleet,
        })
    }

    /// `model`'s track, made when new (`None` never happens: it is there once made).
    fn track(&mut self, model: &str, now: Instant) -> Option<&mut Track> {
        if !self.budgets.contains_key(model) && self.budgets.len() >= MAX_BUDGETS {
            let oldest = self
                .budgets
                .iter()
                .min_by_key(|(_, t)| t.touched)
                .map(|(m, _)| m.clone());
            if let Some(oldest) = oldest {
                self.budgets.remove(&oldest);
            }
        }
        // Looked up by `&str`: a `String` made only for a new budget.
        if !self.budgets.contains_key(model) {
            self.budgets.insert(model.to_owned(), Track::default());
        }
        let track = self.budgets.get_mut(model)?;
        track.touched = Some(now);
        Some(track)
    }

    fn alarm(&mut self, model: &str, now: Instant) -> Option<MonthAlarm> {
        if self.alarmed.contains(model) {
            return None;
        }
        // The month's quota as `Forecast::month` picks it (the tokens' month, else the
        // first monthly one in the forecast's order), forecast alone: this runs for
        // every answer, and most budgets have no monthly quota at all.
        let track = self.budgets.get(model)?;
        let seen = month_among(&track.quotas, |s| (s.quota.bucket, s.quota.window))?;
        let quota = quota_forecast(track, seen, fleet_rate(&track.spent, now), now);
        let RunsOut::In(runs_out_in) = quota.runs_out else {
            return None;
        };
        if runs_out_in >= ALARM_WITHIN {
            return None;
        }
        self.alarmed.insert(model.to_owned());
        Some(MonthAlarm {
            model: model.to_owned(),
            quota,
            runs_out_in,
        })
    }
}

/// The month's quota among `quotas` (each read as its bucket and window by `key`): the
/// tokens' month, else the first monthly one in (bucket, window) order.
fn month_among<T>(quotas: &[T], key: impl Fn(&T) -> (Bucket, Window)) -> Option<&T> {
    let months = || quotas.iter().filter(|q| key(q).1.is_month());
    months()
        .find(|q| key(q).0 == Bucket::Tokens)
        .or_else(|| months().min_by_key(|q| key(q)))
}

/// Keeps `sample`, drops what is older than `span` (but the newest one before it, the
/// start of the span) and what is over [`MAX_SAMPLES`].
fn push<T>(
    series: &mut VecDeque<(Instant, T)>,
    sample: (Instant, T),
    span: Duration,
    now: Instant,
) {
    series.push_back(sample);
    while series.len() > 2
        && series
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > span)
    {
        series.pop_front();
    }
    while series.len() > MAX_SAMPLES {
        series.pop_front();
    }
}

fn learn(track: &mut Track, now: Instant, limits: &RateLimits) {
    for quota in &limits.quotas {
        let seen = Seen {
            quota: *quota,
            at: now,
        };
        match track
            .quotas
            .iter_mut()
            .find(|s| s.quota.bucket == quota.bucket && s.quota.window == quota.window)
        {
            Some(old) => {
                // A header that came alone keeps the other half of what was said.
                let merged = Quota {
                    limit: quota.limit.or(old.quota.limit),
                    remaining: quota.remaining.or(old.quota.remaining),
                    ..*quota
                };
                *old = Seen {
                    quota: merged,
                    ..seen
                };
            }
            None => track.quotas.push(seen),
        }
        if quota.window.is_month()
            && quota.bucket == Bucket::Tokens
            && let Some(remaining) = quota.remaining
        {
            if track.month.back().is_some_and(|(_, r)| remaining > *r) {
                // Raised, or a new month: the old decrease says nothing now.
                track.month.clear();
            }
            push(&mut track.month, (now, remaining), MONTH_SPAN, now);
        }
    }
    if let Some(date) = limits.date {
        track.date = Some((date, now));
    }
    if let Some(reset) = limits.reset {
        track.reset = Some((reset, now));
    }
}

/// Requests and tokens per second the counters grew by over the span.
fn fleet_rate(spent: &VecDeque<(Instant, Spent)>, now: Instant) -> Option<(f64, f64)> {
    let (first_at, first) = spent
        .iter()
        .find(|(at, _)| now.saturating_duration_since(*at) <= RATE_SPAN)
        .or(spent.back())?;
    let (_, last) = spent.back()?;
    // The span runs to now: a fleet that stopped spending is slowing down.
    let span = now.saturating_duration_since(*first_at).max(MIN_SPAN);
    if spent.len() < 2 && now.saturating_duration_since(*first_at) < MIN_SPAN {
        return None;
    }
    let secs = span.as_secs_f64();
    Some((
        last.requests.saturating_sub(first.requests) as f64 / secs,
        last.tokens.saturating_sub(first.tokens) as f64 / secs,
    ))
}

/// How fast the month's remaining fell, per second (at least [`MIN_SPAN`] apart).
fn month_rate(month: &VecDeque<(Instant, u64)>) -> Option<f64> {
    let (t0, r0) = month.front()?;
    let (t1, r1) = month.back()?;
    let span = t1.saturating_duration_since(*t0);
    (span >= MIN_SPAN).then(|| r0.saturating_sub(*r1) as f64 / span.as_secs_f64())
}

fn quota_forecast(
    track: &Track,
    seen: &Seen,
    fleet: Option<(f64, f64)>,
    now: Instant,
) -> QuotaForecast {
    let q = seen.quota;
    let said = now.saturating_duration_since(seen.at);
    let fleet_rate = fleet.map(|(requests, tokens)| match q.bucket {
        Bucket::Requests => requests,
        // An OCR model's pages are its budget's second cell, where tokens are counted.
        Bucket::Tokens | Bucket::Pages => tokens,
    });
    let server_rate = match q.window.duration() {
        None => month_rate(&track.month).filter(|_| q.bucket == Bucket::Tokens),
        Some(window) => match (q.limit, q.remaining) {
            (Some(limit), Some(remaining)) => {
                Some(limit.saturating_sub(remaining) as f64 / window.as_secs_f64().max(1.0))
            }
            _ => None,
        },
    };
    let (rate, rate_source) = match (fleet_rate, server_rate) {
        (Some(f), Some(s)) if s > f => (Some(s), RateSource::Server),
        (Some(f), _) => (Some(f), RateSource::Fleet),
        (None, Some(s)) => (Some(s), RateSource::Server),
        (None, None) => (None, RateSource::None),
    };
    let resets = match q.window.duration() {
        None => match track.date {
            Some((date, at)) => {
                let server_now = date + now.saturating_duration_since(at);
                Reset::In(until_next_month(server_now))
            }
            None => Reset::Unknown,
        },
        Some(window) => match track.reset {
            Some((reset, at)) if q.window == Window::MINUTE => {
                let left = reset.saturating_sub(now.saturating_duration_since(at));
                // Past it, the next one is a window later.
                Reset::In(if left.is_zero() { window } else { left })
            }
            _ => Reset::Rolling(window),
        },
    };
    let runs_out = runs_out(&q, rate, resets);
    QuotaForecast {
        bucket: q.bucket,
        window: q.window,
        limit: q.limit,
        remaining: q.remaining,
        said,
        resets,
        rate,
        rate_source,
        runs_out,
    }
}

fn runs_out(q: &Quota, rate: Option<f64>, resets: Reset) -> RunsOut {
    let Some(remaining) = q.remaining else {
        return RunsOut::Unknown;
    };
    if remaining == 0 {
        return RunsOut::Spent;
    }
    let Some(rate) = rate.filter(|r| r.is_finite()) else {
        return RunsOut::Unknown;
    };
    let drain = match q.window.duration() {
        None => rate,
        Some(window) => match q.limit {
            Some(limit) => rate - limit as f64 / window.as_secs_f64().max(1.0),
            None => return RunsOut::Unknown,
        },
    };
    if drain <= 0.0 {
        return RunsOut::NotAtThisRate;
    }
    let secs = remaining as f64 / drain;
    let at = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    match resets {
        Reset::In(reset) if q.window.is_month() && reset <= at => RunsOut::NotAtThisRate,
        _ => RunsOut::In(at),
    }
}

/// From `now` (the server's clock) to the first of the next month, 00:00 UTC.
pub fn until_next_month(now: SystemTime) -> Duration {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (year, month, _) = civil_from_days(days);
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let next = days_from_civil(year, month, 1).max(0) as u64 * 86_400;
    Duration::from_secs(next.saturating_sub(secs))
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1–12, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---- Display: a table a person reads at a glance. ----

/// `1 h 05 min`, `3 d 4 h`, `42 s`, `0.3 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if d < Duration::from_secs(10) => format!("{:.1} s", d.as_secs_f64()),
        0..=119 => format!("{s} s"),
        120..=3_599 => format!("{} min {:02} s", s / 60, s % 60),
        3_600..=86_399 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        _ if s >= 100 * 86_400 * 365 => "centuries".into(),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_text(rate: f64) -> String {
    match rate {
        r if r >= 100.0 => format!("{}/s", grouped(r.round() as u64)),
        r if r >= 1.0 => format!("{r:.1}/s"),
        r => format!("{r:.2}/s"),
    }
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reset::In(d) => write!(f, "in {}", human(*d)),
            Reset::Rolling(w) => write!(f, "rolling {}", human(*w)),
            Reset::Unknown => f.write_str("?"),
        }
    }
}

impl fmt::Display for RunsOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunsOut::Spent => f.write_str("SPENT"),
            RunsOut::In(d) => write!(f, "in {}", human(*d)),
            RunsOut::NotAtThisRate => f.write_str("not at this rate"),
            RunsOut::Unknown => f.write_str("?"),
        }
    }
}

impl fmt::Display for Forecast {
    /// A table, one line per limit:
    ///
    /// ```text
    /// limit             remaining / limit        said    resets          rate             runs out
    /// requests/minute          48 / 50           0.2 s   rolling 60 s    0.80/s (fleet)   not at this rate
    /// tokens/month      3,912,000 / 4,000,000    0.2 s   in 12 d 4 h     146/s (server)   in 7 h 26 min
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = vec![[
            "limit".to_owned(),
            "remaining / limit".to_owned(),
            "said".to_owned(),
            "resets".to_owned(),
            "rate".to_owned(),
            "runs out".to_owned(),
        ]];
        for q in &self.quotas {
            let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), grouped);
            let rate = match (q.rate, q.rate_source) {
                (Some(r), RateSource::Server) => format!("{} (server)", rate_text(r)),
                (Some(r), _) => format!("{} (fleet)", rate_text(r)),
                (None, _) => "?".to_owned(),
            };
            rows.push([
                format!("{}/{}", q.bucket, q.window),
                format!("{} / {}", count(q.remaining), count(q.limit)),
                format!("{} ago", human(q.said)),
                q.resets.to_string(),
                rate,
                q.runs_out.to_string(),
            ]);
        }
        if rows.len() == 1 {
            return f.write_str("no limits announced");
        }
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.push_str(&" ".repeat(pad + 3));
                }
            }
            f.write_str(line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::action::{Sizing, TokenUsage};
    use crate::origin::Origin;

    fn limits(pairs: &[(&str, &str)]) -> RateLimits {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        RateLimits::parse(&map)
    }

    fn success(limits: RateLimits, tokens: u64) -> Report {
        Report {
            model: Some("m".into()),
            limits,
            verdict: Verdict::Success,
            retry: None,
            estimated_tokens: tokens,
            used_tokens: Some(tokens),
            attempt: 1,
            correlation_id: None,
            ticket: None,
            usage: Some(TokenUsage {
                prompt_tokens: 0,
                completion_tokens: tokens,
                total_tokens: tokens,
            }),
            size: Sizing::default(),
            origin: Origin::Unknown,
            service_tier: None,
        }
    }

    fn date(s: &str) -> SystemTime {
        httpdate::parse_http_date(s).unwrap()
    }

    #[test]
    fn the_month_ends_on_the_first_of_the_next_utc() {
        let d = |s| until_next_month(date(s));
        assert_eq!(
            d("Sat, 28 Nov 2026 10:00:00 GMT"),
            Duration::from_secs(2 * 86_400 + 14 * 3600)
        );
        assert_eq!(d("Thu, 31 Dec 2026 23:59:59 GMT"), Duration::from_secs(1));
        assert_eq!(
            d("Sun, 01 Feb 2026 00:00:00 GMT"),
            Duration::from_secs(28 * 86_400)
        );
        assert_eq!(
            d("Tue, 01 Feb 2028 00:00:00 GMT"),
            Duration::from_secs(29 * 86_400),
            "leap year"
        );
        for days in [-1000, 0, 59, 60, 365, 10_957, 20_000, 100_000] {
            let (y, m, dd) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, dd), days);
        }
    }

    /// A client spending 1,000 tokens a second against a month of 10,000,000 remaining:
    /// the server's remaining falls as fast, and the month runs out in under 3 hours,
    /// long before it ends; said once.
    #[test]
    fn a_month_spent_fast_runs_out_and_alarms_once() {
        let start = Instant::now();
        let mut t = Tracker::new();
        let mut alarms = Vec::new();
        for i in 0..=20u64 {
            let left = 10_000_000 - i * 1000;
            let l = limits(&[
                ("date", "Sun, 01 Nov 2026 00:00:00 GMT"),
                ("x-ratelimit-limit-tokens-month", "40000000"),
                ("x-ratelimit-remaining-tokens-month", &left.to_string()),
                ("x-ratelimit-limit-req-minute", "120"),
                ("x-ratelimit-remaining-req-minute", "100"),
            ]);
            let now = start + Duration::from_secs(i);
            alarms.extend(t.observe(now, &success(l, 1000)));
        }
        let now = start + Duration::from_secs(20);
        let f = t.forecast("m", now).unwrap();
        let month = f.month().unwrap();
        assert_eq!(month.remaining, Some(9_980_000));
        let rate = month.rate.unwrap();
        assert!((rate - 1000.0).abs() < 60.0, "{rate}");
        let RunsOut::In(d) = month.runs_out else {
            panic!("{month:?}")
        };
        assert!(
            d > Duration::from_secs(9_000) && d < Duration::from_secs(11_000),
            "{d:?}"
        );
        // The last answer said 00:00:00 on the 1st (a fixed test clock): 30 days left.
        assert_eq!(month.resets, Reset::In(Duration::from_secs(30 * 86_400)));
        assert_eq!(alarms.len(), 1, "{alarms:?}");
        assert_eq!(alarms[0].model, "m");
        // The request window refills faster than 1/s spends it; the server's word
        // (20 spent of 120 in the last minute) is under that too.
        let req = f
            .quotas
            .iter()
            .find(|q| q.bucket == Bucket::Requests)
            .unwrap();
        assert_eq!(req.runs_out, RunsOut::NotAtThisRate);
        assert_eq!(req.resets, Reset::Rolling(Duration::from_secs(60)));
        let table = f.to_string();
        assert!(
            table.contains("tokens/month") && table.contains("9,980,000 / 40,000,000"),
            "{table}"
        );
        assert!(table.contains("requests/minute"), "{table}");
    }

    /// The alarm forecasts one quota, the month's, without the whole forecast: it is the
    /// forecast's own `month()`, the tokens' month before any other, and the first of
    /// the others where there is none (requests before pages, as the forecast orders
    /// them). A budget with no monthly quota never alarms.
    #[test]
    fn the_alarm_s_quota_is_the_forecast_s_month() {
        let start = Instant::now();
        let sets: [&[(&str, &str)]; 3] = [
            &[
                ("x-ratelimit-limit-req-month", "40000"),
                ("x-ratelimit-remaining-req-month", "%"),
                ("x-ratelimit-limit-tokens-month", "40000000"),
                ("x-ratelimit-remaining-tokens-month", "%"),
            ],
            &[
                ("x-ratelimit-limit-req-month", "40000"),
                ("x-ratelimit-remaining-req-month", "%"),
                ("x-ratelimit-limit-pages-month", "40000"),
                ("x-ratelimit-remaining-pages-month", "%"),
            ],
            &[
                ("x-ratelimit-limit-req-minute", "100"),
                ("x-ratelimit-remaining-req-minute", "%"),
            ],
        ];
        for (k, set) in sets.iter().enumerate() {
            let mut t = Tracker::new();
            let mut alarm = None;
            for i in 0..=20u64 {
                let left = (30_000 - i * 1000).to_string();
                let pairs: Vec<(&str, &str)> = set
                    .iter()
                    .map(|&(n, v)| (n, if v == "%" { left.as_str() } else { v }))
                    .chain([("date", "Sun, 01 Nov 2026 00:00:00 GMT")])
                    .collect();
                let now = start + Duration::from_secs(i);
                alarm = alarm.or(t.observe(now, &success(limits(&pairs), 1000)));
            }
            match k {
                2 => assert_eq!(alarm, None),
                _ => {
                    let alarm = alarm.expect("a month spent in seconds alarms");
                    let f = t.forecast("m", start + Duration::from_secs(alarm_at(&alarm)));
                    let month = *f.unwrap().month().unwrap();
                    assert_eq!(alarm.quota.bucket, month.bucket);
                    assert_eq!(alarm.quota.window, month.window);
                    let want = [Bucket::Tokens, Bucket::Requests][k];
                    assert_eq!(alarm.quota.bucket, want, "{alarm:?}");
                }
            }
        }
    }

    /// The second of the run the alarm came at, from the remaining it read.
    fn alarm_at(alarm: &MonthAlarm) -> u64 {
        (30_000 - alarm.quota.remaining.unwrap()) / 1000
    }

    #[test]
    fn a_month_that_ends_first_does_not_run_out() {
        let start = Instant::now();
        let mut t = Tracker::new();
        for i in 0..=10u64 {
            let l = limits(&[
                ("date", "Mon, 30 Nov 2026 23:00:00 GMT"),
                ("x-ratelimit-limit-tokens-month", "1000000"),
                (
                    "x-ratelimit-remaining-tokens-month",
                    &(500_000 - i * 10).to_string(),
                ),
            ]);
            assert_eq!(
                t.observe(start + Duration::from_secs(i), &success(l, 10)),
                None
            );
        }
        let f = t.forecast("m", start + Duration::from_secs(10)).unwrap();
        assert_eq!(f.month().unwrap().runs_out, RunsOut::NotAtThisRate);
    }

    #[test]
    fn a_window_spent_faster_than_it_refills_runs_out() {
        let start = Instant::now();
        let mut t = Tracker::new();
        // 60 per minute refills 1/s; this fleet spends 3/s (its counters).
        for i in 0..=10u64 {
            t.observe_fleet(
                start + Duration::from_secs(i),
                "m",
                Spent {
                    requests: 3 * i,
                    tokens: 0,
                },
            );
        }
        let l = limits(&[
            ("x-ratelimit-limit-req-minute", "60"),
            ("x-ratelimit-remaining-req-minute", "30"),
        ]);
        t.observe_limits(start + Duration::from_secs(10), "m", &l);
        let f = t.forecast("m", start + Duration::from_secs(10)).unwrap();
        let q = f.quotas[0];
        assert_eq!(q.rate_source, RateSource::Fleet);
        assert!((q.rate.unwrap() - 3.0).abs() < 0.01, "{q:?}");
        // 30 left, drained at 3 − 1 = 2 a second.
        assert_eq!(q.runs_out, RunsOut::In(Duration::from_secs(15)));
        assert_eq!(f.fleet.map(|(r, _)| (r * 10.0).round()), Some(30.0));
    }

    #[test]
    fn nothing_known_is_said_as_unknown_and_spent_as_spent() {
        let start = Instant::now();
        let mut t = Tracker::new();
        assert!(t.forecast("m", start).is_none());
        let l = limits(&[
            ("x-ratelimit-limit-tokens-minute", "50000"),
            ("x-ratelimit-remaining-tokens-minute", "0"),
            ("x-ratelimit-limit-tokens-month", "100"),
        ]);
        t.observe_limits(start, "m", &l);
        let f = t.forecast("m", start + Duration::from_millis(300)).unwrap();
        let minute = f.quotas.iter().find(|q| !q.window.is_month()).unwrap();
        assert_eq!(minute.runs_out, RunsOut::Spent);
        assert_eq!(minute.said, Duration::from_millis(300));
        let month = f.month().unwrap();
        assert_eq!(
            (month.remaining, month.runs_out, month.resets),
            (None, RunsOut::Unknown, Reset::Unknown)
        );
        assert_eq!(Tracker::new().forecast("x", start), None);
        // No limits at all: a table that says so.
        let mut t = Tracker::new();
        t.observe_limits(start, "n", &RateLimits::default());
        assert_eq!(
            t.forecast("n", start).unwrap().to_string(),
            "no limits announced"
        );
    }

    #[test]
    fn a_stream_is_counted_once() {
        let start = Instant::now();
        let mut t = Tracker::new();
        let mut head = success(RateLimits::default(), 0);
        head.usage = None;
        head.used_tokens = Some(40); // a query-cost header on the head
        t.observe(start, &head);
        let mut end = success(RateLimits::default(), 40);
        end.verdict = Verdict::Usage;
        t.observe(start + Duration::from_secs(2), &end);
        let f = t.forecast("m", start + Duration::from_secs(2)).unwrap();
        assert_eq!(f.fleet, Some((0.5, 20.0)));
    }

    #[test]
    fn human_durations() {
        for (secs, text) in [
            (0.3, "0.3 s"),
            (42.0, "42 s"),
            (125.0, "2 min 05 s"),
            (3_900.0, "1 h 05 min"),
            (3.0 * 86_400.0 + 4.0 * 3600.0, "3 d 4 h"),
        ] {
            assert_eq!(human(Duration::from_secs_f64(secs)), text);
        }
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
    }
}
