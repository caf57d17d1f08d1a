//! What a child process of the fleet tests does: chat requests through a client built
//! from the environment alone (`Client::from_env`: key, URL, `MISTRAL_LIMITER`,
//! `MISTRAL_LIMITS`).

/// Sends `calls` chat requests for `model` from `threads` threads through one client
/// built from the environment, and returns the client (for its counters). Panics on the
/// first failed request, which fails the child and so the test that started it.
pub fn chats_from_env(model: &str, threads: usize, calls: usize) -> mistral_blocking::Client {
    let client = mistral_blocking::Client::from_env().expect("client from the environment");
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                    let request = mistral_core::models::ChatRequest::new(
                        model,
                        vec![mistral_core::models::Message::user("hello")],
                    )
                    .max_tokens(16);
                    if let Err(e) = client.chat(&request) {
                        panic!("child request failed: {e}");
                    }
                }
            });
        }
    });
    client
}
