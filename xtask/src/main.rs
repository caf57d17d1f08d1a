//! Project tasks, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! Standard library only, so that the first `cargo xtask` on a fresh clone
//! builds in seconds.
//!
//! - `test`: the whole gate CI runs (`.ci/run`): fmt, clippy, docs, layering,
//!   services, tests, the newest dependencies. See `src/pipeline.rs`.
//! - `latest-deps`: that last step alone: the workspace checked against the newest
//!   compatible version of every dependency. See `src/latest.rs`.
//! - `bench [ARGS...]`: the core's criterion micro-benchmarks, then `mistral-bench`
//!   (release): every scenario with every retry strategy against the emulator, report in
//!   `target/bench/`. See `src/bench.rs`.
//! - `demo [ARGS...]`: `mistral-demo` (dev profile): a burst through both clients with
//!   live progress, against the emulator or `MISTRAL_BASE_URL` / `MISTRAL_API_KEY`.
//! - `emulate [ARGS...]`: runs the Mistral API emulator in release mode (package
//!   `mistral-emulator` alone: no client crate is built).

mod bench;
mod latest;
mod layering;
mod pipeline;
mod python_sdk;
mod services;

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  test              the full gate, as CI runs it: fmt, clippy, layering check,
                    services (redis-server, redis-cli, nginx; installed with apt-get when
                    missing and root), cargo test --workspace --all-features,
                    latest-deps
  latest-deps       clippy (warnings denied) of the workspace's libraries and
                    binaries against the newest compatible version of every
                    dependency, in a copy under target/latest-deps whose lockfile
                    `cargo update` rewrote (Cargo.lock itself is left alone)
  demo [ARGS..]     a burst of chat requests through the blocking and the async
                    client with live progress (cargo run -p mistral-demo -- ARGS):
                    the emulator, or MISTRAL_BASE_URL / MISTRAL_API_KEY /
                    MISTRAL_MODEL when set
  bench [ARGS..]    criterion micro-benchmarks of the core, then every scenario with
                    every retry strategy (cargo run --release -p mistral-bench --
                    ARGS); writes target/bench/report.md,
                    report.json and one SVG per scenario; --quick for a reduced run;
                    --priorities for the mixed scenario alone (a batch backlog
                    and a person; target/bench/priorities.md); --stores for the
                    limiter stores' latency alone (512 tasks on 2
                    workers through local, file and Redis; target/bench/stores.txt)
  emulate [ARGS..]  run the Mistral API emulator (builds only package
                    mistral-emulator): cargo run --release -p mistral-emulator -- ARGS
  help              this text

environment:
  CI=true           missing redis-server, redis-cli or nginx is a failure instead of
                    a skip
";

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    match command.as_ref().and_then(|c| c.to_str()) {
        Some("test") => {
            if !rest.is_empty() {
                eprintln!("xtask test: takes no arguments (got {rest:?})\n\n{USAGE}");
                return ExitCode::from(2);
            }
            pipeline::run()
        }
        Some("latest-deps") => match latest::run(services::in_ci()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("xtask latest-deps: FAILED: {reason}");
                ExitCode::FAILURE
            }
        },
        Some("demo") => bench::demo(&rest),
        Some("bench") => bench::bench(&rest),
        Some("emulate") => emulate(&rest),
        Some("help") | Some("-h") | Some("--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Some(_) => {
            let shown = command.unwrap_or_default();
            eprintln!("xtask: unknown command {shown:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `cargo xtask emulate ARGS...`: forwards the arguments and the exit code.
fn emulate(args: &[OsString]) -> ExitCode {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "mistral-emulator",
        "--bin",
        "mistral-emulator",
        "--",
    ]);
    cmd.args(args);
    match cmd.status() {
        Ok(status) => exit_code_of(status),
        Err(e) => {
            eprintln!("xtask emulate: could not start cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this package's directory).
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// A `cargo` command run from the workspace root: the cargo that started us
/// (`$CARGO`) when there is one, else `cargo` from `PATH`.
pub(crate) fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// The first `PATH` entry holding an executable file called `name`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Maps a child's exit status onto ours: same code, or 128+signal.
pub(crate) fn exit_code_of(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

/// `program arg arg...` for messages.
pub(crate) fn display_command(cmd: &Command) -> String {
    let mut shown = cmd.get_program().to_string_lossy().into_owned();
    // Show `cargo`, not the full toolchain path from `$CARGO`.
    if Path::new(&shown).file_name().is_some_and(|f| f == "cargo") {
        shown = "cargo".to_owned();
    }
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}
