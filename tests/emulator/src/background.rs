//! The background consumer: another program of the same organisation.
//!
//! Every tick it accrues, for each model known to the emulator, `share × limit × dt /
//! window` request credits and token credits. Each whole request credit becomes one
//! request through the same limiter as the clients' (costing the token credits accrued
//! meanwhile); with no request limit, token credits are spent by a request whenever a
//! whole token has accrued. A refused background request is logged and dropped (that
//! program gives up), its credits are not kept. Background requests take no time: they
//! are refused while a concurrency limit is full but hold no place in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::log::{Entry, Outcome, Source};
use super::server::Shared;

#[derive(Default)]
struct Credit {
    requests: f64,
    tokens: f64,
}

/// Runs until the runtime stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let tick = Duration::from_millis(shared.config.background_tick_ms.max(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut credits: HashMap<String, Credit> = HashMap::new();
    let mut last = shared.now();
    loop {
        interval.tick().await;
        let now = shared.now();
        let dt = now.saturating_sub(last);
        last = now;
        let share = shared.background_share();
        if share <= 0.0 {
            credits.clear();
            continue;
        }
        for (model, slot) in shared.models.all() {
            let limits = slot.limits();
            if limits.is_zero_allowance() {
                continue;
            }
            let credit = credits.entry(model.clone()).or_default();
            if let Some(n) = limits.requests {
                credit.requests +=
                    share * n as f64 * dt.as_secs_f64() / limits.request_window.as_secs_f64();
            }
            if let Some(n) = limits.tokens {
                credit.tokens +=
                    share * n as f64 * dt.as_secs_f64() / limits.token_window.as_secs_f64();
            }
            let mut attempts = 0;
            loop {
                let due = if limits.requests.is_some() {
                    credit.requests >= 1.0
                } else {
                    credit.tokens >= 1.0
                };
                // At most 1,000 per tick: a huge limit must not starve the runtime.
                if !due || attempts >= 1000 {
                    break;
                }
                attempts += 1;
                credit.requests = (credit.requests - 1.0).max(0.0);
                let cost = credit.tokens.floor().max(0.0) as u64;
                credit.tokens -= cost as f64;
                let decision = slot.admit(|| shared.now(), cost);
                let admitted = decision.refusal.is_none();
                if !admitted {
                    credit.requests = 0.0;
                    credit.tokens = 0.0;
                }
                shared.record(Entry {
                    seq: shared.next_background_seq(),
                    source: Source::Background,
                    arrived: decision.at,
                    decided: Some(decision.at),
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    model: Some(model.clone()),
                    key_hash: None,
                    user_agent: None,
                    accept: None,
                    stream: false,
                    tokens: if admitted { cost } else { 0 },
                    status: if admitted { 200 } else { 429 },
                    outcome: match decision.refusal {
                        None => Outcome::Served,
                        Some(r) => Outcome::RateLimited(r),
                    },
                    fault: None,
                    generation: decision.generation,
                });
                if !admitted {
                    break;
                }
            }
        }
    }
}
