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
