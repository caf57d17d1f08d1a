//! What a request under the rate limiter asks of the emulator: which endpoint a path
//! is, the validated request, what it costs (tokens, or an OCR request's pages), and
//! its answer.

use serde_json::Value;

use super::api::{self, Completion, Endpoint, Invalid, Parsed};
use super::audio;
use super::batch::Batches;
use super::config::Config;
use super::conversations::{self, Conversations};
use super::headers::Unit;
use super::ocr;

/// An endpoint under the limiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Chat, FIM, embeddings, moderations, classifiers, agents (tokens; [`api`]).
    Inference(Endpoint),
    /// `POST /v1/ocr` (pages; [`ocr`]).
    Ocr,
    /// `POST /v1/conversations` ([`conversations`]).
    ConversationStart,
    /// `POST /v1/conversations/{id}`.
    ConversationAppend(String),
    /// `POST /v1/audio/transcriptions` ([`audio`]).
    Transcription,
}

/// What validating a request may need beside its body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    pub config: &'a Config,
    pub conversations: &'a Conversations,
    /// Uploaded files (a transcription by file id).
    pub files: &'a Batches,
    /// The request's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The request's number (new ids are made of it).
    pub seq: u64,
}

impl Kind {
    /// The endpoint at `path`, if it is one under the limiter.
    pub(crate) fn from_path(path: &str) -> Option<Kind> {
        if let Some(endpoint) = Endpoint::from_path(path) {
            return Some(Kind::Inference(endpoint));
        }
        if let Some(id) = path.strip_prefix("/v1/conversations/")
            && !id.is_empty()
            && !id.contains('/')
        {
            return Some(Kind::ConversationAppend(id.to_string()));
        }
        Some(match path {
            "/v1/ocr" => Kind::Ocr,
            "/v1/conversations" => Kind::ConversationStart,
            "/v1/audio/transcriptions" => Kind::Transcription,
            _ => return None,
        })
    }
}

/// A validated request.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    Inference(Parsed),
    Ocr(ocr::Job),
    Conversation(conversations::Job),
    Transcription(audio::Job),
}

impl Work {
    /// Validates `body` for `kind`.
    pub(crate) fn parse(kind: &Kind, body: &[u8], cx: Context<'_>) -> Result<Work, Invalid> {
        let Context {
            config,
            conversations,
            files,
            content_type,
            seq,
        } = cx;
        match kind {
            Kind::Inference(endpoint) => {
                let mut parsed = api::parse(
                    *endpoint,
                    body,
                    Completion {
                        tokens: config.completion_tokens,
                        spread: config.completion_spread,
                        priority_tier: config.priority_tier,
                    },
                    config.embedding_dim,
                )?;
                if *endpoint == Endpoint::AgentCompletions {
                    parsed.model = config.agent_model.clone();
                }
                Ok(Work::Inference(parsed))
            }
            Kind::Ocr => ocr::parse(body, config.document_pages).map(Work::Ocr),
            Kind::ConversationStart => conversations
                .start(body, config, seq)
                .map(Work::Conversation),
            Kind::ConversationAppend(id) => conversations
                .append(id, body, config)
                .map(Work::Conversation),
            Kind::Transcription => audio::parse(content_type, body, config.audio_seconds, files)
                .map(Work::Transcription),
        }
    }

    /// Keeps what an admitted request left behind (a conversation's history).
    pub(crate) fn served(&self, conversations: &Conversations) {
        if let Work::Conversation(job) = self {
            conversations.served(job);
        }
    }

    /// The model (the budget it is charged to).
    pub(crate) fn model(&self) -> &str {
        match self {
            Work::Inference(p) => &p.model,
            Work::Ocr(j) => &j.model,
            Work::Conversation(j) => &j.model,
            Work::Transcription(j) => &j.model,
        }
    }

    /// Whether it asked for a stream of events.
    pub(crate) fn stream(&self) -> bool {
        match self {
            Work::Inference(p) => p.stream,
            Work::Ocr(_) | Work::Conversation(_) | Work::Transcription(_) => false,
        }
    }

    /// What it costs in [`Work::unit`]s.
    pub(crate) fn cost(&self) -> u64 {
        match self {
            Work::Inference(p) => p.total_tokens(),
            Work::Ocr(j) => j.pages.len() as u64,
            Work::Conversation(j) => j.total_tokens(),
            Work::Transcription(j) => j.total_tokens(),
        }
    }

    /// What the model's second limit counts for it.
    pub(crate) fn unit(&self) -> Unit {
        match self {
            Work::Inference(_) | Work::Conversation(_) | Work::Transcription(_) => Unit::Tokens,
            Work::Ocr(_) => Unit::Pages,
        }
    }

    /// The JSON answer (not a stream).
    pub(crate) fn answer(&self, id: &str, created: u64) -> Value {
        match self {
            Work::Inference(p) => api::response(p, id, created),
            Work::Ocr(j) => ocr::response(j),
            Work::Conversation(j) => conversations::response(j, id, created),
            Work::Transcription(j) => audio::response(j),
        }
    }
}
