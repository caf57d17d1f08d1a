//! The shared stores of S3 and S4: a fresh state file, and a private `redis-server` on a
//! free loopback port (skipped, with a note, when `redis-server` is not on `PATH`).

use std::path::{Path, PathBuf};

pub use mistral_emulator::redis_server::{RedisServer, find_on_path};

/// A fresh path for a state file under `dir` (any older file of that name removed).
pub fn fresh_state_file(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(e),
    }
}
