//! Async Mistral client (reqwest + tokio). Filled by the clients issue.
