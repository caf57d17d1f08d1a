//! Waiting in the shared limiter's line on a thread: poll, park until woken or told,
//! poll again. What to wait for is the limiter's to say; this only parks.

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use mistral_core::limiter::{Admit, Place};
use mistral_core::{Ask, Grant, Limiter};

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Leaves the line when dropped (the answer came, or the thread unwinds).
struct Leave<'a> {
    limiter: &'a dyn Limiter,
    place: Place,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.limiter.leave(&mut self.place);
    }
}

/// The limiter's answer to `ask`, waiting in its line on this thread as long as it says:
/// what the client does before every attempt, for a program that drives its own calls.
///
/// ```
/// use std::time::Duration;
/// use mistral_blocking::Priority;
/// use mistral_blocking::stores::{Ask, Grant, LimiterConfig, Limits, LocalLimiter, admit};
///
/// let limiter = LocalLimiter::with_config(LimiterConfig {
///     default: Some(Limits::requests(100, Duration::from_secs(1))),
///     ..LimiterConfig::default()
/// });
/// let ask = Ask {
///     model: Some("mistral-small-latest".into()),
///     tokens: 1,
///     size: Default::default(),
///     attempt: 1,
///     within: None,
///     priority: Priority::Default,
/// };
/// assert!(matches!(admit(&limiter, &ask), Grant::Go { .. }));
/// ```
pub fn admit(limiter: &dyn Limiter, ask: &Ask) -> Grant {
    admit_in_line(limiter, ask).0
}

/// [`admit`], and whether the limiter made the caller wait for its answer (the first
/// poll was not its answer): what the client's statistics count as queued.
pub(crate) fn admit_in_line(limiter: &dyn Limiter, ask: &Ask) -> (Grant, bool) {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut held = Leave {
        limiter,
        place: Place::new(),
    };
    let mut waited = false;
    loop {
        match limiter.poll_admit(Instant::now(), &mut held.place, ask, &waker) {
            Admit::Ready(grant) => return (grant, waited),
            Admit::Pending { until } => {
                waited = true;
                let left = until.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    // Woken early (its turn may have come) or spuriously: poll again.
                    thread::park_timeout(left);
                }
            }
        }
    }
}
