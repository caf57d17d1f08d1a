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
    Action, ApiRequest, Call, CallOptions, Error, Limiter, LogTarget, Reply, Resolved, RetryPolicy,
    Settings, Stats, Target, Telemetry,
};
use serde::de::DeserializeOwned;

use crate::admission::admit_in_line;
use crate::chat_stream::ChatStream;
use crate::exchange::{InlineResolver, Tracking, exchange};

/// A blocking Mistral API client.
///
/// Cheap to clone: clones share the connection pool, the statistics and the limiter, so
/// one client can serve many threads.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// Options over the policy for every call through this handle.
    options: CallOptions,
}

pub(crate) struct Inner {
    agent: ureq::Agent,
    /// The agent is the one `build` made, whose connections note what the request wrote.
    tracked: bool,
    target: Target,
    policy: RetryPolicy,
    limiter: Arc<dyn Limiter>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The next call's jitter seed.
    seeds: AtomicU64,
}

/// Configures a [`Client`]; see [`Client::builder`]. Errors surface in
/// [`ClientBuilder::build`], never at the first request.
///
/// ```
/// use std::time::Duration;
/// use mistral_blocking::{Client, RetryPolicy};
///
/// let client = Client::builder()
///     .api_key("sk-my-key")
///     .base_url("http://127.0.0.1:8080") // plain HTTP only to loopback
///     .retry_policy(RetryPolicy::default().max_attempts(5))
///     .connect_timeout(Duration::from_secs(5))
///     .build()?;
/// # drop(client);
/// // A bad setting fails here, not at the first request, and never echoes the key.
/// let error = Client::builder().api_key("sk-my-key\n").build().unwrap_err();
/// assert!(!error.to_string().contains("sk-my-key"));
/// # Ok::<(), mistral_blocking::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    settings: Settings,
    /// The user's own agent, when given.
    agent: Option<ureq::Agent>,
}

impl ClientBuilder {
    /// A builder from the environment: the key from `MISTRAL_API_KEY`, the base URL from
    /// `MISTRAL_BASE_URL` (when set and not empty) and the limiter's store from
    /// `MISTRAL_LIMITER`; all are checked by [`ClientBuilder::build`].
    pub fn from_env() -> Self {
        Self {
            settings: Settings::from_env(),
            agent: None,
        }
    }

    mistral_core::builder_setters!();

    /// Sends through your own [`ureq::Agent`] — for a proxy, your own CA roots or TLS
    /// settings — instead of the one `build` makes. Its connections and settings are
    /// yours, except what every request overrides to keep the client's guarantees:
    ///
    /// - redirects are never followed (`max_redirects(0)` on every request: a 3xx ends
    ///   the call with [`Error::Redirect`], the key goes nowhere else);
    /// - a 4xx/5xx is a response, not a ureq error (`http_status_as_error(false)`);
    /// - the core's timeouts are set on every request: the attempt's end (a global
    ///   timeout of what is left of it; a stream's head is awaited on a thread until
    ///   then) and each phase's own bound (connect, send, response head, body, per read
    ///   of a stream). A `timeout_per_call` of your agent still applies on top of them.
    ///   Your agent resolves host names with its own resolver: ureq's default resolves on
    ///   a thread of its own for every request when a timeout is set.
    ///
    /// Whether a failed request may have reached the server (what decides if it may be
    /// sent again: [`Error::OutcomeUnknown`]) is judged from ureq's error alone with an
    /// agent of yours: a failure to resolve or connect, a TLS error and a timeout while
    /// connecting or sending are before the request; anything else — a connection reset
    /// during a TLS handshake included — counts as possibly after it. (The agent `build`
    /// makes watches its connections' writes instead, so it knows.)
    ///
    /// The base URL is still checked by `build` (plain HTTP only to loopback unless
    /// [`ClientBuilder::allow_insecure_http`]); a proxy in your agent sees the requests
    /// only as your proxy settings say (an `https://` base URL is tunnelled). The agent's
    /// [`connect_timeout`](ClientBuilder::connect_timeout) is this builder's, per request.
    ///
    /// ```no_run
    /// use mistral_blocking::Client;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let agent = ureq::Agent::config_builder()
    ///     .proxy(Some(ureq::Proxy::new("http://proxy.internal:3128")?))
    ///     .build()
    ///     .new_agent();
    /// let client = Client::builder().api_key("sk-my-key").agent(agent).build()?;
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    pub fn agent(mut self, agent: ureq::Agent) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Builds the client: checks the key, the base URL and the user agent.
    pub fn build(self) -> Result<Client, Error> {
        let resolved = self.settings.resolve()?;
        let limiter = crate::stores::limiter_for(&resolved)?;
        let Resolved {
            target,
            policy,
            connect_timeout,
            seed,
            ..
        } = resolved;
        let tracked = self.agent.is_none();
        let agent = self.agent.unwrap_or_else(|| {
            use ureq::unversioned::transport::{Connector, DefaultConnector};
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(connect_timeout))
                .max_idle_connections_per_host(64)
                .build();
            let connector = DefaultConnector::new().chain(Tracking);
            ureq::Agent::with_parts(config, connector, InlineResolver::default())
        });
        Ok(Client {
            inner: Arc::new(Inner {
                agent,
                tracked,
                target,
                policy,
                limiter,
                telemetry: Arc::new(Telemetry::for_target(LogTarget::Blocking)),
                seeds: AtomicU64::new(seed.unwrap_or_else(|| fastrand::u64(..))),
            }),
            options: CallOptions::new(),
        })
    }
}

impl Client {
    /// A client configured from the environment: the key from `MISTRAL_API_KEY`
    /// (missing: [`KeyError::Missing`](crate::KeyError::Missing)), the base URL from
    /// `MISTRAL_BASE_URL` (when set and not empty), the limiter's store and budget id from
    /// `MISTRAL_LIMITER` and limits from `MISTRAL_LIMITS`. The same as
    /// [`ClientBuilder::from_env`]`().build()`.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env().build()
    }

    /// A client for `key` with every default.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        Self::builder().api_key(key).build()
    }

    /// A builder with every setting at its default and no key. It reads no environment
    /// variable — not `MISTRAL_LIMITER` either, so its clients share an in-process
    /// limiter only: start from [`ClientBuilder::from_env`], or call
    /// `.limiter_from_env()`, to honour it. A store can also be named in code, built for
    /// the builder's own base URL and key:
    ///
    /// ```no_run
    /// use mistral_blocking::{Client, stores::LimiterSpec};
    ///
    /// # fn main() -> Result<(), mistral_blocking::Error> {
    /// // Every process of this host paces with one budget per model.
    /// let client = Client::builder().api_key("sk-my-key").file_limiter("/run/mistral/").build()?;
    /// // The store MISTRAL_LIMITER names, if set (else the in-process default).
    /// let from_env = Client::builder().api_key("sk-my-key").limiter_from_env().build()?;
    /// // A fleet (cargo feature `redis`).
    /// let fleet = Client::builder()
    ///     .api_key("sk-my-key")
    ///     .shared_limiter(LimiterSpec::Redis("redis://cache:6379/".into()))
    ///     .build();
    /// # drop((client, from_env, fleet));
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A handle on this client whose every call uses `options` over the client's
    /// [`RetryPolicy`] (over the options of this handle, for those it sets again). It
    /// shares the connections, the limiter and the statistics; nothing is built.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use std::time::Duration;
    /// use mistral_blocking::{CallOptions, ChatRequest, Message};
    ///
    /// let quick = CallOptions::new().deadline(Duration::from_secs(20)).max_attempts(3);
    /// let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
    /// let reply = client.with_options(quick).chat(request)?;
    /// # drop(reply);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_options(&self, options: CallOptions) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            options: self.options.merged(options),
        }
    }

    /// The options this handle's calls use over the client's policy (none for a client
    /// from its builder).
    pub fn options(&self) -> CallOptions {
        self.options
    }

    /// `POST /v1/chat/completions` (never streamed: see [`Client::chat_stream`]).
    ///
    /// Takes the request by value; a `&ChatRequest` converts by cloning it.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::{ChatRequest, Message};
    ///
    /// let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
    /// let reply = client.chat(request)?;
    /// println!("{}", reply.text().unwrap_or_default());
    /// # Ok(())
    /// # }
    /// ```
    pub fn chat(&self, request: impl Into<ChatRequest>) -> Result<Reply<ChatResponse>, Error> {
        self.reply(&ApiRequest::chat(&request.into().stream(false))?)
    }

    /// `POST /v1/chat/completions` as a stream of chunks.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::{ChatRequest, Message};
    ///
    /// let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
    /// for chunk in client.chat_stream(request)? {
    ///     print!("{}", chunk?.text().unwrap_or_default());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn chat_stream(&self, request: impl Into<ChatRequest>) -> Result<ChatStream, Error> {
        self.stream(&ApiRequest::chat(&request.into().stream(true))?)
    }

    /// `POST /v1/fim/completions` (fill in the middle; never streamed: see
    /// [`Client::fim_stream`]).
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::FimRequest;
    ///
    /// let request = FimRequest::new("codestral-latest", "fn add(a: i32, b: i32) -> i32 {").suffix("}");
    /// let reply = client.fim(request)?;
    /// println!("{}", reply.text().unwrap_or_default());
    /// # Ok(())
    /// # }
    /// ```
    pub fn fim(&self, request: impl Into<FimRequest>) -> Result<Reply<ChatResponse>, Error> {
        self.reply(&ApiRequest::fim(&request.into().stream(false))?)
    }

    /// `POST /v1/fim/completions` as a stream of chunks.
    pub fn fim_stream(&self, request: impl Into<FimRequest>) -> Result<ChatStream, Error> {
        self.stream(&ApiRequest::fim(&request.into().stream(true))?)
    }

    /// `POST /v1/embeddings`.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::EmbeddingRequest;
    ///
    /// let reply = client
    ///     .embeddings(EmbeddingRequest::new("mistral-embed", vec!["one", "two"]))
    ///     ?;
    /// println!("{} vectors", reply.vectors().len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn embeddings(
        &self,
        request: impl Into<EmbeddingRequest>,
    ) -> Result<Reply<EmbeddingResponse>, Error> {
        self.reply(&ApiRequest::embeddings(&request.into())?)
    }

    /// `GET /v1/models`.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// for model in client.list_models()?.into_inner().data {
    ///     println!("{}", model.id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_models(&self) -> Result<Reply<ModelList>, Error> {
        self.reply(&ApiRequest::list_models())
    }

    /// `POST /v1/moderations`.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::ModerationRequest;
    ///
    /// let reply = client
    ///     .moderations(ModerationRequest::new("mistral-moderation-latest", "some text"))
    ///     ?;
    /// println!("flagged: {}", reply.results.iter().any(|r| r.flagged()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn moderations(
        &self,
        request: impl Into<ModerationRequest>,
    ) -> Result<Reply<ModerationResponse>, Error> {
        self.reply(&ApiRequest::moderations(&request.into())?)
    }

    /// Checks the key with `GET /v1/models`: `Ok` or the error (usually
    /// [`Error::Unauthorized`]).
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// match client.verify_key() {
    ///     Ok(()) => println!("the key works"),
    ///     Err(mistral_blocking::Error::Unauthorized { .. }) => eprintln!("check MISTRAL_API_KEY"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify_key(&self) -> Result<(), Error> {
        self.run(&ApiRequest::list_models()).map(drop)
    }

    /// Any call, for endpoints without a typed method, with the same retries and pacing:
    /// build it with `ApiRequest::post_json(path, &body)?.for_model(model, estimate)`. The
    /// response is read whole, as JSON (never as a stream: see [`Client::chat_stream`]).
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::ApiRequest;
    ///
    /// let body = serde_json::json!({"model": "mistral-small-latest", "messages": []});
    /// let request = ApiRequest::post_json("/v1/chat/completions", &body)?
    ///     .for_model("mistral-small-latest", 100);
    /// let reply = client.send(request)?;
    /// println!("{}", reply.value);
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, request: ApiRequest) -> Result<Reply<serde_json::Value>, Error> {
        self.reply(&request.streaming(false))
    }

    /// The base URL requests go to, as the builder checked it: no trailing slash, no
    /// final `/v1` (`https://api.mistral.ai/v1` is `https://api.mistral.ai`).
    pub fn base_url(&self) -> &str {
        self.inner.target.base_url()
    }

    /// A snapshot of this client's (and its clones') statistics.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// let stats = client.stats();
    /// println!("{} calls, {} attempts, {} 429s, waited {:?}", stats.calls, stats.attempts,
    ///     stats.rate_limited.total(), stats.waited);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.telemetry.snapshot()
    }

    /// Drives `request` to its answer, decoded as `T`.
    pub(crate) fn reply<T: DeserializeOwned>(
        &self,
        request: &ApiRequest,
    ) -> Result<Reply<T>, Error> {
        self.run(request)?.0.decode()
    }

    /// Drives `request` to its answer, the body as it came.
    pub(crate) fn raw(&self, request: &ApiRequest) -> Result<Reply, Error> {
        Ok(self.run(request)?.0)
    }

    /// Drives `request` to the head of its event stream.
    pub(crate) fn stream(&self, request: &ApiRequest) -> Result<ChatStream, Error> {
        let (success, body) = self.run(request)?;
        let sinks = (self.inner.limiter.clone(), self.inner.telemetry.clone());
        let policy = self.options.apply(&self.inner.policy);
        ChatStream::open(request, success, body, &policy, sinks)
    }

    /// Drives one call of `request` to its end; for a stream, also hands back the body.
    fn run(&self, request: &ApiRequest) -> Result<(Reply, Option<ureq::Body>), Error> {
        let span = tracing::info_span!(
            target: "mistral_blocking",
            "mistral_call",
            method = %request.method,
            path = %request.path,
            model = request.model.as_deref().unwrap_or(""),
            attempts = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
        );
        let _entered = span.enter();
        let end = self.drive(request);
        record_end(&span, &end);
        end.map(|(success, body, _)| (success, body))
    }

    /// The loop of [`Client::run`]: the outcome and the attempts made.
    fn drive(&self, request: &ApiRequest) -> CallEnd {
        warn_if_wire_is_traced();
        let inner = &*self.inner;

        let seed = inner.seeds.fetch_add(1, Ordering::Relaxed);
        let policy = self.options.apply(&inner.policy);
        let mut call = Call::new(&inner.target, request, &policy, Instant::now(), seed)?;
        inner.telemetry.call_started();
        let mut body = None;
        loop {
            let now = Instant::now();
            let action = call.poll(now);
            inner.telemetry.observe_call(&mut call, &action);
            match action {
                Action::Reserve(ask) => {
                    let (grant, in_line) = admit_in_line(&*inner.limiter, &ask);
                    let answered = Instant::now();
                    let waited = answered.saturating_duration_since(now);
                    inner.telemetry.observe_grant(&ask, &grant, waited, in_line);
                    call.handle_grant(answered, grant);
                }
                Action::Send(attempt) => {
                    let (outcome, stream) = exchange(&inner.agent, &attempt, inner.tracked);
                    body = stream;
                    call.handle(Instant::now(), attempt.id, outcome);
                }
                Action::Wait { until, .. } => thread::sleep(until.saturating_duration_since(now)),
                Action::Report(report) => inner.limiter.report(now, &report),
                Action::Done(result) => {
                    let attempts = call.attempts();
                    return result.map(|success| (success, body, attempts));
                }
            }
        }
    }
}

/// The `log` target under which ureq-proto hex-dumps at TRACE every byte it sends, the
/// request head and so the `Authorization: Bearer <key>` header included. ureq 3 has no
/// setting to turn that off; filter this target out (`ureq_proto=off`) or turn on the
/// feature `no-wire-trace`.
pub const WIRE_DUMP_TARGET: &str = "ureq_proto::util";

/// Whether the warning below was given (once per process).
static WIRE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Warns once, at WARN under `mistral_blocking`, when the program's `log` logger would
/// record ureq-proto's TRACE dump (and with it the key). Never true with the feature
/// `no-wire-trace` (TRACE compiled out).
fn warn_if_wire_is_traced() {
    if WIRE_WARNED.load(Ordering::Relaxed)
        || !log::log_enabled!(target: WIRE_DUMP_TARGET, log::Level::Trace)
        || WIRE_WARNED.swap(true, Ordering::Relaxed)
    {
        return;
    }
    tracing::warn!(
        target: "mistral_blocking",
        "mistral: the `log` logger records TRACE for `{WIRE_DUMP_TARGET}`, where ureq-proto \
         dumps every request head, the Authorization header with the API key included: \
         filter it out (`ureq_proto=off`) or build with mistral-blocking's feature \
         `no-wire-trace`"
    );
}

/// A call's end, with the attempts it made (not the core's [`mistral_core::Outcome`],
/// what came of one attempt).
type CallEnd = Result<(Reply, Option<ureq::Body>, u32), Error>;

/// Records a call's attempts and correlation id on its span.
fn record_end(span: &tracing::Span, end: &CallEnd) {
    match end {
        Ok((success, _, attempts)) => {
            span.record("attempts", attempts);
            if let Some(id) = &success.correlation_id {
                span.record("correlation_id", id.as_str());
            }
        }
        Err(error) => {
            if let Some(trail) = error.trail() {
                span.record("attempts", trail.attempts);
            }
            if let Some(id) = error.correlation_id() {
                span.record("correlation_id", id);
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
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
