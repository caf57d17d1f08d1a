//! Per-call options (`Client::with_options`) on both clients, against the emulator (the
//! WARN of a call that waits long is `long_call_warn.rs`).

use std::time::{Duration, Instant};

use mistral_core::{CallOptions, Error};
use mistral_emulator::{Config, Emulator, Fault};

mod calls;

use calls::*;

fn is_shared_refusal(e: &Error) -> bool {
    matches!(e, Error::RateLimited { shared: true, .. }) && e.status().is_none()
}

#[test]
fn a_per_call_deadline_ends_a_call_the_client_would_let_wait_blocking() {
    let emu = one_a_minute();
    let client = blocking(&emu);
    client.chat(request()).unwrap();
    let started = Instant::now();
    let quick = client.with_options(CallOptions::new().deadline(Duration::from_secs(2)));
    let error = quick.chat(request()).unwrap_err();
    assert!(is_shared_refusal(&error), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The handle shares the client's statistics; the client keeps its own options.
    assert_eq!(client.stats().calls, 2);
    assert!(client.options().is_empty());
    assert_eq!(emu.log().total(), 1, "the refused call sent nothing");
}

#[test]
fn a_per_call_deadline_ends_a_call_the_client_would_let_wait_async() {
    let emu = one_a_minute();
    let client = asynchronous(&emu);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        client.chat(request()).await.unwrap();
        let started = Instant::now();
        let quick = client.with_options(CallOptions::new().deadline(Duration::from_secs(2)));
        let error = quick.chat(request()).await.unwrap_err();
        assert!(is_shared_refusal(&error), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // Without the option the same call is still waiting after 2 s.
        let plain = tokio::time::timeout(Duration::from_secs(2), client.chat(request())).await;
        assert!(plain.is_err(), "{plain:?}");
    });
    assert_eq!(emu.log().total(), 1);
}

#[test]
fn max_attempts_per_call_on_both_clients() {
    let emu = Emulator::start(Config::default());
    let (b, a) = (blocking(&emu), asynchronous(&emu));
    let once = CallOptions::new().max_attempts(1);
    emu.push_fault(Fault::Http503);
    let error = b.with_options(once).chat(request()).unwrap_err();
    assert!(matches!(error, Error::Server { .. }), "{error:?}");
    assert_eq!(error.trail().map(|t| t.attempts), Some(1), "{error:?}");
    // Without it, the client retries the same fault.
    emu.push_fault(Fault::Http503);
    assert_eq!(b.chat(request()).unwrap().trail.attempts, 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        emu.push_fault(Fault::Http503);
        let error = a.with_options(once).chat(request()).await.unwrap_err();
        assert!(matches!(error, Error::Server { .. }), "{error:?}");
        emu.push_fault(Fault::Http503);
        assert_eq!(a.chat(request()).await.unwrap().trail.attempts, 2);
    });
}
