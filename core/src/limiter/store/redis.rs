//! The Redis store's decisions, for the drivers that hold its connection: which URLs are
//! taken, when to try a new connection while Redis is down, when a failed script is run
//! again, and the join script that brings a process's budgets back into a Redis that lost
//! them (with its arguments).
//!
//! Each reservation or report is one `EVALSHA` of [`crate::limiter::lua::SCRIPT`] on the
//! budget's hash (arguments from [`super::SharedStore::reserve_args`] and
//! [`super::SharedStore::report_args`]). A driver keeps one connection (or one
//! multiplexed connection shared by its tasks); on a new connection it first runs
//! [`JOIN_SCRIPT`] for every budget of [`super::SharedStore::rejoin_states`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::limiter::budget::{BudgetState, MAX_EXACT};
use crate::limiter::spec::{RedisOptions, redact_url};

/// Default connect, read and write timeout of one Redis operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default pause between connection attempts while Redis is unreachable.
pub const DEFAULT_RECONNECT_AFTER: Duration = Duration::from_secs(3);
/// How long a budget's hash outlives its last use (its expiry, renewed by every script).
pub const TTL: Duration = super::IDLE;

/// A Redis URL checked for the limiter: what to connect to, how to show it, and the CA
/// file a `rediss://` connection checks the server against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// The URL to connect to (without `ca=`).
    pub url: String,
    /// The URL without its password, for logs and errors.
    pub shown: String,
    /// The PEM file of the certificate authorities to trust (`?ca=<path>`), when named.
    pub ca_file: Option<PathBuf>,
    /// `true` for `rediss://` (TLS).
    pub tls: bool,
}

impl RedisTarget {
    /// Checks `redis_url` (`redis://[:password@]host[:port][/db]`, `rediss://…`,
    /// `redis+unix:///path`, with an optional `?ca=<path>`): certificate checks cannot be
    /// turned off, so `#insecure` is an [`Error::Config`]; so is a malformed `ca=`. The
    /// rest of the URL is checked by the Redis client when the driver opens it.
    pub fn parse(redis_url: &str) -> Result<Self, Error> {
        let options = RedisOptions::parse(redis_url)?;
        let shown = redact_url(&options.url);
        if options.url.to_ascii_lowercase().ends_with("#insecure") {
            return Err(Error::Config(format!(
                "the limiter's Redis URL ({shown}) asks to skip the certificate check \
                 (`#insecure`), which this client does not do: name the server's CA \
                 with `?ca=/path/to/ca.pem` instead"
            )));
        }
        let tls = options
            .url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("rediss:");
        Ok(Self {
            url: options.url,
            shown,
            ca_file: options.ca_file,
            tls,
        })
    }

    /// The error of a URL the Redis client refused (`error`, which never holds the
    /// password the URL may have).
    pub fn bad_url(&self, error: &dyn std::fmt::Display) -> Error {
        Error::Config(format!(
            "bad Redis URL for the limiter ({}): {error}",
            self.shown
        ))
    }

    /// The error of a CA file that cannot be read.
    pub fn bad_ca_file(&self, error: &dyn std::fmt::Display) -> Error {
        let path = self.ca_file.as_deref().unwrap_or(std::path::Path::new(""));
        Error::Config(format!(
            "cannot read the limiter's Redis CA file {}: {error}",
            path.display()
        ))
    }
}

/// When a driver may try a new Redis connection: at once, then, after a failed attempt,
/// not before a pause has passed (so a Redis that is down costs one connect timeout per
/// pause, not one per call).
#[derive(Debug, Clone)]
pub struct Reconnect {
    pause: Duration,
    next_attempt: Option<Instant>,
}

impl Reconnect {
    /// A gate with `pause` between failed attempts.
    pub fn new(pause: Duration) -> Self {
        Self {
            pause,
            next_attempt: None,
        }
    }

    /// Whether a connection may be tried at `now`.
    pub fn may_try(&self, now: Instant) -> bool {
        self.next_attempt.is_none_or(|t| now >= t)
    }

    /// A connection attempt failed at `now`.
    pub fn failed(&mut self, now: Instant) {
        self.next_attempt = Some(now.checked_add(self.pause).unwrap_or(now));
    }

    /// A connection was made.
    pub fn connected(&mut self) {
        self.next_attempt = None;
    }
}

/// Whether a script that failed should be run again at once on a new connection: only
/// when it went out on a connection made earlier (`reused`) that turned out to be dropped
/// (Redis restarted, an idle connection cut): once, since a new connection that fails is
/// an outage.
pub fn run_again_on_new_connection(reused: bool, dropped: bool) -> bool {
    reused && dropped
}

/// Brings one process's knowledge of a budget into Redis: [`BudgetState::rejoined`] in
/// Lua. A hash that is missing or has never had an answer takes the state as given, its
/// share capped; one that exists keeps its own, with the later of each booked time and
/// its share raised by the cap (at most to ours). `KEYS[1]` the hash; `ARGV` from
/// [`join_args`]: the expiry in seconds (0: none), the cap (ppm), then the fields in
/// [`BudgetState::FIELDS`] order. Text with the field names filled in: [`join_script`].
pub const JOIN_SCRIPT: &str = r"
local FIELDS = { {FIELDS} }
local LATER = {
  req_tat_us = true, tok_tat_us = true, retry_tat_us = true, pause_until_us = true,
  event_us = true, seen_us = true, epoch = true, seq = true,
}
local cap = tonumber(ARGV[2])
local source = redis.call('HGET', KEYS[1], 'source')
local ours = {}
for i, f in ipairs(FIELDS) do
  ours[f] = tonumber(ARGV[i + 2])
end
if not source or tonumber(source) == 0 then
  for _, f in ipairs(FIELDS) do
    local v = ours[f]
    if f == 'share_ppm' and v > cap then v = cap end
    if LATER[f] then
      local theirs = tonumber(redis.call('HGET', KEYS[1], f) or '0') or 0
      if theirs > v then v = theirs end
    end
    redis.call('HSET', KEYS[1], f, string.format('%d', v))
  end
else
  for _, f in ipairs(FIELDS) do
    local theirs = tonumber(redis.call('HGET', KEYS[1], f) or '0') or 0
    if LATER[f] and ours[f] > theirs then
      redis.call('HSET', KEYS[1], f, string.format('%d', ours[f]))
    end
  end
  local share = tonumber(redis.call('HGET', KEYS[1], 'share_ppm') or '0') or 0
  local most = ours['share_ppm']
  if share > most then most = share end
  local raised = share + cap
  if raised > most then raised = most end
  redis.call('HSET', KEYS[1], 'share_ppm', string.format('%d', raised))
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
";

/// [`JOIN_SCRIPT`] with the field names of [`BudgetState::FIELDS`]: the text to load.
pub fn join_script() -> String {
    let names: Vec<String> = BudgetState::FIELDS
        .iter()
        .map(|f| format!("'{f}'"))
        .collect();
    JOIN_SCRIPT.replace("{FIELDS}", &names.join(", "))
}

/// `ARGV` of [`JOIN_SCRIPT`]: the expiry (`ttl_secs`, 0: none), the share cap, then
/// `state`'s fields, as decimal integers of at most [`MAX_EXACT`].
pub fn join_args(ttl_secs: u64, share_cap_ppm: u64, state: &BudgetState) -> Vec<String> {
    [ttl_secs, share_cap_ppm]
        .into_iter()
        .chain(state.to_fields())
        .map(|v| v.min(MAX_EXACT).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    // A fixed starting instant; the tests only add to it.
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_passwords() {
        let t = RedisTarget::parse("rediss://:pw@h:6380/0?ca=/etc/ca.pem").unwrap();
        assert!(t.tls);
        assert_eq!(t.url, "rediss://:pw@h:6380/0");
        assert!(!t.shown.contains("pw"));
        assert_eq!(t.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!RedisTarget::parse("redis://h").unwrap().tls);
        match RedisTarget::parse("rediss://:pw@h/#insecure") {
            Err(Error::Config(m)) => assert!(m.contains("insecure") && !m.contains("pw"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_connection_waits_out_the_pause() {
        let t0 = Instant::now();
        let mut gate = Reconnect::new(Duration::from_secs(3));
        assert!(gate.may_try(t0));
        gate.failed(t0);
        assert!(!gate.may_try(t0 + Duration::from_secs(2)));
        assert!(gate.may_try(t0 + Duration::from_secs(3)));
        gate.connected();
        assert!(gate.may_try(t0));
        assert!(run_again_on_new_connection(true, true));
        assert!(!run_again_on_new_connection(false, true));
        assert!(!run_again_on_new_connection(true, false));
    }

    #[test]
    fn the_join_script_lists_every_field_and_its_arguments_follow_them() {
        let script = join_script();
        for field in BudgetState::FIELDS {
            assert!(script.contains(&format!("'{field}'")), "{field}");
        }
        let args = join_args(60, 250_000, &BudgetState::new(7, None));
        assert_eq!(args.len(), 2 + BudgetState::FIELDS.len());
        assert_eq!(&args[..2], ["60", "250000"]);
    }
}
