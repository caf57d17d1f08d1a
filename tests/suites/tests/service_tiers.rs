//! Mistral's priority tier on both clients over loopback: `service_tier` goes out as the
//! request field (an unknown value kept as written), `usage.service_tier` comes back in
//! the reply (the emulator answers which tier served each call), and `stats()` counts
//! what each tier served, streams included.

use mistral_core::models::{ChatRequest, Message, ServiceTier};
use mistral_core::{Stats, TierCounts};
use mistral_emulator::{Config, Emulator};

fn request(tier: Option<ServiceTier>) -> ChatRequest {
    let request = ChatRequest::new("mistral-small-latest", vec![Message::user("hello there")]);
    match tier {
        Some(tier) => request.service_tier(tier),
        None => request,
    }
}

/// What both clients send: auto twice, standard_only, an unknown value, none, and auto
/// as a stream.
fn tiers() -> [Option<ServiceTier>; 5] {
    [
        Some(ServiceTier::Auto),
        Some(ServiceTier::Auto),
        Some(ServiceTier::StandardOnly),
        Some(ServiceTier::Other("flex".into())),
        None,
    ]
}

fn check(served: &[Option<String>], stats: &Stats) {
    let names: Vec<Option<&str>> = served.iter().map(Option::as_deref).collect();
    assert_eq!(
        names,
        [
            Some("priority"),
            Some("priority"),
            Some("standard"),
            Some("standard"),
            Some("standard"),
            Some("priority"),
        ]
    );
    let priority = stats.service_tiers.get("priority").copied();
    let standard = stats.service_tiers.get("standard").copied();
    assert_eq!(priority.map(|c| c.served), Some(3), "{stats:?}");
    assert_eq!(standard.map(|c| c.served), Some(3), "{stats:?}");
    assert_eq!(stats.service_tiers.len(), 2, "{stats:?}");
    let TierCounts { tokens, .. } = priority.unwrap();
    assert!(tokens > 0, "{stats:?}");
    assert_eq!(stats.calls, 6);
}

#[test]
fn the_tier_goes_out_comes_back_and_is_counted_on_both_clients() {
    let emulator = Emulator::start(Config::default());

    let b = mistral_blocking::Client::builder()
        .api_key(emulator.key())
        .base_url(emulator.url())
        .build()
        .unwrap();
    let mut served: Vec<Option<String>> = tiers()
        .into_iter()
        .map(|tier| {
            let reply = b.chat(request(tier)).unwrap();
            reply.usage.as_ref()?.service_tier().map(str::to_owned)
        })
        .collect();
    let stream = b.chat_stream(request(Some(ServiceTier::Auto))).unwrap();
    let response = stream.collect_response().unwrap();
    served.push(
        response
            .usage
            .as_ref()
            .and_then(|u| u.service_tier().map(str::to_owned)),
    );
    check(&served, &b.stats());

    let a = mistral_async::Client::builder()
        .api_key(emulator.key())
        .base_url(emulator.url())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let served = runtime.block_on(async {
        let mut served = Vec::new();
        for tier in tiers() {
            let reply = a.chat(request(tier)).await.unwrap();
            served.push(
                reply
                    .usage
                    .as_ref()
                    .and_then(|u| u.service_tier().map(str::to_owned)),
            );
        }
        let stream = a
            .chat_stream(request(Some(ServiceTier::Auto)))
            .await
            .unwrap();
        let response = stream.collect_response().await.unwrap();
        served.push(
            response
                .usage
                .as_ref()
                .and_then(|u| u.service_tier().map(str::to_owned)),
        );
        served
    });
    check(&served, &a.stats());
    // Every request reached the emulator and was served (an unknown tier included).
    assert_eq!(emulator.log().admitted(), 12);
}
