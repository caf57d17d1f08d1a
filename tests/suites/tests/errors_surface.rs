//! What a user matches on: `source()` chains under transport errors, `StatusCode`
//! statuses, both clients alike, against real sockets on loopback; and the builders'
//! construction errors, the same on both clients.

use std::error::Error as _;

use http::StatusCode;
use mistral_core::models::{ChatRequest, Message};
use mistral_core::{CallOptions, Error, KeyError, TransportKind};
use mistral_emulator::{Config, Emulator};

fn request() -> ChatRequest {
    ChatRequest::new("mistral-small-latest", vec![Message::user("hello")])
}

/// A loopback URL nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn check_transport(error: &Error) {
    let Error::Transport { kind, source, .. } = error else {
        panic!("{error:?}")
    };
    assert_eq!(*kind, TransportKind::Connect, "{error:?}");
    assert!(source.is_some(), "{error:?}");
    let first = error.source().expect("a source chain");
    assert!(!first.to_string().is_empty());
}

#[test]
fn transport_errors_keep_the_librarys_error_as_their_source() {
    let url = closed_port();
    let once = CallOptions::new().max_attempts(1);
    let blocking = mistral_blocking::Client::builder()
        .api_key("sk-test")
        .base_url(&url)
        .build()
        .unwrap()
        .with_options(once);
    let error = blocking.chat(request()).unwrap_err();
    check_transport(&error);
    let Error::Transport {
        source: Some(cause),
        ..
    } = &error
    else {
        unreachable!()
    };
    assert!(
        cause.get_ref().downcast_ref::<ureq::Error>().is_some(),
        "{cause:?}"
    );

    let asynchronous = mistral_async::Client::builder()
        .api_key("sk-test")
        .base_url(&url)
        .build()
        .unwrap()
        .with_options(once);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime.block_on(asynchronous.chat(request())).unwrap_err();
    check_transport(&error);
    let Error::Transport {
        source: Some(cause),
        ..
    } = &error
    else {
        unreachable!()
    };
    assert!(
        cause.get_ref().downcast_ref::<reqwest::Error>().is_some(),
        "{cause:?}"
    );
}

#[test]
fn statuses_are_status_codes_on_both_clients() {
    let emu = Emulator::start(Config::default());
    let blocking = mistral_blocking::Client::builder()
        .api_key("sk-wrong-key")
        .base_url(emu.url())
        .build()
        .unwrap();
    let error = blocking.chat(request()).unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(error.status_u16(), Some(401));
    let asynchronous = mistral_async::Client::builder()
        .api_key("sk-wrong-key")
        .base_url(emu.url())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime.block_on(asynchronous.chat(request())).unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    // A success carries the same type.
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let reply = client.chat(request()).unwrap();
    assert_eq!(reply.text().map(str::is_empty), Some(false));
}

/// Both builders refuse the same configurations with the same errors at `build`, and
/// neither shows the key in its `Debug`: no key, a key with whitespace, plain HTTP to a
/// remote host (unless allowed), a user agent that is not a header value.
#[test]
fn construction_errors_are_the_same_on_both_clients() {
    const SECRET: &str = "sk-construction-SECRET-key";
    /// A case: its name, what both builders give, the error it must be.
    type Case = (
        &'static str,
        fn() -> [Result<(), Error>; 2],
        fn(&Error) -> bool,
    );
    let cases: [Case; 5] = [
        (
            "no key",
            || {
                [
                    mistral_blocking::Client::builder().build().map(drop),
                    mistral_async::Client::builder().build().map(drop),
                ]
            },
            |e| *e == Error::Key(KeyError::Missing),
        ),
        (
            "a key with whitespace",
            || {
                [
                    mistral_blocking::Client::new("two words").map(drop),
                    mistral_async::Client::new("two words").map(drop),
                ]
            },
            |e| matches!(e, Error::Key(KeyError::Whitespace { .. })),
        ),
        (
            "plain HTTP to a remote host",
            || {
                [
                    mistral_blocking::Client::builder()
                        .api_key(SECRET)
                        .base_url("http://api.example.com")
                        .build()
                        .map(drop),
                    mistral_async::Client::builder()
                        .api_key(SECRET)
                        .base_url("http://api.example.com")
                        .build()
                        .map(drop),
                ]
            },
            |e| matches!(e, Error::Config(_)),
        ),
        (
            "a user agent with a line break",
            || {
                [
                    mistral_blocking::Client::builder()
                        .api_key(SECRET)
                        .user_agent("bad\nagent")
                        .build()
                        .map(drop),
                    mistral_async::Client::builder()
                        .api_key(SECRET)
                        .user_agent("bad\nagent")
                        .build()
                        .map(drop),
                ]
            },
            |e| matches!(e, Error::Config(_)),
        ),
        (
            "plain HTTP allowed on purpose",
            || {
                [
                    mistral_blocking::Client::builder()
                        .api_key(SECRET)
                        .base_url("http://api.example.com")
                        .allow_insecure_http(true)
                        .build()
                        .map(drop),
                    mistral_async::Client::builder()
                        .api_key(SECRET)
                        .base_url("http://api.example.com")
                        .allow_insecure_http(true)
                        .build()
                        .map(drop),
                ]
            },
            |_| false,
        ),
    ];
    for (case, build, expected) in cases {
        for (client, built) in ["blocking", "async"].into_iter().zip(build()) {
            match built {
                Ok(()) => assert_eq!(case, "plain HTTP allowed on purpose", "{client}"),
                Err(e) => {
                    assert!(expected(&e), "{case}, {client}: {e:?}");
                    assert!(!format!("{e} {e:?}").contains(SECRET), "{case}: {e:?}");
                }
            }
        }
    }
    let blocking = mistral_blocking::Client::builder().api_key(SECRET);
    let asynchronous = mistral_async::Client::builder().api_key(SECRET);
    for shown in [
        format!("{blocking:?}"),
        format!("{asynchronous:?}"),
        format!("{:?}", blocking.build().unwrap()),
        format!("{:?}", asynchronous.build().unwrap()),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
