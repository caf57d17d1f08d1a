//! One transaction of the file store, on bytes: what the driver read from the locked
//! state file in, what it must write back out.
//!
//! The driver locks the file (`flock`, exclusive), reads it whole, reads the wall clock,
//! calls [`SharedStore::file_transaction`], writes the bytes it gets back from offset 0
//! (truncating a longer file), unlocks. It never holds the lock across a request or a
//! sleep; while the lock is held by another process it retries as [`lock_pause`] says,
//! for at most [`LOCK_TIMEOUT`], then admits in-process ([`SharedStore::failed`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{IDLE, SharedStore, StoreOps, codec};
use crate::budget::BudgetState;
use crate::op::AdmitAnswer;

/// Longest wait for the file's lock before one operation gives up and is admitted
/// in-process (a holder stopped in a debugger must not stall every process).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do before the `tries`-th new attempt at a lock another process holds (from
/// 1): `None` to yield the thread and try at once (holders keep it for tens of
/// microseconds), then naps that grow from 114 µs to about 1 ms.
pub fn lock_pause(tries: u32) -> Option<Duration> {
    (tries >= 64).then(|| Duration::from_micros(50 + u64::from(tries.min(1000))))
}

/// What a transaction gives back: an answer per operation and the file's new bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// One answer per operation, in their order.
    pub answers: Vec<AdmitAnswer>,
    /// The state file's new content (write it from offset 0, then truncate to its
    /// length).
    pub bytes: Vec<u8>,
}

impl SharedStore {
    /// One transaction on the state file at `path` (named in logs), whose locked content
    /// is `bytes`, at `now` (the caller's clock, for the stand-in) and `now_us` (the wall
    /// clock in microseconds since the Unix epoch, read under the lock, so every process
    /// of the host orders its operations by it): `ops` run in their order.
    ///
    /// A file that does not decode ([`codec`]: corrupt, truncated, foreign, an older
    /// version) is logged and restarts from what this process knows. With `rejoin` (the
    /// driver reopened a file that was deleted or replaced), after an outage, or after
    /// such a reset, what this process knew of each budget it runs an operation on is
    /// merged in ([`SharedStore::starting_state`]), so no capacity already given is
    /// given again. Budgets idle for [`IDLE`] are dropped; the stand-in notes every state
    /// the file holds.
    pub fn file_transaction(
        &self,
        now: Instant,
        now_us: u64,
        path: &Path,
        bytes: &[u8],
        rejoin: bool,
        ops: &[StoreOps],
    ) -> Written {
        let mut lost = rejoin;
        let mut states = codec::decode(bytes).unwrap_or_else(|error| {
            tracing::warn!(
                path = %path.display(),
                %error,
                "the limiter's state file is unreadable; resetting it to the budgets this \
                 process last saw, at a cautious share"
            );
            lost = true;
            HashMap::new()
        });
        let answers = ops
            .iter()
            .map(|op| {
                let stored = states.remove(&op.model);
                let mut state = self.starting_state(now, now_us, &op.model, stored, lost);
                let answer = op.apply(now_us, &mut state);
                self.up(now, &op.model, &state);
                states.insert(op.model.clone(), state);
                answer
            })
            .collect();
        let idle_us = u64::try_from(IDLE.as_micros()).unwrap_or(u64::MAX);
        states.retain(|_, s: &mut BudgetState| {
            s.seen_us
                .max(s.req_tat_us)
                .max(s.tok_tat_us)
                .max(s.pause_until_us)
                .max(s.block_until_us)
                .saturating_add(idle_us)
                > now_us
        });
        // Every budget of the file as it is now: what this process restores the file
        // from if it is lost, and what its stand-in starts from.
        self.note(now, &states);
        Written {
            answers,
            bytes: codec::encode(&states),
        }
    }
}
