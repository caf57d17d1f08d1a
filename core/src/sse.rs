//! Server-sent events decoder.
