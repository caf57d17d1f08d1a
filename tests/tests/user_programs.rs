//! The user programs of `tests/examples` (and the README's), run against the emulator.

#[path = "../examples/buffer_unordered.rs"]
mod buffer_unordered;

use mistral_tests::{Config, Emulator};

#[test]
fn buffer_unordered_sends_every_request_by_value() {
    let emu = Emulator::start(Config::default());
    let client = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let texts = runtime
        .block_on(buffer_unordered::run(&client, 100))
        .unwrap();
    assert_eq!(texts.len(), 100);
    assert!(texts.iter().all(|t| !t.is_empty()));
    assert_eq!(emu.log().admitted(), 100);
}

#[path = "../examples/tool_round_trip.rs"]
mod tool_round_trip;

#[test]
fn a_tool_round_trip_against_the_emulator() {
    let emu = Emulator::start(Config::default());
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let trip = tool_round_trip::run(&client).unwrap();
    assert!(!trip.args.city.is_empty());
    assert!((1..=7).contains(&trip.args.days), "{:?}", trip.args);
    assert_eq!(trip.call_id.len(), 9);
    assert!(trip.call_id.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(!trip.answer.is_empty());
    assert_eq!(emu.log().admitted(), 2);
}
