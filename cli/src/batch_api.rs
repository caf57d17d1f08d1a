//! `--via batch-api`.
use std::sync::Arc;

use crate::output::Resumed;
use crate::progress::Progress;
use crate::run::{Outcome, Plan};
use crate::{BatchArgs, Connection};

/// Runs `plan` through Mistral's Batch API.
pub async fn run(_conn: &Connection, _args: &BatchArgs, _plan: Plan, _resumed: Resumed, _progress: Arc<Progress>) -> Outcome {
    todo!()
}
