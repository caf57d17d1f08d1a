//! What the shared limiter's stores decide, for the drivers that do their I/O: the names
//! of a budget's file and Redis key, one state-file transaction on bytes
//! ([`file`](mod@file)), one Redis compare-and-set round on bytes ([`redis`]), and the
//! policy while a store is down ([`Fallback`]).
//!
//! Every store runs the same arithmetic, this crate's Rust, on the same encoding
//! ([`codec`]): the file store under the file's lock, the Redis store as a
//! read-compute-compare-and-set round on one key per budget (the script that sets the
//! key is seven lines: [`redis::CAS_SCRIPT`]). A store operation is a [`StoreOps`]: the
//! reports to learn from and the callers to admit, for one budget.
//!
//! | store | shared by | clock | when the store fails |
//! |---|---|---|---|
//! | `LocalLimiter` (default) | threads and tasks of a process | the caller's `now` | — |
//! | file | processes of one host | the wall clock (a step is absorbed) | in-process at a quarter share |
//! | Redis (one server or a Redis Cluster) | hosts | Redis `TIME`, one for the fleet | in-process at a quarter share, reconnecting |
//!
//! A store that fails never fails open: the calls it would have admitted are admitted
//! by an in-process stand-in that starts from the last state the store returned (its
//! level kept: what the store admitted is not admitted again) at a quarter of the share
//! ([`DEGRADED_SHARE`]) — of the pace and of the burst; what the server says remains
//! lowers it to a quarter of that room, and raises it only as far as the room past the
//! other stand-ins' cells ([`BudgetState::with_cells_at_share`]) — so four processes
//! falling back at once stay under the limit; a warning is logged once per outage. When
//! the store answers again, what the stand-in admitted meanwhile is merged into the
//! store's state first, and the budget goes on at a quarter share, grown back within a
//! few seconds (other processes may still admit on their stand-ins until they reach the
//! store): no burst when it heals. A store that lost a budget (Redis restarted empty, a
//! state file deleted) is given back what this process knew of it, by the declared
//! merge rules ([`BudgetState::joined`]), at that quarter share too.

pub mod codec;
pub mod fallback;
pub mod file;
pub mod redis;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mistral_core::ApiKey;
use mistral_core::limiter::{BudgetId, LimiterConfig};
use sha2::{Digest, Sha256};

pub use fallback::Fallback;

use crate::budget::BudgetState;
use crate::local::Budgets;
use crate::op::{AdmitAnswer, AdmitOp, ReportOp};

/// The share of its limits a store's stand-in takes while the store is unreachable: a
/// quarter.
pub const DEGRADED_SHARE: f64 = 0.25;

/// How long a budget may sit unused in a store before it is dropped: a day (from the
/// state file at the next write, from Redis by the key's expiry).
pub const IDLE: Duration = Duration::from_secs(24 * 3600);

/// The id of the budgets of `key` at `base_url`: the first 16 hex digits of
/// `sha256(base_url + "\n" + key)`. Names the state file and the Redis keys; the key
/// itself is never stored.
pub fn store_id(base_url: &str, key: &ApiKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(base_url.trim_end_matches('/').as_bytes());
    hasher.update(b"\n");
    hasher.update(key.expose().as_bytes());
    hex16(&hasher.finalize())
}

fn hex16(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of the budget `budget` names at `base_url`, shared by every key given it: the
/// first 16 hex digits of `sha256(`[`BudgetId::preimage`]`)`. Never equal to a key's own
/// [`store_id`] (the preimages differ), so an id cannot name another key's budget.
pub fn budget_store_id(base_url: &str, budget: &BudgetId) -> String {
    hex16(&Sha256::digest(budget.preimage(base_url).as_bytes()))
}

/// The store id of `budget` when named, else of `key`'s own budget ([`store_id`]).
pub fn scope_store_id(base_url: &str, key: &ApiKey, budget: Option<&BudgetId>) -> String {
    match budget {
        Some(budget) => budget_store_id(base_url, budget),
        None => store_id(base_url, key),
    }
}

/// The name of the state file of the budget with store id `id`, `limiter-<id>.state`.
pub fn state_file_name(id: &str) -> String {
    format!("limiter-{id}.state")
}

/// Where the state file of the budget with store id `id` is, for
/// `LimiterSpec::File(spec)`: `None` → [`default_state_dir`]; a path that is a directory
/// (`is_dir`, which the driver finds out) or ends in `/` → [`state_file_name`] in it;
/// any other path is the file itself.
pub fn state_file_path(
    spec: Option<&Path>,
    id: &str,
    is_dir: impl FnOnce(&Path) -> bool,
) -> PathBuf {
    match spec {
        None => default_state_dir().join(state_file_name(id)),
        Some(path) if path.as_os_str().to_string_lossy().ends_with('/') || is_dir(path) => {
            path.join(state_file_name(id))
        }
        Some(path) => path.to_path_buf(),
    }
}

/// Where state files go by default: `mistral-limiter` under `$XDG_RUNTIME_DIR` (per user,
/// in memory, cleared at logout), else under `$XDG_CACHE_HOME`, else `~/.cache`, else the
/// system's temporary directory. Only absolute values of these variables count.
pub fn default_state_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = var("XDG_RUNTIME_DIR")
        .or_else(|| var("XDG_CACHE_HOME"))
        .or_else(|| var("HOME").map(|home| home.join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mistral-limiter")
}

/// The Redis key of `model`'s budget in the store with id `id`:
/// `mistral-limiter:{<id>}:<model>`. The braces are a Redis Cluster hash tag: only
/// `<id>` is hashed, so every key of a budget, whatever the model, is in one slot.
pub fn redis_key(id: &str, model: &str) -> String {
    format!("mistral-limiter:{{{id}}}:{model}")
}

/// One store operation on one budget: reports to learn from, then callers to admit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreOps {
    /// The budget.
    pub model: String,
    /// Reports, in the order they came.
    pub reports: Vec<ReportOp>,
    /// Callers to admit, after the reports.
    pub admit: Option<AdmitOp>,
}

impl StoreOps {
    /// Runs on `state` at `now_us`: the admission's answer (one that admits nobody when
    /// there is none to make).
    pub fn apply(&self, now_us: u64, state: &mut BudgetState) -> AdmitAnswer {
        self.learn(now_us, state);
        match &self.admit {
            Some(op) => state.admit(now_us, op),
            None => AdmitAnswer::waiting(0, 0),
        }
    }

    /// The reports alone, on `state` at `now_us`. Each is learned as of its answer
    /// ([`ReportOp::age_us`] before `now_us`), but never before the latest time the
    /// state has seen (a time behind it would read as the clock stepped back): a report
    /// that waited for an operation to carry it says what the level was then, not now.
    pub fn learn(&self, now_us: u64, state: &mut BudgetState) {
        for report in &self.reports {
            learn_one(now_us, state, report);
        }
    }

    /// Runs on `budgets` at `now_us`.
    pub fn run(&self, now_us: u64, budgets: &mut Budgets) -> AdmitAnswer {
        budgets.with_model(now_us, &self.model, |s| self.apply(now_us, s))
    }
}

/// One report of a store operation run at `now_us`, learned as of its answer (see
/// [`StoreOps::learn`]); one that may be newer than `now_us` ([`ReportOp::ahead_us`]) is
/// learned at `now_us` and its levels read as of the latest time it can have come.
pub fn learn_one(now_us: u64, state: &mut BudgetState, report: &ReportOp) {
    let at = if now_us >= state.seen_us {
        now_us.saturating_sub(report.age_us).max(state.seen_us)
    } else {
        now_us
    };
    if report.ahead_us == 0 {
        state.report(at, report);
        return;
    }
    // The levels are read at `now_us + ahead_us`, or at `at` if that is later (the state
    // has seen a later time).
    let read_at = now_us.saturating_add(report.ahead_us).max(at);
    let report = ReportOp {
        ahead_us: read_at - at,
        ..*report
    };
    state.report(at, &report);
}

/// What a driver's shared store holds besides its I/O: the configured limits and the
/// stand-in for outages. Both clients' file and Redis stores wrap one.
#[derive(Debug)]
pub struct SharedStore {
    config: LimiterConfig,
    fallback: Fallback,
}

impl SharedStore {
    /// The state of a store named `kind` in logs (`"file"`, `"redis"`) with `config`'s
    /// limits, falling back at [`DEGRADED_SHARE`].
    pub fn new(kind: &'static str, config: LimiterConfig) -> Self {
        Self {
            fallback: Fallback::new(kind, config.clone(), DEGRADED_SHARE),
            config,
        }
    }

    /// The configured limits.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// The stand-in.
    pub fn fallback(&self) -> &Fallback {
        &self.fallback
    }

    /// `true` while the store is unreachable and calls are admitted in-process.
    pub fn is_down(&self) -> bool {
        self.fallback.is_down()
    }

    /// A new budget for `model` at `now_us`, with its configured limits.
    pub fn fresh(&self, model: &str, now_us: u64) -> BudgetState {
        BudgetState::new(now_us, self.config.limits_for(model))
    }

    /// What `model`'s budget starts from in a store found at `stored` (its state there,
    /// if any) at `now_us`: the stored state, merged with what this process knew when
    /// the store lost it (`lost`: it held nothing, or nothing readable) or when the
    /// store comes back from an outage; else a fresh budget.
    pub fn starting_state(
        &self,
        now: Instant,
        now_us: u64,
        model: &str,
        stored: Option<BudgetState>,
        lost: bool,
    ) -> BudgetState {
        let ours = (lost || stored.is_none() || self.is_down())
            .then(|| self.fallback.rejoin_state(now, model, Some(now_us)))
            .flatten();
        let cap = self.fallback.share_cap();
        match (stored, ours) {
            (Some(theirs), Some(ours)) => {
                let merged = theirs.joined(&ours);
                if self.is_down() {
                    // Back from an outage: the other processes may still admit on stand-ins
                    // of their own, each at `cap` of the pace and of the room the server
                    // says remains, until they reach the store again (within their pause
                    // between connection attempts): this one takes no more, and grows back
                    // within a few seconds.
                    merged.rejoined(cap)
                } else {
                    merged
                }
            }
            (Some(theirs), None) => theirs,
            (None, Some(ours)) => {
                // A store that lost the budget: the others may still admit on stand-ins of
                // their own (until their next attempt to reach the store), so it restarts
                // at the stand-ins' share and grows back within a few seconds.
                ours.rejoined(cap)
            }
            (None, None) => self.fresh(model, now_us),
        }
    }

    /// The store answered for `model` at `now` with `state`: the stand-in notes it, and
    /// an outage ends.
    pub fn up(&self, now: Instant, model: &str, state: &BudgetState) {
        self.fallback.up(now, model, state);
    }

    /// The store could not run `ops` (`error`): the stand-in's answer.
    pub fn failed(
        &self,
        now: Instant,
        error: &dyn std::fmt::Display,
        ops: &StoreOps,
    ) -> AdmitAnswer {
        self.fallback.run(error, now, ops)
    }

    /// Every state of a store read at `now`: noted for the stand-in.
    pub fn note(&self, now: Instant, states: &HashMap<String, BudgetState>) {
        self.fallback.note(now, states);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hashes_that_never_hold_the_key() {
        let key = ApiKey::new("sk-secret").unwrap();
        let id = store_id("https://api.mistral.ai/", &key);
        assert_eq!(id, store_id("https://api.mistral.ai", &key));
        assert_eq!(id.len(), 16);
        assert!(!id.contains("secret"));
        let acme = BudgetId::new("acme").unwrap();
        assert_ne!(budget_store_id("https://api.mistral.ai", &acme), id);
        assert_eq!(scope_store_id("https://api.mistral.ai", &key, None), id);
        assert_eq!(state_file_name("ab"), "limiter-ab.state");
        assert_eq!(redis_key("ab", "m"), "mistral-limiter:{ab}:m");
    }

    #[test]
    fn a_file_spec_names_a_file_or_a_directory() {
        let never = |_: &Path| false;
        assert_eq!(
            state_file_path(Some(Path::new("/run/x/")), "ab", never),
            Path::new("/run/x/limiter-ab.state")
        );
        assert_eq!(
            state_file_path(Some(Path::new("/run/x")), "ab", |_| true),
            Path::new("/run/x/limiter-ab.state")
        );
        assert_eq!(
            state_file_path(Some(Path::new("/run/x/state")), "ab", never),
            Path::new("/run/x/state")
        );
        assert!(state_file_path(None, "ab", never).ends_with("mistral-limiter/limiter-ab.state"));
    }
}
