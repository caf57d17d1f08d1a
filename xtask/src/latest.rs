//! The `latest-deps` step: the workspace checked against the newest compatible version
//! of every dependency, warnings denied — what a user's fresh project resolves, not
//! what our `Cargo.lock` pins (a new rustls deprecated a function we called, and every
//! fresh build printed the warning while CI, on the lockfile, saw nothing).
//!
//! Stable cargo has no `--lockfile-path`, so the workspace's sources are copied to
//! `<target>/latest-deps/workspace` (without `target/` and `.git/`), `cargo update`
//! rewrites the copy's lockfile, and `cargo clippy --workspace --all-features -- -D
//! warnings` checks the copy's libraries and binaries (what users build; the tests' own
//! dev-dependencies are left to the lockfile) into the **same** target directory: every
//! dependency whose version did not move is reused from the `clippy` step, so the step
//! costs the packages that moved (about two minutes on the 2-core machine after a
//! `cargo update` moved 25 of them). The workspace's own `Cargo.lock` is never touched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cargo, display_command, workspace_root};

/// Directories never copied (at any depth): build output and version control.
const SKIPPED: [&str; 2] = ["target", ".git"];

/// Runs the step. `ci`: a `cargo update` that fails (no network to the registry) is a
/// failure; elsewhere it is a skip with a note.
pub fn run(ci: bool) -> Result<(), String> {
    let target = target_dir();
    let copy = target.join("latest-deps").join("workspace");
    if copy.exists() {
        fs::remove_dir_all(&copy).map_err(|e| format!("cannot clear {}: {e}", copy.display()))?;
    }
    copy_tree(workspace_root(), &copy)
        .map_err(|e| format!("cannot copy the workspace to {}: {e}", copy.display()))?;
    println!("  copied the workspace to {}", copy.display());

    let mut update = in_copy(&copy, &target);
    update.args(["update"]);
    let shown = display_command(&update);
    println!("$ {shown}");
    let output = update
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprint!("{log}");
        let reason = format!("`{shown}` failed ({}): no registry?", output.status);
        if ci {
            return Err(reason);
        }
        println!("  SKIPPED: {reason}");
        return Ok(());
    }
    let moved = moved_packages(&log);
    println!(
        "  {} package(s) moved to their newest compatible version{}",
        moved.len(),
        if moved.is_empty() {
            String::new()
        } else {
            format!(": {}", moved.join(", "))
        }
    );

    let mut clippy = in_copy(&copy, &target);
    clippy.args([
        "clippy",
        "--workspace",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    let shown = display_command(&clippy);
    println!("$ {shown}");
    match clippy.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "`{shown}` failed ({status}) against the newest compatible dependencies \
             (in {}): a fresh resolution of a user's project sees this",
            copy.display()
        )),
        Err(e) => Err(format!("could not start `{shown}`: {e}")),
    }
}

/// `cargo` in the copy, building into the workspace's target directory.
fn in_copy(copy: &Path, target: &Path) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(copy)
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null());
    cmd
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Copies `from` into `to` (created), files and directories, skipping [`SKIPPED`] at
/// every depth; symbolic links are followed.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let (source, dest) = (entry.path(), to.join(&name));
        if fs::metadata(&source)?.is_dir() {
            copy_tree(&source, &dest)?;
        } else {
            fs::copy(&source, &dest)?;
        }
    }
    Ok(())
}

/// The packages `cargo update` moved, from its log (`Updating name v1 -> v2`).
fn moved_packages(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("Updating ")?;
            let (name, versions) = rest.split_once(' ')?;
            versions
                .contains("->")
                .then(|| format!("{name} {}", versions.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_log_is_read() {
        let log = "    Updating crates.io index\n     Locking 3 packages to latest Rust 1.89 \
                   compatible versions\n    Updating rustls v0.23.46 -> v0.23.48\n    \
                   Updating http v1.5.0 -> v1.6.0\n      Adding foo v1.0.0\n";
        assert_eq!(
            moved_packages(log),
            ["rustls v0.23.46 -> v0.23.48", "http v1.5.0 -> v1.6.0"]
        );
    }

    #[test]
    fn the_copy_skips_build_output_and_version_control() {
        let base = std::env::temp_dir().join(format!("xtask-copy-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        let _ = fs::remove_dir_all(&base);
        for dir in ["a/b", "target/debug", ".git", "a/target"] {
            fs::create_dir_all(from.join(dir)).unwrap();
        }
        for file in [
            "Cargo.toml",
            "a/b/lib.rs",
            "target/debug/x",
            ".git/HEAD",
            "a/target/y",
        ] {
            fs::write(from.join(file), file).unwrap();
        }
        copy_tree(&from, &to).unwrap();
        assert_eq!(
            fs::read_to_string(to.join("a/b/lib.rs")).unwrap(),
            "a/b/lib.rs"
        );
        assert!(to.join("Cargo.toml").is_file());
        for skipped in ["target", ".git", "a/target"] {
            assert!(!to.join(skipped).exists(), "{skipped} was copied");
        }
        let _ = fs::remove_dir_all(&base);
    }
}
