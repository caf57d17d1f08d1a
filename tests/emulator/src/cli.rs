//! The command line of the `mistral-emulator` binary (no clap: a handful of flags).

use std::net::SocketAddr;
use std::time::Duration;

use super::config::{Change, Config, Era, Fault, Limits, RateLimitBody, Semantics};

/// Help text of the binary.
pub const USAGE: &str = "\
mistral-emulator: a Mistral API emulator on 127.0.0.1

Prints `url: http://127.0.0.1:PORT` and `key: KEY` on stdout, then serves until killed.

Options (flags override --config, which overrides the defaults):
  --port N                  port to listen on (default 0: any free port)
  --config FILE             JSON file with a Config (any subset of its fields)
  --key K                   accepted API key (repeatable; default test-key-0123456789)
  --era E                   early-2025 | mid-2025 | late-2025 | 2026 (default)
  --semantics S             bucket (default) | fixed-window | sliding-log | leaky
                            (leaky: nginx limit_req without burst, --rpm per window:
                            a request sooner than window/rpm after the last admitted
                            one is refused)
  --window-secs S           request window in seconds (default 60); headers name it
                            (minute only for 60, else e.g. 10-second)
  --token-window-secs S     token window in seconds (default: the request window)
  --rpm N                   default requests per window (default 300; \"none\":
                            unlimited)
  --burst N                 default bucket capacity (default: --rpm)
  --tpm N                   default tokens per window (default 500000; \"none\":
                            unlimited)
  --tokens-month N          default tokens per month (default none)
  --concurrency K           at most K requests per model in flight (admission to the
                            last byte handed over); more get 429 with the window body
  --latency-ms MS[-MAX]     service time of every admitted request (default 0); with
                            -MAX, drawn uniformly from MS..=MAX per request (seeded)
  --change SECS:WHAT        at SECS into the run (repeatable): xF scales every limit as
                            configured (x2 tier upgrade, x0.5 halved), background=S
                            sets the background share; both: 5:x0.5,background=0
  --model NAME=R[/T[/M[/C]]] limits of one model: requests/tokens per window, tokens
                            per month, most in flight (\"-\" for none), e.g.
                            mistral-large-latest=4/250000 or small=-/-/-/4
  --zero-model NAME         a model with a zero allowance (always 429)
  --strict-models           models not named by --model/--config get 400 invalid_model
  --no-headers              send no rate-limit headers at all
  --retry-after             send Retry-After on window refusals
  --retry-after-ms          send retry-after-ms on window refusals
  --body gateway|1300       429 body for a spent window (default: the era's)
  --capacity-rate F         share of requests refused with 429 code 3505
  --background-share F      share of every budget spent by a background consumer
  --seed N                  seed of every random draw
  --fault N:KIND            fault for request number N (repeatable); KIND is one of
                            500 502 503 504 reset close hang stall:N cut:N malformed
                            delay:MS 401 400 403 404 422 429 capacity
  --fault-rate F            share of requests hit by a random fault from --random-fault
  --random-fault KIND       a fault --fault-rate draws from (repeatable)
  --embedding-dim N         embedding size (default 16)
  --completion-tokens N     natural completion length (default 16)
  --stream-delay-ms N       delay between SSE events
  --hang-secs N             how long hang/stall hold a connection (default 300)
  --max-log-entries N       most requests kept in the log (default 1000000)
  --duration-secs S         stop after S seconds (default: run until killed)

While it runs, GET /_emulator/summary (counts, limit violations, most in flight per
model), /_emulator/log (every entry) and /_emulator/timeline (per second) show the
request log; no key needed.
  --help                    this text
";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Cli {
    /// The emulator's configuration.
    pub config: Config,
    /// Port to listen on (0: any).
    pub port: u16,
    /// Stop after this long (`None`: run until killed).
    pub duration: Option<Duration>,
    /// `--help` was asked for.
    pub help: bool,
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: cannot read {value:?} as a number"))
}

fn optional(flag: &str, value: &str) -> Result<Option<u64>, String> {
    match value {
        "-" | "none" | "" => Ok(None),
        v => number(flag, v).map(Some),
    }
}

fn fraction(flag: &str, value: &str) -> Result<f64, String> {
    let x: f64 = number(flag, value)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{flag}: {value} is not between 0 and 1"))
    }
}

fn model_limits(value: &str) -> Result<(String, Limits), String> {
    let (name, spec) = value
        .split_once('=')
        .ok_or_else(|| format!("--model: expected NAME=R[/T[/M[/C]]], got {value:?}"))?;
    let mut parts = spec.split('/');
    let requests = optional("--model", parts.next().unwrap_or("-"))?;
    let tokens = optional("--model", parts.next().unwrap_or("-"))?;
    let tokens_month = optional("--model", parts.next().unwrap_or("-"))?;
    let concurrency = optional("--model", parts.next().unwrap_or("-"))?;
    if parts.next().is_some() {
        return Err(format!(
            "--model: expected NAME=R[/T[/M[/C]]], got {value:?}"
        ));
    }
    let limits = Limits {
        tokens_month,
        concurrency,
        ..Limits::new(requests, tokens)
    };
    Ok((name.to_string(), limits))
}

/// Parses the arguments that follow the program name.
pub fn parse_args(args: &[String]) -> Result<Cli, String> {
    // The config file is read first so that flags override it whatever their order.
    let mut config = Config::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            let path = iter.next().ok_or("--config needs a file")?;
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
            config = serde_json::from_str(&text).map_err(|e| format!("--config {path}: {e}"))?;
        }
    }
    let mut cli = Cli {
        config,
        port: 0,
        duration: None,
        help: false,
    };
    let mut keys_given = false;
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let flag = flag.as_str();
        let switch = match flag {
            "--help" | "-h" => {
                cli.help = true;
                true
            }
            "--strict-models" => {
                cli.config.strict_models = true;
                true
            }
            "--no-headers" => {
                cli.config.headers = false;
                true
            }
            "--retry-after" => {
                cli.config.retry_after = true;
                true
            }
            "--retry-after-ms" => {
                cli.config.retry_after_ms = true;
                true
            }
            _ => false,
        };
        if switch {
            continue;
        }
        let value = iter
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?
            .as_str();
        let c = &mut cli.config;
        match flag {
            "--config" => {}
            "--port" => cli.port = number(flag, value)?,
            "--key" => {
                if !keys_given {
                    c.keys.clear();
                    keys_given = true;
                }
                c.keys.push(value.to_string());
            }
            "--era" => c.era = Era::parse(value).ok_or(format!("--era: unknown {value:?}"))?,
            "--semantics" => {
                c.semantics =
                    Semantics::parse(value).ok_or(format!("--semantics: unknown {value:?}"))?
            }
            "--window-secs" => c.window_secs = number(flag, value)?,
            "--token-window-secs" => c.token_window_secs = Some(number(flag, value)?),
            "--rpm" => c.default_limits.requests = optional(flag, value)?,
            "--burst" => c.default_limits.burst = optional(flag, value)?,
            "--tpm" => c.default_limits.tokens = optional(flag, value)?,
            "--tokens-month" => c.default_limits.tokens_month = optional(flag, value)?,
            "--concurrency" => c.default_limits.concurrency = optional(flag, value)?,
            "--latency-ms" => {
                let (low, high) = match value.split_once('-') {
                    Some((l, h)) => (number::<u64>(flag, l)?, number::<u64>(flag, h)?),
                    None => {
                        let l = number::<u64>(flag, value)?;
                        (l, l)
                    }
                };
                if high < low {
                    return Err(format!("{flag}: {value}: the maximum is below the minimum"));
                }
                c.latency_ms = low;
                c.latency_jitter_ms = high - low;
            }
            "--change" => c
                .schedule
                .push(Change::parse(value).map_err(|e| format!("{flag}: {e}"))?),
            "--model" => {
                let (name, limits) = model_limits(value)?;
                c.models.insert(name, limits);
            }
            "--zero-model" => {
                c.models.insert(value.to_string(), Limits::zero());
            }
            "--body" => {
                c.rate_limit_body = Some(match value {
                    "gateway" => RateLimitBody::Gateway,
                    "1300" => RateLimitBody::Code1300,
                    _ => return Err(format!("--body: expected gateway or 1300, got {value:?}")),
                })
            }
            "--capacity-rate" => c.capacity_rate = fraction(flag, value)?,
            "--background-share" => c.background_share = fraction(flag, value)?,
            "--seed" => c.seed = number(flag, value)?,
            "--fault" => {
                let (n, kind) = value
                    .split_once(':')
                    .ok_or_else(|| format!("--fault: expected N:KIND, got {value:?}"))?;
                let fault =
                    Fault::parse(kind).ok_or_else(|| format!("--fault: unknown {kind:?}"))?;
                c.faults.push((number(flag, n)?, fault));
            }
            "--fault-rate" => c.fault_rate = fraction(flag, value)?,
            "--random-fault" => c.random_faults.push(
                Fault::parse(value).ok_or_else(|| format!("--random-fault: unknown {value:?}"))?,
            ),
            "--embedding-dim" => c.embedding_dim = number(flag, value)?,
            "--completion-tokens" => c.completion_tokens = number(flag, value)?,
            "--stream-delay-ms" => c.stream_chunk_delay_ms = number(flag, value)?,
            "--hang-secs" => c.hang_secs = number(flag, value)?,
            "--max-log-entries" => c.max_log_entries = number(flag, value)?,
            "--duration-secs" => {
                let secs: f64 = number(flag, value)?;
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(format!("{flag}: {value} is not a duration"));
                }
                cli.duration = Some(Duration::from_secs_f64(secs.min(1e9)));
            }
            _ => return Err(format!("unknown option {flag:?} (see --help)")),
        }
    }
    Ok(cli)
}

/// Runs the emulator as the binary does: parses `args` (without the program name),
/// prints `url: …` and `key: …`, serves until killed (or `--duration-secs`). Returns the
/// process exit code (2 for a bad command line, 1 if it cannot serve).
pub fn run_cli(args: &[String]) -> i32 {
    let cli = match parse_args(args) {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("mistral-emulator: {message}");
            return 2;
        }
    };
    if cli.help {
        print!("{USAGE}");
        return 0;
    }
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
