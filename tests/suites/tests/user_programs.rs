//! The user programs of `examples/` (and the README's), run against the emulator.

#[path = "../examples/buffer_unordered.rs"]
mod buffer_unordered;

use mistral_emulator::{Config, Emulator};

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

#[path = "../examples/threaded_script.rs"]
mod threaded_script;

#[test]
fn a_threaded_script_with_per_call_options() {
    // 10 requests a minute: 40 calls with a 2 s deadline each cannot all get through,
    // and those that cannot are refused by the shared budget, not by the server.
    let emu = Emulator::start(Config::default());
    emu.set_limits(
        "mistral-small-latest",
        mistral_emulator::Limits::new(Some(10), None),
    );
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let tally = threaded_script::run(&client, 8, 5, std::time::Duration::from_secs(2));
    assert!(tally.other_errors.is_empty(), "{:?}", tally.other_errors);
    assert_eq!(tally.answers + tally.refused_by_our_budget, 40, "{tally:?}");
    assert!((1..=10).contains(&tally.answers), "{tally:?}");
    assert!(tally.refused_by_our_budget >= 30, "{tally:?}");
    assert!(tally.remaining.is_some(), "{tally:?}");
    assert_eq!(emu.log().count_429(), 0, "the server never had to refuse");
}

#[path = "../examples/own_reqwest.rs"]
mod own_reqwest;

/// The program's own `reqwest` (declared with no features of its own, as a user's is)
/// works beside mistral-async: `Client::new()` and a rustls client build without a
/// crypto provider installed by anyone, and both reach the loopback server.
#[test]
fn the_users_own_reqwest_keeps_working_beside_mistral_async() {
    let emu = Emulator::start(Config::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let own = runtime
        .block_on(own_reqwest::run(&emu.url(), emu.key()))
        .unwrap();
    assert_eq!((own.plain_status, own.rustls_status), (200, 200), "{own:?}");
    assert!(!own.mistral_text.is_empty());
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "nothing may install a process-wide crypto provider"
    );
}
