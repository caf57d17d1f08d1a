//! The client, its builder and the loop that drives a core [`Call`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mistral_blocking::stores::limiter_from_spec;
use mistral_core::limiter::spec::{ENV_VAR, LimiterSpec};
use mistral_core::request::{DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT};
use mistral_core::{Action, Call, LocalLimiter, Success, Target, Telemetry};
use serde::de::DeserializeOwned;

use crate::transport;
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
                    (id, Ok((response, body))) => {
                        call.handle_response(now(), id, response);
                        stream = body;
                    }
                    (id, Err(error)) => call.handle_transport_error(now(), id, error),
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
    /// Checked when set; a bad key is reported by `build`.
    api_key: Option<Result<ApiKey, KeyError>>,
    base_url: Option<String>,
    policy: RetryPolicy,
    attempt_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    user_agent: Option<String>,
    allow_insecure_http: bool,
    limiter: Option<Arc<dyn Limiter>>,
    limiter_env: Option<Result<LimiterSpec, Error>>,
    seed: Option<u64>,
}

/// Defines builder setters: each sets one field and hands the builder back.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $field:ident = $value:expr;)*) => {
        $($(#[$doc])* pub fn $name(mut self, $arg: $ty) -> Self {
            self.$field = $value;
            self
        })*
    };
}

impl ClientBuilder {
    /// A builder with the key from `MISTRAL_API_KEY` and, when set, the base URL from
    /// `MISTRAL_BASE_URL`; both are checked by [`ClientBuilder::build`].
    pub fn from_env() -> Self {
        let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Self {
            api_key: var("MISTRAL_API_KEY").map(ApiKey::new),
            base_url: var("MISTRAL_BASE_URL").filter(|url| !url.is_empty()),
            limiter_env: var(ENV_VAR).map(|spec| LimiterSpec::parse(&spec)),
            ..Self::default()
        }
    }

    setters! {
        /// The API key (validated now, reported by [`ClientBuilder::build`]).
        api_key(key: impl Into<String>) => api_key = Some(ApiKey::new(key));
        /// The base URL (default [`DEFAULT_BASE_URL`]). Plain `http://` is accepted only
        /// for loopback hosts unless [`ClientBuilder::allow_insecure_http`] is set.
        base_url(url: impl Into<String>) => base_url = Some(url.into());
        /// How calls retry (default [`RetryPolicy::default`]).
        retry_policy(policy: RetryPolicy) => policy = policy;
        /// Timeout of one HTTP attempt, overriding the policy's `attempt_timeout`
        /// whichever is set first: to the end of the body, or to the head of a stream.
        attempt_timeout(timeout: Duration) => attempt_timeout = Some(timeout);
        /// Timeout for making a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
        connect_timeout(timeout: Duration) => connect_timeout = Some(timeout);
        /// The `User-Agent` header (printable ASCII; checked by [`ClientBuilder::build`]).
        user_agent(user_agent: impl Into<String>) => user_agent = Some(user_agent.into());
        /// Allows sending the key over plain HTTP to a non-loopback host (default `false`).
        allow_insecure_http(allow: bool) => allow_insecure_http = allow;
        /// The limiter every call consults before each attempt (default: the process-wide
        /// [`LocalLimiter`] of this base URL and key, shared by every client built for them).
        /// Share one limiter between clients that spend the same budget.
        limiter(limiter: Arc<dyn Limiter>) => limiter = Some(limiter);
        /// Base of the per-call jitter seeds, for reproducible schedules in tests
        /// (default: random).
        seed(seed: u64) => seed = Some(seed);
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<Client, Error> {
        let key = self.api_key.unwrap_or(Err(KeyError::Missing))?;
        let base_url = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let mut target = Target::new(base_url, key, self.allow_insecure_http)?;
        if let Some(user_agent) = &self.user_agent {
            target = target.with_user_agent(user_agent)?;
        }
        let mut policy = self.policy;
        policy.attempt_timeout = self.attempt_timeout.or(policy.attempt_timeout);
        // No redirects: the Authorization header must never follow one.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
            .build();
        let http = http.map_err(transport::transport_error).map_err(|e| {
            Error::Config(format!("the HTTP client cannot be built: {}", e.message))
        })?;
        let limiter = match (self.limiter, self.limiter_env.transpose()?) {
            (Some(limiter), _) => limiter,
            (None, Some(spec)) => {
                limiter_from_spec(&spec, target.base_url(), target.key(), Default::default())?
            }
            (None, None) => LocalLimiter::shared(&target),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                target,
                policy,
                limiter,
                telemetry: Telemetry::new(),
                seeds: AtomicU64::new(self.seed.unwrap_or_else(|| fastrand::u64(..))),
            }),
        })
    }
}
