//! A script's shape: 8 threads share one blocking client, each call bounded by
//! per-call options, errors matched, the limits read from the replies. Against an
//! emulator started in this process (or `MISTRAL_BASE_URL` with `MISTRAL_API_KEY`):
//! `cargo run -p mistral-suites --example threaded_script`.

use std::time::Duration;

use mistral_blocking::{CallOptions, ChatRequest, Client, Error, Message};

/// What the threads saw: answers, shared-budget refusals, other errors, the last
/// `remaining` the server announced.
#[derive(Debug, Default)]
pub struct Tally {
    pub answers: usize,
    pub refused_by_our_budget: usize,
    pub other_errors: Vec<String>,
    pub remaining: Option<u64>,
}

/// `threads` threads of `per_thread` calls each, every call given at most `deadline`.
pub fn run(client: &Client, threads: usize, per_thread: usize, deadline: Duration) -> Tally {
    let bounded = client.with_options(CallOptions::new().deadline(deadline).max_attempts(4));
    let results: Vec<Result<Option<u64>, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let client = bounded.clone();
                scope.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let text = format!("thread {t}, question {i}");
                            let request =
                                ChatRequest::new("mistral-small-latest", vec![Message::user(text)]);
                            client
                                .chat(request)
                                .map(|reply| reply.limits.requests().and_then(|q| q.remaining))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut tally = Tally::default();
    for result in results {
        match result {
            Ok(remaining) => {
                tally.answers += 1;
                tally.remaining = remaining.or(tally.remaining);
            }
            Err(Error::RateLimited { shared: true, .. }) => tally.refused_by_our_budget += 1,
            Err(e) => tally.other_errors.push(e.to_string()),
        }
    }
    tally
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = std::env::var_os("MISTRAL_BASE_URL")
        .is_none()
        .then(|| mistral_emulator::Emulator::start(mistral_emulator::Config::default()));
    let client = match &emulator {
        Some(emu) => Client::builder()
            .api_key(emu.key())
            .base_url(emu.url())
            .build()?,
        None => Client::from_env()?,
    };
    let tally = run(&client, 8, 5, Duration::from_secs(30));
    println!("{tally:?}");
    println!("{:?}", client.stats());
    Ok(())
}
