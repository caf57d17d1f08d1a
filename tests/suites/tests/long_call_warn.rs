//! The WARN of a call that waits long, captured in a process of its own: a scoped
//! `tracing` subscriber in a binary whose other tests log on other threads can miss
//! events (callsite interest is cached process-wide), so this test has its binary to
//! itself.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod calls;

use calls::*;

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

/// A call that will wait a minute for the shared budget: within a second the budget's
/// line is summed up at INFO, once (how many wait in which class, what binds, the pace,
/// when the next goes), and nothing is said at WARN: nothing has been waited yet.
#[test]
fn callers_waiting_for_the_budget_are_summed_up_at_info_and_only_real_waits_warn() {
    let emu = one_a_minute();
    let client = asynchronous(&emu);
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            client.chat(request()).await.unwrap();
            let waiting = tokio::time::timeout(Duration::from_secs(2), async {
                // Three callers queue behind the spent minute.
                let (a, b, c) = tokio::join!(
                    client.chat(request()),
                    client.chat(request()),
                    client.chat(request())
                );
                (a.is_ok(), b.is_ok(), c.is_ok())
            });
            assert!(waiting.await.is_err(), "the calls wait for the window");
        });
    });
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let summaries: Vec<_> = text
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("callers wait for the shared budget"))
        .collect();
    assert_eq!(summaries.len(), 1, "{text}");
    let line = summaries[0];
    assert!(line.contains(MODEL), "{line}");
    assert!(line.contains("binding=\"requests\""), "{line}");
    assert!(line.contains("default=3"), "{line}");
    let warns = text.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warns, 0, "{text}");
    assert!(!text.contains(emu.key()));
}
