//! Helpers of the store tests: scratch directories, captured logs, child processes (this
//! test executable re-run in a child mode), and the checks on granted start times.

#![allow(dead_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Selects the child mode of a test executable run by [`run_children`].
pub const CHILD_ENV: &str = "MISTRAL_STORES_TEST_CHILD";

/// A scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mistral-stores-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Log lines written while the guard lives (on this thread).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> (tracing::subscriber::DefaultGuard, Logs) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (tracing::subscriber::set_default(subscriber), logs)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines at `level` (e.g. "WARN") containing `needle`.
    pub fn count(&self, level: &str, needle: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && l.contains(needle))
            .count()
    }
}

/// Runs `count` copies of this test executable's `test` in child mode (with `env`), all
/// at once, and gathers the `START <µs>` lines they print. Fails if a child fails.
pub fn run_children(test: &str, count: usize, env: &[(&str, String)]) -> Vec<Vec<u64>> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..count)
        .map(|i| {
            let mut cmd = Command::new(&exe);
            cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child failed: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let starts: Vec<u64> = stdout
                .lines()
                // libtest may print "test name ... " on the same line first.
                .filter_map(|l| l.find("START ").map(|at| &l[at + "START ".len()..]))
                .map(|n| n.trim().parse().unwrap())
                .collect();
            assert!(!starts.is_empty(), "child printed no start:\n{stdout}");
            starts
        })
        .collect()
}

/// The most starts in any window of `window_us` (`[t, t + window)`).
pub fn max_in_window(starts: &[u64], window_us: u64) -> usize {
    let mut s = starts.to_vec();
    s.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..s.len() {
        while s[hi] - s[lo] >= window_us {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Starts per second from the first to the last.
pub fn rate(starts: &[u64]) -> f64 {
    let first = *starts.iter().min().unwrap();
    let last = *starts.iter().max().unwrap();
    (starts.len() - 1) as f64 / ((last - first) as f64 / 1e6)
}

/// Checks merged start times against `limit` per second and prints the numbers.
pub fn assert_paced(what: &str, per_child: &[Vec<u64>], limit: usize) {
    let all: Vec<u64> = per_child.iter().flatten().copied().collect();
    let max = max_in_window(&all, 1_000_000);
    let r = rate(&all);
    eprintln!(
        "{what}: {} starts from {} processes ({:?} each); max {max} in any 1 s window \
         (limit {limit}); rate {r:.2}/s",
        all.len(),
        per_child.len(),
        per_child.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        max <= limit,
        "{what}: {max} starts in one second, limit {limit}"
    );
    assert!(
        r >= limit as f64 * 0.9 && r <= limit as f64,
        "{what}: rate {r:.2}/s for a limit of {limit}/s"
    );
    // Every process got slots: the budget is shared, not taken by one.
    for starts in per_child {
        assert!(!starts.is_empty());
    }
}
