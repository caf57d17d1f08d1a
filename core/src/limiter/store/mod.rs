//! What the shared limiter's stores compute, for the drivers that do their I/O: the names
//! of a budget's file and Redis keys, the policy while a store is down ([`Fallback`]),
//! one state-file transaction on bytes ([`file`](mod@file)), and the Redis store's connection
//! policy and join script ([`redis`]).
//!
//! A store is one atomic read-modify-write of a budget's state per reservation and per
//! report: a locked file, or one Redis script. The arithmetic is [`super::budget`]'s, the
//! file's format [`super::codec`], the script [`super::lua`]. Each client does the I/O in
//! its own model: `mistral_blocking::stores` (a locked file, a synchronous Redis
//! connection) and `mistral_async::stores` (the file off the runtime's workers, a
//! multiplexed Redis connection). [`SharedStore`] is what both hold: the configured
//! limits, the stand-in of a store that fails, and the answers a store's replies become.
//!
//! | store | shared by | clock | when the store fails |
//! |---|---|---|---|
//! | `LocalLimiter` (default) | threads and tasks of a process | the caller's `now` | — |
//! | file | processes of one host | the wall clock (a step is absorbed) | a local limiter at a quarter share |
//! | Redis | hosts | Redis `TIME`, one for the fleet | a local limiter at a quarter share, reconnecting |
//!
//! A store that fails never fails open: the calls it would have paced are paced by an
//! in-process limiter that keeps what the store had taught it (the limits) at a quarter
//! of the share ([`DEGRADED_SHARE_PPM`]), so four processes falling back at once stay
//! under the limit; a warning is logged once per outage.

pub mod fallback;
pub mod file;
pub mod redis;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::action::{Ask, Grant, Report};
use crate::key::ApiKey;
use crate::limiter::budget::{BudgetState, Decision, ReportOp, Reserve, Seed};
use crate::limiter::local::{LimiterConfig, decision_to_grant};
use crate::limiter::lua;
use crate::limiter::spec::BudgetId;

pub use fallback::Fallback;

/// The share of its limits a store's local stand-in takes while the store is unreachable,
/// in millionths: a quarter.
pub const DEGRADED_SHARE_PPM: u64 = 250_000;

/// How long a budget may sit unused in a store before it is dropped: a day (from the
/// state file at the next write, from Redis by the hash's expiry).
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
/// first 16 hex digits of `sha256(`[`BudgetId::preimage`]`)`. Never equal to a key's
/// own [`store_id`] (the preimages differ), so an id cannot name another key's budget.
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

/// The prefix of the Redis keys of the budget with store id `id`:
/// `mistral-limiter:{<id>}:` (the braces keep a budget's keys in one cluster slot);
/// a model's hash is the prefix and the model id.
pub fn redis_key_prefix(id: &str) -> String {
    format!("mistral-limiter:{{{id}}}:")
}

/// What a driver's shared store holds besides its I/O: the configured limits, the stand-in
/// for outages ([`Fallback`]), and how the store's answers become grants. Both clients'
/// file and Redis stores wrap one.
#[derive(Debug)]
pub struct SharedStore {
    config: LimiterConfig,
    fallback: Fallback,
    ttl_secs: u64,
}

impl SharedStore {
    /// The state of a store named `kind` in logs (`"file"`, `"redis"`) with `config`'s
    /// limits, falling back at [`DEGRADED_SHARE_PPM`].
    pub fn new(kind: &'static str, config: LimiterConfig) -> Self {
        Self {
            fallback: Fallback::new(kind, config.clone(), DEGRADED_SHARE_PPM),
            config,
            ttl_secs: IDLE.as_secs(),
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

    /// `true` while the store is unreachable and calls are paced in-process.
    pub fn is_down(&self) -> bool {
        self.fallback.is_down()
    }

    /// What a budget the store does not hold yet is made from: `model`'s configured
    /// limits.
    pub fn seed(&self, model: &str) -> Seed {
        Seed::from(self.config.limits_for(model))
    }

    /// The Redis script's arguments for a reservation on `model` (see
    /// [`lua::reserve_args`]; `now_override` replaces Redis `TIME`, for tests).
    pub fn reserve_args(
        &self,
        now_override: Option<u64>,
        model: &str,
        ask: &Reserve,
    ) -> Vec<String> {
        lua::reserve_args(now_override, self.ttl_secs, self.seed(model), ask)
    }

    /// The Redis script's arguments for a report on `model` (see [`lua::report_args`]).
    pub fn report_args(
        &self,
        now_override: Option<u64>,
        model: &str,
        op: &ReportOp,
    ) -> Vec<String> {
        lua::report_args(now_override, self.ttl_secs, self.seed(model), op)
    }

    /// The join script's arguments for bringing `state` back into a store (see
    /// [`redis::JOIN_SCRIPT`]).
    pub fn join_args(&self, state: &BudgetState) -> Vec<String> {
        redis::join_args(self.ttl_secs, self.fallback.share_cap_ppm(), state)
    }

    /// What this process should bring into a store that may have lost its budgets, at
    /// `now` (see [`Fallback::rejoin_states`]).
    pub fn rejoin_states(
        &self,
        now: Instant,
        store_now_us: Option<u64>,
    ) -> Vec<(String, BudgetState)> {
        self.fallback.rejoin_states(now, store_now_us)
    }

    /// The store answered a reservation on `model` at `now`: the grant, and the store is
    /// up.
    pub fn reserved(
        &self,
        now: Instant,
        model: &str,
        decision: Decision,
        state: &BudgetState,
    ) -> Grant {
        self.fallback.up(now, model, state);
        decision_to_grant(decision, model)
    }

    /// The store answered a report on `model` at `now`.
    pub fn reported(&self, now: Instant, model: &str, state: &BudgetState) {
        self.fallback.up(now, model, state);
    }

    /// A reservation the store could not make (`error`): the stand-in's grant.
    pub fn reserve_failed(&self, now: Instant, error: &dyn fmt::Display, ask: &Ask) -> Grant {
        self.fallback.reserve(error, now, ask)
    }

    /// A report the store could not take (`error`): the stand-in learns it.
    pub fn report_failed(&self, now: Instant, error: &dyn fmt::Display, report: &Report) {
        self.fallback.report(error, now, report);
    }

    /// The Redis script's reply to a reservation on `model`, at `now`: the grant (a reply
    /// that is not a reservation's, or an error, goes to the stand-in).
    pub fn script_reserved(
        &self,
        now: Instant,
        ask: &Ask,
        model: &str,
        reply: Result<lua::ScriptReply, &dyn fmt::Display>,
    ) -> Grant {
        match reply {
            Ok(lua::ScriptReply {
                decision: Some(decision),
                state,
            }) => self.reserved(now, model, decision, &state),
            Ok(_) => self.reserve_failed(now, &"a reservation without a decision", ask),
            Err(error) => self.reserve_failed(now, error, ask),
        }
    }

    /// The Redis script's reply to a report on `model`, at `now`.
    pub fn script_reported(
        &self,
        now: Instant,
        report: &Report,
        model: &str,
        reply: Result<lua::ScriptReply, &dyn fmt::Display>,
    ) {
        match reply {
            Ok(reply) => self.reported(now, model, &reply.state),
            Err(error) => self.report_failed(now, error, report),
        }
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
        assert_eq!(redis_key_prefix("ab"), "mistral-limiter:{ab}:");
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
