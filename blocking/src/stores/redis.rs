//! The Redis store: every budget in one Redis key, changed by compare-and-set rounds
//! whose arithmetic is the limiter crate's Rust, on Redis `TIME`, so a fleet of hosts
//! shares one budget and one clock; on one server or on a Redis Cluster. Only the
//! connection lives here; the rounds, the script and the reconnection policy are
//! [`mistral_limiter::store::redis`]'s.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use mistral_core::limiter::{Admit, BudgetId, LimiterConfig, Place};
use mistral_core::{ApiKey, Ask, Error, Limiter, Report};
use mistral_limiter::store::redis::{
    self as policy, CAS_SCRIPT, CasCall, CasReply, Reconnect, RedisRound, RedisStep, RedisTarget,
    Seen,
};
use mistral_limiter::store::{SharedStore, StoreOps, redis_key, scope_store_id};
use mistral_limiter::{AdmitAnswer, LineView, Queued, StoreIo};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};

/// The head of this process's line asks Redis again at least this often: capacity freed
/// by another process is noticed within it.
pub const REDIS_ASK_GAP: Duration = Duration::from_millis(100);

/// A limiter whose budgets live in Redis, shared by every process on every host that
/// uses the same Redis, base URL and key (or budget id, [`RedisLimiter::for_budget`]).
///
/// One key per budget, `mistral-limiter:{<store id>}:<model>` (see
/// [`super::scope_store_id`]; neither the API key nor the id is stored), holding the
/// encoded [`mistral_limiter::BudgetState`]. The callers of this process wait in its
/// own line; the head of a budget's line asks Redis for itself and the callers behind
/// it, and reports go with the next operation. An operation is a compare-and-set round
/// ([`RedisRound`]): the value and Redis `TIME` are read, the new value computed here,
/// and set only if nobody changed it meanwhile (else computed again from the newer
/// one), so hosts with skewed clocks still share one budget. A value that reaches Redis
/// after this process stopped waiting for it is not set. Keys expire after a day unused.
///
/// One synchronous connection, used by one operation at a time (a mutex). The
/// connection is made lazily, with short timeouts (500 ms by default). When Redis cannot
/// be reached or does not answer, the limiter never fails open: calls are admitted
/// in-process at a quarter of the limits Redis last showed (or the configured ones), from
/// the level Redis last had, a warning is logged once per outage, and the connection is
/// retried every few seconds (3 s by default; meanwhile calls go to the stand-in at
/// once). When Redis answers again, what the stand-in admitted is
/// merged into its state first; a budget Redis lost (restarted empty) is given back
/// what this process knew of it.
///
/// # Redis Cluster
///
/// `redis+cluster://[user:password@]host:port,host:port,…` (`rediss+cluster://` for TLS),
/// or the node URLs the `redis` crate's cluster client takes, joined by commas
/// (`redis://:pw@a:7000,redis://:pw@b:7001`), name a Redis Cluster by some of its nodes;
/// the others are learned from them. Each budget is one key, and each operation one
/// script call on that key alone, so it runs on the master of the key's slot; `MOVED`
/// and `ASK` redirects are followed (at most [`policy::CLUSTER_RETRIES`] per call). A
/// master that fails makes the calls on its slots fail: the limiter falls back as above
/// (for every budget of this limiter, until it reconnects), and the next connection,
/// after the pause, learns the cluster's slots afresh, from the replica promoted in its
/// place. Redis replicates asynchronously: a promoted replica may lack the last writes,
/// and each process gives back what it knew of a budget when it rejoins.
pub struct RedisLimiter {
    queued: Queued<RedisIo>,
}

/// The Redis connection.
struct RedisIo {
    client: Client,
    script: redis::Script,
    url: String,
    id: String,
    timeout: Duration,
    conn: Mutex<Conn>,
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

/// A connection to one server or to a Redis Cluster (one connection per node it calls).
enum Connection {
    Single(redis::Connection),
    Cluster(Box<ClusterConnection>),
}

impl Connection {
    fn as_dyn(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Connection::Single(conn) => conn,
            Connection::Cluster(conn) => conn.as_mut(),
        }
    }
}

/// The cluster client for `nodes`, with `timeout` to connect and for each answer, and
/// the CA of `root_cert` for TLS.
fn cluster_client(
    nodes: &[String],
    root_cert: Option<&[u8]>,
    timeout: Duration,
) -> redis::RedisResult<ClusterClient> {
    let (min_wait, max_wait) = policy::CLUSTER_RETRY_WAIT_MS;
    let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
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
    conn: Option<Connection>,
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
    /// Default connect, read and write timeout.
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
        let line = Queued::<RedisIo>::line_config(
            &config,
            fastrand::u64(..),
            policy::HORIZON,
            REDIS_ASK_GAP,
        );
        let io = RedisIo {
            client,
            script: redis::Script::new(CAS_SCRIPT),
            url: target.shown,
            id: scope_store_id(base_url, key, budget),
            store: SharedStore::new("redis", config),
            seen: Seen::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            conn: Mutex::new(Conn {
                conn: None,
                gate: Reconnect::new(Self::DEFAULT_RECONNECT_AFTER),
            }),
        };
        Ok(Self {
            queued: Queued::new(io, line),
        })
    }

    fn map_io(self, f: impl FnOnce(RedisIo) -> RedisIo) -> Self {
        let io = f(self.queued.into_store());
        let line = Queued::<RedisIo>::line_config(
            io.store.config(),
            fastrand::u64(..),
            policy::HORIZON,
            REDIS_ASK_GAP,
        );
        Self {
            queued: Queued::new(io, line),
        }
    }

    /// Sets the connect, read and write timeout (default [`Self::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_millis(1));
        self.map_io(|io| {
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
            RedisIo {
                timeout,
                client,
                ..io
            }
        })
    }

    /// Sets the pause between connection attempts while Redis is unreachable (default
    /// [`Self::DEFAULT_RECONNECT_AFTER`]).
    pub fn with_reconnect_after(self, pause: Duration) -> Self {
        self.map_io(|io| {
            io.conn.lock().unwrap_or_else(|e| e.into_inner()).gate = Reconnect::new(pause);
            io
        })
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
    pub fn run_direct(&self, ops: &StoreOps) -> Result<AdmitAnswer, String> {
        self.queued
            .store()
            .round(Instant::now(), ops.clone())
            .map_err(|e| e.to_string())
    }
}

impl RedisIo {
    fn conn(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect(&self) -> redis::RedisResult<Connection> {
        match &self.client {
            Client::Single(client) => {
                let conn = client.get_connection_with_timeout(self.timeout)?;
                conn.set_read_timeout(Some(self.timeout))?;
                conn.set_write_timeout(Some(self.timeout))?;
                Ok(Connection::Single(conn))
            }
            Client::Cluster(cluster) => {
                // Connects to the first node that answers and learns the slots from it.
                let conn = cluster.client.get_connection()?;
                conn.set_write_timeout(Some(self.timeout))?;
                Ok(Connection::Cluster(Box::new(conn)))
            }
        }
    }

    /// One round of `ops` on Redis (the rounds' calls on one connection, held for the
    /// round).
    fn round(&self, now: Instant, ops: StoreOps) -> Result<AdmitAnswer, CallError> {
        let mut guard = self.conn();
        let (mut round, mut call) = RedisRound::start(
            &self.id,
            ops,
            &self.seen,
            &self.store,
            Instant::now(),
            self.timeout,
        );
        loop {
            let reply = self.call(&mut guard, now, &call)?;
            match round.reply(&self.store, Instant::now(), reply) {
                RedisStep::Call(next) => call = next,
                RedisStep::Done(answer) => return Ok(answer),
            }
        }
    }

    /// One script call: on the open connection, or a new one (when the reconnection
    /// gate allows). A connection found dropped (Redis restarted) is replaced once at
    /// once.
    fn call(&self, guard: &mut Conn, now: Instant, call: &CasCall) -> Result<CasReply, CallError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(call.key.as_str());
        for arg in &call.args {
            invocation.arg(arg.as_slice());
        }
        for _ in 0..2 {
            let reused = guard.conn.is_some();
            if !reused {
                if !guard.gate.may_try(now) {
                    return Err(CallError::Waiting);
                }
                match self.connect() {
                    Ok(conn) => {
                        guard.conn = Some(conn);
                        guard.gate.connected();
                    }
                    Err(e) => {
                        guard.gate.failed(now);
                        return Err(CallError::Redis(e));
                    }
                }
            }
            let Some(conn) = guard.conn.as_mut() else {
                return Err(CallError::Waiting);
            };
            match invocation.invoke::<(i64, Vec<u8>, u64, u64)>(conn.as_dyn()) {
                Ok((flag, current, secs, micros)) => {
                    return Ok(CasReply::from_parts(flag, current, secs, micros));
                }
                Err(e) => {
                    guard.conn = None;
                    if !(reused && e.is_connection_dropped()) {
                        // No answer (a timeout: Redis unreachable, or partitioned behind a
                        // connection that still opens): the next connection waits out the
                        // pause too, so the calls meanwhile go to the stand-in at once
                        // instead of each waiting for a timeout of its own.
                        guard.gate.failed(Instant::now());
                        return Err(CallError::Redis(e));
                    }
                }
            }
        }
        Err(CallError::Waiting)
    }
}

impl StoreIo for RedisIo {
    fn run(&self, now: Instant, ops: &StoreOps) -> (AdmitAnswer, Instant) {
        let answer = match self.round(now, ops.clone()) {
            Ok(answer) => answer,
            Err(error) => self.store.failed(Instant::now(), &error, ops),
        };
        (answer, Instant::now())
    }
}

/// Installs rustls's `ring` provider as the process's default, unless one is installed
/// already: the Redis client's TLS asks rustls for the default, which rustls cannot pick
/// by itself when several providers are compiled in (a program that also enables
/// reqwest's `rustls` feature brings `aws-lc-rs`). Called by [`RedisLimiter::for_budget`]
/// for a `rediss://` URL; call it before making a `rediss://` connection of your own
/// with the `redis` crate.
pub fn install_tls_provider() {
    // rustls 0.23.48 deprecates ring's provider (no post-quantum key exchange); ring is
    // the provider ureq's `rustls` feature uses, so this store keeps it.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Limiter for RedisLimiter {
    fn poll_admit(&self, now: Instant, place: &mut Place, ask: &Ask, waker: &Waker) -> Admit {
        self.queued.poll_admit(now, place, ask, waker)
    }
    fn leave(&self, place: &mut Place) {
        self.queued.leave(place);
    }
    fn report(&self, now: Instant, report: &Report) {
        self.queued.report(now, report);
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
