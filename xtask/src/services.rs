//! The "services" step: make `redis-server` available to the test suite.
//!
//! Contract with the tests: when this step finds `redis-server` on `PATH`,
//! the test step runs with `MISTRAL_TEST_REDIS=1` and
//! `MISTRAL_TEST_REDIS_SERVER=<absolute path>`; each Redis test starts its own
//! `redis-server` on a free loopback port. When it is missing, both variables
//! are removed from the test step's environment and the Redis tests skip
//! themselves loudly. Under `CI=true` a missing `redis-server` fails this step.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{display_command, find_on_path};

/// What the test step gets to know about Redis.
#[derive(Debug)]
pub enum Redis {
    /// `redis-server` found at this path.
    Available(PathBuf),
    /// Not found and not installable here; tests skip.
    Missing,
}

impl Redis {
    /// Sets (or clears) the `MISTRAL_TEST_REDIS*` variables on `cmd`.
    pub fn apply_env(&self, cmd: &mut Command) {
        match self {
            Redis::Available(path) => {
                cmd.env("MISTRAL_TEST_REDIS", "1")
                    .env("MISTRAL_TEST_REDIS_SERVER", path);
            }
            Redis::Missing => {
                cmd.env_remove("MISTRAL_TEST_REDIS")
                    .env_remove("MISTRAL_TEST_REDIS_SERVER");
            }
        }
    }
}

/// True when `CI` is set to something other than empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
        .unwrap_or(false)
}

/// Finds `redis-server`, installing it with apt-get when we are root and can.
pub fn ensure_redis(ci: bool) -> Result<Redis, String> {
    if let Some(path) = find_on_path("redis-server") {
        report_found(&path);
        return Ok(Redis::Available(path));
    }
    println!("redis-server: not on PATH");

    let is_root = is_root();
    let apt_get = find_on_path("apt-get");
    let why_not_installed = match (is_root, &apt_get) {
        (true, Some(_)) => match apt_install_redis() {
            Ok(()) => match find_on_path("redis-server") {
                Some(path) => {
                    report_found(&path);
                    return Ok(Redis::Available(path));
                }
                None => "apt-get installed redis-server, but it is still not on PATH".to_owned(),
            },
            Err(e) => e,
        },
        (false, _) => "not running as root, so not installing it".to_owned(),
        (true, None) => "apt-get not found, so not installing it".to_owned(),
    };

    let message = format!(
        "missing: `redis-server` on PATH ({why_not_installed}).\n\
         Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`) \
         or put an existing redis-server binary on PATH."
    );
    if ci {
        return Err(format!(
            "{message}\nCI=true: the Redis tests must run in CI."
        ));
    }
    let rule = "!".repeat(78);
    println!("{rule}");
    for line in format!(
        "WARNING: {message}\nThe Redis tests will be SKIPPED (in CI, with CI=true, this is a failure)."
    )
    .lines()
    {
        println!("!! {line}");
    }
    println!("{rule}");
    Ok(Redis::Missing)
}

fn report_found(path: &std::path::Path) {
    let version = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "version unknown".to_owned());
    println!("redis-server: {} ({version})", path.display());
}

/// Effective uid 0: from `/proc/self/status` on Linux, else `id -u`.
fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(uids) = status.lines().find_map(|l| l.strip_prefix("Uid:"))
    {
        // Real, effective, saved, filesystem.
        return uids.split_whitespace().nth(1) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn apt_install_redis() -> Result<(), String> {
    let steps: [&[&str]; 2] = [
        &["update"],
        &["install", "-y", "--no-install-recommends", "redis-server"],
    ];
    for args in steps {
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        let shown = display_command(&cmd);
        println!("$ {shown}");
        match cmd.status() {
            Ok(status) if status.success() => {}
            Ok(status) => return Err(format!("`{shown}` failed: {status}")),
            Err(e) => return Err(format!("could not run `{shown}`: {e}")),
        }
    }
    Ok(())
}
