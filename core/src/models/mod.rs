//! Typed Mistral API models (serde).
