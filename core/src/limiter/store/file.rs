//! One transaction of the file store, on bytes: what the driver read from the locked
//! state file in, what it must write back out.
//!
//! The driver locks the file (`flock`, exclusive), reads it whole, reads the wall clock,
//! calls [`SharedStore::file_transaction`], writes the bytes it gets back from offset 0
//! (truncating a longer file), unlocks. It never holds the lock across a request or a
//! sleep; while the lock is held by another process it retries as [`lock_pause`] says,
//! for at most [`LOCK_TIMEOUT`], then paces the call in-process
//! ([`SharedStore::reserve_failed`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{IDLE, SharedStore};
use crate::limiter::budget::BudgetState;
use crate::limiter::codec;
use crate::limiter::local::Budgets;

/// Longest wait for the file's lock before one operation gives up and is paced
/// in-process (a holder stopped in a debugger must not stall every process).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do before the `tries`-th new attempt at a lock another process holds (from
/// 1): `None` to yield the thread and try at once (holders keep it for tens of
/// microseconds), then naps that grow from 114 µs to about 1 ms.
pub fn lock_pause(tries: u32) -> Option<Duration> {
    (tries >= 64).then(|| Duration::from_micros(50 + u64::from(tries.min(1000))))
}

/// What a transaction gives back: the operation's value and the file's new bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<R> {
    /// What the operation returned.
    pub value: R,
    /// The state file's new content (write it from offset 0, then truncate to its
    /// length).
    pub bytes: Vec<u8>,
}

impl SharedStore {
    /// One transaction on the state file at `path` (named in logs), whose locked content
    /// is `bytes`, at `now` (the caller's clock, for the stand-in) and `now_us` (the wall
    /// clock in microseconds since the Unix epoch, read under the lock, so every process
    /// of the host orders its operations by it).
    ///
    /// A file that does not decode ([`codec`]: corrupt, truncated, foreign) is logged
    /// and restarts from what this process knows. With `rejoin` (the driver reopened a
    /// file that was deleted or replaced), after an outage, or after such a reset, every
    /// budget this process knows (and what its stand-in booked meanwhile) is merged in
    /// ([`BudgetState::rejoined`]), so no slot already given out is given out again.
    /// Budgets idle for [`IDLE`] are dropped; the stand-in notes every state the file
    /// holds.
    pub fn file_transaction<R>(
        &self,
        now: Instant,
        now_us: u64,
        path: &Path,
        bytes: &[u8],
        rejoin: bool,
        op: impl FnOnce(u64, &mut Budgets) -> R,
    ) -> Written<R> {
        let mut rejoin = rejoin;
        let mut states = codec::decode(bytes).unwrap_or_else(|error| {
            tracing::warn!(
                path = %path.display(),
                %error,
                "the limiter's state file is unreadable; resetting it to the budgets this \
                 process last saw, at a cautious share"
            );
            rejoin = true;
            HashMap::new()
        });
        let fallback = self.fallback();
        if rejoin || fallback.is_down() {
            let cap = fallback.share_cap_ppm();
            for (model, ours) in fallback.rejoin_states(now, Some(now_us)) {
                let merged = BudgetState::rejoined(states.get(&model), &ours, cap);
                states.insert(model, merged);
            }
        }
        let mut budgets = Budgets::from_states(self.config().clone(), states);
        let value = op(now_us, &mut budgets);
        let idle_us = u64::try_from(IDLE.as_micros()).unwrap_or(u64::MAX);
        budgets.forget_idle(now_us, idle_us);
        // Every budget of the file as it is now: what this process restores the file
        // from if it is lost, and what its stand-in starts from.
        fallback.note(now, budgets.states());
        Written {
            value,
            bytes: codec::encode(budgets.states()),
        }
    }
}

#[cfg(test)]
mod tests {
    // A fixed starting instant; the tests only add to it.
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::limiter::budget::{Limits, Reserve};
    use crate::limiter::local::LimiterConfig;

    fn store() -> SharedStore {
        let config = LimiterConfig {
            default: Some(Limits::requests(10, Duration::from_secs(1))),
            ..LimiterConfig::default()
        };
        SharedStore::new("file", config)
    }

    #[test]
    fn a_transaction_books_in_the_bytes_and_a_corrupt_file_restarts_from_what_we_knew() {
        let store = store();
        let now = Instant::now();
        let path = Path::new("/x/state");
        let mut bytes = Vec::new();
        for i in 0..5u64 {
            let w = store.file_transaction(now, 1_000_000 + i, path, &bytes, false, |t, b| {
                b.decide(t, "m", &Reserve::new(1))
            });
            bytes = w.bytes;
        }
        let booked = codec::decode(&bytes).unwrap()["m"].req_tat_us;
        assert!(booked >= 1_000_000 + 400_000, "{booked}");
        // Garbage: the budgets this process knew come back, not a fresh budget.
        let w = store.file_transaction(
            now,
            1_000_010,
            path,
            b"garbage!garbage!garbage",
            false,
            |_, b| b.get("m").copied(),
        );
        let state = w.value.unwrap();
        assert!(state.req_tat_us >= booked, "{state:?}");
        assert!(state.share_ppm <= super::super::DEGRADED_SHARE_PPM);
    }

    #[test]
    fn idle_budgets_are_dropped_at_the_next_write() {
        let store = store();
        let now = Instant::now();
        let path = Path::new("/x/state");
        let w = store.file_transaction(now, 1_000_000, path, &[], false, |t, b| {
            b.decide(t, "old", &Reserve::new(1))
        });
        let day = u64::try_from(IDLE.as_micros()).unwrap();
        let w = store.file_transaction(now, 3_000_000 + day, path, &w.bytes, false, |t, b| {
            b.decide(t, "new", &Reserve::new(1))
        });
        let states = codec::decode(&w.bytes).unwrap();
        assert!(
            states.contains_key("new") && !states.contains_key("old"),
            "{states:?}"
        );
    }

    #[test]
    fn the_lock_is_retried_at_once_then_with_growing_naps() {
        assert_eq!(lock_pause(1), None);
        assert_eq!(lock_pause(63), None);
        assert_eq!(lock_pause(64), Some(Duration::from_micros(114)));
        assert_eq!(lock_pause(5_000), Some(Duration::from_micros(1_050)));
    }
}
