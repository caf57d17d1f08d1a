//! Token estimates that learn, per model, from every answer's `usage`: characters per
//! prompt token, and the completion a request without `max_tokens` produces.
//!
//! An estimate is charged when a call is admitted and corrected by the answer (the
//! difference given back or taken at once), so a high estimate costs only while the
//! call is out and a low one is paid back at its answer. It stays on the cautious side
//! until it has seen enough: prompts count 3 characters a token (most text has 4 or
//! more) and a completion without `max_tokens` counts
//! [`mistral_core::request::DEFAULT_COMPLETION_ESTIMATE`] tokens until
//! [`BudgetState::MIN_SAMPLES`] answers were seen; then the moving mean plus three
//! moving mean deviations (about the 95th percentile), and a tenth fewer characters a
//! token than measured.
//!
//! Setting `max_tokens` bounds a request's completion: the estimate never exceeds it, so
//! a model that answers at length is never charged more than it may produce, and one
//! that answers briefly is charged what it usually produces once learned.

use mistral_core::request::DEFAULT_COMPLETION_ESTIMATE;

use super::BudgetState;
use crate::op::{Candidate, ReportOp};

impl BudgetState {
    /// Answers seen before an estimate leaves its cautious default.
    pub const MIN_SAMPLES: u64 = 4;
    /// Prompt characters a token is assumed to hold before any is measured.
    pub const CAUTIOUS_CHARS_PER_TOKEN: f64 = 3.0;
    /// The weight of a new sample in the moving averages.
    const ALPHA: f64 = 0.125;

    /// The tokens `c` is charged at admission.
    pub fn estimate(&self, c: &Candidate) -> u64 {
        if c.size.prompt_chars == 0 && c.size.max_tokens.is_none() {
            // A request whose size says nothing (a raw `send`): the fixed rule's.
            return c.tokens.max(1);
        }
        let cpt = if self.cpt_n >= Self::MIN_SAMPLES {
            (self.cpt * 0.9).clamp(0.5, 16.0)
        } else {
            Self::CAUTIOUS_CHARS_PER_TOKEN
        };
        let prompt = (c.size.prompt_chars as f64 / cpt).ceil().max(1.0) as u64;
        let learned = (self.comp_n >= Self::MIN_SAMPLES)
            .then(|| (self.comp_mean + 3.0 * self.comp_dev).ceil().max(1.0) as u64);
        let completion = match (c.size.max_tokens, learned) {
            (Some(max), Some(learned)) => max.min(learned),
            (Some(max), None) => max,
            (None, Some(learned)) => learned,
            (None, None) => DEFAULT_COMPLETION_ESTIMATE,
        };
        prompt.saturating_add(completion).max(1)
    }

    /// Tokens an average request is charged: what a caller of another process is
    /// assumed to need when its capacity is kept for it.
    pub(crate) fn mean_tokens(&self) -> f64 {
        let completion = if self.comp_n >= Self::MIN_SAMPLES {
            self.comp_mean
        } else {
            DEFAULT_COMPLETION_ESTIMATE as f64
        };
        completion + 250.0
    }

    /// Learns from the `usage` of an answer.
    pub(super) fn learn_estimates(&mut self, op: &ReportOp) {
        if let Some(prompt) = op.prompt_tokens.filter(|p| *p > 0)
            && op.size.prompt_chars > 0
        {
            let sample = op.size.prompt_chars as f64 / prompt as f64;
            self.cpt = if self.cpt_n == 0 {
                sample
            } else {
                self.cpt + Self::ALPHA * (sample - self.cpt)
            };
            self.cpt_n += 1;
        }
        // A completion cut at its `max_tokens` says only that it would have been longer.
        if let Some(completion) = op.completion_tokens
            && op.size.max_tokens.is_none_or(|max| completion < max)
            && op.used_tokens.is_some_and(|u| u > 0)
        {
            let sample = completion as f64;
            if self.comp_n == 0 {
                self.comp_mean = sample;
                self.comp_dev = sample / 2.0;
            } else {
                let error = sample - self.comp_mean;
                self.comp_mean += Self::ALPHA * error;
                self.comp_dev += Self::ALPHA * (error.abs() - self.comp_dev);
            }
            self.comp_n += 1;
        }
    }
}
