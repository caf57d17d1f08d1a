//! The quota forecast on both clients over loopback: `client.forecast(model)` says what
//! the server last said remains of each limit, when each resets, the rate it is spent at
//! and when it runs out; a monthly quota that runs out within a day at that rate is said
//! at WARN once per budget, and one that lasts is not.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mistral_core::forecast::{Forecast, Reset, RunsOut};
use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Bucket, Window};
use mistral_emulator::{Config, Emulator, Limits};
use tracing_subscriber::EnvFilter;

/// Its month lasts a few hours at the tests' pace.
const SHORT: &str = "short-month";
/// Its month lasts for ever.
const LONG: &str = "long-month";

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with WARN logs of `target` captured on this thread; what they said.
fn warnings(target: &str, f: impl FnOnce()) -> String {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(format!("{target}=warn")))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
}

fn emulator() -> Emulator {
    let limits = |month| Limits {
        tokens_month: Some(month),
        ..Limits::new(Some(6_000), Some(1_000_000))
    };
    Emulator::start(
        Config::default()
            .model(SHORT, limits(400_000))
            .model(LONG, limits(4_000_000_000_000)),
    )
}

fn request(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user("hello there")])
}

fn check(forecast: &Forecast, month_limit: u64, spent_calls: u64) {
    let month = forecast.month().unwrap_or_else(|| panic!("{forecast:?}"));
    assert_eq!(
        (month.bucket, month.window),
        (Bucket::Tokens, Window::Month)
    );
    assert_eq!(month.limit, Some(month_limit));
    // Each call: 3 prompt tokens ("hello there"), 16 completion tokens.
    assert_eq!(
        month.remaining,
        Some(month_limit - 19 * spent_calls),
        "{month:?}"
    );
    assert!(month.said < Duration::from_secs(5), "{month:?}");
    // The server's Date says when the month ends: within 31 days.
    let Reset::In(resets) = month.resets else {
        panic!("{month:?}")
    };
    assert!(resets <= Duration::from_secs(31 * 86_400), "{month:?}");
    assert!(month.rate.is_some_and(|r| r > 0.0), "{month:?}");
    let per_minute = forecast
        .quotas
        .iter()
        .find(|q| q.bucket == Bucket::Requests)
        .unwrap();
    assert_eq!(per_minute.window, Window::MINUTE);
    assert_eq!(per_minute.resets, Reset::Rolling(Duration::from_secs(60)));
    // 6,000 a minute refills 100 a second: far more than these calls spend.
    assert_eq!(
        per_minute.runs_out,
        RunsOut::NotAtThisRate,
        "{per_minute:?}"
    );
    let table = forecast.to_string();
    assert!(
        table.contains("tokens/month") && table.contains("requests/minute"),
        "{table}"
    );
}

fn short_runs_out_within_a_day(forecast: &Forecast) {
    let month = forecast.month().unwrap();
    let RunsOut::In(left) = month.runs_out else {
        panic!("{month:?}")
    };
    assert!(left < Duration::from_secs(86_400), "{month:?}");
}

#[test]
fn the_forecast_and_the_month_warning_on_both_clients() {
    let emu = emulator();
    const CALLS: u64 = 12;

    let b = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    assert!(b.forecast(SHORT).is_none(), "no answer yet");
    let said = warnings("mistral_blocking", || {
        for model in [SHORT, LONG] {
            for _ in 0..CALLS {
                b.chat(request(model)).unwrap();
            }
        }
    });
    check(&b.forecast(SHORT).unwrap(), 400_000, CALLS);
    short_runs_out_within_a_day(&b.forecast(SHORT).unwrap());
    check(&b.forecast(LONG).unwrap(), 4_000_000_000_000, CALLS);
    assert_ne!(
        b.forecast(LONG).unwrap().month().unwrap().runs_out,
        RunsOut::Spent
    );
    assert_eq!(b.forecasts().len(), 2);
    assert_eq!(said.matches("will run out in").count(), 1, "{said}");
    assert!(said.contains(SHORT) && !said.contains(LONG), "{said}");

    let a = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let said = warnings("mistral_async", || {
        runtime.block_on(async {
            for model in [SHORT, LONG] {
                for _ in 0..CALLS {
                    a.chat(request(model)).await.unwrap();
                }
            }
            // A stream counts too, once, at its end.
            let stream = a.chat_stream(request(SHORT)).await.unwrap();
            stream.collect_response().await.unwrap();
        })
    });
    check(&a.forecast(SHORT).unwrap(), 400_000, 2 * CALLS + 1);
    short_runs_out_within_a_day(&a.forecast(SHORT).unwrap());
    assert_eq!(said.matches("will run out in").count(), 1, "{said}");
    assert!(said.contains(SHORT) && !said.contains(LONG), "{said}");
}
