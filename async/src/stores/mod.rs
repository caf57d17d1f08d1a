//! The shared limiter's stores, in this client's I/O model (async): one budget per model,
//! shared by every process of a host ([`FileLimiter`], a locked state file) or of a fleet
//! (`RedisLimiter`, cargo feature `redis`), behind the [`AsyncLimiter`] interface the
//! client awaits.
//!
//! A task waits for its turn in this process's line without holding a worker; only the
//! head of a budget's line asks the store, for itself and the tasks behind it, and
//! reports go with the next operation. Neither store blocks the runtime: the file's
//! lock, read and write run on the runtime's blocking threads, and the Redis store
//! shares one multiplexed connection between every task. What a store computes lives
//! in [`mistral_limiter`], once for both clients: the arithmetic
//! ([`budget`](mistral_limiter::budget)), the line ([`Line`](mistral_limiter::Line)),
//! the encoding ([`codec`](mistral_limiter::store::codec)), the Redis compare-and-set
//! round ([`redis`](mistral_limiter::store::redis)), the names of files and keys and the
//! policy while a store is down ([`store`](mistral_limiter::store)); the blocking client
//! has the same stores on blocking I/O (`mistral_blocking::stores`), and both kinds
//! share one budget through the same file or Redis.
//!
//! | store | shared by | clock | when the store fails |
//! |---|---|---|---|
//! | [`LocalLimiter`] (default) | tasks and threads of a process | tokio's | — |
//! | [`FileLimiter`] | processes of one host | the wall clock (a step is absorbed) | in-process at a quarter share |
//! | `RedisLimiter` | hosts, through one Redis or a Redis Cluster | Redis `TIME`, one for the fleet | in-process at a quarter share, reconnecting |
//!
//! A store that fails (or stops answering) never fails open: the calls it would have
//! admitted are admitted in-process, from the level the store last had, at a quarter of
//! the share ([`DEGRADED_SHARE`]) — of the pace and of the burst, and of the room the
//! server says remains past what the other processes' stand-ins may hold — so four
//! processes falling back at once stay under the limit; a warning is logged once per
//! outage. When the store answers again, the budget goes on at a quarter share, grown
//! back within a few seconds (the others may still be on their stand-ins).
//!
//! A Redis Cluster is named by some of its nodes: `MISTRAL_LIMITER=redis+cluster://
//! [user:password@]host:port,host:port,…` (`rediss+cluster://` for TLS, `?ca=` as for
//! one server), or the list of node URLs the `redis` crate's cluster client takes,
//! `redis://:pw@a:7000,redis://:pw@b:7001`. Every key of a budget hashes to one slot
//! and each operation is one script call on one key, run by that slot's master;
//! `MOVED` and `ASK` are followed, and a master that fails is a store that fails: the
//! stand-in answers until, after the reconnection pause, the replica promoted in its
//! place does (see `RedisLimiter`).
//!
//! # A limiter of your own
//!
//! [`ClientBuilder::limiter`](crate::ClientBuilder::limiter) takes any [`AsyncLimiter`],
//! and every in-process [`Limiter`] is one: a call asks it to admit each attempt
//! ([`Ask`], answered with a [`Grant`]; a [`Limiter`] waits in line with a waker through
//! [`Limiter::poll_admit`]: [`Admit`], [`Place`]) and tells it what each response showed
//! ([`Report`], whose [`Verdict`] is what the response meant). [`NoLimiter`] admits
//! everything at once.
//!
//! [`limiter_from_env`] picks one from `MISTRAL_LIMITER` ([`LimiterSpec`]):
//!
//! ```no_run
//! use mistral_async::{ApiKey, Client};
//!
//! # fn main() -> Result<(), mistral_async::Error> {
//! let key = std::env::var("MISTRAL_API_KEY").unwrap_or_default();
//! // MISTRAL_LIMITER=file  (or redis://cache:6379, or unset for in-process)
//! let limiter = mistral_async::stores::limiter_from_env(
//!     "https://api.mistral.ai",
//!     &ApiKey::new(key.as_str())?,
//! )?;
//! let client = Client::builder().api_key(key).limiter(limiter).build()?;
//! # drop(client);
//! # Ok(())
//! # }
//! ```

mod file;
mod queued;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use file::FileLimiter;
pub use mistral_core::limiter::{BudgetId, LimiterConfig, LimiterSpec, Limits, RedisOptions};
pub use mistral_core::{
    Admit, Ask, Grant, Limiter, NoLimiter, Place, Report, Retry, Verdict, WaitReason,
};
use mistral_core::{ApiKey, Error, Resolved, Target};
pub use mistral_limiter::LocalLimiter;
pub use mistral_limiter::store::{
    DEGRADED_SHARE, budget_store_id, scope_store_id, state_file_name, store_id,
};
use tokio::time::Sleep;

#[cfg(feature = "redis")]
pub use self::redis::{RedisLimiter, install_tls_provider};

use crate::clock::now;

/// A boxed future that can move between the runtime's threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The shared limiter as the async client consults it: before every attempt
/// ([`AsyncLimiter::admit`], which resolves once the limiter lets the attempt go) and
/// after every response ([`AsyncLimiter::report`]), awaited on the runtime, so a store
/// does its I/O without holding a worker thread.
///
/// Every [`Limiter`] is one: the task waits in its line, woken by the limiter or at the
/// instant it names, so in-process limiters — [`LocalLimiter`], [`NoLimiter`], your own
/// — serve both clients, and one `Arc<LocalLimiter>` can be handed to a blocking and an
/// async client to pace them together. Such a limiter is polled on a worker thread: it
/// must not block (the blocking client's file and Redis stores do; use this module's
/// instead).
pub trait AsyncLimiter: Send + Sync + fmt::Debug {
    /// The limiter's answer to `ask`: it resolves once the attempt may go (or will not).
    /// Dropping the future gives up the place in line.
    fn admit<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Grant>;
    /// Learns from what a response showed.
    fn report<'a>(&'a self, now: std::time::Instant, report: &'a Report) -> BoxFuture<'a, ()>;
}

impl<L: Limiter + ?Sized> AsyncLimiter for L {
    fn admit<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Grant> {
        Box::pin(Waiting::new(self, ask))
    }

    fn report<'a>(&'a self, now: std::time::Instant, report: &'a Report) -> BoxFuture<'a, ()> {
        Limiter::report(self, now, report);
        // Done already: a future of no size, which boxing does not allocate.
        Box::pin(Reported)
    }
}

/// An in-process limiter's report, done when it was made.
struct Reported;

impl Future for Reported {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// A task waiting in an in-process limiter's line: polls it with the task's waker, and
/// sleeps until woken or until the instant it names.
struct Waiting<'a, L: ?Sized + Limiter> {
    limiter: &'a L,
    ask: &'a Ask,
    place: Place,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<'a, L: ?Sized + Limiter> Waiting<'a, L> {
    fn new(limiter: &'a L, ask: &'a Ask) -> Self {
        Waiting {
            limiter,
            ask,
            place: Place::new(),
            sleep: None,
        }
    }
}

impl<L: ?Sized + Limiter> Future for Waiting<'_, L> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        let this = &mut *self;
        loop {
            match this
                .limiter
                .poll_admit(now(), &mut this.place, this.ask, cx.waker())
            {
                Admit::Ready(grant) => {
                    this.limiter.leave(&mut this.place);
                    return Poll::Ready(grant);
                }
                Admit::Pending { until } => {
                    let deadline = tokio::time::Instant::from_std(until);
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    sleep.as_mut().reset(deadline);
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<L: ?Sized + Limiter> Drop for Waiting<'_, L> {
    fn drop(&mut self) {
        self.limiter.leave(&mut self.place);
    }
}

/// The limiter `MISTRAL_LIMITER` names, for `key` at `base_url` (or the budget its
/// `?budget=` names), with the limits `MISTRAL_LIMITS` sets (unset: every model's are
/// learned from the server): unset or `local` → [`LocalLimiter`], `none` →
/// [`NoLimiter`], `file` or `file:/path` → [`FileLimiter`], `redis://…`, or a Redis
/// Cluster's `redis+cluster://host:port,host:port,…` → `RedisLimiter` (cargo feature
/// `redis`; without it an [`Error::Config`]). A
/// `MISTRAL_LIMITS` that does not parse is an [`Error::Limits`].
pub fn limiter_from_env(base_url: &str, key: &ApiKey) -> Result<Arc<dyn AsyncLimiter>, Error> {
    let value = std::env::var(mistral_core::limiter::spec::ENV_VAR).ok();
    let (spec, budget) = match value.as_deref() {
        Some(text) => LimiterSpec::parse_with_budget(text)?,
        None => (LimiterSpec::Local, None),
    };
    let config = match std::env::var(mistral_core::limiter::LIMITS_VAR) {
        Ok(text) => mistral_core::limiter::parse_limits(&text)?,
        Err(_) => LimiterConfig::default(),
    };
    limiter_for_budget(&spec, base_url, key, budget.as_ref(), config)
}

/// The limiter a client built from `resolved` uses: the one given to its builder, else
/// the store `MISTRAL_LIMITER` names, else the process-wide [`LocalLimiter`] of its base
/// URL and key; the budget is `resolved.budget_id`'s when named, with `resolved.limits`.
pub fn limiter_for(resolved: &Resolved<dyn AsyncLimiter>) -> Result<Arc<dyn AsyncLimiter>, Error> {
    let target = &resolved.target;
    let budget = resolved.budget_id.as_ref();
    match (&resolved.limiter, &resolved.limiter_spec) {
        (Some(limiter), _) => Ok(Arc::clone(limiter)),
        (None, Some(spec)) => limiter_for_budget(
            spec,
            target.base_url(),
            target.key(),
            budget,
            resolved.limits.clone(),
        ),
        (None, None) => Ok(LocalLimiter::shared_budget(
            target,
            budget,
            &resolved.limits,
        )),
    }
}

/// The limiter `spec` names for `key`'s own budget, with `config`'s limits (see
/// [`limiter_from_env`], [`limiter_for_budget`]).
pub fn limiter_from_spec(
    spec: &LimiterSpec,
    base_url: &str,
    key: &ApiKey,
    config: LimiterConfig,
) -> Result<Arc<dyn AsyncLimiter>, Error> {
    limiter_for_budget(spec, base_url, key, None, config)
}

/// The limiter `spec` names, spending the budget `budget` names (shared by every key
/// given it, at `base_url`) or, with `None`, `key`'s own; with `config`'s limits. Files
/// and Redis keys are named after [`scope_store_id`], never the key or the id. In-process,
/// every client of the same budget and limits shares one [`LocalLimiter`]. Opening the
/// state file is done here, once, on the calling thread.
pub fn limiter_for_budget(
    spec: &LimiterSpec,
    base_url: &str,
    key: &ApiKey,
    budget: Option<&BudgetId>,
    config: LimiterConfig,
) -> Result<Arc<dyn AsyncLimiter>, Error> {
    Ok(match spec {
        LimiterSpec::None => Arc::new(NoLimiter),
        LimiterSpec::File(path) => {
            let id = scope_store_id(base_url, key, budget);
            let path =
                mistral_limiter::store::state_file_path(path.as_deref(), &id, |p| p.is_dir());
            // The error names the path (open_private's errors carry it).
            Arc::new(
                FileLimiter::at_path(path, config).map_err(|e| {
                    Error::Config(format!("cannot open the limiter's state file {e}"))
                })?,
            )
        }
        LimiterSpec::Redis(url) => redis_limiter(url, base_url, key, budget, config)?,
        // The default: the process-wide limiter of this server and budget (or key) and
        // limits.
        _ => {
            LocalLimiter::shared_budget(&Target::new(base_url, key.clone(), true)?, budget, &config)
        }
    })
}

#[cfg(feature = "redis")]
fn redis_limiter(
    url: &str,
    base_url: &str,
    key: &ApiKey,
    budget: Option<&BudgetId>,
    config: LimiterConfig,
) -> Result<Arc<dyn AsyncLimiter>, Error> {
    Ok(Arc::new(RedisLimiter::for_budget(
        url, base_url, key, budget, config,
    )?))
}

#[cfg(not(feature = "redis"))]
fn redis_limiter(
    _url: &str,
    _base_url: &str,
    _key: &ApiKey,
    _budget: Option<&BudgetId>,
    _config: LimiterConfig,
) -> Result<Arc<dyn AsyncLimiter>, Error> {
    Err(Error::Config(
        "MISTRAL_LIMITER names a Redis store, but mistral-async was built without its \
         `redis` cargo feature"
            .to_owned(),
    ))
}
