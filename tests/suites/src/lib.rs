//! `mistral-suites`: the suites that judge both clients against real servers on
//! loopback. The suites are this package's `tests/` (one test binary each), the user
//! programs its `examples/`; the library holds what only they use.
//!
//! - `tests/conformance.rs`: the conformance table, every row run on the blocking and the
//!   async client against the emulator (`tests/conformance/support.rs` drives both);
//!   `conformance_hostile.rs` the same against [`hostile`] servers;
//!   `conformance_tracing.rs` what each client logs.
//! - `fleet*.rs`: many threads, tasks and processes sharing one budget through the
//!   limiter's stores (file, Redis, a Redis Cluster).
//! - `unknown_limits.rs`: servers that announce nothing, a real nginx `limit_req` among
//!   them.
//! - `user_programs.rs`: the programs of `examples/` (the README's patterns) run
//!   against the emulator.
//! - The rest, one behaviour each: per-call options, the errors' surface, the limiter's
//!   statistics, a long call's WARN, a client on an HTTP client of the user's, TLS roots,
//!   tracing targets.
//!
//! The emulator, the nginx front and the wire-level client come from
//! `mistral-emulator`.

#![warn(missing_docs)]

pub mod hostile;

use mistral_emulator::redis_cluster::{ClusterOptions, RedisCluster};
use mistral_emulator::redis_server::RedisServer;

/// A private `redis-server` for a test, or `None` (with a note on stderr) when there is
/// none to start. Under `CI` a missing Redis fails the test instead: `cargo xtask test`
/// installs one, so a skip there would hide a missing install step.
pub fn redis_or_skip(what: &str) -> Option<RedisServer> {
    match RedisServer::start() {
        Ok(server) => Some(server),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is required in CI: {why}"
            );
            eprintln!("\n*** SKIP: {why}; {what} was not tested. ***\n");
            None
        }
    }
}

/// A private Redis Cluster for a test, or `None` (with a note on stderr saying what is
/// missing) when there is none to start. Under `CI` that fails the test instead.
pub fn redis_cluster_or_skip(options: ClusterOptions, what: &str) -> Option<RedisCluster> {
    match RedisCluster::start(options) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "a Redis Cluster is required in CI: {why}"
            );
            eprintln!("\n*** SKIP: {why}; {what} was not tested. ***\n");
            None
        }
    }
}

/// The README's examples, compiled as doctests so they cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExamples;
