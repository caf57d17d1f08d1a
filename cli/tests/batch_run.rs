//! `mistral batch run` against the real emulator on loopback: bad input, per-request
//! errors, quota and zero allowance, a full disk, dry runs, the shipped sample.

mod common;

use common::*;
use mistral_emulator::Limits;
use serde_json::{Value, json};

const MODEL: &str = "mistral-small-latest";

#[test]
fn invalid_lines_and_duplicate_ids_are_refused_before_any_call() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(1_000_000)));
    let dir = temp_dir("invalid");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(
        &input,
        [
            chat_line("a", MODEL, "one"),
            "{not json".to_string(),
            chat_line("b", MODEL, "two"),
            json!({"custom_id": "c"}).to_string(),
            chat_line("a", MODEL, "again"),
            String::new(),
            json!({"custom_id": "d", "body": {"messages": [{"role": "user", "content": "x"}]}})
                .to_string(),
            chat_line("e", MODEL, "three"),
        ],
    );
    let out = batch(&emu, &input, &output, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 2: not JSON"), "{err}");
    assert!(err.contains("line 4: no body"), "{err}");
    assert!(
        err.contains("line 5: duplicate custom_id \"a\" (first on line 1)"),
        "{err}"
    );
    assert!(err.contains("line 7: no model"), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");
    assert_eq!(
        emu.requests_received(),
        0,
        "a call was sent for an invalid file"
    );
    assert!(
        !output.exists(),
        "an empty output was left behind for a refused input"
    );

    // --skip-invalid: the valid lines run, the others are reported, the status says so.
    let out = batch(&emu, &input, &output, &["--skip-invalid"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("skipping 4 invalid line(s)"), "{err}");
    let expected = ["a", "b", "e"].iter().map(|s| s.to_string()).collect();
    let values = assert_each_once(&output, &expected);
    let a = values.iter().find(|v| v["custom_id"] == "a").unwrap();
    assert_eq!(a["response"]["status_code"], 200);
    // The first "a" was sent, not the duplicate.
    assert!(a["response"]["body"]["choices"][0]["message"]["content"].is_string());
    assert_eq!(served(&emu), 3);
}

#[test]
fn a_permanent_error_is_that_requests_result_and_the_run_goes_on() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(1_000_000)));
    let dir = temp_dir("permanent");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let mut lines: Vec<String> = (0..6)
        .map(|i| chat_line(&format!("ok-{i}"), MODEL, "hi"))
        .collect();
    // Unknown fields are refused by the server with 422 extra_forbidden.
    lines.insert(
        3,
        json!({"custom_id": "bad", "body": {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "unexpected": true}})
            .to_string(),
    );
    write_lines(&input, lines);
    let out = batch(&emu, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut expected: std::collections::HashSet<String> =
        (0..6).map(|i| format!("ok-{i}")).collect();
    expected.insert("bad".into());
    let values = assert_each_once(&output, &expected);
    let bad = values.iter().find(|v| v["custom_id"] == "bad").unwrap();
    assert_eq!(bad["response"]["status_code"], 422);
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("422"),
        "{bad}"
    );
    assert_eq!(summary(&out)["failed"], 1);
    // Run again: nothing to do, and the status still says an error is in the output.
    let out = batch(&emu, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nothing to send"), "{}", stderr(&out));
}

#[test]
fn a_spent_monthly_quota_stops_cleanly_and_the_run_resumes_later() {
    // About 20 requests' worth of tokens this month (each costs ~4 + 8 tokens).
    let limits = Limits {
        tokens_month: Some(240),
        ..Limits::new(Some(100), Some(1_000_000))
    };
    let emu = emulator(MODEL, limits);
    let dir = temp_dir("quota");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = chat_input(&input, 60, MODEL);
    let out = batch(&emu, &input, &output, &["--concurrency", "4"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("monthly quota"), "{err}");
    assert!(err.contains("run the same command again"), "{err}");
    let (values, counts) = results(&output);
    assert!(
        !values.is_empty() && values.len() < 60,
        "{} results",
        values.len()
    );
    let s = summary(&out);
    assert_eq!(s["left"].as_u64(), Some(60 - values.len() as u64), "{s}");
    assert!(
        values.iter().all(|v| v["response"]["status_code"] == 200),
        "only successes are written"
    );
    assert!(counts.values().all(|n| *n == 1));
    // The month rolls over: the same command finishes the file.
    emu.reset_month();
    emu.set_limits(MODEL, Limits::new(Some(100), Some(1_000_000)));
    let out = batch(&emu, &input, &output, &["--concurrency", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        summary(&out)["already_done"].as_u64(),
        Some(values.len() as u64)
    );
    assert_each_once(&output, &expected);
}

#[test]
fn a_zero_allowance_stops_at_once_with_nothing_written() {
    let emu = emulator(MODEL, Limits::zero());
    let dir = temp_dir("zero");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    chat_input(&input, 50, MODEL);
    let out = batch(&emu, &input, &output, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no allowance"), "{err}");
    assert!(results(&output).0.is_empty());
    assert!(
        emu.requests_received() <= 8,
        "{} requests sent to a zero allowance",
        emu.requests_received()
    );
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_run_resumes_elsewhere() {
    let emu = emulator(MODEL, Limits::new(Some(200), Some(1_000_000)));
    let dir = temp_dir("full");
    let input = dir.join("in.jsonl");
    let expected = chat_input(&input, 100, MODEL);
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        eprintln!("SKIPPED: no /dev/full");
        return;
    }
    let out = batch(&emu, &input, full, &["--concurrency", "4"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot write /dev/full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // Nothing was written, so all 100 are left (it said "0 left" before).
    let s = summary(&out);
    assert_eq!(
        (s["left"].as_u64(), s["succeeded"].as_u64()),
        (Some(100), Some(0)),
        "{s}"
    );
    assert!(err.contains("100 of 100 left for a later run"), "{err}");
    assert!(
        err.contains("100 request(s) left: run the same command again"),
        "{err}"
    );
    // It stopped at the first failed write, not after sending the whole file.
    assert!(
        served(&emu) < 20,
        "{} requests sent after the disk was full",
        served(&emu)
    );
    let output = dir.join("out.jsonl");
    let out = batch(&emu, &input, &output, &["--concurrency", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_once(&output, &expected);
}

#[test]
fn dry_run_estimates_time_and_tokens_with_one_probe_per_model() {
    let emu = emulator(MODEL, Limits::new(Some(10), Some(100_000)));
    let dir = temp_dir("dry");
    let input = dir.join("in.jsonl");
    chat_input(&input, 100, MODEL);
    let out = mistral(&emu, None)
        .args(["batch", "run"])
        .arg(&input)
        .args(["-o", "/nonexistent/out.jsonl", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("100 valid request(s)"), "{text}");
    // 100 requests at 10 per second, the 9 the probe's answer left go at once: 9.1 s.
    assert!(
        ["≈ 9.0s", "≈ 9.1s", "≈ 9.2s"]
            .iter()
            .any(|t| text.contains(t)),
        "{text}"
    );
    assert!(
        text.contains("at once: the burst the server announced"),
        "{text}"
    );
    assert!(text.contains("requests per 1 s: 10"), "{text}");
    assert_eq!(
        emu.requests_received(),
        1,
        "a dry run sends one probe per model"
    );
}

#[test]
fn dry_run_counts_the_burst_the_server_announced() {
    // Issue 20's run: 200 requests at 30 a minute. At the pace alone, 6m40s; the 29 the
    // probe's answer left go at once, so 171 at 0.5/s: 5m42s (the run took 5m44s).
    let limits = Limits {
        window_secs: Some(60.0),
        ..Limits::new(Some(30), Some(100_000_000))
    };
    let emu = emulator(MODEL, limits);
    let dir = temp_dir("dry-burst");
    let input = dir.join("in.jsonl");
    chat_input(&input, 200, MODEL);
    let out = mistral(&emu, None)
        .args(["batch", "run"])
        .arg(&input)
        .args(["-o", "/nonexistent/out.jsonl", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("requests per minute: 30 (29 left)"), "{text}");
    assert!(
        text.contains("≈ 5m42s at the limit (the first 29 at once"),
        "{text}"
    );
    assert!(text.contains("online: ≈ 5m42s"), "{text}");
}

/// The rates a progress line shows: `(rate, limit)` of `R/s (limit L/s…`.
fn shown_rates(line: &str) -> Option<(f64, f64)> {
    let (before, after) = line.split_once("/s (limit ")?;
    let rate = before.rsplit(' ').next()?.parse().ok()?;
    let limit = after.split_once("/s")?.0.parse().ok()?;
    Some((rate, limit))
}

#[test]
fn the_progress_says_what_an_earlier_run_did_and_shows_no_burst_as_a_violation() {
    let _heavy = heavy();
    // 10 requests per 5 s (2/s), a bucket of 10: a fresh budget lets 10 go at once.
    let limits = Limits {
        window_secs: Some(5.0),
        ..Limits::new(Some(10), Some(1_000_000))
    };
    let dir = temp_dir("progress");
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    // An earlier run answered 6 of the file's 30 requests.
    chat_input(&input, 6, MODEL);
    let first = emulator(MODEL, limits.clone());
    let out = batch(&first, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = chat_input(&input, 30, MODEL);
    // The next run, against a server whose budget is fresh: the first 10 at once (the
    // burst), then 2 a second; plain progress lines (stderr is not a terminal).
    let second = emulator(MODEL, limits);
    let out = mistral(&second, None)
        .args(["batch", "run"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Said at once, before any progress.
    let first_line = err.lines().next().unwrap_or_default();
    assert!(
        first_line.contains("6 of 30 request(s) answered by an earlier run, 24 to send"),
        "{err}"
    );
    let progress: Vec<&str> = err.lines().filter(|l| l.contains(" done")).collect();
    assert!(progress.len() >= 2, "{err}");
    assert!(
        progress[0].starts_with("6/30 done (6 by an earlier run)"),
        "{err}"
    );
    for line in &progress {
        // No rate before 5 s; after, a rate above the limit says it is the burst.
        if let Some((rate, limit)) = shown_rates(line) {
            assert!(rate <= limit * 1.05 || line.contains("burst"), "{line}");
        }
    }
    assert!(
        progress.iter().any(|l| l.contains("rate after 5 s")),
        "{err}"
    );
    assert!(err.contains("6 already answered before this run"), "{err}");
    let summary = err
        .lines()
        .find(|l| l.contains("result(s) written in"))
        .unwrap();
    if let Some((rate, limit)) = summary
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split_once(" ("))
        .and_then(|(_, rest)| {
            let rate: f64 = rest.split_once("/s")?.0.parse().ok()?;
            let limit: f64 = rest
                .split_once("add up to ")?
                .1
                .split_once("/s")?
                .0
                .parse()
                .ok()?;
            Some((rate, limit))
        })
    {
        assert!(
            rate <= limit * 1.05 || summary.contains("burst"),
            "{summary}"
        );
    }
    assert_each_once(&output, &expected);
}

#[test]
fn the_shipped_sample_runs_against_the_built_in_emulator() {
    let dir = temp_dir("sample");
    let output = dir.join("out.jsonl");
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mistral"))
        .env_remove("MISTRAL_API_KEY")
        .env_remove("MISTRAL_BASE_URL")
        .env_remove("MISTRAL_LIMITER")
        .args(["--emulator", "batch", "run"])
        .arg(&sample)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (values, counts) = results(&output);
    let lines = std::fs::read_to_string(&sample).unwrap().lines().count();
    assert_eq!(values.len(), lines);
    assert!(counts.values().all(|n| *n == 1));
    for endpoint_object in ["chat.completion", "list"] {
        assert!(
            values
                .iter()
                .any(|v| v["response"]["body"]["object"] == endpoint_object),
            "no {endpoint_object} result"
        );
    }
    // Without a key and without --emulator: a clear error, nothing else.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mistral"))
        .env_remove("MISTRAL_API_KEY")
        .args(["batch", "run"])
        .arg(&sample)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("MISTRAL_API_KEY is not set"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(mistral_emulator::DEFAULT_KEY));
    let _ = Value::Null;
}

#[test]
fn ctrl_c_lets_the_calls_in_flight_finish_and_the_run_resumes() {
    let emu = emulator(MODEL, Limits::new(Some(40), Some(1_000_000)));
    let dir = temp_dir("sigint");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = chat_input(&input, 200, MODEL);
    let child = batch_command(&emu, &input, &output, &["--concurrency", "4"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped: interrupted"), "{err}");
    let (values, _) = results(&output);
    assert!(
        !values.is_empty() && values.len() < 200,
        "{} results",
        values.len()
    );
    // Everything sent was recorded: nothing in flight was abandoned.
    assert_eq!(served(&emu), values.len(), "a call in flight was dropped");
    let out = batch(&emu, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_once(&output, &expected);
    assert_eq!(served(&emu), 200);
}

#[test]
fn a_file_sorted_by_model_spends_every_models_budget_at_once() {
    let config = mistral_emulator::Config {
        era: mistral_emulator::Era::Late2025,
        window_secs: 1.0,
        ..mistral_emulator::Config::default()
    }
    .model(MODEL, Limits::new(Some(30), Some(1_000_000)))
    .model("mistral-embed", Limits::new(Some(30), Some(1_000_000)));
    let emu = mistral_emulator::Emulator::start(config);
    let dir = temp_dir("lanes");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let mut lines: Vec<String> = (0..60)
        .map(|i| chat_line(&format!("c{i}"), MODEL, "hi"))
        .collect();
    lines.extend((0..60).map(|i| {
        json!({"custom_id": format!("e{i}"), "body": {"model": "mistral-embed", "input": "hi"}})
            .to_string()
    }));
    write_lines(&input, lines);
    let out = batch(&emu, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = emu.log();
    let times = |model: &str| -> Vec<std::time::Duration> {
        log.entries()
            .iter()
            .filter(|e| e.admitted() && e.model.as_deref() == Some(model))
            .filter_map(|e| e.decided)
            .collect()
    };
    let (chat, embed) = (times(MODEL), times("mistral-embed"));
    assert_eq!((chat.len(), embed.len()), (60, 60));
    // The embeddings did not wait for the chat requests (2 s at 30/s): the first was
    // served before half of the chat requests were.
    let mut chat = chat;
    chat.sort();
    let first_embed = embed.iter().min().unwrap();
    assert!(
        *first_embed < chat[29],
        "the second model started at {first_embed:?}, after half of the first ({:?})",
        chat[29]
    );
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
}

#[test]
fn a_second_process_on_the_same_output_is_refused() {
    let emu = emulator(MODEL, Limits::new(Some(20), Some(1_000_000)));
    let dir = temp_dir("locked");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let expected = chat_input(&input, 60, MODEL);
    let first = batch_command(&emu, &input, &output, &[]).spawn().unwrap();
    // Wait for the first to start writing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&output).map_or(0, |m| m.len()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run wrote nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = batch(&emu, &input, &output, &[]);
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("being written by another mistral process"),
        "{err}"
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_each_once(&output, &expected);
    assert_eq!(served(&emu), 60);
}

#[test]
fn dry_run_without_a_probe_uses_what_the_file_store_learned() {
    let emu = emulator(MODEL, Limits::new(Some(20), Some(1_000_000)));
    let dir = temp_dir("dry-store");
    let store = format!("file:{}/", dir.display());
    let input = dir.join("in.jsonl");
    chat_input(&input, 100, MODEL);
    let dry = |store: Option<&str>| {
        let out = mistral(&emu, store)
            .args(["batch", "run"])
            .arg(&input)
            .args(["-o", "/nonexistent/out.jsonl", "--dry-run", "--no-probe"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = dry(Some(&store));
    assert!(text.contains("limits unknown"), "{text}");
    assert!(text.contains("time unknown"), "{text}");
    // One real call teaches the store the limits.
    let out = mistral(&emu, Some(&store))
        .args(["limits", "--model", MODEL])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let before = emu.requests_received();
    let text = dry(Some(&store));
    assert!(
        text.contains("learned by the limiter's store: 20.00 requests/s"),
        "{text}"
    );
    // 100 requests at 20 per second.
    assert!(text.contains("≈ 5.0s at the known limits"), "{text}");
    assert_eq!(emu.requests_received(), before, "--no-probe sent a request");
}

#[test]
fn more_models_than_lanes_are_all_served() {
    let emu = emulator(MODEL, Limits::new(Some(100), Some(1_000_000)));
    let dir = temp_dir("many-models");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let mut ids = std::collections::HashSet::new();
    let mut lines = Vec::new();
    for m in 0..11 {
        for i in 0..(3 + m) {
            let id = format!("m{m}-{i}");
            lines.push(chat_line(&id, &format!("model-{m}"), "hi"));
            ids.insert(id);
        }
    }
    write_lines(&input, lines);
    let out = batch(&emu, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_once(&output, &ids);
    assert_eq!(served(&emu), ids.len());
}

#[test]
fn a_priority_class_is_named_or_refused_before_any_call() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(1_000_000)));
    let dir = temp_dir("priority");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    write_lines(&input, [chat_line("a", MODEL, "one")]);
    let out = batch(&emu, &input, &output, &["--priority", "urgent"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown priority \"urgent\""), "{err}");
    assert_eq!(emu.requests_received(), 0);
    let out = batch(&emu, &input, &output, &["--priority", "interactive"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = ["a"].iter().map(|s| s.to_string()).collect();
    assert_each_once(&output, &expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that reads a request and then drops the connection may have run it: the
/// batch tool sends it once, writes an error line saying its outcome is unknown (code
/// `outcome_unknown`, no response), and a later run does not send it again. Only with
/// `--retry-unknown` is it sent again. (Before: each was sent up to ten times.)
#[test]
fn a_request_whose_outcome_is_unknown_is_sent_once_unless_told() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(1_000_000)));
    let dir = temp_dir("unknown-outcome");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let ids = chat_input(&input, 6, MODEL);
    // The first two requests are read, then their connections closed / reset.
    emu.push_fault(mistral_emulator::Fault::Close);
    emu.push_fault(mistral_emulator::Fault::Reset);
    let out = batch(&emu, &input, &output, &["--concurrency", "1"]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "complete, with error results: {err}"
    );
    assert_eq!(
        emu.requests_received(),
        6,
        "a request was sent twice: {err}"
    );
    let values = assert_each_once(&output, &ids);
    let unknown: Vec<&Value> = values
        .iter()
        .filter(|v| v["error"]["code"] == "outcome_unknown")
        .collect();
    assert_eq!(unknown.len(), 2, "{values:?}");
    for line in &unknown {
        assert!(line["response"].is_null(), "{line}");
        let message = line["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("outcome unknown"), "{message}");
        assert!(message.contains("--retry-unknown"), "{message}");
        assert!(!message.contains(emu.key()), "{message}");
    }
    let s = summary(&out);
    assert_eq!(
        (s["succeeded"].as_u64(), s["failed"].as_u64()),
        (Some(4), Some(2)),
        "{s}"
    );
    assert_eq!(s["outcome_unknown"].as_u64(), Some(2), "{s}");
    assert_eq!(s["transient"].as_u64(), Some(0), "{s}");
    assert!(err.contains("unknown outcome"), "{err}");

    // Run again: every request has its result, nothing is sent.
    let again = batch(&emu, &input, &output, &["--concurrency", "1"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert_eq!(emu.requests_received(), 6);

    // Told to: the two are sent again and answered.
    let told = dir.join("told.jsonl");
    emu.push_fault(mistral_emulator::Fault::Close);
    emu.push_fault(mistral_emulator::Fault::Reset);
    let out = batch(
        &emu,
        &input,
        &told,
        &["--concurrency", "1", "--retry-unknown"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(emu.requests_received(), 6 + 8, "{err}");
    let values = assert_each_once(&told, &ids);
    assert!(
        values.iter().all(|v| v["response"]["status_code"] == 200),
        "{values:?}"
    );
    let s = summary(&out);
    assert_eq!(
        (s["succeeded"].as_u64(), s["outcome_unknown"].as_u64()),
        (Some(6), Some(0)),
        "{s}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `MISTRAL_BASE_URL=…/v1` (the OpenAI convention) works; a base URL the server has
/// nothing under stops the run at the first 404 (every request would get one), saying
/// which path was asked for and to check the base URL, with nothing written.
#[test]
fn the_base_url_may_end_in_v1_and_a_wrong_one_stops_the_run_saying_so() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(1_000_000)));
    let dir = temp_dir("base-url");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let ids = chat_input(&input, 3, MODEL);
    let out = batch_command(&emu, &input, &output, &[])
        .env("MISTRAL_BASE_URL", format!("{}/v1", emu.url()))
        .output()
        .expect("the mistral binary runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_once(&output, &ids);

    let wrong = dir.join("wrong.jsonl");
    let out = batch_command(&emu, &input, &wrong, &["--concurrency", "1"])
        .env("MISTRAL_BASE_URL", format!("{}/v2", emu.url()))
        .output()
        .expect("the mistral binary runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not found (404)"), "{err}");
    assert!(err.contains("/v2/v1/chat/completions"), "{err}");
    assert!(err.contains("MISTRAL_BASE_URL"), "{err}");
    assert!(
        results(&wrong).0.is_empty(),
        "nothing written for a wrong URL"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused key stops the run: the summary counts every request as left (not "0 left"),
/// and nothing is written.
#[test]
fn a_refused_key_stops_the_run_and_everything_is_left() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(1_000_000)));
    let dir = temp_dir("refused-key");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    chat_input(&input, 30, MODEL);
    let out = batch_command(&emu, &input, &output, &["--concurrency", "2"])
        .env("MISTRAL_API_KEY", "sk-not-the-emulators-key")
        .output()
        .expect("the mistral binary runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("API key was refused (401)"), "{err}");
    let s = summary(&out);
    assert_eq!(
        (s["left"].as_u64(), s["todo"].as_u64()),
        (Some(30), Some(30)),
        "{s}"
    );
    assert!(err.contains("30 request(s) left"), "{err}");
    assert!(results(&output).0.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lines appended to the input while a run goes are not sent by it (they were not
/// validated: a duplicate `custom_id` among them would go unnoticed); the next run
/// validates and sends them.
#[test]
fn lines_appended_during_a_run_are_left_for_the_next() {
    let _heavy = heavy();
    let config = mistral_emulator::Config {
        era: mistral_emulator::Era::Late2025,
        window_secs: 1.0,
        latency_ms: 40,
        ..mistral_emulator::Config::default()
    }
    .model(MODEL, Limits::new(Some(100), Some(1_000_000)));
    let emu = mistral_emulator::Emulator::start(config);
    let dir = temp_dir("appended");
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let first = chat_input(&input, 150, MODEL);
    // 150 requests, 2 at a time, 40 ms each: about 3 s, the input read as the calls
    // go (a bounded channel), so the reader is still at it when the lines come.
    let child = batch_command(&emu, &input, &output, &["--concurrency", "2"])
        .spawn()
        .expect("the mistral binary starts");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    for i in 0..5 {
        let line = chat_line(&format!("late-{i}"), MODEL, "appended while running");
        std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    }
    drop(file);
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_once(&output, &first);
    assert_eq!(served(&emu), 150);
    // The next run sends the five.
    let out = batch(&emu, &input, &output, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut all = first;
    all.extend((0..5).map(|i| format!("late-{i}")));
    assert_each_once(&output, &all);
    assert_eq!(served(&emu), 155);
    let _ = std::fs::remove_dir_all(&dir);
}
