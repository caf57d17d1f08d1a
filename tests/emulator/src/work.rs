//! What a request under the rate limiter asks of the emulator: which endpoint a path
//! is, the validated request, what it costs (tokens, or an OCR request's pages), and
//! its answer.

use serde_json::Value;

use super::api::{self, Completion, Endpoint, Invalid, Parsed};
use super::config::Config;
use super::headers::Unit;
use super::ocr;

/// An endpoint under the limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Chat, FIM, embeddings, moderations (tokens; [`api`]).
    Inference(Endpoint),
    /// `POST /v1/ocr` (pages; [`ocr`]).
    Ocr,
}

impl Kind {
    /// The endpoint at `path`, if it is one under the limiter.
    pub(crate) fn from_path(path: &str) -> Option<Kind> {
        if let Some(endpoint) = Endpoint::from_path(path) {
            return Some(Kind::Inference(endpoint));
        }
        Some(match path {
            "/v1/ocr" => Kind::Ocr,
            _ => return None,
        })
    }
}

/// A validated request.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    Inference(Parsed),
    Ocr(ocr::Job),
}

impl Work {
    /// Validates `body` for `kind`.
    pub(crate) fn parse(kind: Kind, body: &[u8], config: &Config) -> Result<Work, Invalid> {
        match kind {
            Kind::Inference(endpoint) => api::parse(
                endpoint,
                body,
                Completion {
                    tokens: config.completion_tokens,
                    spread: config.completion_spread,
                },
                config.embedding_dim,
            )
            .map(Work::Inference),
            Kind::Ocr => ocr::parse(body, config.document_pages).map(Work::Ocr),
        }
    }

    /// The model (the budget it is charged to).
    pub(crate) fn model(&self) -> &str {
        match self {
            Work::Inference(p) => &p.model,
            Work::Ocr(j) => &j.model,
        }
    }

    /// Whether it asked for a stream of events.
    pub(crate) fn stream(&self) -> bool {
        match self {
            Work::Inference(p) => p.stream,
            Work::Ocr(_) => false,
        }
    }

    /// What it costs in [`Work::unit`]s.
    pub(crate) fn cost(&self) -> u64 {
        match self {
            Work::Inference(p) => p.total_tokens(),
            Work::Ocr(j) => j.pages.len() as u64,
        }
    }

    /// What the model's second limit counts for it.
    pub(crate) fn unit(&self) -> Unit {
        match self {
            Work::Inference(_) => Unit::Tokens,
            Work::Ocr(_) => Unit::Pages,
        }
    }

    /// The JSON answer (not a stream).
    pub(crate) fn answer(&self, id: &str, created: u64) -> Value {
        match self {
            Work::Inference(p) => api::response(p, id, created),
            Work::Ocr(j) => ocr::response(j),
        }
    }
}
