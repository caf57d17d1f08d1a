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

#[test]
fn a_call_that_will_wait_past_30_s_says_so_at_warn() {
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
            let waiting = tokio::time::timeout(Duration::from_secs(2), client.chat(request()));
            assert!(
                waiting.await.is_err(),
                "the second call waits for the window"
            );
        });
    });
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<_> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("has been waiting long"))
        .collect();
    assert_eq!(warns.len(), 1, "{text}");
    assert!(warns[0].contains(MODEL), "{}", warns[0]);
    assert!(!text.contains(emu.key()));
}
