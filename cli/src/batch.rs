//! `mistral batch run`: validation, resume, `--dry-run`, the choice between the online
//! API and the Batch API, and the closing summary.

use std::sync::Arc;
use std::time::Duration;

use mistral_async::RateLimits;
use serde_json::json;

use crate::budget::{self, describe_limits};
use crate::input::{self, Defaults, Endpoint, Scan};
use crate::output::{self, Resumed};
use crate::progress::{Progress, human};
use crate::run::{self, Plan, Stop, request_rate, token_rate};
use crate::{
    BatchArgs, Connection, EXIT_ERRORS, EXIT_INCOMPLETE, EXIT_INVALID, EXIT_OK, Prefer, Via,
};

/// Runs `mistral batch run` and returns the exit status.
pub async fn run(conn: &Connection, args: BatchArgs) -> u8 {
    let endpoint = match args.endpoint.as_deref().map(|e| (e, Endpoint::parse(e))) {
        Some((text, None)) => {
            eprintln!("mistral: unknown --endpoint {text:?} (chat, fim, embeddings)");
            return EXIT_INVALID;
        }
        Some((_, e)) => e,
        None => None,
    };
    let defaults = Defaults {
        endpoint,
        model: args.model.clone(),
    };
    if args.concurrency == Some(0) {
        eprintln!("mistral: --concurrency must be at least 1");
        return EXIT_INVALID;
    }
    if let Err(e) = std::fs::File::open(&args.input) {
        eprintln!("mistral: cannot read {}: {e}", args.input.display());
        return EXIT_INVALID;
    }
    // One process per output at a time, for the whole run. Opening it creates it: if
    // the input is then refused, the empty file made here is removed again.
    let created = !args.output.exists();
    let refused = |code: u8| {
        let empty = std::fs::metadata(&args.output).is_ok_and(|m| m.is_file() && m.len() == 0);
        if created && empty {
            let _ = std::fs::remove_file(&args.output);
        }
        code
    };
    let _lock = if args.dry_run {
        None
    } else {
        match output::lock(&args.output) {
            Ok(lock) => Some(lock),
            Err(e) => {
                eprintln!("mistral: {e}");
                return EXIT_INVALID;
            }
        }
    };
    // The output first: what it already answers is not this run's work.
    let resumed = if args.dry_run {
        Resumed::default()
    } else {
        let path = args.output.clone();
        match tokio::task::spawn_blocking(move || output::resume(&path)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                eprintln!("mistral: {e}");
                return EXIT_INVALID;
            }
            Err(e) => {
                eprintln!("mistral: {e}");
                return EXIT_INVALID;
            }
        }
    };
    if resumed.truncated > 0 {
        eprintln!(
            "mistral: cut a torn last line ({} bytes) off {}",
            resumed.truncated,
            args.output.display()
        );
    }
    let (scan, resumed) = {
        let path = args.input.clone();
        let defaults = defaults.clone();
        let shard = args.shard;
        let scanned = tokio::task::spawn_blocking(move || {
            let scan = input::scan(&path, &defaults, shard, &resumed.done);
            (scan, resumed)
        })
        .await;
        match scanned {
            Ok((Ok(scan), resumed)) => (scan, resumed),
            Ok((Err(e), _)) => {
                eprintln!("mistral: cannot read {}: {e}", args.input.display());
                return refused(EXIT_INVALID);
            }
            Err(e) => {
                eprintln!("mistral: {e}");
                return refused(EXIT_INVALID);
            }
        }
    };
    if scan.invalid > 0 {
        for error in &scan.errors {
            eprintln!("mistral: {} {error}", args.input.display());
        }
        if scan.invalid as usize > scan.errors.len() {
            eprintln!(
                "mistral: … and {} more invalid lines",
                scan.invalid as usize - scan.errors.len()
            );
        }
        if !args.skip_invalid {
            eprintln!(
                "mistral: {} invalid line(s) in {}: nothing was sent (fix them, or pass --skip-invalid)",
                scan.invalid,
                args.input.display()
            );
            return refused(EXIT_INVALID);
        }
        eprintln!(
            "mistral: skipping {} invalid line(s) (--skip-invalid)",
            scan.invalid
        );
    }
    if args.dry_run {
        return dry_run(conn, &args, &scan).await;
    }
    if scan.todo == 0 {
        eprintln!(
            "mistral: nothing to send: the {} request(s) of {} already have results in {}",
            scan.already_done,
            args.input.display(),
            args.output.display()
        );
        return exit_status(None, 0, resumed.errors, &scan, &args);
    }
    let via = match args.via {
        Via::Auto => choose(conn, &args, &scan).await,
        via => via,
    };
    if scan.already_done > 0 {
        // Said at once (the summary says it again at the end).
        eprintln!(
            "mistral: resuming {}: {} of {} request(s) answered by an earlier run, {} to send",
            args.output.display(),
            scan.already_done,
            scan.already_done + scan.todo,
            scan.todo
        );
    }
    let progress = Arc::new(Progress::new(scan.todo, scan.already_done, args.quiet));
    let plan = Plan {
        input: args.input.clone(),
        output: args.output.clone(),
        defaults,
        models: {
            let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
            for ((model, _), (requests, _)) in &scan.per_budget {
                *counts.entry(model.as_str()).or_default() += requests;
            }
            let mut models: Vec<(&str, u64)> = counts.into_iter().collect();
            models.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            models.into_iter().map(|(m, _)| m.to_string()).collect()
        },
        concurrency: args.concurrency,
        skip_lines: Arc::new(scan.invalid_lines.clone()),
        shard: args.shard,
        todo: scan.todo,
        todo_tokens: scan.todo_tokens,
        earlier: scan.already_done,
        lines: scan.lines,
        retry_unknown: args.retry_unknown,
    };
    let earlier_errors = resumed.errors;
    let outcome = match via {
        Via::BatchApi => crate::batch_api::run(conn, &args, plan, resumed, progress.clone()).await,
        _ => {
            let options = mistral_async::CallOptions::new()
                .priority(args.priority)
                .retry_unknown_outcome(args.retry_unknown);
            let client = conn.client.with_options(options);
            run::run(client, plan, resumed, progress.clone()).await
        }
    };
    progress.finish();
    let stats = conn.client.stats();
    let c = &outcome.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (succeeded, failed, transient) = (load(&c.succeeded), load(&c.failed), load(&c.transient));
    let (unknown, abandoned) = (load(&c.unknown), load(&c.abandoned));
    // What has no result yet, whatever the reason (failed after every retry, never sent
    // because the run stopped, abandoned in flight): the next run's work.
    let left = scan.todo.saturating_sub(succeeded + failed);
    let written = succeeded + failed;
    let secs = outcome.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        written as f64 / secs
    } else {
        0.0
    };
    let limit = outcome.counters.total_limits().0;
    let mut head = format!(
        "mistral: {written} result(s) written in {} ({rate:.1}/s",
        human(outcome.elapsed)
    );
    if let (Some(limit), Via::Online) = (limit, via) {
        head.push_str(&format!(
            "; the models' limits add up to {limit:.1}/s: {:.2} of it",
            rate / limit
        ));
        if rate > limit * 1.05 {
            // Not a violation: the server let a window's worth go at once.
            head.push_str(", with the burst the server allowed at the start");
        }
    }
    head.push_str(&format!(
        "; {} via {}",
        if via == Via::BatchApi {
            "job(s)".to_string()
        } else {
            format!("concurrency {}", outcome.concurrency)
        },
        if via == Via::BatchApi {
            "the Batch API"
        } else {
            "the online API"
        }
    ));
    head.push(')');
    eprintln!("{head}");
    eprintln!(
        "  {succeeded} succeeded, {failed} error result(s) written, {left} of {} left for a later run; {} already answered before this run",
        scan.todo, scan.already_done
    );
    if transient > 0 || abandoned > 0 {
        let mut why = Vec::new();
        if transient > 0 {
            why.push(format!("{transient} failed after every retry"));
        }
        if abandoned > 0 {
            why.push(format!(
                "{abandoned} were in flight and abandoned after the {} s grace",
                run::GRACE.as_secs()
            ));
        }
        eprintln!(
            "  of those left, {}; the others were not sent",
            why.join(", ")
        );
    }
    if unknown > 0 {
        eprintln!(
            "  {unknown} of the error results have an unknown outcome (sent, no answer: the server \
             may have run them, so they were not sent again; error code \"{}\"); --retry-unknown \
             sends such requests again",
            run::OUTCOME_UNKNOWN_CODE
        );
    }
    eprintln!(
        "  {} × 429 absorbed, {} retries, {} tokens reported by usage; output {}",
        stats.rate_limited.total(),
        stats.retries,
        load(&c.tokens_used),
        args.output.display()
    );
    if let Some(stop) = &outcome.stop {
        eprintln!(
            "mistral: stopped: {stop}. {left} request(s) left: run the same command again to resume."
        );
    } else if transient > 0 {
        eprintln!(
            "mistral: {transient} request(s) failed after every retry and have no result: run the same command again to retry them."
        );
    }
    if args.json {
        let summary = json!({
            "via": if via == Via::BatchApi { "batch-api" } else { "online" },
            "todo": scan.todo,
            "already_done": scan.already_done,
            "invalid": scan.invalid,
            "succeeded": succeeded,
            "failed": failed,
            "outcome_unknown": unknown,
            "transient": transient,
            "abandoned": abandoned,
            "left": left,
            "elapsed_secs": secs,
            "rate_per_sec": rate,
            "limit_per_sec": limit,
            "concurrency": outcome.concurrency,
            "rate_limited": stats.rate_limited.total(),
            "retries": stats.retries,
            "attempts": stats.attempts,
            "tokens_used": load(&c.tokens_used),
            "stopped": outcome.stop.as_ref().map(|s| s.to_string()),
        });
        println!("{summary}");
    }
    exit_status(
        outcome.stop.as_ref(),
        transient,
        earlier_errors + failed,
        &scan,
        &args,
    )
}

fn exit_status(
    stop: Option<&Stop>,
    transient: u64,
    errors: u64,
    scan: &Scan,
    args: &BatchArgs,
) -> u8 {
    match stop {
        Some(Stop::Interrupted(signal)) => signal.exit_status(),
        Some(_) => EXIT_INCOMPLETE,
        None if transient > 0 => EXIT_INCOMPLETE,
        None if errors > 0 || (args.skip_invalid && scan.invalid > 0) => EXIT_ERRORS,
        None => EXIT_OK,
    }
}

/// What one budget (model) of the file needs at its known limits.
#[derive(Debug, Clone)]
struct Estimate {
    model: String,
    endpoint: Endpoint,
    requests: u64,
    tokens: u64,
    limits: Result<Option<RateLimits>, String>,
    /// Requests and tokens per second the limiter's store has learned (without a probe).
    learned: Option<(Option<f64>, Option<f64>)>,
}

impl Estimate {
    /// What the server let through at once when probed: the requests and tokens its
    /// answer said were left (`remaining`), which go without waiting for the pace (a
    /// window's worth, a bucket's level). None when it said nothing, or for learned rates.
    fn burst(&self) -> (u64, u64) {
        match self.limits.as_ref() {
            Ok(Some(limits)) => (
                limits.requests().and_then(|q| q.remaining).unwrap_or(0),
                limits.tokens().and_then(|q| q.remaining).unwrap_or(0),
            ),
            _ => (0, 0),
        }
    }

    /// The time the file takes at the limits: what the burst does not cover, at the pace.
    fn time(&self) -> Option<Duration> {
        let (requests, tokens) = match (self.limits.as_ref().ok()?, self.learned) {
            (Some(limits), _) => (request_rate(limits), token_rate(limits)),
            (None, Some(learned)) => learned,
            (None, None) => return None,
        };
        let (burst_requests, burst_tokens) = self.burst();
        let by_requests = requests.map(|r| self.requests.saturating_sub(burst_requests) as f64 / r);
        let by_tokens = tokens.map(|r| self.tokens.saturating_sub(burst_tokens) as f64 / r);
        let secs = match (by_requests, by_tokens) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some(Duration::from_secs_f64(secs))
    }
}

async fn estimates(conn: &Connection, scan: &Scan, probe: bool) -> Vec<Estimate> {
    let mut out = Vec::new();
    let store = if probe {
        None
    } else {
        budget::store_of(conn).and_then(Result::ok)
    };
    let mut probed: std::collections::HashMap<String, Result<Option<RateLimits>, String>> =
        std::collections::HashMap::new();
    for ((model, endpoint), &(requests, tokens)) in &scan.per_budget {
        let limits = if !probe {
            Ok(None)
        } else if let Some(known) = probed.get(model) {
            known.clone()
        } else {
            let result = budget::probe(conn, *endpoint, model).await;
            let limits = result
                .map(|reply| Some(reply.limits))
                .map_err(|e| e.to_string());
            probed.insert(model.clone(), limits.clone());
            limits
        };
        let learned = if probe {
            None
        } else {
            store.as_ref().and_then(|store| store.rates(model))
        };
        out.push(Estimate {
            learned,
            model: model.clone(),
            endpoint: *endpoint,
            requests,
            tokens,
            limits,
        });
    }
    out
}

/// Budgets of different models are spent in parallel: the file takes as long as its
/// slowest model. `None` when a model's limits are unknown.
fn total_time(estimates: &[Estimate]) -> Option<Duration> {
    estimates
        .iter()
        .map(Estimate::time)
        .try_fold(Duration::ZERO, |acc, t| t.map(|t| acc.max(t)))
}

async fn dry_run(conn: &Connection, args: &BatchArgs, scan: &Scan) -> u8 {
    println!(
        "{}: {} valid request(s){}{}, ~{} tokens estimated (prompt ≈ characters ÷ 4, plus max_tokens or 256)",
        args.input.display(),
        scan.todo,
        if args.shard.is_some() {
            " in this shard"
        } else {
            ""
        },
        if scan.invalid > 0 {
            format!(", {} invalid line(s)", scan.invalid)
        } else {
            String::new()
        },
        scan.todo_tokens
    );
    if !args.no_probe && !scan.per_budget.is_empty() {
        println!("probing the limits with one tiny request per model (--no-probe to skip)");
    }
    let estimates = estimates(conn, scan, !args.no_probe).await;
    for e in &estimates {
        let limits = match &e.limits {
            Err(error) => format!("probe failed: {error}"),
            Ok(None) => match e.learned {
                Some((requests, tokens)) => format!(
                    "learned by the limiter's store: {} requests/s, {} tokens/s",
                    requests.map_or("?".into(), |r| format!("{r:.2}")),
                    tokens.map_or("?".into(), |t| format!("{t:.0}"))
                ),
                None => "limits unknown (not probed, nothing in the limiter's store)".to_string(),
            },
            Ok(Some(l)) => describe_limits(l),
        };
        let time = match (e.time(), e.burst().0.min(e.requests)) {
            (None, _) => "time unknown".into(),
            (Some(t), 0) => format!("≈ {} at the limit", human(t)),
            (Some(t), burst) => format!(
                "≈ {} at the limit (the first {burst} at once: the burst the server announced)",
                human(t)
            ),
        };
        println!(
            "  {} {}: {} request(s), ~{} tokens; {limits}; {time}",
            e.model,
            e.endpoint.path(),
            e.requests,
            e.tokens
        );
        if let Ok(Some(l)) = &e.limits
            && let Some(month) = l.month()
            && let Some(left) = month.remaining
            && left < e.tokens
        {
            println!(
                "  warning: {} has {left} tokens left this month, the file needs ~{}",
                e.model, e.tokens
            );
        }
    }
    match total_time(&estimates) {
        Some(t) => println!(
            "online: ≈ {} at the known limits; the Batch API costs half the online price and does not spend these limits",
            human(t)
        ),
        None => println!("online: time unknown (a model's limits are unknown)"),
    }
    EXIT_OK
}

/// `--via auto`: the Batch API when the user prefers cost, or when the file cannot
/// finish online before the deadline; else online.
async fn choose(conn: &Connection, args: &BatchArgs, scan: &Scan) -> Via {
    if args.prefer == Prefer::Cost {
        eprintln!("mistral: --via auto --prefer cost: using the Batch API (half the price)");
        return Via::BatchApi;
    }
    let Some(deadline) = args.deadline else {
        eprintln!("mistral: --via auto without --deadline: using the online API");
        return Via::Online;
    };
    let estimates = estimates(conn, scan, !args.no_probe).await;
    match total_time(&estimates) {
        Some(t) if t > deadline => {
            eprintln!(
                "mistral: online would take ≈ {} at the known limits, past the deadline of {}: using the Batch API",
                human(t),
                human(deadline)
            );
            Via::BatchApi
        }
        Some(t) => {
            eprintln!(
                "mistral: online takes ≈ {} at the known limits, within the deadline of {}: using the online API",
                human(t),
                human(deadline)
            );
            Via::Online
        }
        None => {
            eprintln!(
                "mistral: limits unknown, so the online time is unknown: using the Batch API to meet the deadline"
            );
            Via::BatchApi
        }
    }
}
