//! The client, its builder and its endpoints.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::stores::limiter_from_spec;
use mistral_core::limiter::spec::{ENV_VAR, LimiterSpec};
use mistral_core::models::{
    ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, FimRequest, ModelList,
    ModerationRequest, ModerationResponse,
};
use mistral_core::request::{DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT};
use mistral_core::{
    Action, ApiKey, ApiRequest, Call, Error, KeyError, Limiter, LocalLimiter, Reply, RetryPolicy,
    Stats, Success, Target, Telemetry,
};
use serde::de::DeserializeOwned;

use crate::chat_stream::ChatStream;
use crate::exchange::exchange;

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
    key: Option<Result<ApiKey, KeyError>>,
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
    /// A builder with the key from `MISTRAL_API_KEY` and, when set and not empty, the base
    /// URL from `MISTRAL_BASE_URL`; both are checked by [`ClientBuilder::build`].
    pub fn from_env() -> Self {
        let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Self {
            key: var("MISTRAL_API_KEY").map(ApiKey::new),
            base_url: var("MISTRAL_BASE_URL").filter(|url| !url.is_empty()),
            limiter_env: var(ENV_VAR).map(|spec| LimiterSpec::parse(&spec)),
            ..Self::default()
        }
    }

    setters! {
        /// The API key (validated now, reported by [`ClientBuilder::build`]).
        api_key(key: impl Into<String>) => key = Some(ApiKey::new(key));
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
        let connect_timeout = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(connect_timeout))
            .max_idle_connections_per_host(64)
            .build();
        let limiter = match (self.limiter, self.limiter_env.transpose()?) {
            (Some(limiter), _) => limiter,
            (None, Some(spec)) => {
                limiter_from_spec(&spec, target.base_url(), target.key(), Default::default())?
            }
            (None, None) => LocalLimiter::shared(&target),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                agent: ureq::Agent::new_with_config(config),
                target,
                policy,
                limiter,
                telemetry: Telemetry::new(),
                seeds: AtomicU64::new(self.seed.unwrap_or_else(|| fastrand::u64(..))),
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
                    Ok((head, bytes, stream)) => {
                        body = stream;
                        let response = http::Response::from_parts(head, bytes);
                        call.handle_response(Instant::now(), attempt.id, response);
                    }
                    Err(error) => call.handle_transport_error(Instant::now(), attempt.id, error),
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
