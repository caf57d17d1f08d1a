//! `cargo xtask test`: the gate CI runs. Steps, in order, stopping at the
//! first failure:
//!
//! 1. `fmt`: `cargo fmt --all -- --check`
//! 2. `clippy`: `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//! 3. `doc`: `cargo doc --workspace --no-deps --all-features` with
//!    `RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links"`:
//!    the crates' docs (what docs.rs shows) build, every link resolves (a few seconds
//!    after clippy: the dependencies' metadata are built)
//! 4. `layering`: `mistral-core` and `mistral-limiter` have no I/O dependency
//!    (`cargo tree`, default and all features), their `clippy.toml` bans clocks and
//!    sleeps, neither client
//!    depends on the other, and `mistral-emulator` depends on no client crate
//! 5. `services`: `redis-server`, `redis-cli` and `nginx` found, installed with apt-get
//!    if possible
//!    (see [`services`])
//! 6. `test`: `cargo test --workspace --all-features` (doctests included)
//! 7. `latest-deps`: the workspace's libraries and binaries checked (clippy, warnings
//!    denied) against the newest compatible version of every dependency, in a copy
//!    whose lockfile `cargo update` rewrote (see [`latest`]); last, so
//!    that a dependency's new release never hides the results of the steps before
//!
//! Each step prints its name and duration; a summary follows at the end, and
//! a failure names its step and exits non-zero.

use std::fmt::Write as _;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::latest;
use crate::layering;
use crate::services::{self, Services};
use crate::{cargo, display_command, workspace_root};

const STEPS: [&str; 7] = [
    "fmt",
    "clippy",
    "doc",
    "layering",
    "services",
    "test",
    "latest-deps",
];

/// The `doc` step's lints: a link that does not resolve, or that points at what the
/// reader of the docs cannot see, fails the step.
pub const DOC_FLAGS: &str =
    "-D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links";

/// Runs every step; the exit code is 0 only if all passed.
pub fn run() -> ExitCode {
    let ci = services::in_ci();
    let mut run = Run::new();
    let mut services = None;
    let result = all_steps(&mut run, ci, &mut services);
    run.print_summary();
    for (binary, tests) in services.as_ref().map(Services::skipped).unwrap_or_default() {
        println!("note: {binary} was missing, so {tests} were SKIPPED");
    }
    match result {
        Ok(()) => {
            println!("xtask test: all {} steps passed", STEPS.len());
            ExitCode::SUCCESS
        }
        Err(Failed { step, reason }) => {
            eprintln!("xtask test: FAILED at step `{step}`: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn all_steps(run: &mut Run, ci: bool, services_out: &mut Option<Services>) -> Result<(), Failed> {
    run.step("fmt", || {
        run_cargo(&["fmt", "--all", "--", "--check"], |_| {})
    })?;
    run.step("clippy", || {
        run_cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            |_| {},
        )
    })?;
    run.step("doc", || {
        run_cargo(
            &["doc", "--workspace", "--no-deps", "--all-features"],
            |cmd| {
                cmd.env("RUSTDOCFLAGS", DOC_FLAGS);
            },
        )
    })?;
    run.step("layering", layering_check)?;
    let found = run.step("services", || services::ensure_services(ci))?;
    let tested = run.step("test", || {
        // Every test binary runs even after one fails, so one failure hides no other.
        run_cargo(
            &["test", "--workspace", "--all-features", "--no-fail-fast"],
            |cmd| found.apply_env(cmd),
        )
    });
    *services_out = Some(found);
    tested?;
    run.step("latest-deps", || latest::run(ci))
}

/// Runs `cargo ARGS` from the workspace root, output passed through.
fn run_cargo(args: &[&str], configure: impl FnOnce(&mut Command)) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(args).stdin(Stdio::null());
    configure(&mut cmd);
    let shown = display_command(&cmd);
    println!("$ {shown}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{shown}` failed ({status})")),
        Err(e) => Err(format!("could not start `{shown}`: {e}")),
    }
}

/// The layering step: see [`layering`].
fn layering_check() -> Result<(), String> {
    let mut problems = Vec::new();

    for package in layering::SANS_IO {
        for features in [&[][..], &["--all-features"][..]] {
            let (tree, shown) = normal_tree(package, features)?;
            let banned = layering::banned_packages(&tree);
            if banned.is_empty() {
                println!(
                    "  ok: {package}: {} packages, none of {}",
                    layering::package_count(&tree),
                    layering::BANNED.join(", ")
                );
            } else {
                problems.push(format!(
                    "{package} depends on {} (`{shown}`); it must stay sans-IO",
                    banned.join(", ")
                ));
            }
        }
    }

    for (driver, other) in [
        (layering::DRIVERS[0], layering::DRIVERS[1]),
        (layering::DRIVERS[1], layering::DRIVERS[0]),
    ] {
        let mut cmd = cargo();
        cmd.args(["tree", "-p", driver, "-e", "normal", "--prefix", "none"])
            .args(["--target", "all", "--all-features"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let shown = display_command(&cmd);
        println!("$ {shown}");
        let output = cmd
            .output()
            .map_err(|e| format!("could not start `{shown}`: {e}"))?;
        if !output.status.success() {
            return Err(format!("`{shown}` failed ({})", output.status));
        }
        if layering::depends_on(&String::from_utf8_lossy(&output.stdout), other) {
            problems.push(format!(
                "{driver} depends on {other} (`{shown}`); each client does its own I/O on core"
            ));
        } else {
            println!("  ok: {driver} does not depend on {other}");
        }
    }

    let (tree, shown) = normal_tree("mistral-emulator", &["--all-features"])?;
    let banned = layering::emulator_banned_packages(&tree);
    if banned.is_empty() {
        println!(
            "  ok: mistral-emulator: {} packages, none of {}",
            layering::package_count(&tree),
            layering::EMULATOR_BANNED.join(", ")
        );
    } else {
        problems.push(format!(
            "mistral-emulator depends on {} (`{shown}`); the emulator must not use the \
             clients it judges",
            banned.join(", ")
        ));
    }

    for dir in ["core", "limiter"] {
        let clippy_toml = workspace_root().join(dir).join("clippy.toml");
        match std::fs::read_to_string(&clippy_toml) {
            Err(e) => problems.push(format!("cannot read {}: {e}", clippy_toml.display())),
            Ok(text) => match layering::missing_disallowed_methods(&text) {
                Err(e) => problems.push(format!("{}: {e}", clippy_toml.display())),
                Ok(missing) if missing.is_empty() => println!(
                    "  ok: {dir}/clippy.toml bans {}",
                    layering::REQUIRED_DISALLOWED.join(", ")
                ),
                Ok(missing) => problems.push(format!(
                    "{dir}/clippy.toml does not ban {} in `disallowed-methods`",
                    missing.join(", ")
                )),
            },
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            eprintln!("  layering: {p}");
        }
        Err(problems.join("; "))
    }
}

/// `cargo tree -p PACKAGE -e normal --prefix none --target all FEATURES`: its output and
/// the command as shown.
fn normal_tree(package: &str, features: &[&str]) -> Result<(String, String), String> {
    let mut cmd = cargo();
    cmd.args([
        "tree", "-p", package, "-e", "normal", "--prefix", "none", "--target", "all",
    ])
    .args(features)
    .stdin(Stdio::null())
    .stderr(Stdio::inherit());
    let shown = display_command(&cmd);
    println!("$ {shown}");
    let output = cmd
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if !output.status.success() {
        return Err(format!("`{shown}` failed ({})", output.status));
    }
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), shown))
}

struct Failed {
    step: &'static str,
    reason: String,
}

struct Run {
    started: Instant,
    done: Vec<(&'static str, bool, Duration)>,
}

impl Run {
    fn new() -> Self {
        Run {
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    fn step<T>(
        &mut self,
        name: &'static str,
        body: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, Failed> {
        let n = STEPS.iter().position(|s| *s == name).map_or(0, |i| i + 1);
        let of = STEPS.len();
        println!("\n==> [{n}/{of}] {name}");
        let t0 = Instant::now();
        let result = body();
        let took = t0.elapsed();
        self.done.push((name, result.is_ok(), took));
        match result {
            Ok(value) => {
                println!("<== [{n}/{of}] {name}: ok in {}", human(took));
                Ok(value)
            }
            Err(reason) => {
                eprintln!("<== [{n}/{of}] {name}: FAILED in {}", human(took));
                Err(Failed { step: name, reason })
            }
        }
    }

    fn print_summary(&self) {
        let mut out = String::from("\nxtask test summary:\n");
        for name in STEPS {
            let line = match self.done.iter().find(|(n, ..)| *n == name) {
                Some((_, true, took)) => format!("  {name:<11} ok       {:>9}", human(*took)),
                Some((_, false, took)) => format!("  {name:<11} FAILED   {:>9}", human(*took)),
                None => format!("  {name:<11} not run"),
            };
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "  {:<11}          {:>9}",
            "total",
            human(self.started.elapsed())
        );
        print!("{out}");
    }
}

/// `4.2s`, `3m 07s`, `1h 02m`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(human(Duration::from_secs(187)), "3m 07s");
        assert_eq!(human(Duration::from_secs(3_725)), "1h 02m");
    }
}
