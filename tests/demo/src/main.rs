//! `mistral-demo`: a burst of concurrent chat requests through the blocking and the
//! async client, paced by one shared limiter, against the emulator (no
//! `MISTRAL_API_KEY`) or a real server (see `mistral_demo`).
//!
//! `cargo xtask demo` runs it. `RUST_LOG=mistral_core=warn` shows every 429 as it is
//! absorbed.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use mistral_demo::{Settings, run};

/// Sends a burst of chat requests through both clients at once and shows how the
/// shared limiter paces them.
#[derive(Debug, Parser)]
#[command(name = "mistral-demo", version)]
struct Args {
    /// Requests sent through the blocking client (one thread each).
    #[arg(long)]
    blocking: Option<usize>,
    /// Requests sent through the async client (one task each).
    #[arg(long = "async")]
    tasks: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let settings = Settings::from_env(args.blocking, args.tasks);
    let started = Instant::now();
    let outcome = match run(&settings) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("mistral-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    print!("{}", outcome.table());
    println!();
    if let Some((refused, over)) = outcome.emulator_check {
        println!(
            "The emulator sent {refused} × 429; its log shows {} window over its limit.",
            if over { "SOME" } else { "no" }
        );
    }
    println!(
        "Waits are per call (queueing behind the shared limiter included); \
         `ran` is from the burst's start to each client's first call and last answer; \
         the server's best counts its burst (the emulator's own rules, else the limit with \
         a fresh window at once)."
    );
    let errors = outcome.errors();
    for row in outcome.rows.iter().filter(|r| r.name != "total") {
        if let Some(first) = row.errors.first() {
            println!(
                "{} error(s) from the {} client, the first: {first}",
                row.errors.len(),
                row.name
            );
        }
    }
    println!("Done in {:.1} s.", started.elapsed().as_secs_f64());
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
