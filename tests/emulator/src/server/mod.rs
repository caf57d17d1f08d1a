//! The HTTP side of the emulator, one topic per module:
//!
//! - [`shared`]: the state every connection shares (configuration, meters, log, faults
//!   scripted and queued) and the schedule of limit changes;
//! - [`sockets`]: the accept loop and one hyper HTTP/1.1 connection per socket, which a
//!   handler can kill without answering (a reset or a close);
//! - [`body`]: the response body, handed over frame by frame, spaced, stalled or cut on
//!   purpose;
//! - [`replies`]: a response under construction and the canned ones (401 per era, error
//!   bodies, the replies of replacing faults, the model list);
//! - [`routes`]: what a request gets, in order: inspection, a replacing fault, the path,
//!   the key, validation, capacity, the limiter, the answer and its modifying fault.

mod body;
mod replies;
mod routes;
mod shared;
mod sockets;

pub(crate) use shared::{Shared, run_schedule};
pub(crate) use sockets::accept_loop;
