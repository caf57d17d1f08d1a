//! The report: every row, the targets, the micro-benchmarks, as markdown
//! (`report.md`) and JSON (`report.json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::Row;
use super::micro::{MicroBench, Overhead, Throughput};
use super::scenario::{Scenario, Size};
use super::strategy::Strategy;

/// A scenario as the report describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// Id.
    pub id: String,
    /// What it shows.
    pub title: String,
    /// Limits, in words.
    pub limits: String,
    /// The workload and its old ideal time (requests ÷ rate).
    pub workload: String,
    /// The server's rules as the yardstick models them, and its best.
    pub server: String,
    /// Threads / tasks / processes / store.
    pub clients: String,
    /// The plot's file name, once drawn.
    pub plot: Option<String>,
}

impl ScenarioInfo {
    /// Describes `s`.
    pub fn of(s: &Scenario) -> ScenarioInfo {
        let e = &s.emulator;
        let l = e.limits_for(super::scenario::MODEL);
        let mut limits = format!(
            "{} requests / {} s",
            l.requests.map_or("∞".into(), |r| r.to_string()),
            e.window_secs
        );
        if let Some(t) = l.tokens {
            let _ = write!(limits, " and {t} tokens / {} s", e.window_secs);
        }
        let _ = write!(
            limits,
            ", {:?}{}, headers {}",
            e.semantics,
            l.burst.map_or(String::new(), |b| format!(" (burst {b})")),
            if e.headers {
                format!("on ({:?} names)", e.era)
            } else {
                "off".to_owned()
            }
        );
        if let Some(k) = l.concurrency {
            let _ = write!(
                limits,
                ", at most {k} in flight, {} ms per request",
                e.latency_ms
            );
        }
        if let super::scenario::Front::Nginx { rate } = s.front {
            let _ = write!(
                limits,
                "; in front: nginx limit_req {rate} r/s without burst"
            );
        }
        if e.background_share > 0.0 {
            let _ = write!(
                limits,
                ", background consumer {:.0} %",
                e.background_share * 100.0
            );
        }
        let describe = |w: &super::workload::Workload| {
            let phases: Vec<String> = w
                .phases
                .iter()
                .map(|p| format!("{} × {} tokens", p.count, p.tokens_per_request()))
                .collect();
            format!(
                "{} requests ({}), requests ÷ rate {:.1} s",
                w.len(),
                phases.join(" then "),
                w.ideal(s.available).as_secs_f64()
            )
        };
        let store = match s.store {
            super::scenario::StoreKind::Local => "in-process LocalLimiter",
            super::scenario::StoreKind::File => "FileLimiter (state file)",
            super::scenario::StoreKind::Redis => "RedisLimiter (redis-server)",
        };
        if let Some(c) = &s.change {
            if let Some(l) = &c.limits {
                let _ = write!(
                    limits,
                    "; from {:.1} s on: {} requests / {} s",
                    c.at.as_secs_f64(),
                    l.requests.map_or("∞".into(), |r| r.to_string()),
                    l.window_secs.unwrap_or(e.window_secs)
                );
            }
            if let Some(share) = c.background_share {
                let _ = write!(
                    limits,
                    "; from {:.1} s on: a background consumer spends {:.0} %",
                    c.at.as_secs_f64(),
                    share * 100.0
                );
            }
        }
        let blocking = s.best_s(Strategy::OursBlocking);
        let asynchronous = s.best_s(Strategy::OursAsync);
        let best = if (blocking - asynchronous).abs() < 1e-6 {
            format!("{blocking:.2} s")
        } else {
            format!(
                "{blocking:.2} s ({} threads) / {asynchronous:.2} s ({} tasks)",
                s.threads, s.tasks
            )
        };
        ScenarioInfo {
            id: s.id.clone(),
            title: s.title.clone(),
            limits,
            workload: describe(&s.workload),
            server: format!("{}; server's best {best}", s.server.describe()),
            clients: format!(
                "{} thread(s) blocking / {} task(s) async over {} process(es); ours paced by one \
                 {store}; budget {:.0} s per strategy",
                s.threads,
                s.tasks,
                s.processes,
                s.budget.as_secs_f64(),
            ),
            plot: None,
        }
    }
}

/// Everything a bench run found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `full` or `quick`.
    pub size: String,
    /// Wall time of the whole run, seconds.
    pub duration_s: f64,
    /// CPUs the machine has.
    pub cpus: usize,
    /// `true` when each strategy × scenario ran in a child process.
    pub isolated: bool,
    /// The scenarios.
    pub scenarios: Vec<ScenarioInfo>,
    /// One row per scenario × strategy.
    pub rows: Vec<Row>,
    /// Criterion micro-benchmarks of the core.
    pub micro: Vec<MicroBench>,
    /// Why there are no micro-benchmarks, if there are none.
    pub micro_note: Option<String>,
    /// Client overhead over the bare HTTP libraries.
    pub overhead: Vec<Overhead>,
    /// The emulator's throughput.
    pub throughput: Vec<Throughput>,
    /// Things to know when reading the numbers.
    pub notes: Vec<String>,
    /// Issue 9's table was run, its windows scaled by this.
    pub capacity_scale: Option<f64>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// A report of a run of `size`.
    pub fn new(size: Size) -> Report {
        Report {
            size: match size {
                Size::Full => "full".into(),
                Size::Quick => "quick".into(),
            },
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ..Report::default()
        }
    }

    /// The row of `strategy` in `scenario`, if it ran.
    pub fn row(&self, scenario: &str, strategy: Strategy) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.strategy == strategy.name())
    }

    /// Every target check of ours, as `(scenario, strategy, check)`.
    pub fn checks(&self) -> impl Iterator<Item = (&Row, &super::metrics::Check)> {
        self.rows
            .iter()
            .flat_map(|r| r.checks.iter().map(move |c| (r, c)))
    }

    /// The results table alone (markdown).
    pub fn table(&self) -> String {
        let mut t = String::new();
        t.push_str(
            "| scenario | strategy | done | makespan | server's best | makespan ÷ best | goodput ÷ best | 429s | attempts/req | errors | recovery | p50 | p99 | CPU / 1k req | peak RSS | met? |\n",
        );
        t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            if let Some(note) = &r.note
                && r.succeeded == 0
                && r.errors == 0
            {
                let _ = writeln!(
                    t,
                    "| {} | {} | {note} | | | | | | | | | | | | | |",
                    r.scenario, r.strategy
                );
                continue;
            }
            let met = match r.all_met() {
                None => "".to_owned(),
                Some(true) => "yes".to_owned(),
                Some(false) => {
                    let missed: Vec<&str> = r
                        .checks
                        .iter()
                        .filter(|c| !c.met)
                        .map(|c| short_name(&c.what))
                        .collect();
                    format!("**no**: {}", missed.join(", "))
                }
            };
            let ms = |v: Option<f64>| {
                v.map_or("—".to_owned(), |v| {
                    if v >= 10_000.0 {
                        format!("{:.1} s", v / 1000.0)
                    } else {
                        format!("{v:.0} ms")
                    }
                })
            };
            let star = if r.process_wide { "*" } else { "" };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {:.2} s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {met} |",
                r.scenario,
                r.strategy,
                r.done(),
                r.makespan_s,
                r.best_s.map_or("—".into(), |b| format!("{b:.2} s")),
                opt(r.makespan_vs_best, 2),
                opt(r.goodput_ratio, 3),
                r.http_429,
                opt(r.attempts_per_request, 3),
                r.errors,
                if r.recovery_note.is_some() {
                    r.recovery_s.map_or("never".into(), |v| format!("{v:.2} s"))
                } else {
                    String::new()
                },
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.cpu_ms_per_1k
                    .map_or("—".into(), |c| format!("{c:.0} ms{star}")),
                r.peak_rss_mib
                    .map_or("—".into(), |m| format!("{m:.1} MiB{star}")),
            );
        }
        t
    }

    /// Issue 9's measured table, re-run (the rows of the `T-` scenarios), markdown.
    pub fn capacity_table(&self, scale: f64) -> String {
        let prefix = super::capacity::PREFIX;
        let mut m = String::new();
        m.push_str("## Issue 9's measured table, re-run\n\n");
        let _ = writeln!(
            m,
            "The same workloads as the issue's table, each strategy against its own server{}. \
             Fraction of the server's best: the earliest that server could have answered the \
             calls that succeeded, over the makespan (`bench::best`).\n",
            if (scale - 1.0).abs() < 1e-9 {
                String::new()
            } else {
                format!(", windows and service times × {scale}")
            }
        );
        m.push_str(
            "| row | server in front | strategy | makespan | server's best | fraction of the server's best | attempts per call | 429s | errors | first error |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let mut rows: Vec<&super::metrics::Row> = self
            .rows
            .iter()
            .filter(|r| r.scenario.starts_with(prefix))
            .collect();
        // (a), then (a'), (b), ... : by id, strategies in their order.
        rows.sort_by(|a, b| a.scenario.cmp(&b.scenario));
        for r in rows {
            let title = self
                .scenarios
                .iter()
                .find(|s| s.id == r.scenario)
                .map_or("", |s| s.title.as_str());
            let id = &r.scenario[prefix.len()..];
            if let Some(note) = &r.note
                && r.succeeded == 0
                && r.errors == 0
            {
                let _ = writeln!(
                    m,
                    "| ({id}) | {title} | {} | {note} | | | | | | |",
                    r.strategy
                );
                continue;
            }
            let instant = r.best_s.is_some_and(|b| b < 0.05);
            let fraction = if instant {
                "— (best: at once)".to_owned()
            } else {
                opt(r.goodput_ratio, 2)
            };
            let unfinished = if r.unfinished > 0 {
                format!(" (+{} unfinished)", r.unfinished)
            } else {
                String::new()
            };
            let _ = writeln!(
                m,
                "| ({id}) | {title} | {} | {:.1} s | {} | {fraction} | {} | {} | {}{unfinished} | {} |",
                r.strategy,
                r.makespan_s,
                r.best_s.map_or("—".into(), |b| format!("{b:.1} s")),
                opt(r.attempts_per_request, 2),
                r.http_429,
                r.errors,
                r.error_samples
                    .first()
                    .map_or(String::new(), |e| one_line(e).chars().take(120).collect()),
            );
        }
        m.push('\n');
        m
    }

    /// The whole report (markdown).
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# Rate-limit benchmark ({} run)\n", self.size);
        let _ = writeln!(
            m,
            "{:.0} s on {} CPU(s); each strategy × scenario {}. Generated by `cargo xtask bench` \
             (`mistral-bench`).\n",
            self.duration_s,
            self.cpus,
            if self.isolated {
                "ran in its own client process(es), the emulator in the parent"
            } else {
                "ran in-process, next to the emulator"
            }
        );
        if let Some(scale) = self.capacity_scale {
            m.push_str(&self.capacity_table(scale));
        }
        m.push_str("## Results\n\n");
        m.push_str(&self.table());
        m.push_str(
            "\nmakespan: from the start to the last call's return. server's best: the earliest \
             that server (its semantics and limits: a bucket's burst, a window's reset, a limit \
             changed mid-run...) could have answered the whole workload, from a simulation \
             written apart from the client and the emulator (`bench::best`). goodput ÷ best: \
             the server's best for as many calls as succeeded, over the makespan (1.0 = the \
             server could not have served them sooner). recovery: after a limit change, how \
             long until a window at ≥ 0.90 of the new limit begins. 429s: client requests the emulator refused. attempts/req: HTTP \
             requests the emulator received per call started. errors: calls that returned an \
             error to the caller. p50/p99: call latency, queueing behind the limit included. \
             CPU and peak RSS: of the client process(es) (the largest one for several)",
        );
        if self.rows.iter().any(|r| r.process_wide) {
            m.push_str("; * = the whole process, emulator included");
        }
        m.push_str(".\n\n");

        m.push_str("## Targets (ours)\n\n");
        let checks: Vec<_> = self.checks().collect();
        if checks.is_empty() {
            m.push_str("No row of ours ran.\n\n");
        } else {
            let missed = checks.iter().filter(|(_, c)| !c.met).count();
            let _ = writeln!(
                m,
                "{} of {} checks met{}.\n",
                checks.len() - missed,
                checks.len(),
                if missed == 0 {
                    ""
                } else {
                    "; missed ones in bold"
                }
            );
            m.push_str("| scenario | strategy | target | wanted | got | met |\n|---|---|---|---|---|---|\n");
            for (r, c) in checks {
                let b = if c.met { "" } else { "**" };
                let _ = writeln!(
                    m,
                    "| {} | {} | {b}{}{b} | {} | {} | {b}{}{b} |",
                    r.scenario,
                    r.strategy,
                    c.what,
                    c.wanted,
                    c.got,
                    if c.met { "yes" } else { "no" }
                );
            }
            m.push('\n');
        }

        m.push_str("## Scenarios\n\n");
        for s in &self.scenarios {
            let _ = writeln!(m, "- **{}** — {}.", s.id, s.title);
            let _ = writeln!(m, "  - limits: {}", s.limits);
            let _ = writeln!(m, "  - workload (every strategy): {}", s.workload);
            let _ = writeln!(m, "  - server model: {}", s.server);
            let _ = writeln!(m, "  - clients: {}", s.clients);
            if let Some(p) = &s.plot {
                let _ = writeln!(m, "  - plot: [{p}]({p})");
            }
        }
        m.push_str("\nStrategies:\n\n");
        for s in Strategy::ALL {
            let _ = writeln!(m, "- `{}`: {}", s.name(), s.description());
        }
        m.push('\n');

        let errors: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| !r.error_samples.is_empty())
            .collect();
        if !errors.is_empty() {
            m.push_str("## Errors surfaced (one sample per kind)\n\n");
            for r in errors {
                for e in &r.error_samples {
                    let _ = writeln!(
                        m,
                        "- {} / {} ({} error(s)): {}",
                        r.scenario,
                        r.strategy,
                        r.errors,
                        one_line(e)
                    );
                }
            }
            m.push('\n');
        }

        m.push_str("## Core micro-benchmarks (criterion)\n\n");
        if self.micro.is_empty() {
            let _ = writeln!(m, "{}\n", self.micro_note.as_deref().unwrap_or("Not run."));
        } else {
            m.push_str("| benchmark | time per op | aim | met |\n|---|---|---|---|\n");
            for b in &self.micro {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} |",
                    b.name,
                    format_ns(b.ns),
                    b.aim.as_deref().unwrap_or(""),
                    match b.met() {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "",
                    }
                );
            }
            m.push('\n');
        }

        m.push_str("## Client overhead over the bare HTTP library\n\n");
        if self.overhead.is_empty() {
            m.push_str("Not measured.\n\n");
        } else {
            m.push_str(
                "| client | server | how | requests | bare (best / median round) | ours (best / median round) | overhead (best) | CPU per request: bare / ours | client threads' CPU per request: bare / ours | aim < 5 % |\n|---|---|---|---|---|---|---|---|---|---|\n",
            );
            for o in &self.overhead {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {:.0} / {:.0} µs/req | {:.0} / {:.0} µs/req | {:+.1} % | {} | {} | {} |",
                    o.what,
                    o.server,
                    o.how,
                    o.requests,
                    o.bare_us,
                    o.bare_median_us,
                    o.ours_us,
                    o.ours_median_us,
                    o.overhead() * 100.0,
                    cpu_pair(o.bare_cpu_us, o.ours_cpu_us),
                    cpu_pair(o.bare_client_cpu_us, o.ours_client_cpu_us),
                    if o.overhead() < 0.05 { "yes" } else { "**no**" }
                );
            }
            m.push_str(
                "\nBoth sides serialize the same `ChatRequest` and decode the same `ChatResponse`; \
                 ours adds the call state machine, the response classifier, the shared limiter \
                 and telemetry. Alternating rounds against an emulator in the same process; the \
                 best round is the one least disturbed by other work on the machine. Where the \
                 server announces its limits (as Mistral does), the limiter admits every call \
                 at once and the difference is the client's own cost; where it announces \
                 nothing, the limiter learns a rate, and the difference includes that pacing. \
                 The client threads' CPU leaves out the emulator's (whose own CPU per request \
                 grows when its client is slower: it parks and wakes more often). The \
                 calibration row adds a known busy wait to each bare request: what a fixed \
                 cost of the client's own shows as here, on cores the client and the \
                 emulator share.\n\n",
            );
        }

        m.push_str("## Emulator throughput\n\n");
        if self.throughput.is_empty() {
            m.push_str("Not measured.\n\n");
        } else {
            for t in &self.throughput {
                let _ = writeln!(
                    m,
                    "- {}: {:.0} requests/s over {} requests ({}).",
                    t.how,
                    t.per_second,
                    t.requests,
                    if t.per_second >= 2000.0 {
                        "aim ≥ 2,000/s met"
                    } else {
                        "**aim ≥ 2,000/s missed**"
                    }
                );
            }
            m.push('\n');
        }

        if !self.notes.is_empty() {
            m.push_str("## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(m, "- {n}");
            }
            m.push('\n');
        }
        m
    }

    /// Writes `report.md` and `report.json` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let md = dir.join("report.md");
        let json = dir.join("report.json");
        std::fs::write(&md, self.markdown())?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&json, text)?;
        Ok((md, json))
    }
}

fn short_name(what: &str) -> &str {
    match what {
        "goodput ÷ server's best" => "goodput",
        "makespan ÷ server's best" => "makespan",
        "back at ≥ 0.90 of a changed limit" => "recovery",
        "makespan not worse than the official-SDK style" => "vs official SDK",
        "attempts per request" => "attempts",
        "errors surfaced" => "errors",
        w if w.starts_with("faster than the seed fix") => "vs seed fix",
        w => w,
    }
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 240 {
        let cut: String = line.chars().take(240).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// `18.6 ns`, `2.20 µs`, `1.50 ms`.
pub fn format_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// `bare / ours µs (+x %)`, or `–` when either was not measured.
fn cpu_pair(bare: Option<f64>, ours: Option<f64>) -> String {
    match (bare, ours) {
        (Some(b), Some(u)) => format!("{b:.0} / {u:.0} µs ({:+.0} %)", (u / b - 1.0) * 100.0),
        _ => "–".into(),
    }
}
