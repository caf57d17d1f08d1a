//! Per-call options: what one call may change of its client's [`RetryPolicy`].

use std::borrow::Cow;
use std::time::Duration;

use crate::policy::RetryPolicy;

/// Options for the calls made through one handle of a client, over the client's
/// [`RetryPolicy`]: an overall deadline, the most attempts, the timeout of one attempt.
///
/// Both clients take them with `Client::with_options`, which returns a cheap handle on
/// the same client (same connections, limiter and statistics) whose every endpoint uses
/// them — the pattern of the official SDKs' `client.with_options(...)`:
///
/// ```
/// use std::time::Duration;
/// use mistral_core::{CallOptions, RetryPolicy};
///
/// let options = CallOptions::new()
///     .deadline(Duration::from_secs(20))
///     .max_attempts(3)
///     .attempt_timeout(Duration::from_secs(10));
/// let client_policy = RetryPolicy::default();
/// let policy = options.apply(&client_policy);
/// assert_eq!(policy.deadline, Some(Duration::from_secs(20)));
/// assert_eq!(policy.max_attempts, 3);
/// assert_eq!(policy.attempt_timeout, Some(Duration::from_secs(10)));
/// // What is not set stays the client's.
/// assert_eq!(CallOptions::new().apply(&client_policy).max_attempts, 10);
/// ```
///
/// The type is built with its setters only: its fields are private, so an option added
/// later breaks no caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    deadline: Option<Option<Duration>>,
    max_attempts: Option<u32>,
    attempt_timeout: Option<Option<Duration>>,
    priority: Option<crate::Priority>,
    retry_unknown_outcome: Option<bool>,
}

impl CallOptions {
    /// No option set: every call as its client's policy says.
    pub fn new() -> Self {
        Self::default()
    }

    /// The call's overall deadline, from its start, waits for the rate limit included:
    /// when it passes, the call ends with the last error (or
    /// [`crate::Error::RateLimited`] with `shared: true` when the limiter could not give
    /// it a slot in time).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(Some(deadline));
        self
    }

    /// No overall deadline (the call ends when its attempts are spent).
    pub fn no_deadline(mut self) -> Self {
        self.deadline = Some(None);
        self
    }

    /// The most HTTP attempts of the call, the first included (0 counts as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// The timeout of one attempt (connect to last byte of a non-streamed body, or to a
    /// stream's response head).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(Some(timeout));
        self
    }

    /// The call's priority class in the shared budget: when callers queue, a higher
    /// class is served first (see [`crate::Priority`]).
    pub fn priority(mut self, priority: crate::Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Whether the call sends its request again after an attempt whose outcome is
    /// unknown (written, then no answer: the server may have run it), over the client's
    /// [`RetryPolicy::retry_unknown_outcome`] (off by default: such a call ends with
    /// [`crate::Error::OutcomeUnknown`]). Turn it on for a request that is safe to run
    /// twice, or whose duplicate you can afford.
    pub fn retry_unknown_outcome(mut self, on: bool) -> Self {
        self.retry_unknown_outcome = Some(on);
        self
    }

    /// `true` when no option is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `policy` with these options over it (borrowed as it is when none is set).
    pub fn apply<'a>(&self, policy: &'a RetryPolicy) -> Cow<'a, RetryPolicy> {
        if self.is_empty() {
            return Cow::Borrowed(policy);
        }
        let mut p = policy.clone();
        if let Some(deadline) = self.deadline {
            p.deadline = deadline;
        }
        if let Some(n) = self.max_attempts {
            p.max_attempts = n;
        }
        if let Some(timeout) = self.attempt_timeout {
            p.attempt_timeout = timeout;
        }
        if let Some(priority) = self.priority {
            p.priority = priority;
        }
        if let Some(on) = self.retry_unknown_outcome {
            p.retry_unknown_outcome = on;
        }
        Cow::Owned(p)
    }

    /// These options with `over`'s set ones taking precedence.
    pub fn merged(self, over: CallOptions) -> Self {
        Self {
            deadline: over.deadline.or(self.deadline),
            max_attempts: over.max_attempts.or(self.max_attempts),
            attempt_timeout: over.attempt_timeout.or(self.attempt_timeout),
            priority: over.priority.or(self.priority),
            retry_unknown_outcome: over.retry_unknown_outcome.or(self.retry_unknown_outcome),
        }
    }
}
