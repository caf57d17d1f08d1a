//! The client, its builder and the loop that drives a core [`Call`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mistral_core::{
    Action, Ask, Call, CallOptions, Grant, LogTarget, Resolved, Settings, Target, Telemetry,
};
use serde::de::DeserializeOwned;

use crate::clock::now;
use crate::stores::AsyncLimiter;
use crate::transport;
use crate::*;

/// An async Mistral API client.
///
/// Cheap to clone: clones share the connection pool, the statistics and the limiter.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// Options over the policy for every call through this handle.
    options: CallOptions,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    target: Target,
    policy: RetryPolicy,
    limiter: Arc<dyn AsyncLimiter>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The jitter seed of the next call (the builder's seed, plus one per call).
    seeds: AtomicU64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.target.base_url())
            .field("key", &self.inner.target.key().fingerprint())
            .field("policy", &self.inner.policy)
            .field("options", &self.options)
            .finish_non_exhaustive()
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

    /// A client with `key` and every other setting at its default.
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
    /// use mistral_async::{Client, stores::LimiterSpec};
    ///
    /// # fn main() -> Result<(), mistral_async::Error> {
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
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use std::time::Duration;
    /// use mistral_async::{CallOptions, ChatRequest, Message};
    ///
    /// let quick = CallOptions::new().deadline(Duration::from_secs(20)).max_attempts(3);
    /// let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
    /// let reply = client.with_options(quick).chat(request).await?;
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
    /// Takes the request by value (a `&ChatRequest` converts by cloning it), so the
    /// future borrows only the client:
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) {
    /// use futures_util::{StreamExt, stream};
    /// use mistral_async::{ChatRequest, Message};
    ///
    /// let requests = (0..100).map(|i| {
    ///     ChatRequest::new("mistral-small-latest", vec![Message::user(format!("Say {i}"))])
    /// });
    /// let replies: Vec<_> = stream::iter(requests)
    ///     .map(|req| client.chat(req))
    ///     .buffer_unordered(32)
    ///     .collect()
    ///     .await;
    /// # drop(replies);
    /// # }
    /// ```
    pub async fn chat(
        &self,
        request: impl Into<ChatRequest>,
    ) -> Result<Reply<ChatResponse>, Error> {
        let request = ApiRequest::chat(&request.into().stream(false));
        self.fetch(request?).await
    }

    /// `POST /v1/chat/completions` as a stream of chunks.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use futures_util::StreamExt;
    /// use mistral_async::{ChatRequest, Message};
    ///
    /// let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
    /// let mut stream = client.chat_stream(request).await?;
    /// while let Some(chunk) = stream.next().await {
    ///     print!("{}", chunk?.text().unwrap_or_default());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn chat_stream(&self, request: impl Into<ChatRequest>) -> Result<ChatStream, Error> {
        let request = ApiRequest::chat(&request.into().stream(true));
        self.open_stream(request?).await
    }

    /// `POST /v1/fim/completions` (never streamed: see [`Client::fim_stream`]).
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::FimRequest;
    ///
    /// let request = FimRequest::new("codestral-latest", "fn add(a: i32, b: i32) -> i32 {").suffix("}");
    /// let reply = client.fim(request).await?;
    /// println!("{}", reply.text().unwrap_or_default());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fim(&self, request: impl Into<FimRequest>) -> Result<Reply<ChatResponse>, Error> {
        let request = ApiRequest::fim(&request.into().stream(false));
        self.fetch(request?).await
    }

    /// `POST /v1/fim/completions` as a stream of chunks.
    pub async fn fim_stream(&self, request: impl Into<FimRequest>) -> Result<ChatStream, Error> {
        let request = ApiRequest::fim(&request.into().stream(true));
        self.open_stream(request?).await
    }

    /// `POST /v1/embeddings`.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::EmbeddingRequest;
    ///
    /// let reply = client
    ///     .embeddings(EmbeddingRequest::new("mistral-embed", vec!["one", "two"]))
    ///     .await?;
    /// println!("{} vectors", reply.vectors().len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn embeddings(
        &self,
        request: impl Into<EmbeddingRequest>,
    ) -> Result<Reply<EmbeddingResponse>, Error> {
        let request = ApiRequest::embeddings(&request.into());
        self.fetch(request?).await
    }

    /// `GET /v1/models`.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// for model in client.list_models().await?.into_inner().data {
    ///     println!("{}", model.id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_models(&self) -> Result<Reply<ModelList>, Error> {
        self.fetch(ApiRequest::list_models()).await
    }

    /// `POST /v1/moderations`.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::ModerationRequest;
    ///
    /// let reply = client
    ///     .moderations(ModerationRequest::new("mistral-moderation-latest", "some text"))
    ///     .await?;
    /// println!("flagged: {}", reply.results.iter().any(|r| r.flagged()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn moderations(
        &self,
        request: impl Into<ModerationRequest>,
    ) -> Result<Reply<ModerationResponse>, Error> {
        let request = ApiRequest::moderations(&request.into());
        self.fetch(request?).await
    }

    /// Checks the key with `GET /v1/models`: `Ok` if the server accepts it, otherwise the
    /// error ([`Error::Unauthorized`] for a refused key).
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// match client.verify_key().await {
    ///     Ok(()) => println!("the key works"),
    ///     Err(mistral_async::Error::Unauthorized { .. }) => eprintln!("check MISTRAL_API_KEY"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify_key(&self) -> Result<(), Error> {
        self.run(&ApiRequest::list_models()).await.map(drop)
    }

    /// Any call, for endpoints without a typed method: the JSON body of the response,
    /// with the same retries and pacing. The response is read whole (not as a stream).
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::ApiRequest;
    ///
    /// let body = serde_json::json!({"model": "mistral-small-latest", "messages": []});
    /// let request = ApiRequest::post_json("/v1/chat/completions", &body)?
    ///     .for_model("mistral-small-latest", 100);
    /// let reply = client.send(request).await?;
    /// println!("{}", reply.value);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(&self, request: ApiRequest) -> Result<Reply<serde_json::Value>, Error> {
        self.fetch(request.streaming(false)).await
    }

    /// The base URL requests go to, as the builder checked it: no trailing slash, no
    /// final `/v1` (`https://api.mistral.ai/v1` is `https://api.mistral.ai`).
    pub fn base_url(&self) -> &str {
        self.inner.target.base_url()
    }

    /// A snapshot of the statistics of this client and its clones.
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
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
    pub(crate) async fn fetch<T: DeserializeOwned>(
        &self,
        request: ApiRequest,
    ) -> Result<Reply<T>, Error> {
        self.run(&request).await?.0.decode()
    }

    /// Drives `request` to its answer, the body as it came.
    pub(crate) async fn raw(&self, request: ApiRequest) -> Result<Reply, Error> {
        Ok(self.run(&request).await?.0)
    }

    /// Drives `request` to the head of its event stream.
    pub(crate) async fn open_stream(&self, request: ApiRequest) -> Result<ChatStream, Error> {
        let (success, body) = self.run(&request).await?;
        let sinks = (self.inner.limiter.clone(), self.inner.telemetry.clone());
        let policy = self.options.apply(&self.inner.policy);
        Ok(ChatStream::open(&request, success, body, &policy, sinks))
    }

    /// Drives one call to its end: the success, and for a stream the response whose body
    /// is still to read.
    async fn run(&self, request: &ApiRequest) -> Result<(Reply, Option<reqwest::Response>), Error> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            target: "mistral_async",
            "mistral_call",
            method = %request.method,
            path = %request.path,
            model = request.model.as_deref().unwrap_or(""),
            attempts = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
        );
        let outcome = self.drive(request).instrument(span.clone()).await;
        match &outcome {
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
        outcome.map(|(success, body, _)| (success, body))
    }

    /// The loop of [`Client::run`]: the outcome and the attempts made.
    async fn drive(
        &self,
        request: &ApiRequest,
    ) -> Result<(Reply, Option<reqwest::Response>, u32), Error> {
        let inner = &*self.inner;

        let seed = inner.seeds.fetch_add(1, Ordering::Relaxed);
        inner.telemetry.call_started();
        // The policy is the call's own from here (not kept beside it while it waits).
        let mut call = {
            let policy = self.options.apply(&inner.policy);
            Call::new(&inner.target, request, &policy, now(), seed)?
        };
        let mut stream = None;
        loop {
            let action = call.poll(now());
            inner.telemetry.observe_call(&mut call, &action);
            match action {
                Action::Reserve(ask) => {
                    let asked = now();
                    let (grant, in_line) = admit_in_line(&*inner.limiter, &ask).await;
                    // A store answers after its round trip; its wait counts from then
                    // (late by at most that trip, never early).
                    let answered = now();
                    let waited = answered.saturating_duration_since(asked);
                    inner.telemetry.observe_grant(&ask, &grant, waited, in_line);
                    call.handle_grant(answered, grant);
                }
                Action::Send(attempt) => {
                    // Boxed: the exchange's state (reqwest's, the timers') is the largest
                    // of a call's, and a call spends most of its life elsewhere (in the
                    // limiter's line): inline, every waiting call's task held room for it.
                    let (id, outcome, body) =
                        Box::pin(transport::perform(&inner.http, attempt)).await;
                    stream = body;
                    call.handle(now(), id, outcome);
                }
                Action::Wait { until, .. } => tokio::time::sleep_until(until.into()).await,
                Action::Report(report) => inner.limiter.report(now(), &report).await,
                Action::Done(result) => {
                    let attempts = call.attempts();
                    return result.map(|success| (success, stream, attempts));
                }
            }
        }
    }
}

/// Configures a [`Client`]. Every setting is checked by [`ClientBuilder::build`], so a
/// bad key or URL fails there, not on the first request.
///
/// ```
/// use std::time::Duration;
/// use mistral_async::{Client, RetryPolicy};
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
/// # Ok::<(), mistral_async::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    settings: Settings<dyn AsyncLimiter>,
    /// The user's own HTTP client, when given.
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// A builder from the environment: the key from `MISTRAL_API_KEY`, the base URL from
    /// `MISTRAL_BASE_URL` (when set and not empty) and the limiter's store from
    /// `MISTRAL_LIMITER`; all are checked by [`ClientBuilder::build`].
    pub fn from_env() -> Self {
        Self {
            settings: Settings::from_env(),
            http: None,
        }
    }

    mistral_core::builder_setters!(dyn crate::stores::AsyncLimiter);

    /// Sends through your own [`reqwest::Client`] — for a proxy, HTTP/2, pool settings,
    /// your own TLS — instead of the one `build` makes. Start from
    /// [`http_client_builder`](crate::http_client_builder) (this crate's TLS and no
    /// redirects) or from `reqwest::Client::builder()` with
    /// `.redirect(reqwest::redirect::Policy::none())`.
    ///
    /// **Redirects.** A redirect must never carry the key on, and reqwest follows up to
    /// ten by default, per client (there is no per-request setting). A `reqwest::Client`
    /// does not hand its policy back either, so `build` reads it from the client's
    /// `Debug` output, which shows any policy but the default: a client that does not
    /// show `Policy::none()` there — the default, a limit, a custom policy — is refused
    /// with [`Error::Config`]. (Should a reqwest release show it otherwise, every client
    /// would be refused, never one let through.) With `Policy::none()` a 3xx ends the
    /// call with [`Error::Redirect`].
    ///
    /// **What still applies.** The base URL check (plain HTTP only to loopback unless
    /// [`ClientBuilder::allow_insecure_http`]) and the core's timeouts per attempt: the
    /// response head, the body, the attempt and a stream's idle time. The connect timeout
    /// is your client's (reqwest sets it per client only), though the head timeout bounds
    /// it; this builder's [`connect_timeout`](ClientBuilder::connect_timeout) is not used.
    ///
    /// ```no_run
    /// use mistral_async::Client;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let http = mistral_async::http_client_builder()
    ///     .proxy(reqwest::Proxy::all("http://proxy.internal:3128")?)
    ///     .pool_max_idle_per_host(16)
    ///     .build()?;
    /// let client = Client::builder().api_key("sk-my-key").http_client(http).build()?;
    /// # drop(client);
    /// // One that follows redirects is refused.
    /// let follows = mistral_async::http_client_builder()
    ///     .redirect(reqwest::redirect::Policy::limited(5))
    ///     .build()?;
    /// assert!(Client::builder().api_key("sk-my-key").http_client(follows).build().is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Checks the settings and builds the client.
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
        // No redirects: the Authorization header must never follow one.
        let http = match self.http {
            Some(http) if follows_no_redirect(&http) => http,
            Some(_) => {
                return Err(Error::Config(
                    "the reqwest::Client given to `http_client` may follow redirects (the key \
                     would go with them): build it with \
                     `.redirect(reqwest::redirect::Policy::none())`, or start from \
                     `mistral_async::http_client_builder()`"
                        .into(),
                ));
            }
            None => {
                let http = crate::tls::http_client_builder()
                    .connect_timeout(connect_timeout)
                    .build();
                http.map_err(transport::transport_error).map_err(|e| {
                    Error::Config(format!("the HTTP client cannot be built: {}", e.message))
                })?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                target,
                policy,
                limiter,
                telemetry: Arc::new(Telemetry::for_target(LogTarget::Async)),
                seeds: AtomicU64::new(seed.unwrap_or_else(|| fastrand::u64(..))),
            }),
            options: CallOptions::new(),
        })
    }
}

/// Whether `http`'s redirect policy is `Policy::none()`. reqwest has no getter for it;
/// its `Debug` output shows every policy but the default (`redirect_policy:
/// "Policy(None)"`), so that is read, and anything else — the default, a limit, a custom
/// policy, a format this check does not know — counts as following redirects.
fn follows_no_redirect(http: &reqwest::Client) -> bool {
    let shown = format!("{http:?}");
    shown.contains("redirect_policy: \"Policy(None)\"")
        || shown.contains("redirect_policy: Policy(None)")
}

/// The limiter's answer to `ask`, and whether it made the caller wait for it (the first
/// poll was not its answer): what the client's statistics count as queued.
async fn admit_in_line(limiter: &dyn AsyncLimiter, ask: &Ask) -> (Grant, bool) {
    let mut admit = limiter.admit(ask);
    let mut in_line = false;
    let grant = std::future::poll_fn(|cx| {
        let poll = admit.as_mut().poll(cx);
        in_line |= poll.is_pending();
        poll
    })
    .await;
    (grant, in_line)
}
