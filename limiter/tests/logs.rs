//! What the line says to a person reading the logs: a WARN only for time really waited,
//! at most once a minute, counting the others; an INFO summary per budget while callers
//! keep queueing, at most every ten seconds. In a binary of its own: `tracing`'s
//! callsite interest is cached process-wide.

#![allow(clippy::disallowed_methods)]

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use mistral_core::limiter::{Admit, Limiter, LimiterConfig, Limits, Place};
use mistral_core::{Ask, Priority, Sizing};
use mistral_limiter::LocalLimiter;

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

struct Nobody;

impl Wake for Nobody {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn only_real_waits_warn_at_most_once_a_minute_and_queues_are_summed_up() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // 10 a minute, configured: one every 6 s. 30 callers join at once.
    let limiter = LocalLimiter::with_config(LimiterConfig {
        default: Some(Limits::requests(10, Duration::from_secs(60))),
        ..LimiterConfig::default()
    });
    let ask = Ask {
        model: Some("m".into()),
        tokens: 1,
        size: Sizing::default(),
        attempt: 1,
        within: None,
        priority: Priority::Batch,
    };
    let waker = Waker::from(Arc::new(Nobody));
    let t0 = Instant::now();
    let mut places: Vec<Place> = (0..30).map(|_| Place::new()).collect();
    let mut admitted_at = Vec::new();
    // Every caller polls every 100 ms of virtual time for four minutes.
    for step in 0..2_400u64 {
        let now = t0 + Duration::from_millis(step * 100);
        for place in &mut places {
            if admitted_at.len() == 30 {
                break;
            }
            if place.id().is_none() && step > 0 {
                continue;
            }
            if let Admit::Ready(_) = limiter.poll_admit(now, place, &ask, &waker) {
                admitted_at.push(now - t0);
            }
        }
    }
    // One every 6 s: the last at 174 s.
    assert_eq!(admitted_at.len(), 30);
    let last = admitted_at[29];
    assert!(
        (Duration::from_secs(170)..Duration::from_secs(180)).contains(&last),
        "{last:?}"
    );
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<_> = text.lines().filter(|l| l.contains("WARN")).collect();
    // Callers admitted after 30 s or more of waiting: from 36 s to 174 s, said at most
    // once a minute: at 36, 96 and 156 s.
    assert_eq!(warns.len(), 3, "{text}");
    assert!(warns.iter().all(|w| w.contains("waited long")), "{text}");
    assert!(
        warns[1].contains("others_since_last_warning=9"),
        "{}",
        warns[1]
    );
    let infos = text
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("callers wait for the shared budget"))
        .count();
    // Summed up every 10 s or more while they queue: about 17 in three minutes, not one
    // per caller or per poll.
    assert!((8..=18).contains(&infos), "{infos}: {text}");
}
