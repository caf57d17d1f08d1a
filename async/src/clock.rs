//! The one clock of this crate: tokio's, so that a paused test clock makes every wait
//! virtual. The client, the streams, the transport and the stores all read it here.

use std::time::Instant;

/// `now` on tokio's clock (virtual under a paused test clock), as the core wants it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
