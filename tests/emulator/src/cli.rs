//! The command line of the `mistral-emulator` binary (clap derive); every default shown in
//! `--help` is read from [`Config::default`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use super::config::{Change, Config, Era, Fault, Limits, RateLimitBody, Semantics};

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Cli {
    /// The emulator's configuration.
    pub config: Config,
    /// Port to listen on (0: any).
    pub port: u16,
    /// Stop after this long (`None`: run until killed).
    pub duration: Option<Duration>,
}

/// A Mistral API emulator on 127.0.0.1.
///
/// Prints `url: http://127.0.0.1:PORT` and `key: KEY` on stdout, then serves until killed.
/// Flags override --config, which overrides the defaults shown.
#[derive(Debug, Parser)]
#[command(
    name = "mistral-emulator",
    version,
    after_help = "While it runs, GET /_emulator/summary (counts, limit violations, most in \
                  flight per model), /_emulator/log (every entry) and /_emulator/timeline \
                  (per second) show the request log; no key needed."
)]
struct Args {
    /// Port to listen on (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    port: u16,
    /// JSON file with a Config (any subset of its fields).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Accepted API key (repeatable).
    #[arg(long = "key", value_name = "K", default_values_t = defaults().keys)]
    keys: Vec<String>,
    /// Header names and bodies of this era: early-2025, mid-2025, late-2025, 2026.
    #[arg(long, value_name = "E", default_value_t = defaults().era, value_parser = era)]
    era: Era,
    /// How a limit is enforced: bucket, fixed-window, sliding-log or leaky (nginx
    /// limit_req without burst: a request sooner than window/rpm after the last admitted
    /// one is refused).
    #[arg(long, value_name = "S", default_value_t = defaults().semantics, value_parser = semantics)]
    semantics: Semantics,
    /// Request window in seconds; headers name it for its length (minute only for 60,
    /// else e.g. 1-second, 10-second, 5-minute).
    #[arg(long, value_name = "S", default_value_t = defaults().window_secs, value_parser = window)]
    window_secs: f64,
    /// Token window in seconds [default: the request window].
    #[arg(long, value_name = "S", value_parser = window)]
    token_window_secs: Option<f64>,
    /// Default requests per window ("none": unlimited).
    #[arg(long, value_name = "N", default_value_t = Count(defaults().default_limits.requests), value_parser = count)]
    rpm: Count,
    /// Default bucket capacity [default: --rpm].
    #[arg(long, value_name = "N", value_parser = count)]
    burst: Option<Count>,
    /// Default tokens per window ("none": unlimited).
    #[arg(long, value_name = "N", default_value_t = Count(defaults().default_limits.tokens), value_parser = count)]
    tpm: Count,
    /// Default tokens per month.
    #[arg(long, value_name = "N", default_value_t = Count(defaults().default_limits.tokens_month), value_parser = count)]
    tokens_month: Count,
    /// At most K requests per model in flight (admission to the last byte handed over);
    /// more get 429 with the window body.
    #[arg(long, value_name = "K", default_value_t = Count(defaults().default_limits.concurrency), value_parser = count)]
    concurrency: Count,
    /// Service time of every admitted request; with -MAX, drawn uniformly from MS..=MAX
    /// per request (seeded).
    #[arg(long, value_name = "MS[-MAX]", default_value_t = Latency::of(&defaults()), value_parser = latency)]
    latency_ms: Latency,
    /// At SECS into the run (repeatable): xF scales every limit as configured (x2 tier
    /// upgrade, x0.5 halved), background=S sets the background share; both:
    /// 5:x0.5,background=0.
    #[arg(long, value_name = "SECS:WHAT", value_parser = change)]
    change: Vec<Change>,
    /// Limits of one model (repeatable): requests/tokens per window, tokens per month,
    /// most in flight ("-" for none), e.g. mistral-large-latest=4/250000 or
    /// small=-/-/-/4; an OCR model's T counts pages (mistral-ocr-latest=60/1000).
    #[arg(long, value_name = "NAME=R[/T[/M[/C]]]", value_parser = model_limits)]
    model: Vec<(String, Limits)>,
    /// A model with a zero allowance (always 429; repeatable).
    #[arg(long, value_name = "NAME")]
    zero_model: Vec<String>,
    /// Models not named by --model/--config get 400 invalid_model.
    #[arg(long)]
    strict_models: bool,
    /// Send no rate-limit headers at all.
    #[arg(long)]
    no_headers: bool,
    /// Send Retry-After on window refusals.
    #[arg(long)]
    retry_after: bool,
    /// Send retry-after-ms on window refusals.
    #[arg(long)]
    retry_after_ms: bool,
    /// 429 body for a spent window: gateway, 1300 or proxy [default: the era's].
    #[arg(long, value_name = "BODY", value_parser = body)]
    body: Option<RateLimitBody>,
    /// Share of requests refused with 429 code 3505.
    #[arg(long, value_name = "F", default_value_t = defaults().capacity_rate, value_parser = fraction)]
    capacity_rate: f64,
    /// Share of every budget spent by a background consumer.
    #[arg(long, value_name = "F", default_value_t = defaults().background_share, value_parser = fraction)]
    background_share: f64,
    /// Seed of every random draw.
    #[arg(long, value_name = "N", default_value_t = defaults().seed)]
    seed: u64,
    /// Fault for request number N (repeatable); KIND is one of 500 502 503 504 reset close
    /// hang stall:N cut:N malformed delay:MS 401 400 403 404 422 429 1300 capacity proxy429
    /// cap stream-error:N stream-error-event:N.
    #[arg(long, value_name = "N:KIND", value_parser = numbered_fault)]
    fault: Vec<(u64, Fault)>,
    /// Share of requests hit by a random fault from --random-fault.
    #[arg(long, value_name = "F", default_value_t = defaults().fault_rate, value_parser = fraction)]
    fault_rate: f64,
    /// A fault --fault-rate draws from (repeatable).
    #[arg(long, value_name = "KIND", value_parser = fault)]
    random_fault: Vec<Fault>,
    /// Embedding size.
    #[arg(long, value_name = "N", default_value_t = defaults().embedding_dim)]
    embedding_dim: usize,
    /// Natural completion length, tokens.
    #[arg(long, value_name = "N", default_value_t = defaults().completion_tokens)]
    completion_tokens: u32,
    /// How much a completion's length varies around --completion-tokens, by a hash of
    /// the prompt (0: not at all; 0.6: from 40 % to 160 %).
    #[arg(long, value_name = "F", default_value_t = defaults().completion_spread, value_parser = fraction)]
    completion_spread: f64,
    /// No priority capacity: `service_tier: "auto"` is served by the standard tier.
    #[arg(long)]
    no_priority_tier: bool,
    /// Delay between SSE events, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = defaults().stream_chunk_delay_ms)]
    stream_delay_ms: u64,
    /// How long hang and stall hold a connection, seconds.
    #[arg(long, value_name = "N", default_value_t = defaults().hang_secs)]
    hang_secs: u64,
    /// Most requests kept in the log.
    #[arg(long, value_name = "N", default_value_t = defaults().max_log_entries)]
    max_log_entries: usize,
    /// Stop after S seconds [default: run until killed].
    #[arg(long, value_name = "S", value_parser = duration)]
    duration_secs: Option<Duration>,
}

fn defaults() -> Config {
    Config::default()
}

/// A count, or none (no such limit): `300`, `none`, `-`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Count(Option<u64>);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("none"),
        }
    }
}

/// A service time in milliseconds, `MS` or `MS-MAX`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Latency {
    low: u64,
    high: u64,
}

impl Latency {
    fn of(config: &Config) -> Latency {
        Latency {
            low: config.latency_ms,
            high: config.latency_ms.saturating_add(config.latency_jitter_ms),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("cannot read {value:?} as a number"))
}

fn count(value: &str) -> Result<Count, String> {
    match value {
        "-" | "none" | "" => Ok(Count(None)),
        v => number(v).map(|n| Count(Some(n))),
    }
}

fn fraction(value: &str) -> Result<f64, String> {
    let x: f64 = number(value)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

fn window(value: &str) -> Result<f64, String> {
    let secs: f64 = number(value)?;
    if secs.is_finite() && secs > 0.0 {
        Ok(secs)
    } else {
        Err(format!("{value} is not a window (seconds above 0)"))
    }
}

fn duration(value: &str) -> Result<Duration, String> {
    let secs: f64 = number(value)?;
    if secs.is_finite() && secs >= 0.0 {
        Ok(Duration::from_secs_f64(secs.min(1e9)))
    } else {
        Err(format!("{value} is not a duration"))
    }
}

fn era(value: &str) -> Result<Era, String> {
    Era::parse(value).ok_or_else(|| format!("unknown era {value:?}"))
}

fn semantics(value: &str) -> Result<Semantics, String> {
    Semantics::parse(value).ok_or_else(|| format!("unknown semantics {value:?}"))
}

fn body(value: &str) -> Result<RateLimitBody, String> {
    match value {
        "gateway" => Ok(RateLimitBody::Gateway),
        "1300" => Ok(RateLimitBody::Code1300),
        "proxy" => Ok(RateLimitBody::Proxy),
        _ => Err(format!("expected gateway, 1300 or proxy, got {value:?}")),
    }
}

fn change(value: &str) -> Result<Change, String> {
    Change::parse(value)
}

fn fault(value: &str) -> Result<Fault, String> {
    Fault::parse(value).ok_or_else(|| format!("unknown fault {value:?}"))
}

fn numbered_fault(value: &str) -> Result<(u64, Fault), String> {
    let (n, kind) = value
        .split_once(':')
        .ok_or_else(|| format!("expected N:KIND, got {value:?}"))?;
    Ok((number(n)?, fault(kind)?))
}

fn latency(value: &str) -> Result<Latency, String> {
    let (low, high) = match value.split_once('-') {
        Some((l, h)) => (number(l)?, number(h)?),
        None => {
            let l = number(value)?;
            (l, l)
        }
    };
    if high < low {
        return Err(format!("{value}: the maximum is below the minimum"));
    }
    Ok(Latency { low, high })
}

fn model_limits(value: &str) -> Result<(String, Limits), String> {
    let malformed = || format!("expected NAME=R[/T[/M[/C]]], got {value:?}");
    let (name, spec) = value.split_once('=').ok_or_else(malformed)?;
    let mut parts = spec.split('/');
    let mut next = || count(parts.next().unwrap_or("-")).map(|c| c.0);
    let (requests, tokens, tokens_month, concurrency) = (next()?, next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(malformed());
    }
    let limits = Limits {
        tokens_month,
        concurrency,
        ..Limits::new(requests, tokens)
    };
    Ok((name.to_string(), limits))
}

/// Parses the arguments that follow the program name.
///
/// An error is clap's: a bad flag or value (exit code 2), or `--help` / `--version`,
/// whose text it holds (exit code 0); [`clap::Error::exit_code`] tells them apart.
pub fn parse_args(args: &[String]) -> Result<Cli, clap::Error> {
    let argv = std::iter::once("mistral-emulator".to_string()).chain(args.iter().cloned());
    let matches = Args::command().try_get_matches_from(argv)?;
    let parsed = Args::from_arg_matches(&matches)?;
    let mut config = match &parsed.config {
        None => Config::default(),
        Some(path) => read_config(path)?,
    };
    let (port, duration) = (parsed.port, parsed.duration_secs);
    apply(&matches, parsed, &mut config);
    Ok(Cli {
        config,
        port,
        duration,
    })
}

fn read_config(path: &std::path::Path) -> Result<Config, clap::Error> {
    let shown = path.display();
    let fail =
        |kind, e: &dyn fmt::Display| Args::command().error(kind, format!("--config {shown}: {e}"));
    let text = std::fs::read_to_string(path).map_err(|e| fail(ErrorKind::Io, &e))?;
    serde_json::from_str(&text).map_err(|e| fail(ErrorKind::ValueValidation, &e))
}

/// Puts onto `config` (the file's, or the defaults) every value given on the command
/// line; repeatable flags add to what the file has (`--key` replaces the keys).
fn apply(matches: &ArgMatches, args: Args, c: &mut Config) {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    if given("keys") {
        c.keys = args.keys;
    }
    if given("era") {
        c.era = args.era;
    }
    if given("semantics") {
        c.semantics = args.semantics;
    }
    if given("window_secs") {
        c.window_secs = args.window_secs;
    }
    if let Some(secs) = args.token_window_secs {
        c.token_window_secs = Some(secs);
    }
    let limits = &mut c.default_limits;
    if given("rpm") {
        limits.requests = args.rpm.0;
    }
    if let Some(burst) = args.burst {
        limits.burst = burst.0;
    }
    if given("tpm") {
        limits.tokens = args.tpm.0;
    }
    if given("tokens_month") {
        limits.tokens_month = args.tokens_month.0;
    }
    if given("concurrency") {
        limits.concurrency = args.concurrency.0;
    }
    if given("latency_ms") {
        c.latency_ms = args.latency_ms.low;
        c.latency_jitter_ms = args.latency_ms.high - args.latency_ms.low;
    }
    c.schedule.extend(args.change);
    c.models.extend(args.model);
    for name in args.zero_model {
        c.models.insert(name, Limits::zero());
    }
    c.strict_models |= args.strict_models;
    c.headers &= !args.no_headers;
    c.retry_after |= args.retry_after;
    c.retry_after_ms |= args.retry_after_ms;
    if let Some(body) = args.body {
        c.rate_limit_body = Some(body);
    }
    if given("capacity_rate") {
        c.capacity_rate = args.capacity_rate;
    }
    if given("background_share") {
        c.background_share = args.background_share;
    }
    if given("seed") {
        c.seed = args.seed;
    }
    c.faults.extend(args.fault);
    if given("fault_rate") {
        c.fault_rate = args.fault_rate;
    }
    c.random_faults.extend(args.random_fault);
    if given("embedding_dim") {
        c.embedding_dim = args.embedding_dim;
    }
    if given("completion_tokens") {
        c.completion_tokens = args.completion_tokens;
    }
    if given("completion_spread") {
        c.completion_spread = args.completion_spread;
    }
    if given("stream_delay_ms") {
        c.stream_chunk_delay_ms = args.stream_delay_ms;
    }
    if args.no_priority_tier {
        c.priority_tier = false;
    }
    if given("hang_secs") {
        c.hang_secs = args.hang_secs;
    }
    if given("max_log_entries") {
        c.max_log_entries = args.max_log_entries;
    }
}

/// The `--help` text.
pub fn help() -> String {
    Args::command().render_long_help().to_string()
}

/// Runs the emulator as the binary does: parses `args` (without the program name),
/// prints `url: …` and `key: …`, serves until killed (or `--duration-secs`). Returns the
/// process exit code (0 after `--help`, 2 for a bad command line, 1 if it cannot serve).
pub fn run_cli(args: &[String]) -> i32 {
    let cli = match parse_args(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mistral-emulator: no runtime: {e}");
            return 1;
        }
    };
    let key = cli.config.keys.first().cloned().unwrap_or_default();
    runtime.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], cli.port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mistral-emulator: cannot listen on {addr}: {e}");
                return 1;
            }
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => {
                eprintln!("mistral-emulator: {e}");
                return 1;
            }
        };
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "url: {url}");
            let _ = writeln!(out, "key: {key}");
            let _ = out.flush();
        }
        let serving = super::serve(cli.config, listener);
        match cli.duration {
            Some(d) => {
                let _ = tokio::time::timeout(d, serving).await;
            }
            None => serving.await,
        }
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_fill_the_config() {
        let cli = parse_args(&args(&[
            "--port",
            "8080",
            "--key",
            "k1",
            "--key",
            "k2",
            "--era",
            "late-2025",
            "--semantics",
            "sliding-log",
            "--window-secs",
            "10",
            "--rpm",
            "5",
            "--tpm",
            "none",
            "--model",
            "big=4/250000",
            "--model",
            "small=-/-/-/4",
            "--zero-model",
            "paid",
            "--no-headers",
            "--retry-after",
            "--body",
            "gateway",
            "--fault",
            "3:stall:2",
            "--background-share",
            "0.3",
        ]))
        .unwrap();
        let c = &cli.config;
        assert_eq!(cli.port, 8080);
        assert_eq!(c.keys, ["k1", "k2"]);
        assert_eq!(c.era, Era::Late2025);
        assert_eq!(c.semantics, Semantics::SlidingLog);
        assert_eq!(c.default_limits.requests, Some(5));
        assert_eq!(c.default_limits.tokens, None);
        assert_eq!(c.models["big"].tokens, Some(250_000));
        assert_eq!(c.models["big"].concurrency, None);
        assert_eq!(c.models["small"].concurrency, Some(4));
        assert_eq!(c.models["small"].requests, None);
        assert!(c.models["paid"].requests == Some(0));
        assert!(!c.headers && c.retry_after);
        assert_eq!(c.rate_limit_body, Some(RateLimitBody::Gateway));
        assert_eq!(c.faults, [(3, Fault::StallAfter(2))]);
        assert_eq!(c.background_share, 0.3);
    }

    #[test]
    fn every_other_flag_lands_in_the_config() {
        let cli = parse_args(&args(&[
            "--token-window-secs",
            "5",
            "--burst",
            "7",
            "--tokens-month",
            "1000",
            "--concurrency",
            "3",
            "--strict-models",
            "--retry-after-ms",
            "--capacity-rate",
            "0.25",
            "--seed",
            "9",
            "--fault-rate",
            "0.5",
            "--random-fault",
            "503",
            "--random-fault",
            "reset",
            "--embedding-dim",
            "8",
            "--completion-tokens",
            "4",
            "--stream-delay-ms",
            "15",
            "--hang-secs",
            "2",
            "--max-log-entries",
            "10",
            "--duration-secs",
            "1.5",
        ]))
        .unwrap();
        let c = &cli.config;
        assert_eq!(c.token_window_secs, Some(5.0));
        let l = &c.default_limits;
        assert_eq!(
            (l.burst, l.tokens_month, l.concurrency),
            (Some(7), Some(1000), Some(3))
        );
        assert!(c.strict_models && c.retry_after_ms && !c.retry_after && c.headers);
        assert_eq!((c.capacity_rate, c.seed, c.fault_rate), (0.25, 9, 0.5));
        assert_eq!(c.random_faults, [Fault::Http503, Fault::Reset]);
        assert_eq!((c.embedding_dim, c.completion_tokens), (8, 4));
        assert_eq!(
            (c.stream_chunk_delay_ms, c.hang_secs, c.max_log_entries),
            (15, 2, 10)
        );
        assert_eq!(cli.duration, Some(Duration::from_millis(1500)));
        // Untouched by these flags.
        assert_eq!(l.requests, Config::default().default_limits.requests);
    }

    #[test]
    fn no_flag_is_the_default_config() {
        let cli = parse_args(&[]).unwrap();
        assert_eq!(cli.config, Config::default());
        assert_eq!((cli.port, cli.duration), (0, None));
    }

    #[test]
    fn help_shows_every_default_and_they_read_back_as_the_defaults() {
        let text = help();
        for shown in [
            "--rpm <N>",
            "[default: 300]",
            "[default: 500000]",
            "[default: 60]",
            "[default: 2026]",
            "[default: bucket]",
            "[default: test-key-0123456789]",
            "[default: the request window]",
            "[default: --rpm]",
            "/_emulator/summary",
        ] {
            assert!(text.contains(shown), "{shown} is not in --help:\n{text}");
        }
        // Each shown default, given back as a flag, gives the default config: what --help
        // says is what runs.
        let mut given = Vec::new();
        for arg in Args::command().get_arguments() {
            let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) else {
                continue;
            };
            given.push(format!("--{long}"));
            given.push(default.to_string_lossy().into_owned());
        }
        assert!(given.len() >= 2 * 18, "{given:?}");
        assert!(given.windows(2).any(|w| w == ["--rpm", "300"]), "{given:?}");
        assert_eq!(parse_args(&given).unwrap().config, Config::default());
    }

    #[test]
    fn help_and_errors_carry_their_exit_codes() {
        let help = parse_args(&args(&["--help"])).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        assert!(help.to_string().contains("--window-secs"));
        let bad = parse_args(&args(&["--era", "1999"])).unwrap_err();
        assert_eq!(bad.exit_code(), 2);
        assert!(bad.to_string().contains("1999"), "{bad}");
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_the_defaults() {
        let path =
            std::env::temp_dir().join(format!("mistral-emulator-cli-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"window_secs": 10, "seed": 7, "default_limits": {"requests": 4, "tokens": 40}}"#,
        )
        .unwrap();
        let file = path.to_string_lossy().into_owned();
        // The flag comes before --config and still wins; what no flag names stays the
        // file's, even where the file says what a default would not.
        let cli = parse_args(&args(&["--rpm", "9", "--config", &file])).unwrap();
        let _ = std::fs::remove_file(&path);
        let c = &cli.config;
        assert_eq!(c.default_limits.requests, Some(9));
        assert_eq!(c.default_limits.tokens, Some(40));
        assert_eq!((c.window_secs, c.seed), (10.0, 7));
        assert_eq!(c.era, Config::default().era);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &["--port"][..],
            &["--port", "x"],
            &["--era", "1999"],
            &["--fault", "3"],
            &["--fault", "3:nope"],
            &["--capacity-rate", "2"],
            &["--wat"],
            &["--config", "/nonexistent/file.json"],
            &["--semantics", "leaking"],
            &["--latency-ms", "500-200"],
            &["--latency-ms", "x"],
            &["--change", "5"],
            &["--change", "5:x0"],
            &["--change", "5:x-1"],
            &["--change", "-1:x2"],
            &["--change", "5:background=2"],
            &["--change", "5:y2"],
            &["--model", "m=1/2/3/4/5"],
            &["--window-secs", "0"],
            &["--window-secs", "inf"],
            &["--duration-secs", "-1"],
            &["--rpm", "lots"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_new_semantics_have_flags() {
        let cli = parse_args(&args(&[
            "--semantics",
            "leaky",
            "--concurrency",
            "4",
            "--latency-ms",
            "200-500",
            "--change",
            "5:x2",
            "--change",
            "10:x0.5,background=0.5",
        ]))
        .unwrap();
        let c = &cli.config;
        assert_eq!(c.semantics, Semantics::Leaky);
        assert_eq!(c.default_limits.concurrency, Some(4));
        assert_eq!((c.latency_ms, c.latency_jitter_ms), (200, 300));
        assert_eq!(
            c.schedule,
            [
                Change {
                    at_secs: 5.0,
                    limits_factor: Some(2.0),
                    background_share: None
                },
                Change {
                    at_secs: 10.0,
                    limits_factor: Some(0.5),
                    background_share: Some(0.5)
                },
            ]
        );
        let fixed = parse_args(&args(&["--latency-ms", "300"])).unwrap();
        assert_eq!(
            (fixed.config.latency_ms, fixed.config.latency_jitter_ms),
            (300, 0)
        );
        let json: Config =
            serde_json::from_str(r#"{"semantics":"leaky","schedule":[{"at_secs":1,"limits_factor":2}],"default_limits":{"requests":10,"concurrency":2}}"#)
                .unwrap();
        assert_eq!(json.semantics, Semantics::Leaky);
        assert_eq!(json.schedule[0].limits_factor, Some(2.0));
        assert_eq!(json.default_limits.concurrency, Some(2));
    }

    #[test]
    fn config_json_round_trips() {
        let config = Config::default()
            .model("m", Limits::new(Some(1), None))
            .clone();
        let mut config = config;
        config.faults.push((2, Fault::DelayMs(5)));
        let text = serde_json::to_string(&config).unwrap();
        let back: Config = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
        let partial: Config =
            serde_json::from_str(r#"{"era":"early-2025","window_secs":2}"#).unwrap();
        assert_eq!(partial.era, Era::Early2025);
        assert_eq!(partial.keys, Config::default().keys);
        assert!(serde_json::from_str::<Config>(r#"{"wat":1}"#).is_err());
    }
}
