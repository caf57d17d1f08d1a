//! The Mistral API emulator and the helpers of the conformance suite.
//!
//! - [`Emulator`]: a real HTTP server on loopback behaving like the Mistral API as
//!   captured in `mistral-api.md` (endpoints, auth, per-model limits with the header
//!   names of a chosen [`Era`], 429 forms, monthly quota, zero allowance, capacity errors,
//!   streaming, faults), with a [`Log`] of what it received and checks that no limit
//!   was exceeded. Its limiter is its own code, independent of `mistral-core`.
//! - [`nginx`]: a real nginx `limit_req` in front of a loopback server (own prefix,
//!   generated config, free port, an access log to judge by), killed on drop.
//! - [`raw_http`]: a tiny blocking HTTP/1.1 client over `std::net::TcpStream`, for tests
//!   that must see the wire as it is (resets, cut streams, stalls).
//! - [`hostile`]: a hostile HTTP/1.1 server on raw sockets (silent, trickling, echoing
//!   the key, lying about lengths, oversized, redirecting) for the hostile conformance
//!   table.
//! - The `mistral-emulator` binary ([`run_cli`]) serves an emulator until killed.
//! - [`bench`](mod@bench): the rate-limit benchmark of `cargo xtask bench` (`mistral-bench`).
//! - [`demo`](mod@demo): the end-to-end demo of `cargo xtask demo` (`mistral-demo`).

#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod emulator;
pub mod hostile;
pub mod nginx;
pub mod raw_http;

pub use emulator::*;

/// The README's examples, compiled as doctests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExamples;
