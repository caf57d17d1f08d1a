//! `mistral`: a file of Mistral requests through the shared rate limit, resumable after
//! any crash, nothing lost and nothing twice; plus `mistral chat` and `mistral limits`.
//!
//! Built on the async client (`mistral-async`): every call goes through its shared
//! limiter (`MISTRAL_LIMITER` picks the store, so processes and machines share one
//! budget) and its retry rules.

mod batch;
mod batch_api;
mod budget;
mod commands;
mod input;
mod output;
mod progress;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mistral_async::Client;

/// Exit status: everything succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: the run is complete but some results are errors (or lines were skipped).
pub const EXIT_ERRORS: u8 = 1;
/// Exit status: bad usage or invalid input; nothing was sent.
pub const EXIT_INVALID: u8 = 2;
/// Exit status: stopped before the end (quota, zero allowance, key refused, output
/// unwritable, requests that kept failing); run the same command again to resume.
pub const EXIT_INCOMPLETE: u8 = 3;
/// Exit status: interrupted by SIGINT (Ctrl-C); resumable. SIGTERM gives 143
/// (`run::Signal::exit_status`).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "mistral",
    version,
    about = "Mistral API from the command line: batches through the shared rate limit, chat, limits",
    after_help = "Environment: MISTRAL_API_KEY (required unless --emulator), MISTRAL_BASE_URL, \
MISTRAL_LIMITER (unset: in-process; file or file:/dir/: processes of one host; redis://host:port/: machines; redis+cluster://host:port,host:port/: machines, through a Redis Cluster)."
)]
struct Cli {
    /// Run against the built-in Mistral emulator on loopback (no key needed; answers are
    /// generated, limits are 5 requests and 20,000 tokens per second).
    #[arg(long, global = true)]
    emulator: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Batches of requests in Mistral's Batch API format.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// One chat completion, streamed to the terminal.
    Chat(commands::ChatArgs),
    /// The limits the server announces and what the shared limiter has learned.
    Limits(commands::LimitsArgs),
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Sends every request of INPUT and appends its result to OUTPUT.
    ///
    /// INPUT has one `{"custom_id": "...", "body": {...}}` per line (Mistral's Batch API
    /// format; "endpoint" and "model" may sit beside the body). OUTPUT gets one
    /// `{"custom_id", "response": {"status_code", "body"}, "error"}` per request.
    /// Kill it at any moment and run the same command again: it resumes.
    ///
    /// A line may be at most 16 MiB. The run sends the lines its validation saw: lines
    /// appended to INPUT while it runs are left for the next run.
    ///
    /// At the first SIGINT (Ctrl-C) or SIGTERM no new request is started; the calls in
    /// flight have 3 s to finish, then are abandoned (left for the next run); a second
    /// signal exits at once.
    ///
    /// Exit status: 0 every request succeeded; 1 complete, but some results are errors
    /// (or invalid lines were skipped); 2 invalid input or usage, nothing sent; 3 stopped
    /// early (quota, zero allowance, key, wrong URL, output unwritable, failing server):
    /// run again to resume; 130 interrupted by SIGINT, 143 by SIGTERM.
    Run(BatchArgs),
}

/// How the requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// The online API, through the shared limiter.
    Online,
    /// Mistral's Batch API: upload, one job per endpoint and model, results downloaded.
    BatchApi,
    /// The Batch API when the file cannot finish online before --deadline, or with
    /// --prefer cost; else online.
    Auto,
}

/// What `--via auto` favours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Prefer {
    /// Finish soonest (online, unless --deadline cannot be met).
    Speed,
    /// Spend least (the Batch API is half the price).
    Cost,
}

/// `mistral batch run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// The requests, one JSON object per line (at most 16 MiB each).
    pub input: PathBuf,
    /// Where results are appended (created if missing; resumed if present).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Endpoint for lines that do not name one: chat, fim, embeddings (or the /v1/ path).
    /// Default: guessed from the body (messages, prompt, input).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model for lines whose body does not name one.
    #[arg(long)]
    pub model: Option<String>,
    /// Requests in flight at most, per model (default: chosen from each model's
    /// announced limits and the latency). A crash makes a rerun send at most this many
    /// requests per model again.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Skip invalid lines (reported, and counted in the exit status) instead of refusing
    /// the file.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Validate, then say how long the file will take at the known limits and how many
    /// tokens it will cost; sends nothing but one tiny probe per model (see --no-probe).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run or --via auto: do not probe the limits; the estimates then use what
    /// the limiter's store (MISTRAL_LIMITER=file or redis://…) has learned, if anything.
    #[arg(long)]
    pub no_probe: bool,
    /// online, batch-api or auto.
    #[arg(long, value_enum, default_value_t = Via::Online)]
    pub via: Via,
    /// With --via auto: the time by which the file must be done (90s, 15m, 2h).
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// With --via auto: speed or cost.
    #[arg(long, value_enum, default_value_t = Prefer::Speed)]
    pub prefer: Prefer,
    /// Only this shard of the requests, K/N (by a hash of custom_id): N machines each
    /// running one shard share one budget through MISTRAL_LIMITER=redis://…
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,
    /// With --via batch-api: seconds between job status checks.
    #[arg(long, default_value_t = 1.0)]
    pub poll_interval: f64,
    /// The requests' priority class in the shared budget: interactive, default or
    /// batch. Batch work yields to the other programs spending the same budget
    /// (MISTRAL_LIMITER) and keeps a tenth of it while they keep it busy.
    #[arg(long, default_value = "batch", value_parser = parse_priority)]
    pub priority: mistral_async::Priority,
    /// Send again a request whose outcome is unknown: it was sent and no answer came
    /// (the connection closed, reset or silent), so the server may have run it and
    /// billed it. Without this flag such a request is sent once: its result is an error
    /// line with the code "outcome_unknown", and later runs skip it like any result.
    /// With it, the client retries it, and one still without an answer is left for a
    /// later run (which sends it again).
    #[arg(long)]
    pub retry_unknown: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also print the closing summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parses a priority class's name (`interactive`, `default`, `batch`).
pub fn parse_priority(text: &str) -> Result<mistral_async::Priority, String> {
    mistral_async::Priority::parse(text)
        .ok_or_else(|| format!("unknown priority {text:?} (interactive, default or batch)"))
}

/// Parses `90`, `90s`, `15m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (90s, 15m, 2h)"))?;
    let scale = match unit {
        "s" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| e.to_string())
}

/// Parses `K/N` (1 ≤ K ≤ N) into (K-1, N).
pub fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: a shard is K/N, e.g. 1/3"))?;
    let k: u64 = k
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: K is not a number"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: N is not a number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("{text:?}: need 1 ≤ K ≤ N"));
    }
    Ok((k - 1, n))
}

/// Where calls go: the client, and for the raw file transfers of the Batch API the base
/// URL and key (never printed).
pub struct Connection {
    /// The async client.
    pub client: Client,
    /// Base URL without a trailing slash or a final `/v1` (the client's).
    pub base_url: String,
    /// The API key.
    pub key: String,
    /// The built-in emulator, kept alive for the run.
    #[cfg(feature = "emulator")]
    _emulator: Option<mistral_emulator::Emulator>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn connect(emulator: bool) -> Result<Connection, String> {
    if emulator {
        #[cfg(feature = "emulator")]
        {
            let config = mistral_emulator::Config {
                era: mistral_emulator::Era::Late2025,
                window_secs: 1.0,
                default_limits: mistral_emulator::Limits::new(Some(5), Some(20_000)),
                ..mistral_emulator::Config::default()
            };
            let emulator = mistral_emulator::Emulator::try_start(config)
                .map_err(|e| format!("the built-in emulator could not start: {e}"))?;
            eprintln!(
                "mistral: using the built-in emulator at {} (5 requests and 20,000 tokens per second; answers are generated)",
                emulator.url()
            );
            let base_url = emulator.url();
            let key = emulator.key().to_string();
            let client = mistral_async::ClientBuilder::from_env()
                .base_url(base_url.clone())
                .api_key(key.clone())
                .build()
                .map_err(|e| e.to_string())?;
            return Ok(Connection {
                client,
                base_url,
                key,
                _emulator: Some(emulator),
            });
        }
        #[cfg(not(feature = "emulator"))]
        return Err("this build has no built-in emulator (cargo feature `emulator`)".into());
    }
    let key = std::env::var("MISTRAL_API_KEY").unwrap_or_default();
    if key.is_empty() {
        return Err(
            "MISTRAL_API_KEY is not set: export your key, or add --emulator to try against the built-in emulator"
                .into(),
        );
    }
    let client = mistral_async::ClientBuilder::from_env()
        .build()
        .map_err(|e| e.to_string())?;
    // As the client checked it (`…/v1` is the API's root plus /v1: dropped).
    let base_url = client.base_url().to_owned();
    Ok(Connection {
        client,
        base_url,
        key,
        #[cfg(feature = "emulator")]
        _emulator: None,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mistral: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let code = runtime.block_on(async move {
        let connection = match connect(cli.emulator) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mistral: {e}");
                return EXIT_INVALID;
            }
        };
        match cli.command {
            Command::Batch {
                command: BatchCommand::Run(args),
            } => batch::run(&connection, args).await,
            Command::Chat(args) => commands::chat(&connection, args).await,
            Command::Limits(args) => commands::limits(&connection, args).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shards_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("2 weeks").is_err());
        assert_eq!(parse_shard("2/3").unwrap(), (1, 3));
        assert!(parse_shard("0/3").is_err());
        assert!(parse_shard("4/3").is_err());
    }
}
