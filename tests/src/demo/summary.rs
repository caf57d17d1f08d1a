//! The demo's closing table: per client and in total, requests, 429s absorbed, retries,
//! time waited, the rate achieved against the limit and the time against the ideal.

use std::fmt::Write as _;
use std::time::Duration;

use mistral_core::Stats;

/// What one client's burst did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSummary {
    /// `blocking`, `async` or `total`.
    pub name: String,
    /// Calls made.
    pub requests: u64,
    /// Calls that succeeded.
    pub succeeded: u64,
    /// 429s received and absorbed (retried, not returned to the caller).
    pub rate_limited: u64,
    /// Attempts after the first of their call.
    pub retries: u64,
    /// Time calls spent waiting (pacing, backoff), summed over calls.
    pub waited: Duration,
    /// From the start of the burst to its last call's return.
    pub elapsed: Duration,
    /// Errors returned to the caller (first message, count).
    pub errors: Vec<String>,
}

impl ClientSummary {
    /// A summary from a client's statistics.
    pub fn from_stats(
        name: &str,
        stats: &Stats,
        elapsed: Duration,
        errors: Vec<String>,
    ) -> ClientSummary {
        ClientSummary {
            name: name.to_owned(),
            requests: stats.calls,
            succeeded: stats.successes,
            rate_limited: stats.rate_limited.total(),
            retries: stats.retries,
            waited: stats.waited,
            elapsed,
            errors,
        }
    }

    /// The sum of several clients that ran at the same time (elapsed: the longest).
    pub fn total(parts: &[ClientSummary]) -> ClientSummary {
        let mut t = ClientSummary {
            name: "total".into(),
            ..ClientSummary::default()
        };
        for p in parts {
            t.requests += p.requests;
            t.succeeded += p.succeeded;
            t.rate_limited += p.rate_limited;
            t.retries += p.retries;
            t.waited += p.waited;
            t.elapsed = t.elapsed.max(p.elapsed);
            t.errors.extend(p.errors.iter().cloned());
        }
        t
    }
}

/// The limit the burst ran against: `limit` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestLimit {
    /// Requests per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
}

impl RequestLimit {
    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        self.limit as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// The table, in markdown (readable as plain text too). `limit` is what the server
/// announced (or was configured with); `None` when unknown.
pub fn table(rows: &[ClientSummary], limit: Option<RequestLimit>) -> String {
    let mut t = String::new();
    t.push_str(
        "| client | requests | ok | 429s absorbed | retries | time waited | achieved rate vs limit | time vs ideal |\n",
    );
    t.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let rate = r.succeeded as f64 / secs;
        // Clients that ran together shared the limit: only the total is held to it.
        let shared = rows.len() > 1 && r.name != "total";
        let (vs_limit, vs_ideal) = match limit {
            Some(_) if shared => (
                format!("{rate:.2}/s (shares the limit)"),
                format!("{secs:.1} s"),
            ),
            Some(l) => {
                let ideal = r.requests as f64 / l.per_second();
                (
                    format!(
                        "{rate:.2}/s of {:.2}/s ({:.0} %)",
                        l.per_second(),
                        rate / l.per_second() * 100.0
                    ),
                    format!("{secs:.1} s vs {ideal:.1} s ({:.2}×)", secs / ideal),
                )
            }
            None => (
                format!("{rate:.2}/s (limit not announced)"),
                format!("{secs:.1} s"),
            ),
        };
        let per_call = r.waited.as_secs_f64() / r.requests.max(1) as f64;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {:.1} s ({per_call:.1} s per call) | {vs_limit} | {vs_ideal} |",
            r.name,
            r.requests,
            r.succeeded,
            r.rate_limited,
            r.retries,
            r.waited.as_secs_f64(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_compares_with_the_limit_and_the_ideal() {
        let row = ClientSummary {
            name: "blocking".into(),
            requests: 20,
            succeeded: 20,
            elapsed: Duration::from_secs(4),
            ..ClientSummary::default()
        };
        let total = ClientSummary::total(std::slice::from_ref(&row));
        assert_eq!(total.requests, 20);
        let limit = RequestLimit {
            limit: 5,
            window: Duration::from_secs(1),
        };
        let t = table(&[row, total], Some(limit));
        assert!(t.contains("5.00/s (shares the limit)"), "{t}");
        assert!(t.contains("5.00/s of 5.00/s (100 %)"), "{t}");
        assert!(t.contains("4.0 s vs 4.0 s (1.00×)"), "{t}");
        assert!(table(&[], None).starts_with("| client |"));
    }
}
