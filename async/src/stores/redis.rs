//! The Redis store for the async client: every budget in a Redis hash, updated by one
//! Lua script that reads Redis `TIME`, over one multiplexed connection that every task
//! shares. Only the connection lives here; the script, its arguments, the join script
//! and the reconnection policy are [`mistral_core::limiter::store::redis`]'s.

use std::fmt;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mistral_core::limiter::lua::{self, ScriptReply};
use mistral_core::limiter::spec::BudgetId;
use mistral_core::limiter::store::redis::{
    self as policy, Reconnect, RedisTarget, join_script, run_again_on_new_connection,
};
use mistral_core::limiter::store::{SharedStore, redis_key_prefix, scope_store_id};
use mistral_core::limiter::{BudgetState, Decision, LimiterConfig, ReportOp, Reserve};
use mistral_core::{ApiKey, Ask, Error, Grant, Report};
use redis::aio::MultiplexedConnection;

use super::{AsyncLimiter, BoxFuture};
use crate::client::now;

/// A limiter whose budgets live in Redis, shared by every process on every host that
/// uses the same Redis, base URL and key (or budget id, [`RedisLimiter::for_budget`]),
/// blocking and async clients alike.
///
/// One hash per budget, `mistral-limiter:{<store id>}:<model>` (see
/// [`super::scope_store_id`]; neither the key nor the id is stored), holding the fields
/// of [`BudgetState`]. Each [`AsyncLimiter::reserve`] or [`AsyncLimiter::report`] is one
/// `EVALSHA` of [`mistral_core::limiter::lua::SCRIPT`] (loaded on `NOSCRIPT`): atomic,
/// one round trip, the time read from Redis `TIME` so hosts with skewed clocks still
/// share one schedule.
///
/// Every task shares one multiplexed connection: their scripts are pipelined on it and
/// each task awaits its own reply, so a slow Redis delays each reservation by its round
/// trip, not by the queue of every task before it, and no worker thread waits. The
/// connection is made lazily (by one task while the others wait for it), with short
/// timeouts (500 ms by default). When Redis cannot be reached the limiter never fails
/// open: calls are paced in-process at a quarter of the limits Redis last showed (or the
/// configured ones), a warning is logged once per outage, and the connection is retried
/// every few seconds (3 s by default); when it is back, the shared budgets take over
/// again, after this process has brought what it knows (and booked meanwhile) back
/// into Redis, as the blocking client's store does.
pub struct RedisLimiter {
    client: redis::Client,
    script: redis::Script,
    join: redis::Script,
    url: String,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Conn>,
    /// Held by the one task making a new connection.
    connecting: tokio::sync::Mutex<()>,
    store: SharedStore,
}

struct Conn {
    /// The connection, and its number (so a task drops only the one that failed it).
    conn: Option<(u64, MultiplexedConnection)>,
    made: u64,
    /// When a new connection may be tried.
    gate: Reconnect,
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

impl RedisLimiter {
    /// Default connect and response timeout.
    pub const DEFAULT_TIMEOUT: Duration = policy::DEFAULT_TIMEOUT;
    /// Default pause between connection attempts while Redis is unreachable.
    pub const DEFAULT_RECONNECT_AFTER: Duration = policy::DEFAULT_RECONNECT_AFTER;
    /// How long a budget's hash outlives its last use.
    pub const TTL: Duration = policy::TTL;

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
    /// [`RedisLimiter::new`]; its keys are named after [`super::scope_store_id`]).
    ///
    /// `rediss://` connects over TLS (rustls) and checks the server's certificate
    /// against the system's certificate authorities, or against those of the PEM file a
    /// `ca=<path>` parameter names (`rediss://cache:6380/?ca=/etc/redis/ca.pem`); the
    /// file is read now (on the calling thread), and a missing or malformed one is an
    /// [`Error::Config`]. Certificate checks cannot be turned off (`#insecure` is an
    /// [`Error::Config`] too).
    pub fn for_budget(
        redis_url: &str,
        base_url: &str,
        key: &ApiKey,
        budget: Option<&BudgetId>,
        config: LimiterConfig,
    ) -> Result<Self, Error> {
        let target = RedisTarget::parse(redis_url)?;
        let client = match &target.ca_file {
            None => redis::Client::open(target.url.as_str()).map_err(|e| target.bad_url(&e))?,
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| target.bad_ca_file(&e))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(target.url.as_str(), certificates)
                    .map_err(|e| target.bad_url(&e))?
            }
        };
        if target.tls {
            install_tls_provider();
        }
        Ok(Self {
            client,
            script: redis::Script::new(lua::SCRIPT),
            join: redis::Script::new(&join_script()),
            url: target.shown,
            prefix: redis_key_prefix(&scope_store_id(base_url, key, budget)),
            store: SharedStore::new("redis", config),
            timeout: Self::DEFAULT_TIMEOUT,
            conn: Mutex::new(Conn {
                conn: None,
                made: 0,
                gate: Reconnect::new(Self::DEFAULT_RECONNECT_AFTER),
            }),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Sets the connect and response timeout (default [`Self::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets the pause between connection attempts while Redis is unreachable (default
    /// [`Self::DEFAULT_RECONNECT_AFTER`]).
    pub fn with_reconnect_after(mut self, pause: Duration) -> Self {
        self.conn.get_mut().unwrap_or_else(|e| e.into_inner()).gate = Reconnect::new(pause);
        self
    }

    /// The Redis key of `model`'s budget.
    pub fn key_of(&self, model: &str) -> String {
        format!("{}{model}", self.prefix)
    }

    /// `true` while Redis is unreachable and calls are paced in-process.
    pub fn is_degraded(&self) -> bool {
        self.store.is_down()
    }

    /// One reservation through the script, at `now_us` (`None`: Redis `TIME`), without
    /// the in-process fallback: the decision and the budget after it. For tests.
    #[doc(hidden)]
    pub async fn reserve_at(
        &self,
        now_us: Option<u64>,
        model: &str,
        ask: &Reserve,
    ) -> io::Result<(Decision, BudgetState)> {
        let args = self.store.reserve_args(now_us, model, ask);
        let reply = self.run(now(), model, &args).await?;
        let decision = reply.decision.ok_or_else(|| {
            io::Error::other("the limiter script answered a reservation as a report")
        })?;
        Ok((decision, reply.state))
    }

    /// One report through the script, at `now_us` (`None`: Redis `TIME`), without the
    /// in-process fallback: the budget after it. For tests.
    #[doc(hidden)]
    pub async fn report_at(
        &self,
        now_us: Option<u64>,
        model: &str,
        op: &ReportOp,
    ) -> io::Result<BudgetState> {
        let args = self.store.report_args(now_us, model, op);
        Ok(self.run(now(), model, &args).await?.state)
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection (a clone: the same pipeline), if any.
    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.conn().conn.clone()
    }

    /// Forgets connection number `made` (a newer one stays).
    fn drop_conn(&self, made: u64) {
        let mut guard = self.conn();
        if guard.conn.as_ref().is_some_and(|(n, _)| *n == made) {
            guard.conn = None;
        }
    }

    /// The open connection, or a new one made by this task (when the reconnection gate
    /// allows; one task at a time): `true` when it was open already.
    async fn connection(
        &self,
        now: Instant,
    ) -> Result<(u64, MultiplexedConnection, bool), OpError> {
        if let Some((made, conn)) = self.current() {
            return Ok((made, conn, true));
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some((made, conn)) = self.current() {
            return Ok((made, conn, true));
        }
        if !self.conn().gate.may_try(now) {
            return Err(OpError::Waiting);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => {
                // A new connection: Redis may have restarted empty, or this process
                // paced in-process meanwhile. Bring in what it knows.
                self.rejoin(now, &mut conn).await;
                let mut guard = self.conn();
                guard.made += 1;
                let made = guard.made;
                guard.conn = Some((made, conn.clone()));
                guard.gate.connected();
                Ok((made, conn, false))
            }
            Err(e) => {
                self.conn().gate.failed(now);
                Err(OpError::Redis(e))
            }
        }
    }

    /// Runs the script on `model`'s budget, on the shared connection or a new one. A
    /// connection found dropped (Redis restarted) is replaced once at once.
    async fn run(
        &self,
        now: Instant,
        model: &str,
        args: &[String],
    ) -> Result<ScriptReply, OpError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.key_of(model));
        for arg in args {
            invocation.arg(arg.as_str());
        }
        for _ in 0..2 {
            let (made, mut conn, reused) = self.connection(now).await?;
            match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
                Ok(reply) => return lua::decode_reply(&reply).map_err(OpError::Reply),
                Err(e) => {
                    self.drop_conn(made);
                    if !run_again_on_new_connection(reused, e.is_connection_dropped()) {
                        return Err(OpError::Redis(e));
                    }
                }
            }
        }
        Err(OpError::Waiting)
    }

    /// On a new connection: joins every budget this process knows into Redis (best
    /// effort: a failure here leaves the budgets as Redis has them).
    async fn rejoin(&self, now: Instant, conn: &mut MultiplexedConnection) {
        for (model, state) in self.store.rejoin_states(now, None) {
            let mut invocation = self.join.prepare_invoke();
            invocation.key(self.key_of(&model));
            for arg in self.store.join_args(&state) {
                invocation.arg(arg);
            }
            if let Err(error) = invocation.invoke_async::<i64>(conn).await {
                tracing::debug!(%error, "could not bring a budget back into Redis");
                return;
            }
        }
    }
}

/// Installs rustls's `aws-lc-rs` provider as the process's default, unless one is installed
/// already: the Redis client's TLS asks rustls for the default, which rustls cannot pick
/// by itself when several providers are compiled in. Called by
/// [`RedisLimiter::for_budget`] for a `rediss://` URL; call it before making a
/// `rediss://` connection of your own with the `redis` crate.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl AsyncLimiter for RedisLimiter {
    fn reserve<'a>(&'a self, now: Instant, ask: &'a Ask) -> BoxFuture<'a, Grant> {
        Box::pin(async move {
            let Some(model) = ask.model.as_deref() else {
                return Grant::Now;
            };
            let args = self.store.reserve_args(None, model, &Reserve::from(ask));
            let reply = self.run(now, model, &args).await;
            let reply = reply
                .as_ref()
                .map(|r| *r)
                .map_err(|e| e as &dyn fmt::Display);
            self.store.script_reserved(now, ask, model, reply)
        })
    }

    fn report<'a>(&'a self, now: Instant, report: &'a Report) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(model) = report.model.as_deref() else {
                return;
            };
            let args = self.store.report_args(None, model, &ReportOp::from(report));
            let reply = self.run(now, model, &args).await;
            let reply = reply
                .as_ref()
                .map(|r| *r)
                .map_err(|e| e as &dyn fmt::Display);
            self.store.script_reported(now, report, model, reply);
        })
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}
