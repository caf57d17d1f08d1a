//! The official Python SDK for `tests/suites/tests/official_sdk.rs`, which drives it
//! against the emulator and compares its answers with the Rust client's.
//!
//! When `python3` already imports `mistralai.client`, that interpreter is used. Otherwise
//! a virtual environment is made under `target/python-sdk` and the SDK installed into it
//! with pip (from PyPI, at the version the test was written against). The test step then
//! runs with `MISTRAL_TEST_PYTHON=<that interpreter>`; without one the test says so and
//! skips.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{display_command, find_on_path, workspace_root};

/// The SDK's version the test was written against.
const SDK: &str = "mistralai==3.8.0";

/// An interpreter that imports the SDK, installing it when needed; `Err` says why not.
pub fn ensure() -> Result<PathBuf, String> {
    let system = find_on_path("python3").ok_or("python3 not found")?;
    if imports_sdk(&system) {
        return Ok(system);
    }
    let venv = workspace_root().join("target").join("python-sdk");
    let python = venv.join("bin").join("python3");
    if !python.exists() {
        run(Command::new(&system).args(["-m", "venv"]).arg(&venv))?;
    }
    if !imports_sdk(&python) {
        eprintln!(
            "xtask: installing the official Python SDK ({SDK}) into {}",
            venv.display()
        );
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", SDK]))?;
    }
    if imports_sdk(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{SDK} installed, but {} cannot import mistralai.client",
            python.display()
        ))
    }
}

fn imports_sdk(python: &std::path::Path) -> bool {
    Command::new(python)
        .args(["-c", "import mistralai.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = display_command(cmd);
    match cmd.stdin(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{shown}` failed ({s})")),
        Err(e) => Err(format!("`{shown}` could not start: {e}")),
    }
}
