//! Sans-IO core of the Mistral API client.
//!
//! (Crate docs are completed with the `Call` state machine.)

pub mod models;
pub mod sse;
