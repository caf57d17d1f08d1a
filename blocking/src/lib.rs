//! Blocking Mistral client (ureq). Filled by the clients issue.
