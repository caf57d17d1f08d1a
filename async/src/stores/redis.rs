//! The Redis store for the async client: every budget in one Redis key, changed by
//! compare-and-set rounds whose arithmetic is the limiter crate's Rust, on Redis `TIME`,
//! over one multiplexed connection that every task shares (to one server, or to each
//! node of a Redis Cluster). Only the connection lives here; the rounds, the script and
//! the reconnection policy are [`mistral_limiter::store::redis`]'s.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mistral_core::limiter::{BudgetId, LimiterConfig};
use mistral_core::{ApiKey, Ask, Error, Grant, Report};
use mistral_limiter::store::redis::{
    self as policy, CAS_SCRIPT, CasCall, CasReply, Reconnect, RedisRound, RedisStep, RedisTarget,
    Seen,
};
use mistral_limiter::store::{SharedStore, StoreOps, redis_key, scope_store_id};
use mistral_limiter::{AdmitAnswer, LineView};
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;

use super::queued::{AsyncQueued, AsyncStoreIo};
use super::{AsyncLimiter, BoxFuture};
use crate::clock::now;

/// The head of this process's line asks Redis again at least this often: capacity freed
/// by another process is noticed within it.
pub const REDIS_ASK_GAP: Duration = Duration::from_millis(100);

/// A limiter whose budgets live in Redis, shared by every process on every host that
/// uses the same Redis, base URL and key (or budget id, [`RedisLimiter::for_budget`]),
/// blocking and async clients alike.
///
/// One key per budget, `mistral-limiter:{<store id>}:<model>` (see
/// [`super::scope_store_id`]; neither the API key nor the id is stored), holding the
/// encoded [`mistral_limiter::BudgetState`]. The tasks of this process wait in its own
/// line; the head of a budget's line asks Redis for itself and the tasks behind it, and
/// reports go with the next operation. An operation is a compare-and-set round
/// ([`RedisRound`]): the value and Redis `TIME` are read, the new value computed here,
/// and set only if nobody changed it meanwhile (else computed again from the newer
/// one), so hosts with skewed clocks still share one budget. A value that reaches Redis
/// after this process stopped waiting for it is not set.
///
/// Every task shares one multiplexed connection, and no worker thread waits. The
/// connection is made lazily (by one task while the others wait for it), with short
/// timeouts (500 ms by default). When Redis cannot be reached or does not answer, the
/// limiter never fails open: calls are admitted in-process at a quarter of the limits
/// Redis last showed (or the configured ones), from the level Redis last had, a warning
/// is logged once per outage, and the connection is retried every few seconds (3 s by
/// default; meanwhile calls go to the stand-in at once). When Redis
/// answers again, what the stand-in admitted is merged into its state first; a budget
/// Redis lost (restarted empty) is given back what this process knew of it.
///
/// # Redis Cluster
///
/// `redis+cluster://[user:password@]host:port,host:port,…` (`rediss+cluster://` for TLS),
/// or the node URLs the `redis` crate's cluster client takes, joined by commas
/// (`redis://:pw@a:7000,redis://:pw@b:7001`), name a Redis Cluster by some of its nodes;
/// the others are learned from them. Each budget is one key, and each operation one
/// script call on that key alone, so it runs on the master of the key's slot; `MOVED`
/// and `ASK` redirects are followed (at most [`policy::CLUSTER_RETRIES`] per call, all
/// within the timeout). A master that fails makes the calls on its slots fail: the
/// limiter falls back as above (for every budget of this limiter, until it reconnects),
/// and the next connection, after the pause, learns the cluster's slots afresh, from the
/// replica promoted in its place. Redis replicates asynchronously: a promoted replica
/// may lack the last writes, and each process gives back what it knew of a budget when
/// it rejoins.
pub struct RedisLimiter {
    queued: AsyncQueued<RedisIo>,
}

/// The connection.
struct RedisIo {
    client: Client,
    script: redis::Script,
    url: String,
    id: String,
    timeout: Duration,
    conn: Mutex<Conn>,
    /// Held by the one task making a new connection.
    connecting: tokio::sync::Mutex<()>,
    store: SharedStore,
    /// What this process last saw of each key.
    seen: Seen,
}

/// What the store connects to.
// One per limiter: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster.
    Cluster(Cluster),
}

/// A Redis Cluster's client, and what it is built from (built again for a new timeout).
struct Cluster {
    client: ClusterClient,
    nodes: Vec<String>,
    root_cert: Option<Vec<u8>>,
}

/// A connection, shared by every task: to one server, or to a Redis Cluster (one
/// multiplexed connection per node it calls).
#[derive(Clone)]
enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// The cluster client for `nodes`, with `timeout` to connect and for each call (its
/// redirects and retries included), and the CA of `root_cert` for TLS.
fn cluster_client(
    nodes: &[String],
    root_cert: Option<&[u8]>,
    timeout: Duration,
) -> redis::RedisResult<ClusterClient> {
    let (min_wait, max_wait) = policy::CLUSTER_RETRY_WAIT_MS;
    let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .overall_response_timeout(Some(timeout))
        .retries(policy::CLUSTER_RETRIES)
        .min_retry_wait(min_wait)
        .max_retry_wait(max_wait);
    if let Some(root_cert) = root_cert {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert.to_vec()),
        });
    }
    builder.build()
}

struct Conn {
    /// The connection, and its number (so a task drops only the one that failed it).
    conn: Option<(u64, Connection)>,
    made: u64,
    /// When a new connection may be tried.
    gate: Reconnect,
}

/// Why one call did not reach the script.
#[derive(Debug)]
enum CallError {
    /// A connection was refused recently; not retried yet.
    Waiting,
    Redis(redis::RedisError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Waiting => f.write_str("waiting to reconnect"),
            CallError::Redis(e) => write!(f, "{e}"),
        }
    }
}

impl RedisLimiter {
    /// Default connect and response timeout.
    pub const DEFAULT_TIMEOUT: Duration = policy::DEFAULT_TIMEOUT;
    /// Default pause between connection attempts while Redis is unreachable.
    pub const DEFAULT_RECONNECT_AFTER: Duration = policy::DEFAULT_RECONNECT_AFTER;
    /// How long a budget's key outlives its last use.
    pub const TTL: Duration = policy::TTL;

    /// The limiter of `key` at `base_url`, in the Redis at `redis_url`
    /// (`redis://[[user]:password@]host[:port][/db]`, `rediss://…`, `redis+unix:///path`,
    /// or a Redis Cluster: `redis+cluster://host:port,host:port,…`, see the type's docs).
    /// Fails only on a malformed URL: the connection is made at the first call, and
    /// while it cannot be, calls are admitted in-process.
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
        let root_cert = match &target.ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| target.bad_ca_file(&e))?),
        };
        let client = match (target.is_cluster(), root_cert) {
            (true, root_cert) => Client::Cluster(Cluster {
                client: cluster_client(
                    &target.cluster_nodes,
                    root_cert.as_deref(),
                    Self::DEFAULT_TIMEOUT,
                )
                .map_err(|e| target.bad_url(&e))?,
                nodes: target.cluster_nodes.clone(),
                root_cert,
            }),
            (false, None) => Client::Single(
                redis::Client::open(target.url.as_str()).map_err(|e| target.bad_url(&e))?,
            ),
            (false, Some(root_cert)) => {
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Client::Single(
                    redis::Client::build_with_tls(target.url.as_str(), certificates)
                        .map_err(|e| target.bad_url(&e))?,
                )
            }
        };
        if target.tls {
            install_tls_provider();
        }
        let io = RedisIo {
            client,
            script: redis::Script::new(CAS_SCRIPT),
            url: target.shown,
            id: scope_store_id(base_url, key, budget),
            store: SharedStore::new("redis", config.clone()),
            timeout: Self::DEFAULT_TIMEOUT,
            conn: Mutex::new(Conn {
                conn: None,
                made: 0,
                gate: Reconnect::new(Self::DEFAULT_RECONNECT_AFTER),
            }),
            connecting: tokio::sync::Mutex::new(()),
            seen: Seen::default(),
        };
        Ok(Self::around(io))
    }

    fn around(io: RedisIo) -> Self {
        let config = io.store.config().clone();
        RedisLimiter {
            queued: AsyncQueued::new(
                io,
                &config,
                fastrand::u64(..),
                policy::HORIZON,
                REDIS_ASK_GAP,
            ),
        }
    }

    /// Sets the connect and response timeout (default [`Self::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_millis(1));
        let io = self.queued.into_store();
        let client = match io.client {
            Client::Cluster(mut cluster) => {
                // Built from nodes it was built from already: only the timeout is new.
                if let Ok(client) =
                    cluster_client(&cluster.nodes, cluster.root_cert.as_deref(), timeout)
                {
                    cluster.client = client;
                }
                Client::Cluster(cluster)
            }
            single => single,
        };
        Self::around(RedisIo {
            timeout,
            client,
            ..io
        })
    }

    /// Sets the pause between connection attempts while Redis is unreachable (default
    /// [`Self::DEFAULT_RECONNECT_AFTER`]).
    pub fn with_reconnect_after(self, pause: Duration) -> Self {
        let io = self.queued.into_store();
        io.conn().gate = Reconnect::new(pause);
        Self::around(io)
    }

    /// The Redis key of `model`'s budget.
    pub fn key_of(&self, model: &str) -> String {
        redis_key(&self.queued.store().id, model)
    }

    /// `true` while Redis is unreachable and calls are admitted in-process.
    pub fn is_degraded(&self) -> bool {
        self.queued.store().store.is_down()
    }

    /// `model`'s line in this process as it is now.
    pub fn line(&self, model: &str) -> LineView {
        self.queued.line(model)
    }

    /// One operation through Redis, without the in-process fallback: its answer. For
    /// tests.
    #[doc(hidden)]
    pub async fn run_direct(&self, ops: &StoreOps) -> Result<AdmitAnswer, String> {
        self.queued
            .store()
            .round(now(), ops.clone())
            .await
            .map_err(|e| e.to_string())
    }
}

impl RedisIo {
    fn conn(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection (a clone: the same pipeline), if any.
    fn current(&self) -> Option<(u64, Connection)> {
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
    async fn connection(&self, now: Instant) -> Result<(u64, Connection, bool), CallError> {
        if let Some((made, conn)) = self.current() {
            return Ok((made, conn, true));
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some((made, conn)) = self.current() {
            return Ok((made, conn, true));
        }
        if !self.conn().gate.may_try(now) {
            return Err(CallError::Waiting);
        }
        match self.connect().await {
            Ok(conn) => {
                let mut guard = self.conn();
                guard.made += 1;
                let made = guard.made;
                guard.conn = Some((made, conn.clone()));
                guard.gate.connected();
                Ok((made, conn, false))
            }
            Err(e) => {
                self.conn().gate.failed(now);
                Err(CallError::Redis(e))
            }
        }
    }

    /// A new connection: to the server, or to a cluster through the first node that
    /// answers (the slots learned from it; within twice the timeout).
    async fn connect(&self) -> redis::RedisResult<Connection> {
        match &self.client {
            Client::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Single)
            }
            Client::Cluster(cluster) => {
                match tokio::time::timeout(
                    self.timeout.saturating_mul(2),
                    cluster.client.get_async_connection(),
                )
                .await
                {
                    Ok(made) => made.map(Connection::Cluster),
                    Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no node of the Redis Cluster answered in time",
                    ))),
                }
            }
        }
    }

    /// One script call, on the shared connection or a new one. A connection found
    /// dropped (Redis restarted) is replaced once at once.
    async fn call(&self, now: Instant, call: &CasCall) -> Result<CasReply, CallError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(call.key.as_str());
        for arg in &call.args {
            invocation.arg(arg.as_slice());
        }
        for _ in 0..2 {
            let (made, mut conn, reused) = self.connection(now).await?;
            let reply: redis::RedisResult<(i64, Vec<u8>, u64, u64)> = match &mut conn {
                Connection::Single(conn) => invocation.invoke_async(conn).await,
                Connection::Cluster(conn) => invocation.invoke_async(conn).await,
            };
            match reply {
                Ok((flag, current, secs, micros)) => {
                    return Ok(CasReply::from_parts(flag, current, secs, micros));
                }
                Err(e) => {
                    self.drop_conn(made);
                    if !(reused && e.is_connection_dropped()) {
                        // No answer (a timeout: Redis unreachable, or partitioned behind a
                        // connection that still opens): the next connection waits out the
                        // pause too, so the calls meanwhile go to the stand-in at once
                        // instead of each waiting for a timeout of its own.
                        self.conn().gate.failed(crate::clock::now());
                        return Err(CallError::Redis(e));
                    }
                }
            }
        }
        Err(CallError::Waiting)
    }

    /// One round of `ops` on Redis.
    async fn round(&self, now: Instant, ops: StoreOps) -> Result<AdmitAnswer, CallError> {
        let (mut round, mut call) = RedisRound::start(
            &self.id,
            ops,
            &self.seen,
            &self.store,
            crate::clock::now(),
            self.timeout,
        );
        loop {
            let reply = self.call(now, &call).await?;
            match round.reply(&self.store, crate::clock::now(), reply) {
                RedisStep::Call(next) => call = next,
                RedisStep::Done(answer) => return Ok(answer),
            }
        }
    }
}

impl AsyncStoreIo for RedisIo {
    fn run(&self, now: Instant, ops: StoreOps) -> BoxFuture<'_, AdmitAnswer> {
        Box::pin(async move {
            match self.round(now, ops.clone()).await {
                Ok(answer) => answer,
                Err(error) => self.store.failed(crate::clock::now(), &error, &ops),
            }
        })
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
    fn admit<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Grant> {
        self.queued.admit(ask)
    }

    fn report<'a>(&'a self, now: Instant, report: &'a Report) -> BoxFuture<'a, ()> {
        self.queued.report(now, report)
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = self.queued.store();
        f.debug_struct("RedisLimiter")
            .field("url", &io.url)
            .field("id", &io.id)
            .field("timeout", &io.timeout)
            .field("store", &io.store)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIo")
            .field("url", &self.url)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
