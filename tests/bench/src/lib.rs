//! `mistral-bench`: the rate-limit benchmark behind `cargo xtask bench`, every scenario
//! with every retry strategy against the emulator, in one run.
//!
//! - [`strategy`]: ours (blocking and async, one shared limiter) and the baselines (the
//!   seed fix, the official SDKs' shape, full jitter without coordination), all driven
//!   through our own transport so that only the retry logic differs;
//! - [`scenario`]: S1 (20 at once against 5/s), S2 (2,000 requests, request and token
//!   limits), S3/S4 (4 processes sharing a file / Redis store), S5 (no headers, under
//!   each semantics: bucket, fixed window, sliding log, leaky bucket without burst, a
//!   concurrency limit), S6 (a background consumer at 30 %), S7 (a one-minute bucket
//!   and fixed window with headers, scaled down), S8/S9 (the limit doubled and halved
//!   mid-run, announced or not), S10 (another program starts spending half mid-run),
//!   and a sample of the targets grid (`G-…`; `--grid` for all of it);
//! - [`workload`]: the requests (and the old ideal, requests ÷ rate);
//! - [`best`]: the server's own best, the yardstick of every row (it lives in
//!   `mistral-emulator`, next to the rules it models, because the demo uses it too);
//! - [`capacity`]: issue 9's measured table, re-run (`--capacity-table`);
//! - [`job`] and [`child`]: one process's share of a run, in-process or in a child
//!   process of the bench binary (clean CPU and memory numbers);
//! - [`metrics`], [`report`], [`plot`]: rows, the markdown/JSON report, one SVG per
//!   scenario;
//! - [`micro`]: criterion's numbers for the core, the clients' overhead over their bare
//!   HTTP libraries, the emulator's throughput;
//! - [`suite`]: the whole run;
//! - [`memory`]: memory per call in flight, in the limiter's line and at the server
//!   (`mistral-bench --memory`);
//! - [`soak`]: a long run under random faults of every kind, Redis restarted under four
//!   processes (`mistral-bench --soak-minutes N`).
//!
//! ```no_run
//! use mistral_bench::{scenario::Size, suite};
//!
//! let mut options = suite::Options::full("target/bench".into(), std::env::current_exe().unwrap());
//! options.size = Size::Quick;
//! let report = suite::run(&options); // writes target/bench/report.{md,json} and the plots
//! println!("{}", report.table());
//! ```

#![warn(missing_docs)]

pub mod capacity;
pub mod child;
pub mod job;
pub mod measure;
pub mod memory;
pub mod metrics;
pub mod micro;
pub mod plot;
pub mod priorities;
pub mod report;
pub mod scenario;
pub mod soak;
pub mod stores;
pub mod strategy;
pub mod suite;
pub mod workload;

pub use mistral_emulator::best;
pub use report::Report;
pub use scenario::{Scenario, Size};
pub use strategy::Strategy;
pub use suite::{Isolation, Options, run};
