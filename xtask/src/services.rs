//! The "services" step: make `redis-server` and `nginx` available to the test suite.
//!
//! Contract with the tests:
//!
//! - when this step finds `redis-server`, the test step runs with `MISTRAL_TEST_REDIS=1`
//!   and `MISTRAL_TEST_REDIS_SERVER=<absolute path>`; each Redis test starts its own
//!   `redis-server` on a free loopback port;
//! - when it finds `redis-cli` (package `redis-tools`, which `redis-server` depends on),
//!   the test step runs with `MISTRAL_TEST_REDIS_CLI=<absolute path>`; each Redis Cluster
//!   test starts its own cluster (`redis-server --cluster-enabled yes` per node, then
//!   `redis-cli --cluster create`);
//! - when it finds `nginx` (on `PATH`, else `/usr/sbin/nginx`), the test step runs with
//!   `MISTRAL_TEST_NGINX=<absolute path>`; each nginx test starts its own nginx (own
//!   prefix and config in a temp dir, a free loopback port) in front of the emulator.
//!
//! - when the official Python SDK is importable (installed into `target/python-sdk` by
//!   [`crate::python_sdk`] when it is not), the test step runs with
//!   `MISTRAL_TEST_PYTHON=<that interpreter>`.
//!
//! A missing tool is installed with apt-get (`redis-server`; `redis-tools`; `nginx-light`,
//! else `nginx`) when we are root and can. When it is still missing, its variables are
//! removed from the test step's environment and its tests skip themselves loudly;
//! under `CI=true` a missing tool fails this step.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{display_command, find_on_path};

/// A program some tests need.
#[derive(Debug)]
pub struct Tool {
    /// The executable's name.
    pub binary: &'static str,
    /// Where to look when it is not on `PATH` (`/usr/sbin` is not on a user's `PATH`).
    pub also_at: &'static [&'static str],
    /// The argument that prints its version (and exits 0).
    pub version_arg: &'static str,
    /// Debian packages that provide it, tried in order.
    pub packages: &'static [&'static str],
    /// How to install it by hand.
    pub hint: &'static str,
    /// The tests that need it, for messages.
    pub tests: &'static str,
}

/// `redis-server`, for the Redis store's tests.
pub const REDIS: Tool = Tool {
    binary: "redis-server",
    also_at: &[],
    version_arg: "--version",
    packages: &["redis-server"],
    hint: "Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`",
    tests: "the Redis tests",
};

/// `redis-cli`, whose `--cluster create` joins the Redis Cluster tests' nodes.
pub const REDIS_CLI: Tool = Tool {
    binary: "redis-cli",
    also_at: &[],
    version_arg: "--version",
    packages: &["redis-tools"],
    hint: "Debian/Ubuntu: `sudo apt-get install redis-tools`; macOS: `brew install redis`",
    tests: "the Redis Cluster tests",
};

/// `nginx`, the real independent rate limiter (`limit_req`) of the unknown-limits tests.
pub const NGINX: Tool = Tool {
    binary: "nginx",
    also_at: &["/usr/sbin/nginx"],
    version_arg: "-v",
    packages: &["nginx-light", "nginx"],
    hint: "Debian/Ubuntu: `sudo apt-get install nginx-light`; macOS: `brew install nginx`",
    tests: "the nginx tests",
};

/// Whether a tool was found.
#[derive(Debug)]
pub enum Found {
    /// At this path.
    Available(PathBuf),
    /// Not found and not installable here; its tests skip.
    Missing,
}

/// What the test step gets to know about its services.
#[derive(Debug)]
pub struct Services {
    /// `redis-server`.
    pub redis: Found,
    /// `redis-cli`.
    pub redis_cli: Found,
    /// `nginx`.
    pub nginx: Found,
    /// A Python that imports the official SDK ([`crate::python_sdk`]).
    pub python_sdk: Found,
}

impl Services {
    /// Sets (or clears) the `MISTRAL_TEST_REDIS*` (`_SERVER`, `_CLI`) and
    /// `MISTRAL_TEST_NGINX` variables.
    pub fn apply_env(&self, cmd: &mut Command) {
        match &self.redis {
            Found::Available(path) => {
                cmd.env("MISTRAL_TEST_REDIS", "1")
                    .env("MISTRAL_TEST_REDIS_SERVER", path);
            }
            Found::Missing => {
                cmd.env_remove("MISTRAL_TEST_REDIS")
                    .env_remove("MISTRAL_TEST_REDIS_SERVER");
            }
        }
        match &self.redis_cli {
            Found::Available(path) => {
                cmd.env("MISTRAL_TEST_REDIS_CLI", path);
            }
            Found::Missing => {
                cmd.env_remove("MISTRAL_TEST_REDIS_CLI");
            }
        }
        match &self.nginx {
            Found::Available(path) => {
                cmd.env("MISTRAL_TEST_NGINX", path);
            }
            Found::Missing => {
                cmd.env_remove("MISTRAL_TEST_NGINX");
            }
        }
        if let Found::Available(path) = &self.python_sdk {
            cmd.env("MISTRAL_TEST_PYTHON", path);
        }
    }

    /// The tests that were skipped for a missing tool, for the summary.
    pub fn skipped(&self) -> Vec<(&'static str, &'static str)> {
        [
            (&self.redis, &REDIS),
            (&self.redis_cli, &REDIS_CLI),
            (&self.nginx, &NGINX),
        ]
        .into_iter()
        .filter(|(found, _)| matches!(found, Found::Missing))
        .map(|(_, tool)| (tool.binary, tool.tests))
        .collect()
    }
}

/// True when `CI` is set to something other than empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
        .unwrap_or(false)
}

/// Finds `redis-server`, `redis-cli` and `nginx`, installing what is missing with apt-get
/// when we are root and can. Under `ci`, a tool still missing is an error.
pub fn ensure_services(ci: bool) -> Result<Services, String> {
    let mut redis = locate(&REDIS);
    let mut redis_cli = locate(&REDIS_CLI);
    let mut nginx = locate(&NGINX);
    let missing: Vec<&Tool> = [(&redis, &REDIS), (&redis_cli, &REDIS_CLI), (&nginx, &NGINX)]
        .into_iter()
        .filter(|(found, _)| found.is_none())
        .map(|(_, tool)| tool)
        .collect();
    let mut why_not = String::new();
    if !missing.is_empty() {
        match (is_root(), find_on_path("apt-get")) {
            (true, Some(_)) => {
                if let Err(e) = apt_install(&missing) {
                    why_not = e;
                }
                redis = redis.or_else(|| locate(&REDIS));
                redis_cli = redis_cli.or_else(|| locate(&REDIS_CLI));
                nginx = nginx.or_else(|| locate(&NGINX));
                if why_not.is_empty() {
                    why_not = "apt-get installed it, but it is still not found".to_owned();
                }
            }
            (false, _) => why_not = "not running as root, so not installing it".to_owned(),
            (true, None) => why_not = "apt-get not found, so not installing it".to_owned(),
        }
    }
    let mut errors = Vec::new();
    let redis = conclude(&REDIS, redis, &why_not, ci, &mut errors);
    let redis_cli = conclude(&REDIS_CLI, redis_cli, &why_not, ci, &mut errors);
    let nginx = conclude(&NGINX, nginx, &why_not, ci, &mut errors);
    let python_sdk = match crate::python_sdk::ensure() {
        Ok(path) => {
            eprintln!("xtask: the official Python SDK: {}", path.display());
            Found::Available(path)
        }
        Err(why) => {
            eprintln!(
                "xtask: the official Python SDK is missing ({why}); official_sdk.rs skips \
                 (pip install mistralai==3.8.0, or set MISTRAL_TEST_PYTHON)"
            );
            Found::Missing
        }
    };
    if errors.is_empty() {
        Ok(Services {
            redis,
            redis_cli,
            nginx,
            python_sdk,
        })
    } else {
        Err(errors.join("\n"))
    }
}

/// The tool's path, reported, or `None` (reported too).
fn locate(tool: &Tool) -> Option<PathBuf> {
    let found = find_on_path(tool.binary).or_else(|| {
        tool.also_at
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
    });
    match &found {
        Some(path) => report_found(tool, path),
        None => println!(
            "{}: not found on PATH or at {:?}",
            tool.binary, tool.also_at
        ),
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn conclude(
    tool: &Tool,
    found: Option<PathBuf>,
    why_not: &str,
    ci: bool,
    errors: &mut Vec<String>,
) -> Found {
    if let Some(path) = found {
        return Found::Available(path);
    }
    let message = format!(
        "missing: `{}` ({why_not}).\nInstall it ({}) or put an existing {} binary on PATH.",
        tool.binary, tool.hint, tool.binary
    );
    if ci {
        errors.push(format!(
            "{message}\nCI=true: {} must run in CI.",
            tool.tests
        ));
        return Found::Missing;
    }
    let rule = "!".repeat(78);
    println!("{rule}");
    for line in format!(
        "WARNING: {message}\n{} will be SKIPPED (in CI, with CI=true, this is a failure).",
        capitalized(tool.tests)
    )
    .lines()
    {
        println!("!! {line}");
    }
    println!("{rule}");
    Found::Missing
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn report_found(tool: &Tool, path: &Path) {
    // nginx prints its version on stderr, redis-server on stdout.
    let version = Command::new(path)
        .arg(tool.version_arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if out.is_empty() {
                String::from_utf8_lossy(&o.stderr).trim().to_owned()
            } else {
                out
            }
        })
        .unwrap_or_else(|| "version unknown".to_owned());
    println!("{}: {} ({version})", tool.binary, path.display());
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

/// `apt-get update`, then each tool's first package that installs.
fn apt_install(tools: &[&Tool]) -> Result<(), String> {
    apt_get(&["update"])?;
    let mut failures = Vec::new();
    for tool in tools {
        let installed = tool.packages.iter().any(|package| {
            match apt_get(&["install", "-y", "--no-install-recommends", package]) {
                Ok(()) => true,
                Err(e) => {
                    println!("  {e}");
                    false
                }
            }
        });
        if !installed {
            failures.push(format!(
                "apt-get could not install any of {:?}",
                tool.packages
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    let shown = display_command(&cmd);
    println!("$ {shown}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{shown}` failed: {status}")),
        Err(e) => Err(format!("could not run `{shown}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_follows_what_was_found() {
        let services = Services {
            redis: Found::Missing,
            redis_cli: Found::Available(PathBuf::from("/usr/bin/redis-cli")),
            nginx: Found::Available(PathBuf::from("/usr/sbin/nginx")),
            python_sdk: Found::Available(PathBuf::from("/v/bin/python3")),
        };
        let mut cmd = Command::new("true");
        services.apply_env(&mut cmd);
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("MISTRAL_TEST_NGINX".into(), Some("/usr/sbin/nginx".into()))));
        assert!(envs.contains(&("MISTRAL_TEST_PYTHON".into(), Some("/v/bin/python3".into()))));
        assert!(envs.contains(&("MISTRAL_TEST_REDIS".into(), None)));
        assert!(envs.contains(&("MISTRAL_TEST_REDIS_SERVER".into(), None)));
        assert!(envs.contains(&(
            "MISTRAL_TEST_REDIS_CLI".into(),
            Some("/usr/bin/redis-cli".into())
        )));
        assert_eq!(services.skipped(), [("redis-server", "the Redis tests")]);
    }

    #[test]
    fn messages_start_with_a_capital() {
        assert_eq!(capitalized("the nginx tests"), "The nginx tests");
        assert_eq!(capitalized(""), "");
    }
}
