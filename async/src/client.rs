//! The client, its builder and the loop that drives a core [`Call`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mistral_core::{Action, Call, Resolved, Settings, Success, Target, Telemetry};
use serde::de::DeserializeOwned;

use crate::transport::{self, Exchange};
use crate::*;

/// `now` on tokio's clock (virtual under a paused test clock), as the core wants it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// An async Mistral API client.
///
/// Cheap to clone: clones share the connection pool, the statistics and the limiter.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    target: Target,
    policy: RetryPolicy,
    limiter: Arc<dyn Limiter>,
    telemetry: Telemetry,
    /// The jitter seed of the next call (the builder's seed, plus one per call).
    seeds: AtomicU64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.target.base_url())
            .field("key", &self.inner.target.key().fingerprint())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client configured from the environment: the key from `MISTRAL_API_KEY`
    /// (missing: [`KeyError::Missing`]), the base URL from `MISTRAL_BASE_URL` when set.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env().build()
    }

    /// A client with `key` and every other setting at its default.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        Self::builder().api_key(key).build()
    }

    /// A builder with every setting at its default and no key.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `POST /v1/chat/completions` (never streamed: see [`Client::chat_stream`]).
    pub async fn chat(&self, request: &ChatRequest) -> Result<Reply<ChatResponse>, Error> {
        self.fetch(ApiRequest::chat(&request.clone().stream(false))?)
            .await
    }

    /// `POST /v1/chat/completions` as a stream of chunks.
    pub async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        self.open_stream(ApiRequest::chat_stream(request)?).await
    }

    /// `POST /v1/fim/completions` (never streamed: see [`Client::fim_stream`]).
    pub async fn fim(&self, request: &FimRequest) -> Result<Reply<ChatResponse>, Error> {
        self.fetch(ApiRequest::fim(&request.clone().stream(false))?)
            .await
    }

    /// `POST /v1/fim/completions` as a stream of chunks.
    pub async fn fim_stream(&self, request: &FimRequest) -> Result<ChatStream, Error> {
        self.open_stream(ApiRequest::fim_stream(request)?).await
    }

    /// `POST /v1/embeddings`.
    pub async fn embeddings(
        &self,
        request: &EmbeddingRequest,
    ) -> Result<Reply<EmbeddingResponse>, Error> {
        self.fetch(ApiRequest::embeddings(request)?).await
    }

    /// `GET /v1/models`.
    pub async fn list_models(&self) -> Result<Reply<ModelList>, Error> {
        self.fetch(ApiRequest::list_models()).await
    }

    /// `POST /v1/moderations`.
    pub async fn moderations(
        &self,
        request: &ModerationRequest,
    ) -> Result<Reply<ModerationResponse>, Error> {
        self.fetch(ApiRequest::moderations(request)?).await
    }

    /// Checks the key with `GET /v1/models`: `Ok` if the server accepts it, otherwise the
    /// error ([`Error::Unauthorized`] for a refused key).
    pub async fn verify_key(&self) -> Result<(), Error> {
        self.run(&ApiRequest::list_models()).await.map(drop)
    }

    /// Any call, for endpoints without a typed method: the JSON body of the response,
    /// with the same retries and pacing. The response is read whole (not as a stream).
    pub async fn send(&self, request: ApiRequest) -> Result<Reply<serde_json::Value>, Error> {
        self.fetch(request.streaming(false)).await
    }

    /// A snapshot of the statistics of this client and its clones.
    pub fn stats(&self) -> Stats {
        self.inner.telemetry.snapshot()
    }

    async fn fetch<T: DeserializeOwned>(&self, request: ApiRequest) -> Result<Reply<T>, Error> {
        self.run(&request).await?.0.into_reply()
    }

    async fn open_stream(&self, request: ApiRequest) -> Result<ChatStream, Error> {
        let (success, body) = self.run(&request).await?;
        let limiter = Arc::clone(&self.inner.limiter);
        Ok(ChatStream::open(
            &request,
            success,
            body,
            &self.inner.policy,
            limiter,
        ))
    }

    /// Drives one call to its end: the success, and for a stream the response whose body
    /// is still to read.
    async fn run(
        &self,
        request: &ApiRequest,
    ) -> Result<(Success, Option<reqwest::Response>), Error> {
        let inner = &*self.inner;
        let prepared = inner.target.prepare(request)?;
        let seed = inner.seeds.fetch_add(1, Ordering::Relaxed);
        inner.telemetry.call_started();
        let mut call = Call::new(prepared, &inner.policy, now(), seed);
        let mut stream = None;
        loop {
            let action = call.poll(now());
            inner.telemetry.observe(&action);
            match action {
                Action::Reserve(ask) => {
                    let at = now();
                    call.handle_grant(at, inner.limiter.reserve(at, &ask));
                }
                Action::Send(attempt) => match transport::perform(&inner.http, attempt).await {
                    (id, Exchange::Response(response, body)) => {
                        call.handle_response(now(), id, response);
                        stream = body;
                    }
                    (id, Exchange::Cut(head, partial, error)) => {
                        call.handle_cut_body(now(), id, head, partial, error);
                    }
                    (id, Exchange::Failed(error)) => call.handle_transport_error(now(), id, error),
                },
                Action::Wait { until, .. } => tokio::time::sleep_until(until.into()).await,
                Action::Report(report) => inner.limiter.report(now(), &report),
                Action::Done(result) => return result.map(|success| (success, stream)),
                // An action this driver does not know yet needs no answer: poll again.
                _ => {}
            }
        }
    }
}

/// Configures a [`Client`]. Every setting is checked by [`ClientBuilder::build`], so a
/// bad key or URL fails there, not on the first request.
#[derive(Clone, Debug, Default)]
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

    /// Checks the settings and builds the client.
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
        // No redirects: the Authorization header must never follow one.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .build();
        let http = http.map_err(transport::transport_error).map_err(|e| {
            Error::Config(format!("the HTTP client cannot be built: {}", e.message))
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                target,
                policy,
                limiter,
                telemetry: Telemetry::new(),
                seeds: AtomicU64::new(seed.unwrap_or_else(|| fastrand::u64(..))),
            }),
        })
    }
}
