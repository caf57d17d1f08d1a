//! The demo's closing table: per client and in total, requests, 429s absorbed, retries,
//! when each client ran, the waits per call, the rate achieved beside the limit and the
//! time against the server's own best (its burst counted). Plain text with aligned
//! columns, for a terminal.

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
    /// Time each call spent waiting (pacing, backoff), one entry per call.
    pub waits: Vec<Duration>,
    /// From the start of the burst to the client's first call's start.
    pub first_start: Duration,
    /// From the start of the burst to its last call's return.
    pub elapsed: Duration,
    /// Errors returned to the caller (first message, count).
    pub errors: Vec<String>,
}

impl ClientSummary {
    /// A summary from a client's statistics and its calls' own waits.
    pub fn from_stats(
        name: &str,
        stats: &Stats,
        span: (Duration, Duration),
        waits: Vec<Duration>,
        errors: Vec<String>,
    ) -> ClientSummary {
        ClientSummary {
            name: name.to_owned(),
            requests: stats.calls,
            succeeded: stats.successes,
            rate_limited: stats.rate_limited.total(),
            retries: stats.retries,
            waits,
            first_start: span.0,
            elapsed: span.1,
            errors,
        }
    }

    /// The sum of several clients that ran at the same time (from the first start to
    /// the last end).
    pub fn total(parts: &[ClientSummary]) -> ClientSummary {
        let mut t = ClientSummary {
            name: "total".into(),
            first_start: parts
                .iter()
                .map(|p| p.first_start)
                .min()
                .unwrap_or_default(),
            ..ClientSummary::default()
        };
        for p in parts {
            t.requests += p.requests;
            t.succeeded += p.succeeded;
            t.rate_limited += p.rate_limited;
            t.retries += p.retries;
            t.waits.extend(p.waits.iter().copied());
            t.elapsed = t.elapsed.max(p.elapsed);
            t.errors.extend(p.errors.iter().cloned());
        }
        t
    }

    /// The mean and the longest wait of one call (zero without calls).
    pub fn wait_per_call(&self) -> (Duration, Duration) {
        let n = self.waits.len().max(1) as u32;
        let sum: Duration = self.waits.iter().sum();
        (
            sum / n,
            self.waits.iter().copied().max().unwrap_or_default(),
        )
    }
}

/// The limit the burst ran against: `limit` requests per `window`, `burst` of them at
/// once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestLimit {
    /// Requests per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// Requests the server admits at once (a bucket's capacity; for a server whose
    /// burst is not known, its limit: a fresh window).
    pub burst: u64,
}

impl RequestLimit {
    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        self.limit as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The earliest a server with this limit could answer `n` requests: the burst at
    /// once, the rest at the rate.
    pub fn ideal_secs(&self, n: u64) -> f64 {
        n.saturating_sub(self.burst) as f64 / self.per_second()
    }
}

/// Columns padded to their widest cell (by characters), two spaces apart, a rule under
/// the header.
pub fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < widths.len() {
                out.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut t = line(header.to_vec());
    t.push_str(&line(
        widths
            .iter()
            .map(|&w| "-".repeat(w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        t.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    t
}

/// The table. `limit` is what the server announced (or was configured with), `None`
/// when unknown; `ideal` the server's own best for the whole burst, in seconds (its
/// burst counted), when known.
pub fn table(rows: &[ClientSummary], limit: Option<RequestLimit>, ideal: Option<f64>) -> String {
    let header = [
        "client",
        "calls",
        "ok",
        "429s absorbed",
        "retries",
        "ran",
        "wait per call (mean / max)",
        "achieved rate",
        "time vs the server's best",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            let rate = r.succeeded as f64 / secs;
            // Clients that ran together shared the limit: only the total is held to it.
            let shared = rows.len() > 1 && r.name != "total";
            let achieved = match limit {
                _ if shared => format!("{rate:.2}/s (shares the limit)"),
                Some(l) => format!(
                    "{rate:.2}/s (limit {:.2}/s, burst {})",
                    l.per_second(),
                    l.burst
                ),
                None => format!("{rate:.2}/s (limit not announced)"),
            };
            let vs = match ideal {
                Some(best) if !shared && best > 0.0 => {
                    format!("{secs:.1} s vs {best:.1} s ({:.2}×)", secs / best)
                }
                Some(best) if !shared => format!("{secs:.1} s vs {best:.1} s"),
                _ => format!("{secs:.1} s"),
            };
            let (mean, max) = r.wait_per_call();
            vec![
                r.name.clone(),
                r.requests.to_string(),
                r.succeeded.to_string(),
                r.rate_limited.to_string(),
                r.retries.to_string(),
                format!(
                    "{:.1}–{:.1} s",
                    r.first_start.as_secs_f64(),
                    r.elapsed.as_secs_f64()
                ),
                format!("{:.2} s / {:.2} s", mean.as_secs_f64(), max.as_secs_f64()),
                achieved,
                vs,
            ]
        })
        .collect();
    aligned(&header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, requests: u64, start: u64, end: u64, wait_ms: u64) -> ClientSummary {
        ClientSummary {
            name: name.into(),
            requests,
            succeeded: requests,
            waits: vec![Duration::from_millis(wait_ms); requests as usize],
            first_start: Duration::from_secs(start),
            elapsed: Duration::from_secs(end),
            ..ClientSummary::default()
        }
    }

    #[test]
    fn the_table_is_aligned_and_compares_with_the_servers_best() {
        let rows = [
            row("blocking", 20, 0, 7, 3000),
            row("async", 20, 0, 8, 1000),
        ];
        let mut all = rows.to_vec();
        all.push(ClientSummary::total(&rows));
        let limit = RequestLimit {
            limit: 5,
            window: Duration::from_secs(1),
            burst: 5,
        };
        // 40 requests, 5 at once, then 5 per second: 7 s, not 8.
        assert_eq!(limit.ideal_secs(40), 7.0);
        let t = table(&all, Some(limit), Some(limit.ideal_secs(40)));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        // Every column starts at the same character on every line.
        let col = |line: &str, what: &str| line.find(what).map(|b| line[..b].chars().count());
        let at = col(lines[0], "ran").unwrap();
        for line in &lines[2..] {
            assert_eq!(col(line, "0.0–"), Some(at), "{t}");
        }
        assert!(t.contains("8.0 s vs 7.0 s (1.14×)"), "{t}");
        assert!(t.contains("(shares the limit)"), "{t}");
        assert!(t.contains("limit 5.00/s, burst 5"), "{t}");
        // Waits per call, not summed: the total's mean is 2 s, its max 3 s.
        assert!(t.contains("2.00 s / 3.00 s"), "{t}");
        assert!(table(&[], None, None).starts_with("client"));
    }
}
