//! `cargo xtask bench` and `cargo xtask demo`.
//!
//! - `bench [ARGS...]`: the core's and the limiter's criterion micro-benchmarks (`cargo
//!   bench -p mistral-core --bench core` and `-p mistral-limiter --bench limiter`, with
//!   `-- --warm-up-time 1 --measurement-time 2`, output kept in
//!   `target/bench/criterion.txt`), then `mistral-bench` in release mode, which runs
//!   every scenario with every strategy and writes `target/bench/report.md`,
//!   `report.json` and one SVG per scenario. `ARGS` go to `mistral-bench` (`--quick`
//!   for a reduced run, `--capacity-table [--scale F]` for issue 9's measured table,
//!   `--priorities` for issue 13's mixed scenario (a batch backlog and a person)
//!   alone, both without criterion; `--grid` for the whole targets grid).
//! - `bench --stores`: only the shared limiter's stores, from the async client: the
//!   reservation latency (p50/p99) of 512 tasks on 2 workers through each store
//!   (`cargo bench -p mistral-async --features redis --bench stores`; Redis with the
//!   `redis-server` the services step finds), output kept in `target/bench/stores.txt`.
//! - `demo [ARGS...]`: `mistral-demo` in the dev profile (it reuses the test build).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use crate::{cargo, display_command, exit_code_of, workspace_root};

/// Where the report, the plots and criterion's output go.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target").join("bench")
}

/// The arguments given to criterion.
pub const CRITERION_ARGS: [&str; 4] = ["--warm-up-time", "1", "--measurement-time", "2"];

/// `cargo xtask bench ARGS...`.
pub fn bench(args: &[OsString]) -> ExitCode {
    let started = Instant::now();
    let out = out_dir();
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("xtask bench: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    if args.iter().any(|a| a == "--stores") {
        return stores(&out);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let table = args
        .iter()
        .any(|a| a == "--capacity-table" || a == "--priorities");
    let criterion = out.join("criterion.txt");
    let mut criterion_arg = None;
    if quick || table {
        eprintln!(
            "xtask bench: {}, so no criterion micro-benchmarks",
            if table {
                "--capacity-table or --priorities"
            } else {
                "--quick"
            }
        );
    } else {
        let t = Instant::now();
        match run_criterion(&criterion) {
            Ok(()) => criterion_arg = Some(criterion.clone()),
            Err(e) => eprintln!("xtask bench: the micro-benchmarks failed ({e}); going on"),
        }
        eprintln!(
            "xtask bench: criterion took {:.0} s (build included)",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "mistral-bench",
        "--bin",
        "mistral-bench",
        "--",
        "--out",
    ]);
    cmd.arg(&out);
    if let Some(path) = &criterion_arg {
        cmd.arg("--criterion").arg(path);
    }
    cmd.args(args);
    eprintln!("$ {}", display_command(&cmd));
    let status = match cmd.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("xtask bench: could not start cargo: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "xtask bench: mistral-bench took {:.0} s (build included); {:.0} s in all; report in {}",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        out.join("report.md").display()
    );
    exit_code_of(status)
}

/// `cargo xtask bench --stores`: the stores' latency bench alone, its output echoed and
/// kept in `out/stores.txt`.
fn stores(out: &Path) -> ExitCode {
    let keep = out.join("stores.txt");
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-p",
        "mistral-async",
        "--features",
        "redis",
        "--bench",
        "stores",
    ]);
    if let Some(redis) = crate::find_on_path("redis-server")
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.exists()))
    {
        cmd.env("MISTRAL_TEST_REDIS_SERVER", redis);
    }
    cmd.stdout(Stdio::piped());
    eprintln!("$ {}", display_command(&cmd));
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("xtask bench: could not start cargo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut lines = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            lines.push(line);
        }
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("xtask bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(&keep, lines.join("\n") + "\n") {
        eprintln!("xtask bench: cannot write {}: {e}", keep.display());
    } else {
        eprintln!("xtask bench: store latencies in {}", keep.display());
    }
    exit_code_of(status)
}

/// Runs the core's and the limiter's criterion benchmarks, echoing their output to
/// stderr and keeping stdout (where criterion prints its `time:` lines) in `keep`.
fn run_criterion(keep: &Path) -> Result<(), String> {
    let mut file =
        File::create(keep).map_err(|e| format!("cannot create {}: {e}", keep.display()))?;
    for (package, bench) in [("mistral-core", "core"), ("mistral-limiter", "limiter")] {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", package, "--bench", bench, "--"]);
        cmd.args(CRITERION_ARGS);
        cmd.stdout(Stdio::piped());
        eprintln!("$ {}", display_command(&cmd));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start cargo: {e}"))?;
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                let line = line.map_err(|e| format!("reading criterion's output: {e}"))?;
                eprintln!("{line}");
                writeln!(file, "{line}").map_err(|e| format!("writing {}: {e}", keep.display()))?;
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("cargo bench -p {package} ended with {status}"));
        }
    }
    Ok(())
}

/// `cargo xtask demo ARGS...`: `mistral-demo` in the dev profile, its exit code kept.
pub fn demo(args: &[OsString]) -> ExitCode {
    let mut cmd = cargo();
    cmd.args(["run", "-p", "mistral-demo", "--bin", "mistral-demo", "--"]);
    cmd.args(args);
    match cmd.status() {
        Ok(status) => exit_code_of(status),
        Err(e) => {
            eprintln!("xtask demo: could not start cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
