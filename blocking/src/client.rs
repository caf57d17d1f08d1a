//! The client, its builder and its endpoints.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use mistral_core::models::{
    ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, FimRequest, ModelList,
    ModerationRequest, ModerationResponse,
};
use mistral_core::{
    Action, ApiRequest, Call, Error, Limiter, Reply, Resolved, RetryPolicy, Settings, Stats,
    Success, Target, Telemetry,
};
use serde::de::DeserializeOwned;

use crate::chat_stream::ChatStream;
use crate::exchange::{Exchange, exchange};

/// A blocking Mistral API client.
///
/// Cheap to clone: clones share the connection pool, the statistics and the limiter, so
/// one client can serve many threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    target: Target,
    policy: RetryPolicy,
    limiter: Arc<dyn Limiter>,
    telemetry: Telemetry,
    /// The next call's jitter seed.
    seeds: AtomicU64,
}

/// Configures a [`Client`]; see [`Client::builder`]. Errors surface in
/// [`ClientBuilder::build`], never at the first request.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    settings: Settings,
}

impl ClientBuilder {
    /// A builder from the environment: the key from `MISTRAL_API_KEY`, the base URL from
    /// `MISTRAL_BASE_URL` (when set and not empty) and the limiter's store from
    /// `MISTRAL_LIMITER`; all are checked by [`ClientBuilder::build`].
    pub fn from_env() -> Self {
        Self {
            settings: Settings::from_env(),
        }
    }

    mistral_core::builder_setters!();

    /// Builds the client: checks the key, the base URL and the user agent.
    pub fn build(self) -> Result<Client, Error> {
        let resolved = self.settings.resolve()?;
        let limiter = mistral_stores::limiter_for(&resolved)?;
        let Resolved {
            target,
            policy,
            connect_timeout,
            seed,
            ..
        } = resolved;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(connect_timeout))
            .max_idle_connections_per_host(64)
            .build();
        Ok(Client {
            inner: Arc::new(Inner {
                agent: ureq::Agent::new_with_config(config),
                target,
                policy,
                limiter,
                telemetry: Telemetry::new(),
                seeds: AtomicU64::new(seed.unwrap_or_else(|| fastrand::u64(..))),
            }),
        })
    }
}

impl Client {
    /// A client configured from the environment: `MISTRAL_API_KEY` (required) and
    /// `MISTRAL_BASE_URL` (when set and not empty).
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env().build()
    }

    /// A client for `key` with every default.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        Self::builder().api_key(key).build()
    }

    /// A builder to configure a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `POST /v1/chat/completions`.
    pub fn chat(&self, request: &ChatRequest) -> Result<Reply<ChatResponse>, Error> {
        self.reply(&ApiRequest::chat(&request.clone().stream(false))?)
    }

    /// `POST /v1/chat/completions` as a stream of chunks.
    pub fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        self.stream(&ApiRequest::chat_stream(request)?)
    }

    /// `POST /v1/fim/completions` (fill in the middle).
    pub fn fim(&self, request: &FimRequest) -> Result<Reply<ChatResponse>, Error> {
        self.reply(&ApiRequest::fim(&request.clone().stream(false))?)
    }

    /// `POST /v1/fim/completions` as a stream of chunks.
    pub fn fim_stream(&self, request: &FimRequest) -> Result<ChatStream, Error> {
        self.stream(&ApiRequest::fim_stream(request)?)
    }

    /// `POST /v1/embeddings`.
    pub fn embeddings(
        &self,
        request: &EmbeddingRequest,
    ) -> Result<Reply<EmbeddingResponse>, Error> {
        self.reply(&ApiRequest::embeddings(request)?)
    }

    /// `GET /v1/models`.
    pub fn list_models(&self) -> Result<Reply<ModelList>, Error> {
        self.reply(&ApiRequest::list_models())
    }

    /// `POST /v1/moderations`.
    pub fn moderations(
        &self,
        request: &ModerationRequest,
    ) -> Result<Reply<ModerationResponse>, Error> {
        self.reply(&ApiRequest::moderations(request)?)
    }

    /// Checks the key with `GET /v1/models`: `Ok` or the error (usually
    /// [`Error::Unauthorized`]).
    pub fn verify_key(&self) -> Result<(), Error> {
        self.run(&ApiRequest::list_models()).map(drop)
    }

    /// Any call, for endpoints without a typed method, with the same retries and pacing:
    /// build it with `ApiRequest::post_json(path, &body)?.for_model(model, estimate)`. The
    /// response is read whole, as JSON (never as a stream: see [`Client::chat_stream`]).
    pub fn send(&self, request: ApiRequest) -> Result<Reply<serde_json::Value>, Error> {
        self.reply(&request.streaming(false))
    }

    /// A snapshot of this client's (and its clones') statistics.
    pub fn stats(&self) -> Stats {
        self.inner.telemetry.snapshot()
    }

    fn reply<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<Reply<T>, Error> {
        self.run(request)?.0.into_reply()
    }

    fn stream(&self, request: &ApiRequest) -> Result<ChatStream, Error> {
        let (success, body) = self.run(request)?;
        let limiter = Arc::clone(&self.inner.limiter);
        ChatStream::open(request, success, body, &self.inner.policy, limiter)
    }

    /// Drives one call of `request` to its end; for a stream, also hands back the body.
    fn run(&self, request: &ApiRequest) -> Result<(Success, Option<ureq::Body>), Error> {
        let inner = &*self.inner;
        let prepared = inner.target.prepare(request)?;
        let seed = inner.seeds.fetch_add(1, Ordering::Relaxed);
        let mut call = Call::new(prepared, &inner.policy, Instant::now(), seed);
        inner.telemetry.call_started();
        let mut body = None;
        loop {
            let now = Instant::now();
            let action = call.poll(now);
            inner.telemetry.observe(&action);
            match action {
                Action::Reserve(ask) => call.handle_grant(now, inner.limiter.reserve(now, &ask)),
                Action::Send(attempt) => match exchange(&inner.agent, &inner.policy, &attempt) {
                    Exchange::Response(head, bytes, stream) => {
                        body = stream;
                        let response = http::Response::from_parts(head, bytes);
                        call.handle_response(Instant::now(), attempt.id, response);
                    }
                    Exchange::Cut(head, partial, error) => {
                        call.handle_cut_body(Instant::now(), attempt.id, head, partial, error);
                    }
                    Exchange::Failed(error) => {
                        call.handle_transport_error(Instant::now(), attempt.id, error);
                    }
                },
                Action::Wait { until, .. } => thread::sleep(until.saturating_duration_since(now)),
                Action::Report(report) => inner.limiter.report(now, &report),
                Action::Done(result) => return result.map(|success| (success, body)),
                _ => return Err(Error::Config("mistral-core sent an unknown action".into())),
            }
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.target.base_url())
            .field("policy", &self.inner.policy)
            .field("limiter", &self.inner.limiter)
            .finish_non_exhaustive()
    }
}
