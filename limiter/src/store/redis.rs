//! The Redis store's decisions, for the drivers that hold its connection: which URLs are
//! taken, when to try a new connection while Redis is down, and one operation as a
//! compare-and-set round on one key per budget ([`RedisRound`]).
//!
//! Redis runs no arithmetic: [`CAS_SCRIPT`] reads the key and Redis `TIME` and, when
//! asked, replaces the value only if it is still the one read. This crate's Rust
//! computes the new value in between, on Redis's clock, so every process of the fleet
//! runs the same arithmetic on one clock, and there is no second implementation to keep
//! in step. A round is a read, then compare-and-set attempts until one lands (each
//! failed one returns the current value, so it costs one more round trip), at most
//! [`MAX_TRIES`]; past that the stand-in answers. When this process knows the key's
//! value (it read or wrote it last, [`Seen`]), the round skips the read: on a Redis
//! far away an operation nobody raced costs one round trip, not two.
//!
//! # Redis Cluster
//!
//! The same rounds run on a Redis Cluster ([`RedisTarget::parse`] takes its URL forms):
//! a script on a cluster may touch only keys of one slot, declared in `KEYS`, and
//! [`CAS_SCRIPT`] touches `KEYS[1]` alone (and `TIME`), the budget's one key, whose
//! `{<id>}` hash tag ([`super::redis_key`]) puts every model's key of a budget in one
//! slot. Each call thus runs on the master of that slot, whose `TIME` is the clock of
//! the budget; the drivers' cluster clients follow `MOVED` and `ASK` (at most
//! [`CLUSTER_RETRIES`] times a call). A master that fails is a store that fails: the
//! stand-in answers, and the next connection (after [`DEFAULT_RECONNECT_AFTER`]) learns
//! the slots afresh, from the replica promoted in its place. Redis replicates
//! asynchronously, so a promoted replica may lack the last writes; the process that made
//! them gives them back when it rejoins ([`super::SharedStore::starting_state`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mistral_core::Error;
use mistral_core::limiter::RedisOptions;

use super::{IDLE, SharedStore, StoreOps, codec};
use crate::local::MAX_BUDGETS;
use crate::op::AdmitAnswer;

/// Default connect, read and write timeout of one Redis operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default pause between connection attempts while Redis is unreachable.
pub const DEFAULT_RECONNECT_AFTER: Duration = Duration::from_secs(3);
/// How long a budget's key outlives its last use (its expiry, renewed by every write).
pub const TTL: Duration = IDLE;
/// A caller that fits within this long is admitted through Redis: a few round trips on
/// a local network, and a thread's or a task's wake-up. Through a Redis [`FAR`] away a
/// round admits within three of its round trips ([`RedisRound`]).
pub const HORIZON: Duration = Duration::from_millis(5);
/// A Redis whose last round trip took this long or more is far away (another region):
/// its rounds admit until the next round's callers would go, its callers are charged as
/// of when they can go, and wait less by the trip back ([`RedisRound`]). Nearer, a round
/// admits within [`HORIZON`], and its callers wait from when they were admitted, as they
/// would in-process.
pub const FAR: Duration = Duration::from_millis(50);
/// Compare-and-set attempts of one operation before it gives up (nobody admitted, the
/// head asks again shortly): every failed attempt means another process changed the
/// budget, so Redis is up and the stand-in must not admit.
pub const MAX_TRIES: u32 = 64;

/// How many times the Redis Cluster client follows a redirect (`MOVED`, `ASK`) or retries
/// a node within one call before the call fails (and the stand-in answers): a slot that
/// moved and then is being migrated takes two; more would keep a caller waiting on a
/// master that is gone.
pub const CLUSTER_RETRIES: u32 = 2;
/// The shortest and longest pause, in ms, of the Redis Cluster client between two tries
/// of one call (`TRYAGAIN`, `CLUSTERDOWN` while a replica takes over).
pub const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// Reads `KEYS[1]` and Redis `TIME`; with `ARGV[1] == '1'`, when the key's value is still
/// `ARGV[2]` (the empty string for a missing key) and Redis `TIME` has not passed
/// `ARGV[5]` µs, sets it to `ARGV[3]` with an expiry of `ARGV[4]` ms. Returns `{1 if set
/// else 0, the value (when not set), seconds, microseconds}`.
///
/// Past `ARGV[5]` the caller has stopped waiting for the answer: a value set then would
/// admit callers that are never told (a call held by a partition and delivered when it
/// heals), counted out for ever.
pub const CAS_SCRIPT: &str = r"
local t = redis.call('TIME')
local cur = redis.call('GET', KEYS[1]) or ''
if ARGV[1] == '1' and cur == ARGV[2]
    and tonumber(t[1]) * 1000000 + tonumber(t[2]) <= tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return {1, '', t[1], t[2]}
end
return {0, cur, t[1], t[2]}
";

/// A Redis URL checked for the limiter: what to connect to (one server, or the nodes of a
/// Redis Cluster), how to show it, and the CA file a `rediss://` connection checks the
/// server against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// The URL to connect to (without `ca=`).
    pub url: String,
    /// For a Redis Cluster, one URL per node named (`redis://[user:password@]host:port/`,
    /// each with the URL's path and query): the client learns the rest of the cluster
    /// from the first that answers. Empty for a single server at [`RedisTarget::url`].
    pub cluster_nodes: Vec<String>,
    /// The URL without its password, for logs and errors.
    pub shown: String,
    /// The PEM file of the certificate authorities to trust (`?ca=<path>`), when named.
    pub ca_file: Option<PathBuf>,
    /// `true` for `rediss://` (TLS).
    pub tls: bool,
}

impl RedisTarget {
    /// Checks `redis_url` (`redis://[[user]:password@]host[:port][/db]`, `rediss://…`,
    /// `redis+unix:///path`, with an optional `?ca=<path>`): certificate checks cannot be
    /// turned off, so `#insecure` is an [`Error::Config`]; so is a malformed `ca=`. The
    /// rest of the URL is checked by the Redis client when the driver opens it.
    ///
    /// A Redis Cluster is named by some of its nodes, in either of two forms:
    /// `redis+cluster://[[user]:password@]host:port,host:port,…[/][?…]` (`rediss+cluster`
    /// for TLS; the credentials, path and query hold for every node), or the list of node
    /// URLs the `redis` crate's cluster client takes, joined by commas
    /// (`redis://:pw@a:7000,redis://:pw@b:7001/?ca=/etc/ca.pem`; a query after the last
    /// URL holds for every node). Either gives [`RedisTarget::cluster_nodes`].
    pub fn parse(redis_url: &str) -> Result<Self, Error> {
        let options = RedisOptions::parse(redis_url)?;
        let shown = mistral_core::redact::redact_url(&options.url);
        let cluster_nodes = cluster_nodes(options.url.trim(), &shown)?;
        let urls = if cluster_nodes.is_empty() {
            std::slice::from_ref(&options.url)
        } else {
            cluster_nodes.as_slice()
        };
        if urls
            .iter()
            .any(|url| url.to_ascii_lowercase().ends_with("#insecure"))
        {
            return Err(Error::Config(format!(
                "the limiter's Redis URL ({shown}) asks to skip the certificate check \
                 (`#insecure`), which this client does not do: name the server's CA \
                 with `?ca=/path/to/ca.pem` instead"
            )));
        }
        let tls = urls[0]
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("rediss:");
        Ok(Self {
            url: options.url,
            cluster_nodes,
            shown,
            ca_file: options.ca_file,
            tls,
        })
    }

    /// `true` for a Redis Cluster ([`RedisTarget::cluster_nodes`] named).
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
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

/// The node URLs of a Redis Cluster `url` names (see [`RedisTarget::parse`]), or none for
/// a single server. `shown` is the URL without its password, for errors.
fn cluster_nodes(url: &str, shown: &str) -> Result<Vec<String>, Error> {
    let lower = url.to_ascii_lowercase();
    let bad = |what: &str| {
        Error::Config(format!(
            "bad Redis Cluster URL for the limiter ({shown}): {what}; expected \
             `redis+cluster://[user:password@]host:port,host:port,…` or \
             `redis://host:port,redis://host:port,…`"
        ))
    };
    for (prefix, scheme) in [
        ("redis+cluster://", "redis"),
        ("rediss+cluster://", "rediss"),
    ] {
        if !lower.starts_with(prefix) {
            continue;
        }
        let rest = &url[prefix.len()..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (credentials, hosts) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        return hosts
            .split(',')
            .map(|host| {
                let host = host.trim();
                if host.is_empty() {
                    Err(bad("a node is missing between commas"))
                } else {
                    Ok(format!("{scheme}://{credentials}{host}{tail}"))
                }
            })
            .collect();
    }
    // The `redis` crate's form: one URL per node. Only a comma followed by a Redis URL
    // splits it (a password may hold a comma).
    let starts_node = |piece: &str| {
        let piece = piece.trim_start().to_ascii_lowercase();
        piece.starts_with("redis://") || piece.starts_with("rediss://")
    };
    let mut pieces = url.split(',');
    let mut nodes = vec![pieces.next().unwrap_or_default().trim().to_owned()];
    for piece in pieces {
        match nodes.last_mut() {
            Some(last) if !starts_node(piece) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => nodes.push(piece.trim().to_owned()),
        }
    }
    if nodes.len() == 1 {
        return Ok(Vec::new());
    }
    if !starts_node(&nodes[0]) {
        return Err(bad(
            "each node's URL must be a `redis://` or `rediss://` URL",
        ));
    }
    // A query after the last node holds for every node (`ca=` has been taken already).
    let last = nodes.last().map(String::as_str).unwrap_or_default();
    if let Some(q) = last.find('?') {
        let query = last[q..].to_owned();
        for node in nodes.iter_mut().rev().skip(1) {
            if !node.contains('?') {
                if !node[node.find("://").map_or(0, |i| i + 3)..].contains('/') {
                    node.push('/');
                }
                node.push_str(&query);
            }
        }
    }
    Ok(nodes)
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

/// One [`CAS_SCRIPT`] call to make: `EVALSHA <sha> 1 key write expected new ttl_ms
/// deadline_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasCall {
    /// The budget's key.
    pub key: String,
    /// `ARGV`: `"1"` to set (else only read), the value expected, the new value, the
    /// expiry in ms, and the Redis time in µs after which nothing is set.
    pub args: [Vec<u8>; 5],
}

/// What [`CAS_SCRIPT`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasReply {
    /// The value was set.
    pub stored: bool,
    /// The key's value when it was not set (empty: no key).
    pub current: Vec<u8>,
    /// Redis `TIME` in µs.
    pub now_us: u64,
}

impl CasReply {
    /// The reply from the script's four elements: the flag, the value, `TIME`'s seconds
    /// and microseconds (as Redis returns them: integers or their decimal text).
    pub fn from_parts(flag: i64, current: Vec<u8>, secs: u64, micros: u64) -> Self {
        CasReply {
            stored: flag == 1,
            current,
            now_us: secs.saturating_mul(1_000_000).saturating_add(micros),
        }
    }
}

/// What a driver does next in a [`RedisRound`].
#[derive(Debug)]
#[must_use = "a step is the driver's next move"]
pub enum RedisStep {
    /// Call the script with this and hand its reply to [`RedisRound::reply`].
    Call(CasCall),
    /// The operation is done: its answer.
    Done(AdmitAnswer),
}

/// What this process last read or wrote of each budget's key, and when: a round starts
/// from it instead of reading the key first ([`RedisRound::start`]). At most
/// [`MAX_BUDGETS`] keys (the longest unused go first).
#[derive(Debug, Default)]
pub struct Seen {
    keys: Mutex<HashMap<String, Last>>,
}

/// A key's value as Redis last showed it to this process.
#[derive(Debug, Clone)]
struct Last {
    value: Vec<u8>,
    /// Redis `TIME` of that reply, µs.
    now_us: u64,
    /// When the reply came.
    at: Instant,
    /// The round trip of that call.
    trip: Duration,
}

impl Seen {
    fn get(&self, key: &str) -> Option<Last> {
        self.lock().get(key).cloned()
    }

    fn put(&self, key: &str, last: Last) {
        let mut keys = self.lock();
        keys.insert(key.to_owned(), last);
        if keys.len() > MAX_BUDGETS {
            let oldest = keys
                .iter()
                .min_by_key(|(_, l)| l.at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                keys.remove(&oldest);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Last>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One store operation on Redis, as compare-and-set rounds (see the module docs).
///
/// The first call sets the key at once when this process knows its value ([`Seen`]):
/// computed on Redis's time as that reply gave it plus the time since (behind Redis's
/// clock by a round trip, so it admits no earlier than Redis would), it lands when
/// nobody changed the key since, in one round trip instead of two; when somebody did,
/// Redis returns the value and the round goes on from it. A report is learned no
/// earlier than it came (its age less that round trip: its time on Redis's clock is
/// then at least the one it came at; one that came within that round trip is read as of
/// the latest time it can have come, past the operation's `now`,
/// [`crate::ReportOp::ahead_us`]). Through a Redis [`FAR`] away, the callers it admits go
/// when its answer is back: they are charged as of two round trips after its `now` at the
/// earliest (a budget left full until then fills no further,
/// [`crate::AdmitOp::late_us`]), and one that fits within three (when the next round's
/// would go) is admitted, its wait shortened by the round trip of the call that set the
/// key ([`AdmitAnswer::aged`]): measured from a time no later than Redis's clock, the
/// waits stay no shorter than the capacity needs.
#[derive(Debug)]
pub struct RedisRound<'a> {
    key: String,
    ops: StoreOps,
    /// How long the driver waits for one call's answer.
    patience: Duration,
    tries: u32,
    seen: &'a Seen,
    /// When the last call was made.
    called: Instant,
    /// The last value was computed for a Redis [`FAR`] away.
    far: bool,
    /// The state, answer and value of the value last sent, until Redis says it was set.
    sent: Option<(crate::budget::BudgetState, AdmitAnswer, Vec<u8>)>,
}

impl<'a> RedisRound<'a> {
    /// `ops` on the store with id `store_id`, at `now`, by a driver that waits
    /// `patience` for a call's answer (a call that reaches Redis later sets nothing):
    /// the first call sets the key from what `seen` holds of it, or reads it.
    pub fn start(
        store_id: &str,
        ops: StoreOps,
        seen: &'a Seen,
        store: &SharedStore,
        now: Instant,
        patience: Duration,
    ) -> (Self, CasCall) {
        let key = super::redis_key(store_id, &ops.model);
        let last = seen.get(&key);
        let mut round = RedisRound {
            key,
            ops,
            patience,
            tries: 0,
            seen,
            called: now,
            far: false,
            sent: None,
        };
        let call = match last {
            Some(last) => {
                round.tries = 1;
                let since = u64::try_from(now.saturating_duration_since(last.at).as_micros())
                    .unwrap_or(u64::MAX);
                let trip = u64::try_from(last.trip.as_micros()).unwrap_or(u64::MAX);
                round.compute(
                    store,
                    now,
                    last.value,
                    last.now_us.saturating_add(since),
                    trip,
                    trip,
                )
            }
            None => CasCall {
                key: round.key.clone(),
                args: [
                    b"0".to_vec(),
                    Vec::new(),
                    Vec::new(),
                    b"0".to_vec(),
                    b"0".to_vec(),
                ],
            },
        };
        (round, call)
    }

    /// The operation this round runs.
    pub fn ops(&self) -> &StoreOps {
        &self.ops
    }

    /// Redis answered the last call at `now`: the next call, or the answer.
    pub fn reply(&mut self, store: &SharedStore, now: Instant, reply: CasReply) -> RedisStep {
        let trip = now.saturating_duration_since(self.called);
        if reply.stored
            && let Some((state, answer, value)) = self.sent.take()
        {
            let last = Last {
                value,
                now_us: reply.now_us,
                at: now,
                trip,
            };
            self.seen.put(&self.key, last);
            store.up(now, &self.ops.model, &state);
            // The waits were measured from `now_us`, no later than Redis's clock when the
            // value was computed; through a Redis far away, the trip since brings each
            // capacity that much nearer (they were charged as of then).
            let answer = if self.far {
                answer.aged(u64::try_from(trip.as_micros()).unwrap_or(u64::MAX))
            } else {
                answer
            };
            return RedisStep::Done(answer);
        }
        let last = Last {
            value: reply.current.clone(),
            now_us: reply.now_us,
            at: now,
            trip,
        };
        self.seen.put(&self.key, last);
        self.tries += 1;
        if self.tries > MAX_TRIES {
            tracing::debug!(
                key = self.key.as_str(),
                "too many concurrent changes of one budget; asking again shortly"
            );
            let n = self.ops.admit.as_ref().map_or(0, |op| op.candidates.len());
            return RedisStep::Done(AdmitAnswer::waiting(n, 1_000));
        }
        let trip_us = u64::try_from(trip.as_micros()).unwrap_or(u64::MAX);
        RedisStep::Call(self.compute(store, now, reply.current, reply.now_us, 0, trip_us))
    }

    /// The call that sets the key, found at `current` at `now_us` (Redis's time), to
    /// what `ops` make of it; each report's age less `credit_us` (the most `now_us` may be
    /// behind Redis's clock), through a Redis [`FAR`] away if `trip_us` (the last round
    /// trip) is that long.
    fn compute(
        &mut self,
        store: &SharedStore,
        now: Instant,
        current: Vec<u8>,
        now_us: u64,
        credit_us: u64,
        trip_us: u64,
    ) -> CasCall {
        self.called = now;
        let model = &self.ops.model;
        let (stored, lost) = if current.is_empty() {
            (None, true)
        } else {
            match codec::decode_value(&current, model) {
                Ok(state) => (Some(state), false),
                Err(error) => {
                    tracing::warn!(
                        key = self.key.as_str(),
                        %error,
                        "the limiter's Redis value is unreadable; replacing it with what \
                         this process last saw, at a cautious share"
                    );
                    (None, true)
                }
            }
        };
        let mut state = store.starting_state(now, now_us, model, stored, lost);
        let mut ops = self.ops.clone();
        for report in &mut ops.reports {
            // `now_us` may be behind Redis's clock by up to `credit_us`: an answer that
            // came within that is read as of the latest time it can have come.
            report.ahead_us = credit_us.saturating_sub(report.age_us);
            report.age_us = report.age_us.saturating_sub(credit_us);
        }
        self.far = trip_us >= u64::try_from(FAR.as_micros()).unwrap_or(u64::MAX);
        if let Some(op) = &mut ops.admit
            && self.far
        {
            // The callers admitted go when the answer is back, a round trip from now, and
            // `now_us` may be behind Redis's clock by the way back of the last call, at
            // most its trip: they are charged as of then at the earliest. A caller that
            // fits within a round trip more (when the next operation's would go) is
            // admitted and waits the rest ([`AdmitAnswer::aged`]), rather than wait for
            // that operation and go in a lump with the others.
            let late_us = trip_us.saturating_mul(2);
            op.late_us = op.late_us.max(late_us);
            op.horizon_us = op.horizon_us.max(late_us.saturating_add(trip_us));
        }
        let answer = ops.apply(now_us, &mut state);
        let ttl_ms = u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX);
        let patience_us = u64::try_from(self.patience.as_micros()).unwrap_or(u64::MAX);
        // `now_us` is no later than Redis's clock when the call leaves: past this, the
        // driver has stopped waiting for its answer, and a value set then would admit
        // callers that are never told (held by a partition, delivered when it heals).
        let deadline_us = now_us.saturating_add(patience_us);
        let value = codec::encode_value(&state);
        let call = CasCall {
            key: self.key.clone(),
            args: [
                b"1".to_vec(),
                current,
                value.clone(),
                ttl_ms.to_string().into_bytes(),
                deadline_us.to_string().into_bytes(),
            ],
        };
        self.sent = Some((state, answer, value));
        call
    }

    /// The call failed (`error`): the stand-in's answer.
    pub fn failed(
        self,
        store: &SharedStore,
        now: Instant,
        error: &dyn std::fmt::Display,
    ) -> AdmitAnswer {
        store.failed(now, error, &self.ops)
    }
}

#[cfg(test)]
mod tests {
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
    fn a_cluster_is_named_by_its_nodes_in_either_form() {
        let t = RedisTarget::parse("redis+cluster://u:p,w@a:7000, b:7001 ,[::1]:7002/").unwrap();
        assert!(t.is_cluster() && !t.tls);
        assert_eq!(
            t.cluster_nodes,
            [
                "redis://u:p,w@a:7000/",
                "redis://u:p,w@b:7001/",
                "redis://u:p,w@[::1]:7002/"
            ]
        );
        assert!(!t.shown.contains("p,w"), "{}", t.shown);
        let t = RedisTarget::parse("RediSS+Cluster://:pw@a:7000,b:7001?ca=/c.pem&protocol=resp3")
            .unwrap();
        assert!(t.tls);
        assert_eq!(t.ca_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(
            t.cluster_nodes,
            [
                "rediss://:pw@a:7000?protocol=resp3",
                "rediss://:pw@b:7001?protocol=resp3"
            ]
        );
        // The `redis` crate's form: a list of node URLs, a query at the end for all.
        let t =
            RedisTarget::parse("redis://:pw@a:7000,redis://:p,w@b:7001/?ca=/c.pem&x=1").unwrap();
        assert_eq!(
            t.cluster_nodes,
            ["redis://:pw@a:7000/?x=1", "redis://:p,w@b:7001/?x=1"]
        );
        assert!(
            !t.shown.contains("pw") && !t.shown.contains("p,w"),
            "{}",
            t.shown
        );
        assert_eq!(t.ca_file, Some(PathBuf::from("/c.pem")));
        // One server, even with a comma in its password.
        let t = RedisTarget::parse("redis://:a,b@h:6379/0").unwrap();
        assert!(!t.is_cluster());
        assert_eq!(t.url, "redis://:a,b@h:6379/0");
        for bad in [
            "redis+cluster://:secret@a:1,,b:2",
            "rediss+cluster://:secret@a:1,b:2/#insecure",
            "rediss://:secret@a:1#insecure,rediss://b:2",
        ] {
            match RedisTarget::parse(bad) {
                Err(Error::Config(m)) => assert!(!m.contains("secret"), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    /// On a Redis Cluster a script may only touch keys of one slot: a budget's keys, of
    /// every model, share the hash tag `{<id>}` (what Redis hashes for the slot: the text
    /// between the first `{` and the next `}`), and the script touches `KEYS[1]` only.
    #[test]
    fn every_key_of_a_budget_hashes_to_the_slot_of_its_id() {
        fn hash_tag(key: &str) -> &str {
            let Some(open) = key.find('{') else {
                return key;
            };
            match key[open + 1..].find('}') {
                Some(0) | None => key,
                Some(len) => &key[open + 1..open + 1 + len],
            }
        }
        for model in ["mistral-small-latest", "m{x}", "}{", "", "a:b"] {
            let key = super::super::redis_key("0123456789abcdef", model);
            assert_eq!(hash_tag(&key), "0123456789abcdef", "{key}");
        }
        let uses_keys: Vec<&str> = CAS_SCRIPT
            .match_indices("KEYS[")
            .map(|(i, _)| &CAS_SCRIPT[i..i + 7])
            .collect();
        assert!(uses_keys.iter().all(|k| *k == "KEYS[1]"), "{uses_keys:?}");
        assert!(!CAS_SCRIPT.contains("redis.call('KEYS'") && !CAS_SCRIPT.contains("SCAN"));
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
    }
}
