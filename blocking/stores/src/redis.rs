//! The Redis store: every budget in a Redis hash, updated by one Lua script that reads
//! Redis `TIME`, so a fleet of hosts shares one budget and one clock.

use std::fmt;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mistral_core::limiter::budget::Seed;
use mistral_core::limiter::lua::{self, ScriptReply};
use mistral_core::limiter::spec::{BudgetId, RedisOptions, redact_url};
use mistral_core::limiter::{
    BudgetState, Decision, LimiterConfig, ReportOp, Reserve, decision_to_grant,
};
use mistral_core::{ApiKey, Ask, Error, Grant, Limiter, Report};

use crate::DEGRADED_SHARE_PPM;
use crate::fallback::Fallback;

/// A limiter whose budgets live in Redis, shared by every process on every host that
/// uses the same Redis, base URL and key (or budget id, [`RedisLimiter::for_budget`]).
///
/// One hash per budget, `mistral-limiter:{<store id>}:<model>` (see
/// [`crate::scope_store_id`]; neither the key nor the id is stored), holding the fields of
/// [`BudgetState`]. Each [`Limiter::reserve`] or [`Limiter::report`] is one `EVALSHA` of
/// [`mistral_core::limiter::lua::SCRIPT`] (loaded on `NOSCRIPT`): atomic, one round
/// trip, the time read from Redis `TIME` so hosts with skewed clocks still share one
/// schedule. The script computes exactly what [`BudgetState::reserve`] and
/// [`BudgetState::apply`] compute. Hashes expire after a day unused.
///
/// The connection is made lazily, with short timeouts (500 ms by default). When Redis
/// cannot be reached the limiter never fails open: calls are paced in-process at a
/// quarter of the limits Redis last showed (or the configured ones), a warning is logged
/// once per outage, and the connection is retried every few seconds (3 s by default);
/// when it is back, the shared budgets take over again.
///
/// The stand-in starts from the last state Redis returned (what Redis had booked ahead
/// stays booked), and every new connection (Redis back, or restarted empty) first brings
/// what this process knows into Redis: a budget Redis lost is restored from it at a
/// quarter share, and each process that comes back hands back its quarter (up to the
/// share Redis last had); one Redis kept takes the later of each booked time. So neither an outage nor an empty
/// Redis lets a burst through while other processes still pace on their stand-ins.
pub struct RedisLimiter {
    client: redis::Client,
    script: redis::Script,
    join: redis::Script,
    url: String,
    prefix: String,
    config: LimiterConfig,
    timeout: Duration,
    reconnect_after: Duration,
    ttl_secs: u64,
    conn: Mutex<Conn>,
    fallback: Fallback,
}

#[derive(Default)]
struct Conn {
    conn: Option<redis::Connection>,
    /// No new connection is tried before this (after a failed one).
    next_attempt: Option<Instant>,
}

/// Why one operation did not reach the script.
enum OpError {
    /// A connection was refused recently; not retried yet.
    Waiting,
    Redis(redis::RedisError),
    Reply(lua::ReplyError),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Waiting => f.write_str("waiting to reconnect"),
            OpError::Redis(e) => write!(f, "{e}"),
            OpError::Reply(e) => write!(f, "{e}"),
        }
    }
}

impl From<OpError> for io::Error {
    fn from(e: OpError) -> Self {
        io::Error::other(e.to_string())
    }
}

/// [`JOIN_SCRIPT`] with the field names of [`BudgetState::FIELDS`].
fn join_script() -> String {
    let names: Vec<String> = BudgetState::FIELDS
        .iter()
        .map(|f| format!("'{f}'"))
        .collect();
    JOIN_SCRIPT.replace("{FIELDS}", &names.join(", "))
}

impl RedisLimiter {
    /// Default connect, read and write timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default pause between connection attempts while Redis is unreachable.
    pub const DEFAULT_RECONNECT_AFTER: Duration = Duration::from_secs(3);
    /// How long a budget's hash outlives its last use.
    pub const TTL: Duration = Duration::from_secs(86_400);

    /// The limiter of `key` at `base_url`, in the Redis at `redis_url`
    /// (`redis://[:password@]host[:port][/db]`, `rediss://…`, `redis+unix:///path`).
    /// Fails only on a malformed URL: the connection is made at the first call, and
    /// while it cannot be, calls are paced in-process.
    pub fn new(
        redis_url: &str,
        base_url: &str,
        key: &ApiKey,
        config: LimiterConfig,
    ) -> Result<Self, Error> {
        Self::for_budget(redis_url, base_url, key, None, config)
    }

    /// The limiter of the budget `budget` names at `base_url` (shared by every key given
    /// it), or with `None` of `key`'s own, in the Redis at `redis_url` (see
    /// [`RedisLimiter::new`]; its keys are named after [`crate::scope_store_id`]).
    ///
    /// `rediss://` connects over TLS (rustls) and checks the server's certificate
    /// against the system's certificate authorities, or against those of the PEM file a
    /// `ca=<path>` parameter names (`rediss://cache:6380/?ca=/etc/redis/ca.pem`), as a
    /// Redis with a private CA needs; the file is read now, and a missing or malformed
    /// one is an [`Error::Config`]. Certificate checks cannot be turned off (`#insecure`
    /// is an [`Error::Config`] too).
    pub fn for_budget(
        redis_url: &str,
        base_url: &str,
        key: &ApiKey,
        budget: Option<&BudgetId>,
        config: LimiterConfig,
    ) -> Result<Self, Error> {
        let options = RedisOptions::parse(redis_url)?;
        let url = redact_url(&options.url);
        if options.url.to_ascii_lowercase().ends_with("#insecure") {
            return Err(Error::Config(format!(
                "the limiter's Redis URL ({url}) asks to skip the certificate check \
                 (`#insecure`), which this client does not do: name the server's CA \
                 with `?ca=/path/to/ca.pem` instead"
            )));
        }
        let bad = |e: &dyn fmt::Display| {
            Error::Config(format!("bad Redis URL for the limiter ({url}): {e}"))
        };
        let client = match &options.ca_file {
            None => redis::Client::open(options.url.as_str()).map_err(|e| bad(&e))?,
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read the limiter's Redis CA file {}: {e}",
                        path.display()
                    ))
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(options.url.as_str(), certificates)
                    .map_err(|e| bad(&e))?
            }
        };
        if options
            .url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("rediss:")
        {
            install_tls_provider();
        }
        Ok(Self {
            client,
            script: redis::Script::new(lua::SCRIPT),
            join: redis::Script::new(&join_script()),
            url,
            prefix: format!(
                "mistral-limiter:{{{}}}:",
                crate::scope_store_id(base_url, key, budget)
            ),
            fallback: Fallback::new("redis", config.clone(), DEGRADED_SHARE_PPM),
            config,
            timeout: Self::DEFAULT_TIMEOUT,
            reconnect_after: Self::DEFAULT_RECONNECT_AFTER,
            ttl_secs: Self::TTL.as_secs(),
            conn: Mutex::new(Conn::default()),
        })
    }

    /// Sets the connect, read and write timeout (default [`Self::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets the pause between connection attempts while Redis is unreachable (default
    /// [`Self::DEFAULT_RECONNECT_AFTER`]).
    pub fn with_reconnect_after(mut self, pause: Duration) -> Self {
        self.reconnect_after = pause;
        self
    }

    /// The Redis key of `model`'s budget.
    pub fn key_of(&self, model: &str) -> String {
        format!("{}{model}", self.prefix)
    }

    /// `true` while Redis is unreachable and calls are paced in-process.
    pub fn is_degraded(&self) -> bool {
        self.fallback.is_down()
    }

    /// One reservation through the script, at `now_us` (`None`: Redis `TIME`), without
    /// the in-process fallback: the decision and the budget after it. For tests.
    #[doc(hidden)]
    pub fn reserve_at(
        &self,
        now_us: Option<u64>,
        model: &str,
        ask: &Reserve,
    ) -> io::Result<(Decision, BudgetState)> {
        let reply = self.reserve_op(now_us, model, ask)?;
        let decision = reply.decision.ok_or_else(|| {
            io::Error::other("the limiter script answered a reservation as a report")
        })?;
        Ok((decision, reply.state))
    }

    /// One report through the script, at `now_us` (`None`: Redis `TIME`), without the
    /// in-process fallback: the budget after it. For tests.
    #[doc(hidden)]
    pub fn report_at(
        &self,
        now_us: Option<u64>,
        model: &str,
        op: &ReportOp,
    ) -> io::Result<BudgetState> {
        Ok(self.report_op(now_us, model, op)?.state)
    }

    fn seed(&self, model: &str) -> Seed {
        Seed::from(self.config.limits_for(model))
    }

    fn reserve_op(
        &self,
        now_us: Option<u64>,
        model: &str,
        ask: &Reserve,
    ) -> Result<ScriptReply, OpError> {
        let args = lua::reserve_args(now_us, self.ttl_secs, self.seed(model), ask);
        self.run(model, &args)
    }

    fn report_op(
        &self,
        now_us: Option<u64>,
        model: &str,
        op: &ReportOp,
    ) -> Result<ScriptReply, OpError> {
        let args = lua::report_args(now_us, self.ttl_secs, self.seed(model), op);
        self.run(model, &args)
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Runs the script on `model`'s budget: on the open connection, or a new one (at most
    /// one attempt per [`Self::with_reconnect_after`] while Redis is down). A connection
    /// found dropped (Redis restarted) is replaced once at once.
    fn run(&self, model: &str, args: &[String]) -> Result<ScriptReply, OpError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.key_of(model));
        for arg in args {
            invocation.arg(arg.as_str());
        }
        let mut guard = self.conn();
        for _ in 0..2 {
            let reused = guard.conn.is_some();
            if !reused {
                if guard.next_attempt.is_some_and(|t| Instant::now() < t) {
                    return Err(OpError::Waiting);
                }
                match self.connect() {
                    Ok(mut conn) => {
                        // A new connection: Redis may have restarted empty, or this
                        // process paced in-process meanwhile. Bring in what it knows.
                        self.rejoin(&mut conn);
                        guard.conn = Some(conn);
                        guard.next_attempt = None;
                    }
                    Err(e) => {
                        guard.next_attempt = Some(Instant::now() + self.reconnect_after);
                        return Err(OpError::Redis(e));
                    }
                }
            }
            let Some(conn) = guard.conn.as_mut() else {
                return Err(OpError::Waiting);
            };
            match invocation.invoke::<Vec<i64>>(conn) {
                Ok(reply) => return lua::decode_reply(&reply).map_err(OpError::Reply),
                Err(e) => {
                    guard.conn = None;
                    if !(reused && e.is_connection_dropped()) {
                        return Err(OpError::Redis(e));
                    }
                }
            }
        }
        Err(OpError::Waiting)
    }
}

/// Installs rustls's `ring` provider as the process's default, unless one is installed
/// already: the Redis client's TLS asks rustls for the default, which rustls cannot pick
/// by itself when several providers are compiled in (a program that also enables
/// reqwest's `rustls` feature brings `aws-lc-rs`). Called
/// by [`RedisLimiter::for_budget`] for a `rediss://` URL; call it before making a
/// `rediss://` connection of your own with the `redis` crate.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Brings one process's knowledge of a budget into Redis: `BudgetState::rejoined` in
/// Lua. A hash that is missing or has never had an answer takes the state as given, its
/// share capped; one that exists keeps its own, with the later of each booked time and
/// its share raised by the cap (at most to ours). KEYS[1] the hash; ARGV[1] the expiry
/// in seconds (0: none); ARGV[2] the cap (ppm); ARGV[3..] the fields in
/// `BudgetState::FIELDS` order (`{FIELDS}` is replaced by their quoted names).
const JOIN_SCRIPT: &str = r"
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

impl RedisLimiter {
    /// On a new connection: joins every budget this process knows into Redis (best
    /// effort: a failure here leaves the budgets as Redis has them).
    fn rejoin(&self, conn: &mut redis::Connection) {
        for (model, state) in self.fallback.rejoin_states(None) {
            let mut invocation = self.join.prepare_invoke();
            invocation.key(self.key_of(&model));
            invocation.arg(self.ttl_secs);
            invocation.arg(self.fallback.share_cap_ppm());
            for field in state.to_fields() {
                invocation.arg(field);
            }
            if let Err(error) = invocation.invoke::<i64>(conn) {
                tracing::debug!(%error, "could not bring a budget back into Redis");
                return;
            }
        }
    }
}

impl Limiter for RedisLimiter {
    fn reserve(&self, now: Instant, ask: &Ask) -> Grant {
        let Some(model) = ask.model.as_deref() else {
            return Grant::Now;
        };
        match self.reserve_op(None, model, &Reserve::from(ask)) {
            Ok(ScriptReply {
                decision: Some(decision),
                state,
            }) => {
                self.fallback.up(model, &state);
                decision_to_grant(decision, model)
            }
            Ok(_) => self
                .fallback
                .reserve(&"a reservation without a decision", now, ask),
            Err(error) => self.fallback.reserve(&error, now, ask),
        }
    }

    fn report(&self, now: Instant, report: &Report) {
        let Some(model) = report.model.as_deref() else {
            return;
        };
        match self.report_op(None, model, &ReportOp::from(report)) {
            Ok(reply) => self.fallback.up(model, &reply.state),
            Err(error) => self.fallback.report(&error, now, report),
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .field("reconnect_after", &self.reconnect_after)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}
