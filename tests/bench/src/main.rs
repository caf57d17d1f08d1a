//! `mistral-bench`: the rate-limit benchmark (see `mistral_bench`).
//!
//! `cargo xtask bench` runs it in release mode after the core's criterion benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mistral_bench::child::{CHILD_FLAG, child_main};
use mistral_bench::memory::MEMORY_CHILD_FLAG;
use mistral_bench::soak::{SoakOptions, run_soak};
use mistral_bench::{Isolation, Options, Size, Strategy, run};

/// Every allocation counted (two atomic additions each), so that `--memory` can tell the
/// live heap of its child processes.
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Runs every scenario with every strategy against the emulator and writes
/// report.md, report.json and one SVG plot per scenario.
#[derive(Debug, Parser)]
#[command(name = "mistral-bench", version)]
struct Args {
    /// A reduced run (under a minute): smaller workloads, fewer strategies.
    #[arg(long)]
    quick: bool,
    /// Where the report and the plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Only scenarios whose id starts with one of these (S1, S2, S5, S5-bucket...).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these strategies (ours-blocking, ours-async, seed-fix, official-sdk,
    /// best-practice).
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy)]
    strategies: Vec<Strategy>,
    /// Criterion output of the core's micro-benchmarks, to parse into the report.
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// Skip the overhead and emulator-throughput measurements.
    #[arg(long)]
    no_micro: bool,
    /// Run the clients on threads of this process instead of child processes.
    #[arg(long)]
    in_process: bool,
    /// The whole targets grid (2, 10, 50 requests/s × 1, 8, 32, 128 callers × announced
    /// and every unknown semantics; over an hour) instead of its sample.
    #[arg(long)]
    grid: bool,
    /// Run issue 9's measured table alone (rows (a)–(f); (e) and (f) take 1.5–2.5
    /// minutes each at full scale).
    #[arg(long)]
    capacity_table: bool,
    /// Scale of the table's windows and service times (1.0: as measured; 0.1: ten times
    /// shorter).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Run only the mixed scenario (a batch backlog and a person on one saturated budget:
    /// ours with and without priorities, and the uncoordinated baselines) and write
    /// priorities.md.
    #[arg(long)]
    priorities: bool,
    /// Run only the memory measurement: the memory of thousands of async calls in flight,
    /// waiting in the limiter's line and at a slow server (child processes), per call;
    /// writes memory.md and memory.json.
    #[arg(long)]
    memory: bool,
    /// How many calls the memory measurement holds at once.
    #[arg(long, value_delimiter = ',', default_values_t = [4_000, 10_000])]
    memory_calls: Vec<usize>,
    /// Run only the soak, for this many minutes (4 processes, 10 % faults, Redis
    /// restarted twice), and write soak.md and soak.json.
    #[arg(long)]
    soak_minutes: Option<f64>,
}

fn parse_strategy(text: &str) -> Result<Strategy, String> {
    Strategy::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
        format!("unknown strategy {text:?} (one of {})", names.join(", "))
    })
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(CHILD_FLAG) {
        child_main();
    }
    if std::env::args().nth(1).as_deref() == Some(MEMORY_CHILD_FLAG) {
        mistral_bench::memory::child_main();
    }
    let args = Args::parse();
    let isolation = if args.in_process {
        Isolation::InProcess
    } else {
        match std::env::current_exe() {
            Ok(exe) => Isolation::Children(exe),
            Err(e) => {
                eprintln!("[bench] cannot find this executable ({e}); running in-process");
                Isolation::InProcess
            }
        }
    };
    if args.priorities {
        println!("{}", mistral_bench::priorities::run(&args.out));
        return ExitCode::SUCCESS;
    }
    if args.memory {
        let Ok(exe) = std::env::current_exe() else {
            eprintln!("[memory] cannot find this executable");
            return ExitCode::FAILURE;
        };
        let rows = mistral_bench::memory::run(&exe, &args.memory_calls);
        let text = mistral_bench::memory::markdown(&rows);
        println!("{text}");
        let _ = std::fs::create_dir_all(&args.out);
        let json = serde_json::to_string_pretty(&rows).unwrap_or_default();
        if let Err(e) = std::fs::write(args.out.join("memory.md"), &text)
            .and_then(|()| std::fs::write(args.out.join("memory.json"), json))
        {
            eprintln!("[memory] cannot write the report: {e}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(minutes) = args.soak_minutes {
        let options = SoakOptions::minutes(minutes, isolation);
        return match run_soak(&options) {
            Ok(report) => {
                println!("{}", report.markdown());
                if let Err(e) = report.write(&args.out) {
                    eprintln!("[soak] cannot write the report: {e}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("[soak] not run: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options {
        size: if args.quick { Size::Quick } else { Size::Full },
        out_dir: args.out,
        isolation,
        scenarios: args.only,
        strategies: args.strategies,
        criterion: args.criterion,
        micro: !args.no_micro && !args.capacity_table,
        plots: true,
        grid: args.grid,
        capacity_table: args.capacity_table.then_some(args.scale),
    };
    let report = run(&options);
    println!("{}", report.table());
    let missed = report.checks().filter(|(_, c)| !c.met).count();
    if missed > 0 {
        eprintln!("[bench] {missed} target check(s) missed: see the report's Targets section");
    }
    ExitCode::SUCCESS
}
