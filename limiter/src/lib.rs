//! The shared rate limiter of the Mistral API client: one budget per model, shared by
//! every caller that spends it (threads, tasks, processes, hosts), admitting each call
//! at the moment it can go.
//!
//! Sans-IO, like `mistral-core`: no sockets, files, clocks, sleeps or threads. Time is
//! always an argument; a store's I/O is its driver's (`mistral-blocking`,
//! `mistral-async`), and everything a store decides is here.
//!
//! # How a call is admitted
//!
//! A call asks the [`mistral_core::Limiter`] its client holds when it is about to send
//! ([`mistral_core::Action::Reserve`]). In each process the callers of one budget wait
//! in one [`Line`], ordered by priority class, then arrival; they hold no capacity while
//! they wait. Only the head asks the shared budget ([`BudgetState::admit`]), for itself
//! and the callers right behind it: every one that fits now (within a short horizon, a
//! store round trip) is admitted at once, the others wait to be woken. Whatever frees
//! capacity (a report, a raised limit, a window that opened) wakes the head, so it reaches
//! the next caller within one store round trip, not at a slot booked long before.
//!
//! The budget itself is GCRA: one cell for requests and one for tokens, their level set
//! by what the server says remains, the token estimates learned from every answer's
//! `usage` and corrected at once; see [`budget`] for how limits are announced, learned
//! or configured, and how refusals are handled.
//!
//! # The state, declared once
//!
//! A budget's shared state is [`BudgetState`], declared once ([`record`]): its type,
//! its encoding in the state file and in Redis ([`store::codec`]), the rule by which
//! two versions of it merge when a store lost it, and the fields that are times on the
//! store's clock all follow from that one declaration. Every store runs this crate's
//! Rust on it; Redis only compares and sets ([`store::redis`]).
//!
//! # Stores
//!
//! - [`LocalLimiter`]: in-process (the default), behind one mutex.
//! - A state file shared by the processes of one host, and Redis shared by many hosts:
//!   their I/O is each client's (`mistral_blocking::stores`, `mistral_async::stores`),
//!   their decisions here ([`store`]).

pub mod budget;
pub mod line;
pub mod local;
pub mod op;
pub mod queued;
pub mod record;
pub mod store;

pub use budget::{BudgetState, ProcRecord, Refill, Source};
pub use line::{Batch, Line, LineConfig, LineView, Step};
pub use local::{Budgets, IDLE_FORGET, LOCAL_HORIZON, LocalLimiter, MAX_BUDGETS};
pub use op::{AdmitAnswer, AdmitOp, Binding, Candidate, Decision, ReportOp, Signal};
pub use queued::{Queued, StoreIo};
pub use store::{DEGRADED_SHARE, SharedStore, StoreOps};
