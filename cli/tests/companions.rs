//! `mistral chat` and `mistral limits` against the real emulator.

mod common;

use common::*;
use mistral_emulator::Limits;

const MODEL: &str = "mistral-small-latest";

#[test]
fn chat_streams_the_answer_and_says_what_it_cost() {
    let emu = emulator(MODEL, Limits::new(Some(10), Some(100_000)));
    let out = mistral(&emu, None)
        .args(["chat", "Say something", "--model", MODEL])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.split_whitespace().count() >= 3, "{text:?}");
    assert!(stderr(&out).contains("tokens)"), "{}", stderr(&out));
    let log = emu.log();
    assert_eq!(log.admitted(), 1);
    assert!(log.entries()[0].stream, "the chat was not streamed");
    // A model with no allowance: a clear error, no retry storm.
    let emu = emulator(MODEL, Limits::zero());
    let out = mistral(&emu, None).args(["chat", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no allowance"), "{}", stderr(&out));
    assert_eq!(emu.requests_received(), 1);
}

#[test]
fn limits_shows_what_the_server_announces_and_the_file_store_learned() {
    let emu = emulator(MODEL, Limits::new(Some(50), Some(400_000)));
    let dir = temp_dir("limits");
    let store = format!("file:{}/", dir.display());
    let out = mistral(&emu, Some(&store))
        .args(["limits", "--model", MODEL])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.contains("announced: requests per 1 s: 50"), "{text}");
    assert!(text.contains("tokens per 1 s: 400000"), "{text}");
    // The probe taught the shared store; a second look needs no request.
    let before = emu.requests_received();
    let out = mistral(&emu, Some(&store))
        .args(["limits", "--model", MODEL, "--no-probe"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shared budget") && text.contains("requests 50.00/s"),
        "{text}"
    );
    assert_eq!(emu.requests_received(), before, "--no-probe sent a request");
}

/// `mistral limits` during a run: the forecast table of a budget a batch is spending
/// through a shared file store — each limit's remaining, its reset, the fleet's rate (the
/// store's counters of the batch's admissions) and when, at that rate, the month's
/// tokens run out.
#[test]
fn limits_forecasts_a_run_in_progress() {
    let _heavy = heavy();
    let emu = emulator(
        MODEL,
        Limits {
            tokens_month: Some(2_000_000),
            ..Limits::new(Some(20), Some(100_000))
        },
    );
    let dir = temp_dir("forecast");
    let store = format!("file:{}/", dir.display());
    let input = dir.join("in.jsonl");
    chat_input(&input, 200, MODEL);
    let mut run = batch_command(&emu, &input, &dir.join("out.jsonl"), &[])
        .env("MISTRAL_LIMITER", &store)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the batch starts");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = mistral(&emu, Some(&store))
        .args(["limits", "--model", MODEL, "--sample", "1"])
        .output()
        .unwrap();
    let _ = run.kill();
    let batch = run.wait_with_output().unwrap();
    // The run itself said once that the month will not last the day.
    let said = stderr(&batch);
    assert_eq!(said.matches("will run out in").count(), 1, "{said}");
    assert!(
        said.contains("monthly quota of mistral-small-latest"),
        "{said}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("forecast:"))
        .collect();
    assert!(table.len() >= 5, "{text}");
    assert!(
        table[1].contains("remaining / limit") && table[1].contains("runs out"),
        "{text}"
    );
    let month = table
        .iter()
        .find(|l| l.contains("tokens/month"))
        .unwrap_or_else(|| panic!("{text}"));
    // Spent at the batch's pace: gone well within a day, before the month ends.
    assert!(month.contains("/ 2,000,000"), "{month}");
    assert!(
        month.contains("(fleet)") || month.contains("(server)"),
        "{month}"
    );
    let runs_out = month.rsplit("   ").next().unwrap_or("");
    assert!(
        runs_out.starts_with("in ") && !runs_out.contains(" d "),
        "{month}"
    );
    let requests = table
        .iter()
        .find(|l| l.contains("requests/1 s"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        requests.contains("/ 20") && requests.contains("rolling 1.0 s"),
        "{requests}"
    );
    // The fleet's own rate, from the store: the batch admits about 20 a second.
    let fleet = text
        .lines()
        .find(|l| l.contains("this fleet spends"))
        .unwrap_or_else(|| panic!("{text}"));
    let per_second: f64 = fleet
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{fleet}"));
    assert!((8.0..=30.0).contains(&per_second), "{fleet}");
}
