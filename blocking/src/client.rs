//! The client, its builder and its endpoints.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mistral_core::models::{
    ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, FimRequest, ModelList,
    ModerationRequest, ModerationResponse,
};
use mistral_core::request::DEFAULT_BASE_URL;
use mistral_core::{
    Action, ApiKey, ApiRequest, Call, Error, KeyError, Limiter, NoLimiter, Reply, RetryPolicy,
    Stats, Success, Target, Telemetry,
};

use crate::chat_stream::ChatStream;
use crate::exchange::{Exchange, exchange};

/// Connect timeout used when the builder sets none (DNS, TCP and TLS handshakes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    seed: u64,
    calls: AtomicU64,
}

/// Configures a [`Client`]; see [`Client::builder`]. Errors surface in
/// [`ClientBuilder::build`], never at the first request.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    key: Option<Result<ApiKey, KeyError>>,
    base_url: Option<String>,
    policy: RetryPolicy,
    attempt_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    user_agent: Option<String>,
    allow_insecure_http: bool,
    limiter: Option<Arc<dyn Limiter>>,
    seed: Option<u64>,
}

impl ClientBuilder {
    /// The API key (validated now, reported by [`ClientBuilder::build`]).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(ApiKey::new(key));
        self
    }

    /// The base URL (default [`DEFAULT_BASE_URL`]). Plain `http://` is accepted only for
    /// loopback hosts unless [`ClientBuilder::allow_insecure_http`] is set.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// How calls retry (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Timeout of one HTTP attempt (overrides the policy's `attempt_timeout`): to the end
    /// of the body, or to the response head of a stream.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Timeout for making a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The `User-Agent` header (printable ASCII).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Allows sending the key over plain HTTP to a non-loopback host (default `false`).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The limiter every call consults before each attempt (default [`NoLimiter`]).
    /// Share one limiter between clients that spend the same budget.
    pub fn limiter(mut self, limiter: Arc<dyn Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Base of the per-call jitter seeds, for reproducible schedules in tests (default:
    /// random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the client: checks the key, the base URL and the user agent.
    pub fn build(self) -> Result<Client, Error> {
        let key = self.key.unwrap_or(Err(KeyError::Missing))?;
        let base_url = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let mut target = Target::new(base_url, key, self.allow_insecure_http)?;
        if let Some(user_agent) = &self.user_agent {
            target = target.with_user_agent(user_agent)?;
        }
        let mut policy = self.policy;
        policy.attempt_timeout = self.attempt_timeout.or(policy.attempt_timeout);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(
                self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ))
            .max_idle_connections_per_host(16)
            .build();
        Ok(Client {
            inner: Arc::new(Inner {
                agent: ureq::Agent::new_with_config(config),
                target,
                policy,
                limiter: self.limiter.unwrap_or_else(|| Arc::new(NoLimiter)),
                telemetry: Telemetry::new(),
                seed: self.seed.unwrap_or_else(|| fastrand::u64(..)),
                calls: AtomicU64::new(0),
            }),
        })
    }
}

impl Client {
    /// A client configured from the environment: `MISTRAL_API_KEY` (required) and
    /// `MISTRAL_BASE_URL` (when set and not empty).
    pub fn from_env() -> Result<Self, Error> {
        let key = match std::env::var("MISTRAL_API_KEY") {
            Ok(key) => key,
            Err(std::env::VarError::NotPresent) => return Err(KeyError::Missing.into()),
            Err(std::env::VarError::NotUnicode(raw)) => raw.to_string_lossy().into_owned(),
        };
        let mut builder = Self::builder().api_key(key);
        if let Some(url) = std::env::var("MISTRAL_BASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            builder = builder.base_url(url);
        }
        builder.build()
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
        let request = match request.is_stream() {
            true => ApiRequest::chat(&request.clone().stream(false))?,
            false => ApiRequest::chat(request)?,
        };
        self.reply(&request)
    }

    /// `POST /v1/chat/completions` as a stream of chunks.
    pub fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        self.stream(&ApiRequest::chat_stream(request)?)
    }

    /// `POST /v1/fim/completions` (fill in the middle).
    pub fn fim(&self, request: &FimRequest) -> Result<Reply<ChatResponse>, Error> {
        let request = match request.is_stream() {
            true => ApiRequest::fim(&request.clone().stream(false))?,
            false => ApiRequest::fim(request)?,
        };
        self.reply(&request)
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

    /// Any call, with the same retries and pacing: build it with
    /// `ApiRequest::post_json(path, &body)?.for_model(model, estimate)`. Streams are read
    /// by [`Client::chat_stream`] and [`Client::fim_stream`] only.
    pub fn send(&self, request: ApiRequest) -> Result<Reply<serde_json::Value>, Error> {
        if request.stream {
            return Err(Error::Config(
                "Client::send does not read streams: use chat_stream or fim_stream".into(),
            ));
        }
        self.reply(&request)
    }

    /// A snapshot of this client's (and its clones') statistics.
    pub fn stats(&self) -> Stats {
        self.inner.telemetry.snapshot()
    }

    fn reply<T: serde::de::DeserializeOwned>(
        &self,
        request: &ApiRequest,
    ) -> Result<Reply<T>, Error> {
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
        let seed = inner
            .seed
            .wrapping_add(inner.calls.fetch_add(1, Ordering::Relaxed));
        let mut call = Call::new(prepared, &inner.policy, Instant::now(), seed);
        inner.telemetry.call_started();
        let mut body = None;
        loop {
            let action = call.poll(Instant::now());
            inner.telemetry.observe(&action);
            match action {
                Action::Reserve(ask) => {
                    let grant = inner.limiter.reserve(Instant::now(), &ask);
                    call.handle_grant(Instant::now(), grant);
                }
                Action::Send(attempt) => match exchange(&inner.agent, &inner.policy, &attempt) {
                    Ok(Exchange::Whole(response)) => {
                        call.handle_response(Instant::now(), attempt.id, response);
                    }
                    Ok(Exchange::Stream(head, stream)) => {
                        body = Some(stream);
                        let now = Instant::now();
                        call.handle_parts(now, head.status, head.headers, bytes::Bytes::new());
                    }
                    Err(error) => call.handle_transport_error(Instant::now(), attempt.id, error),
                },
                Action::Wait { until, .. } => {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                }
                Action::Report(report) => inner.limiter.report(Instant::now(), &report),
                Action::Done(result) => return result.map(|success| (success, body)),
                _ => {
                    return Err(Error::Config(
                        "mistral-core asked for an action this client does not know".into(),
                    ));
                }
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
