//! Helpers of the `mistral` binary's tests: a real emulator on loopback, the real
//! binary as a child process, input files and output checks.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use mistral_emulator::{Config, Emulator, Era, Limits};
use serde_json::{Value, json};

/// Heavy tests run one at a time (the machine has two cores).
pub static HEAVY: Mutex<()> = Mutex::new(());

/// Takes the heavy-test lock (a panicked holder does not poison the others).
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// An emulator with 1 s windows and announced limits (N-second header names) for
/// `model`, `requests` and `tokens` per second.
pub fn emulator(model: &str, limits: Limits) -> Emulator {
    let config = Config {
        era: Era::Late2025,
        window_secs: 1.0,
        ..Config::default()
    }
    .model(model, limits);
    Emulator::start(config)
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mistral-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `mistral` binary, pointed at `emulator` (in-process limiter unless `limiter`).
pub fn mistral(emulator: &Emulator, limiter: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mistral"));
    cmd.env("MISTRAL_BASE_URL", emulator.url())
        .env("MISTRAL_API_KEY", emulator.key())
        .env_remove("MISTRAL_LIMITER")
        .env_remove("RUST_LOG");
    if let Some(limiter) = limiter {
        cmd.env("MISTRAL_LIMITER", limiter);
    }
    cmd
}

/// Runs `mistral batch run INPUT -o OUTPUT ARGS… --quiet --json`.
pub fn batch(emulator: &Emulator, input: &Path, output: &Path, args: &[&str]) -> Output {
    batch_command(emulator, input, output, args)
        .output()
        .expect("the mistral binary runs")
}

/// The command of [`batch`], to spawn.
pub fn batch_command(emulator: &Emulator, input: &Path, output: &Path, args: &[&str]) -> Command {
    let mut cmd = mistral(emulator, None);
    cmd.arg("batch")
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--quiet", "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Spawns [`batch_command`] with stdout and stderr discarded.
pub fn spawn_batch(emulator: &Emulator, input: &Path, output: &Path, args: &[&str]) -> Child {
    batch_command(emulator, input, output, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the mistral binary starts")
}

/// The JSON summary a run printed on stdout.
pub fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no summary; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    serde_json::from_str(line).expect("the summary is JSON")
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A chat request line.
pub fn chat_line(custom_id: &str, model: &str, text: &str) -> String {
    json!({"custom_id": custom_id, "body": {"model": model, "max_tokens": 8,
           "messages": [{"role": "user", "content": text}]}})
    .to_string()
}

/// Writes `lines` (each without newline) to `path`.
pub fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in lines {
        file.write_all(line.as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
}

/// `n` chat lines `id-0`… for `model`.
pub fn chat_input(path: &Path, n: usize, model: &str) -> HashSet<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("id-{i}")).collect();
    write_lines(
        path,
        ids.iter()
            .map(|id| chat_line(id, model, &format!("question number {id}"))),
    );
    ids.into_iter().collect()
}

/// Every line of the output, parsed (panics on a line that does not parse or has no
/// custom_id), and how many times each custom_id appears.
pub fn results(path: &Path) -> (Vec<Value>, HashMap<String, usize>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the output ends with a torn line"
    );
    let mut counts = HashMap::new();
    let values: Vec<Value> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("output line {} does not parse ({e}): {line}", i + 1));
            let id = value["custom_id"]
                .as_str()
                .unwrap_or_else(|| panic!("output line {} has no custom_id", i + 1))
                .to_string();
            *counts.entry(id).or_insert(0) += 1;
            value
        })
        .collect();
    (values, counts)
}

/// Asserts every id of `expected` has exactly one result and there are no others.
pub fn assert_each_once(path: &Path, expected: &HashSet<String>) -> Vec<Value> {
    let (values, counts) = results(path);
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .take(5)
        .collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "no result for {missing:?} (and maybe more)"
    );
    let extra: Vec<_> = counts
        .keys()
        .filter(|id| !expected.contains(*id))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "results for ids not in the input: {extra:?}"
    );
    values
}

/// Served (admitted and answered) inference requests in the emulator's log.
pub fn served(emulator: &Emulator) -> usize {
    emulator.log().admitted()
}
