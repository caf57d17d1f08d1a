//! Request building: a typed request becomes an [`http::Request`].
//!
//! [`ApiRequest`] says what to call (method, path, JSON body, model, token estimate);
//! [`Target`] says where and as whom (base URL, key, user agent). A [`crate::Call`] is
//! made of both ([`crate::Call::new`]); [`Target::http_request`] renders the HTTP
//! request it sends.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use serde::Serialize;

use crate::action::Sizing;
use crate::error::Error;
use crate::key::ApiKey;
use crate::models::{
    AgentCompletionRequest, BatchJobRequest, ChatClassificationRequest, ChatRequest,
    ClassificationRequest, ConversationAppendRequest, ConversationRequest, EmbeddingRequest,
    FileUpload, FimRequest, ModerationRequest, OcrRequest, RequestSize, TranscriptionRequest,
};
use crate::redact::{Redactor, redact_url};

/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.mistral.ai";

/// The default `User-Agent`: this crate's name and version.
pub const DEFAULT_USER_AGENT: &str = concat!("mistral-rs/", env!("CARGO_PKG_VERSION"));

/// Connect timeout (DNS, TCP and TLS handshakes) when the builder sets none.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub use crate::error::MAX_RESPONSE_BYTES;

/// Characters per token assumed by the token estimate (a documented rule of thumb; the
/// estimate is corrected from `usage` after every response).
pub const CHARS_PER_TOKEN: u64 = 4;

/// Completion tokens assumed when a request sets no `max_tokens`.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// The token estimate the limiter reserves for a request before its response tells the
/// real count: `⌈prompt characters ÷ 4⌉ + max_tokens` (or
/// [`DEFAULT_COMPLETION_ESTIMATE`] when unset; 0 for endpoints that generate nothing,
/// such as embeddings).
pub fn estimate_tokens(prompt_chars: usize, max_tokens: Option<u32>) -> u64 {
    let prompt = (prompt_chars as u64).div_ceil(CHARS_PER_TOKEN).max(1);
    prompt + max_tokens.map_or(DEFAULT_COMPLETION_ESTIMATE, u64::from)
}

/// What a request's cost in its budget counts, beside the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CostUnit {
    /// Tokens: prompt and completion (every inference endpoint). The answer's `usage`
    /// (or `x-ratelimit-tokens-query-cost`) corrects the estimate.
    #[default]
    Tokens,
    /// Pages of a document read by OCR (`/v1/ocr`, whose limit is pages per minute).
    /// The answer's `usage_info.pages_processed` (or
    /// `x-ratelimit-ocr-pages-query-cost`) corrects the estimate.
    Pages,
    /// Tokens of audio and its transcript (`/v1/audio/transcriptions`): the estimate is
    /// made from the audio's length; the answer's `usage` corrects it but teaches the
    /// budget no completion length (a transcript's follows its audio, not a prompt).
    AudioTokens,
}

/// How a 2xx body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ReplyBody {
    /// A JSON document (every endpoint but downloads).
    #[default]
    Json,
    /// Bytes of any kind (a file's content): only checked not to hold the key.
    Raw,
}

/// One API call to make: method, path, body and what the limiter needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path under the base URL, starting with `/` (e.g. `/v1/chat/completions`).
    pub path: Cow<'static, str>,
    /// The body, when there is one (JSON unless [`ApiRequest::content_type`] says
    /// otherwise).
    pub body: Option<Bytes>,
    /// The body's `Content-Type` when it is not JSON (a multipart upload's, with its
    /// boundary: [`crate::multipart::Form`]).
    pub content_type: Option<HeaderValue>,
    /// How the 2xx body is read (JSON, or raw bytes for a download).
    pub reply_body: ReplyBody,
    /// `true` for a server-sent-events stream.
    pub stream: bool,
    /// The model, which names the rate-limit budget. `None` for calls outside any.
    pub model: Option<String>,
    /// What the call is expected to cost in its budget, in [`ApiRequest::unit`]s:
    /// tokens ([`estimate_tokens`]), or an OCR request's pages
    /// ([`crate::models::OcrRequest::estimated_pages`]).
    pub token_estimate: u64,
    /// What [`ApiRequest::token_estimate`] counts.
    pub unit: CostUnit,
    /// What the estimate was made from (a limiter that learns its own estimates starts
    /// from it).
    pub size: Sizing,
}

impl ApiRequest {
    /// A `POST` of `body` as JSON to `path`.
    pub fn post_json<T: Serialize + ?Sized>(
        path: impl Into<Cow<'static, str>>,
        body: &T,
    ) -> Result<Self, Error> {
        let mut body = serde_json::to_vec(body)
            .map_err(|e| Error::Config(format!("the request does not serialize: {e}")))?;
        // The buffer grew by doubling: up to twice the body, held by the call for its
        // whole life (in a limiter's line too). The body alone, copied once.
        if body.capacity() > body.len() + body.len() / 8 {
            body.shrink_to_fit();
        }
        Ok(Self {
            method: Method::POST,
            path: path.into(),
            body: Some(Bytes::from(body)),
            content_type: None,
            reply_body: ReplyBody::Json,
            stream: false,
            model: None,
            token_estimate: 0,
            unit: CostUnit::Tokens,
            size: Sizing::default(),
        })
    }

    /// A `GET` of `path`.
    pub fn get(path: impl Into<Cow<'static, str>>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: None,
            content_type: None,
            reply_body: ReplyBody::Json,
            stream: false,
            model: None,
            token_estimate: 0,
            unit: CostUnit::Tokens,
            size: Sizing::default(),
        }
    }

    /// A `POST` of a multipart form (a file upload) to `path`.
    pub fn post_form(path: impl Into<Cow<'static, str>>, form: crate::multipart::Form) -> Self {
        let (content_type, body) = form.finish();
        Self {
            body: Some(body),
            content_type: Some(content_type),
            ..Self::get(path)
        }
        .with_method(Method::POST)
    }

    /// The same request with another method (a `POST` without a body, such as a
    /// cancellation, is `ApiRequest::get(path).with_method(Method::POST)`).
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The answer is read as raw bytes (a file's content), not as JSON.
    pub fn raw_reply(mut self) -> Self {
        self.reply_body = ReplyBody::Raw;
        self
    }

    /// `POST /v1/chat/completions` (a stream when the request says `stream: true`).
    pub fn chat(request: &ChatRequest) -> Result<Self, Error> {
        Self::typed("/v1/chat/completions", request, &request.model, true)
    }

    /// `POST /v1/chat/completions` as a stream, whatever the request's `stream` field.
    pub fn chat_stream(request: &ChatRequest) -> Result<Self, Error> {
        Self::chat(&request.clone().stream(true))
    }

    /// `POST /v1/fim/completions` (a stream when the request says so).
    pub fn fim(request: &FimRequest) -> Result<Self, Error> {
        Self::typed("/v1/fim/completions", request, &request.model, true)
    }

    /// `POST /v1/fim/completions` as a stream.
    pub fn fim_stream(request: &FimRequest) -> Result<Self, Error> {
        Self::fim(&request.clone().stream(true))
    }

    /// `POST /v1/embeddings`.
    pub fn embeddings(request: &EmbeddingRequest) -> Result<Self, Error> {
        Self::typed("/v1/embeddings", request, &request.model, false)
    }

    /// `POST /v1/moderations`.
    pub fn moderations(request: &ModerationRequest) -> Result<Self, Error> {
        Self::typed("/v1/moderations", request, &request.model, false)
    }

    /// `POST /v1/classifications`.
    pub fn classifications(request: &ClassificationRequest) -> Result<Self, Error> {
        Self::typed("/v1/classifications", request, &request.model, false)
    }

    /// `POST /v1/chat/classifications`.
    pub fn chat_classifications(request: &ChatClassificationRequest) -> Result<Self, Error> {
        Self::typed("/v1/chat/classifications", request, &request.model, false)
    }

    /// `POST /v1/agents/completions` (a stream when the request says so), in the budget
    /// [`AgentCompletionRequest::budget_id`] names.
    pub fn agent_completion(request: &AgentCompletionRequest) -> Result<Self, Error> {
        Self::typed("/v1/agents/completions", request, request.budget_id(), true)
    }

    /// `POST /v1/conversations` (start), in the budget
    /// [`ConversationRequest::budget_id`] names.
    pub fn conversation(request: &ConversationRequest) -> Result<Self, Error> {
        Self::typed("/v1/conversations", request, request.budget_id(), true)
    }

    /// `POST /v1/conversations/{id}` (append), in the budget the request names
    /// ([`ConversationAppendRequest::budget`]), else one of the conversation's own.
    pub fn conversation_append(
        conversation_id: &str,
        request: &ConversationAppendRequest,
    ) -> Result<Self, Error> {
        let path = format!("/v1/conversations/{}", path_segment(conversation_id));
        let budget = request.budget.as_deref().unwrap_or(conversation_id);
        Self::typed(path, request, budget, true)
    }

    /// `POST /v1/files`: a multipart upload (outside any model's budget).
    pub fn upload_file(upload: &FileUpload) -> Self {
        Self::post_form("/v1/files", upload.form())
    }

    /// `GET /v1/files/{id}`: an uploaded file's object.
    pub fn file(file_id: &str) -> Self {
        Self::get(format!("/v1/files/{}", path_segment(file_id)))
    }

    /// `GET /v1/files/{id}/content`: a file's bytes, read raw.
    pub fn file_content(file_id: &str) -> Self {
        Self::get(format!("/v1/files/{}/content", path_segment(file_id))).raw_reply()
    }

    /// `POST /v1/batch/jobs` (outside any model's budget: a batch does not spend the
    /// online limits).
    pub fn create_batch_job(request: &BatchJobRequest) -> Result<Self, Error> {
        Self::post_json("/v1/batch/jobs", request)
    }

    /// `GET /v1/batch/jobs/{id}`.
    pub fn batch_job(job_id: &str) -> Self {
        Self::get(format!("/v1/batch/jobs/{}", path_segment(job_id)))
    }

    /// `POST /v1/batch/jobs/{id}/cancel` (no body).
    pub fn cancel_batch_job(job_id: &str) -> Self {
        Self::get(format!("/v1/batch/jobs/{}/cancel", path_segment(job_id)))
            .with_method(Method::POST)
    }

    /// `POST /v1/audio/transcriptions`: a multipart form, in the model's token budget
    /// ([`TranscriptionRequest::estimated_tokens`], corrected by the answer's `usage`).
    pub fn transcription(request: &TranscriptionRequest) -> Self {
        let mut api = Self::post_form("/v1/audio/transcriptions", request.form())
            .for_model(&request.model, request.estimated_tokens());
        api.unit = CostUnit::AudioTokens;
        api
    }

    /// `POST /v1/ocr`, in its model's budget of pages: the estimate is
    /// [`OcrRequest::estimated_pages`], corrected by the answer's `pages_processed`.
    pub fn ocr(request: &OcrRequest) -> Result<Self, Error> {
        let mut api = Self::post_json("/v1/ocr", request)?
            .for_model(&request.model, request.estimated_pages());
        api.unit = CostUnit::Pages;
        Ok(api)
    }

    /// `GET /v1/models` (outside any model's budget).
    pub fn list_models() -> Self {
        Self::get("/v1/models")
    }

    fn typed<T: Serialize + RequestSize>(
        path: impl Into<Cow<'static, str>>,
        request: &T,
        model: &str,
        generates: bool,
    ) -> Result<Self, Error> {
        let max_tokens = if generates {
            request.max_tokens()
        } else {
            Some(0)
        };
        let estimate = estimate_tokens(request.prompt_chars(), max_tokens);
        let mut api = Self::post_json(path, request)?
            .for_model(model, estimate)
            .streaming(request.is_stream());
        api.size = Sizing {
            prompt_chars: request.prompt_chars() as u64,
            max_tokens: max_tokens.map(u64::from),
        };
        Ok(api)
    }

    /// Names the model (the rate-limit budget) and the token estimate.
    pub fn for_model(mut self, model: impl Into<String>, token_estimate: u64) -> Self {
        self.model = Some(model.into());
        self.token_estimate = token_estimate;
        self
    }

    /// Marks the call as a stream (`Accept: text/event-stream`).
    pub fn streaming(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }
}

/// `id` as one segment of a path: every byte but the unreserved characters of RFC 3986
/// (letters, digits, `-`, `.`, `_`, `~`) percent-encoded, so an id never reaches another
/// path (`a/../b`) or starts a query.
pub fn path_segment(id: &str) -> Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if id.bytes().all(unreserved) && id != "." && id != ".." {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() * 3);
    for b in id.bytes() {
        match unreserved(b) && b != b'.' {
            true => out.push(char::from(b)),
            false => out.push_str(&format!("%{b:02X}")),
        }
    }
    Cow::Owned(out)
}

/// Where requests go and as whom: base URL, key, user agent.
#[derive(Debug, Clone)]
pub struct Target {
    base: String,
    key: ApiKey,
    authorization: HeaderValue,
    user_agent: HeaderValue,
    /// The base URL's scheme, authority and path, parsed once (every request's URI is
    /// made of them and its own path).
    origin: Option<Origin>,
    /// The key's redaction, built once and shared by every call.
    redactor: Redactor,
}

#[derive(Debug, Clone)]
struct Origin {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's path, without a trailing slash (usually empty).
    path: String,
}

impl Origin {
    fn of(base: &str) -> Option<Origin> {
        let parts = base.parse::<http::Uri>().ok()?.into_parts();
        let path = parts.path_and_query.as_ref().map_or("", |p| p.as_str());
        // The base URL has no query (checked): a path, or `/`.
        if path.contains(['?', '#']) {
            return None;
        }
        let path = path.trim_end_matches('/').to_owned();
        Some(Origin {
            scheme: parts.scheme?,
            authority: parts.authority?,
            path,
        })
    }
}

impl Target {
    /// A target at `base_url`. Refuses to send the key over plain HTTP to anything but
    /// a loopback host unless `allow_insecure_http` is set.
    pub fn new(base_url: &str, key: ApiKey, allow_insecure_http: bool) -> Result<Self, Error> {
        let base = check_base_url(base_url, allow_insecure_http).map_err(|e| match e {
            // The URL may hold the key (a key in its query, or the variables swapped).
            Error::Config(m) => Error::Config(Redactor::new(&key).redact(&m)),
            e => e,
        })?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| Error::Config("the API key cannot go into a header".into()))?;
        authorization.set_sensitive(true);
        Ok(Self {
            origin: Origin::of(&base),
            redactor: Redactor::new(&key),
            base,
            key,
            authorization,
            user_agent: HeaderValue::from_static(DEFAULT_USER_AGENT),
        })
    }

    /// Replaces the `User-Agent` (printable ASCII only).
    pub fn with_user_agent(mut self, user_agent: &str) -> Result<Self, Error> {
        self.user_agent = HeaderValue::from_str(user_agent)
            .map_err(|_| Error::Config("the user agent is not a valid header value".into()))?;
        Ok(self)
    }

    /// The base URL, without a trailing slash or a final `/v1` ([`check_base_url`]).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The key.
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    /// The redaction of this target's key (shared: cheap to clone).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The HTTP request for `call` (its `Authorization` header holds the key, marked
    /// sensitive).
    pub fn http_request(&self, call: &ApiRequest) -> Result<http::Request<Bytes>, Error> {
        let Some(uri) = self.plain_uri(&call.path) else {
            return self.built_request(call);
        };
        let mut headers = http::HeaderMap::with_capacity(4);
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.insert(header::USER_AGENT, self.user_agent.clone());
        headers.insert(header::ACCEPT, accept(call));
        if call.body.is_some() {
            headers.insert(header::CONTENT_TYPE, content_type(call));
        }
        let mut request = http::Request::new(call.body.clone().unwrap_or_default());
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// The URI of a plain `path` (path characters only: no query, fragment or space)
    /// from the base URL parsed once, as parsing the whole URL would give it; `None`
    /// for any other path, which [`Target::built_request`] renders.
    #[allow(
        clippy::ptr_arg,
        reason = "a borrowed path is static text, used without a copy"
    )]
    fn plain_uri(&self, path: &Cow<'static, str>) -> Option<http::Uri> {
        const LONGEST: usize = 8 << 10;
        let origin = self.origin.as_ref()?;
        let trimmed = path.trim_start_matches('/');
        let plain = trimmed.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'/'
                        | b'%'
                        | b':'
                        | b'@'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
        if !plain || origin.path.len() + trimmed.len() + 1 > LONGEST {
            return None;
        }
        let path_and_query = match path {
            // `/v1/chat/completions`: the static text itself, no copy.
            Cow::Borrowed(p) if origin.path.is_empty() && p.len() == trimmed.len() + 1 => {
                http::uri::PathAndQuery::from_maybe_shared(Bytes::from_static(p.as_bytes()))
            }
            _ => http::uri::PathAndQuery::try_from(format!("{}/{trimmed}", origin.path)),
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(origin.scheme.clone());
        parts.authority = Some(origin.authority.clone());
        parts.path_and_query = Some(path_and_query.ok()?);
        http::Uri::from_parts(parts).ok()
    }

    /// [`Target::http_request`] through `http`'s builder, the whole URL parsed: for a
    /// path [`Target::plain_uri`] does not take (and the reference its tests compare
    /// with).
    fn built_request(&self, call: &ApiRequest) -> Result<http::Request<Bytes>, Error> {
        let path = call.path.trim_start_matches('/');
        let uri = format!("{}/{}", self.base, path);
        let mut builder = http::Request::builder()
            .method(call.method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::USER_AGENT, self.user_agent.clone())
            .header(header::ACCEPT, accept(call));
        if call.body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, content_type(call));
        }
        builder
            .body(call.body.clone().unwrap_or_default())
            .map_err(|e| Error::Config(format!("invalid request to {path}: {e}")))
    }
}

const JSON: &str = "application/json";

fn accept(call: &ApiRequest) -> HeaderValue {
    HeaderValue::from_static(match (call.stream, call.reply_body) {
        (true, _) => "text/event-stream",
        (false, ReplyBody::Raw) => "application/octet-stream",
        (false, _) => JSON,
    })
}

fn content_type(call: &ApiRequest) -> HeaderValue {
    call.content_type
        .clone()
        .unwrap_or_else(|| HeaderValue::from_static(JSON))
}

/// Checks a base URL: `http` or `https`, a host, no query; plain `http` only to a
/// loopback host unless allowed. Returns it without a trailing slash, and without a
/// final `/v1`: every request's path starts with `/v1/`, and the OpenAI convention
/// (`OPENAI_BASE_URL=https://…/v1`, which many tools share) names the base URL with it,
/// so `https://api.mistral.ai/v1` means `https://api.mistral.ai` (not
/// `…/v1/v1/chat/completions`, a 404).
///
/// Its errors quote the URL only through [`redact_url`] (no credentials, no query), and
/// a value that is not a URL at all is not quoted (it may be the key, the variables
/// swapped): only its length is.
pub fn check_base_url(base_url: &str, allow_insecure_http: bool) -> Result<String, Error> {
    let not_a_url = || {
        Error::Config(format!(
            "the base URL (MISTRAL_BASE_URL or the builder's, {} characters, not shown) is \
             not a URL: it must start with https:// (are MISTRAL_API_KEY and \
             MISTRAL_BASE_URL swapped?)",
            base_url.chars().count()
        ))
    };
    if !base_url.contains("://") {
        return Err(not_a_url());
    }
    let shown = redact_url(base_url);
    let uri: http::Uri = base_url.parse().map_err(|_| not_a_url())?;
    let host = uri
        .host()
        .ok_or_else(|| Error::Config(format!("the base URL {shown:?} has no host")))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::Config(
            "the base URL must not carry credentials (user:password@); the key is sent as a \
             Bearer header"
                .into(),
        ));
    }
    if uri.query().is_some() {
        return Err(Error::Config(format!(
            "the base URL {shown:?} must not have a query"
        )));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_insecure_http || is_loopback(host) => {}
        Some("http") => {
            return Err(Error::Config(format!(
                "refusing to send the API key over plain HTTP to {host}: use https, or allow \
                 insecure HTTP explicitly in the builder"
            )));
        }
        _ => {
            return Err(Error::Config(format!(
                "the base URL {shown:?} must start with https:// (or http:// for loopback)"
            )));
        }
    }
    let base = base_url.trim_end_matches('/');
    let base = base
        .strip_suffix("/v1")
        .unwrap_or(base)
        .trim_end_matches('/');
    Ok(base.to_owned())
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_path_renders_as_the_whole_url_parsed() {
        use super::*;
        let key = || ApiKey::new("sk-test").unwrap();
        for base in [
            "https://api.mistral.ai",
            "https://api.mistral.ai/",
            "https://api.mistral.ai/v1",
            "http://127.0.0.1:8080",
            "https://proxy.example/mistral/",
            "https://[::1]:9/a%20b",
        ] {
            let target = Target::new(base, key(), false).unwrap();
            for (path, stream, body) in [
                ("/v1/chat/completions", false, true),
                ("/v1/chat/completions", true, true),
                ("v1/models", false, false),
                ("//v1/models/mistral-small-latest", false, false),
                ("/v1/files/a:b@c;d=e", false, false),
                ("/v1/files?purpose=batch", false, false),
                ("/v1/a b", false, false),
                ("/v1/é", false, false),
                ("/v1/x#y", false, false),
                ("", false, false),
            ] {
                for path in [Cow::Borrowed(path), Cow::Owned(path.to_owned())] {
                    let mut call = match body {
                        true => {
                            ApiRequest::post_json(path.clone(), &serde_json::json!({})).unwrap()
                        }
                        false => ApiRequest::get(path.clone()),
                    };
                    call.stream = stream;
                    let fast = target.http_request(&call);
                    let built = target.built_request(&call);
                    match (fast, built) {
                        (Ok(a), Ok(b)) => {
                            assert_eq!(a.method(), b.method(), "{base} {path}");
                            assert_eq!(a.uri(), b.uri(), "{base} {path}");
                            assert_eq!(a.uri().to_string(), b.uri().to_string());
                            assert_eq!(a.headers(), b.headers(), "{base} {path}");
                            assert_eq!(a.version(), b.version());
                            assert_eq!(a.body(), b.body());
                        }
                        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                        (a, b) => panic!("{base} {path}: {a:?} against {b:?}"),
                    }
                }
            }
        }
    }

    use super::*;

    fn key() -> ApiKey {
        ApiKey::new("sk-test-Secret").unwrap()
    }

    #[test]
    fn builds_a_json_post_with_auth_and_user_agent() {
        let target = Target::new("https://api.mistral.ai/", key(), false).unwrap();
        let call =
            ApiRequest::post_json("/v1/chat/completions", &serde_json::json!({"model": "m"}))
                .unwrap()
                .for_model("m", 10);
        let r = &target.http_request(&call).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "https://api.mistral.ai/v1/chat/completions");
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer sk-test-Secret");
        assert!(r.headers()[header::AUTHORIZATION].is_sensitive());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::ACCEPT], "application/json");
        assert!(
            r.headers()[header::USER_AGENT]
                .to_str()
                .unwrap()
                .starts_with("mistral-rs/0.")
        );
        assert_eq!(r.body().as_ref(), br#"{"model":"m"}"#);
        assert_eq!(call.model.as_deref(), Some("m"));
        assert!(!format!("{r:?}").contains("Secret"), "Debug leaks the key");
    }

    #[test]
    fn streams_ask_for_event_streams() {
        let target = Target::new("http://127.0.0.1:8080", key(), false).unwrap();
        let call = ApiRequest::post_json("v1/chat/completions", &serde_json::json!({}))
            .unwrap()
            .streaming(true);
        let r = target.http_request(&call).unwrap();
        assert_eq!(r.headers()[header::ACCEPT], "text/event-stream");
        assert_eq!(r.uri(), "http://127.0.0.1:8080/v1/chat/completions");
    }

    #[test]
    fn a_get_has_no_content_type() {
        let target = Target::new("https://api.eu.mistral.ai/base", key(), false).unwrap();
        let r = target.http_request(&ApiRequest::get("/v1/models")).unwrap();
        assert_eq!(r.uri(), "https://api.eu.mistral.ai/base/v1/models");
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
        assert!(r.body().is_empty());
    }

    /// `…/v1` (the OpenAI convention) is the API's root plus `/v1`: dropped, so the
    /// requests go to `/v1/…` once. Only a whole final `/v1` segment.
    #[test]
    fn a_final_v1_is_dropped_from_the_base_url() {
        for (given, base) in [
            ("https://api.mistral.ai/v1", "https://api.mistral.ai"),
            ("https://api.mistral.ai/v1/", "https://api.mistral.ai"),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
            (
                "https://proxy.example/mistral/v1",
                "https://proxy.example/mistral",
            ),
            (
                "https://proxy.example/mistral/v1beta",
                "https://proxy.example/mistral/v1beta",
            ),
            ("https://proxy.example/apiv1", "https://proxy.example/apiv1"),
            ("https://api.mistral.ai", "https://api.mistral.ai"),
        ] {
            let target = Target::new(given, key(), false).unwrap();
            assert_eq!(target.base_url(), base, "{given}");
        }
        let target = Target::new("https://api.mistral.ai/v1", key(), false).unwrap();
        let r = target.http_request(&ApiRequest::list_models()).unwrap();
        assert_eq!(r.uri(), "https://api.mistral.ai/v1/models");
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:1",
            "http://localhost:8080",
            "http://[::1]:9",
            "http://127.9.9.9",
            "https://example.com",
        ] {
            assert!(Target::new(ok, key(), false).is_ok(), "{ok}");
        }
        let err = Target::new("http://api.mistral.ai", key(), false).unwrap_err();
        assert!(err.to_string().contains("plain HTTP"), "{err}");
        assert!(!err.to_string().contains("Secret"));
        assert!(Target::new("http://api.mistral.ai", key(), true).is_ok());
        for bad in [
            "ftp://x",
            "not a url",
            "/relative",
            "https://x/?q=1",
            "https://u:p@x",
        ] {
            assert!(
                matches!(Target::new(bad, key(), false), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn typed_requests_know_their_path_model_stream_and_estimate() {
        use crate::models::Message;
        let chat = ChatRequest::new("mistral-small-latest", vec![Message::user("x".repeat(40))])
            .max_tokens(20);
        let call = ApiRequest::chat(&chat).unwrap();
        assert_eq!(call.path, "/v1/chat/completions");
        assert_eq!(call.model.as_deref(), Some("mistral-small-latest"));
        assert_eq!(call.token_estimate, 30);
        assert!(!call.stream);
        let stream = ApiRequest::chat_stream(&chat).unwrap();
        assert!(stream.stream);
        let body: serde_json::Value =
            serde_json::from_slice(stream.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["stream"], true);
        let fim = ApiRequest::fim(&FimRequest::new("codestral-latest", "def f(")).unwrap();
        assert_eq!(fim.path, "/v1/fim/completions");
        let emb = ApiRequest::embeddings(&EmbeddingRequest::new("mistral-embed", "hello")).unwrap();
        assert_eq!(
            (emb.path.as_ref(), emb.token_estimate),
            ("/v1/embeddings", 2)
        );
        // What a limiter learning its own estimates starts from: the prompt's characters
        // and the completion allowed (none for an endpoint that generates nothing).
        assert_eq!(
            emb.size,
            Sizing {
                prompt_chars: 5,
                max_tokens: Some(0)
            }
        );
        let chat = ApiRequest::chat(&ChatRequest::new(
            "m",
            vec![crate::models::Message::user("hello there")],
        ))
        .unwrap();
        assert_eq!(
            chat.size,
            Sizing {
                prompt_chars: 11,
                max_tokens: None
            }
        );
        assert_eq!(ApiRequest::list_models().model, None);
    }

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(path_segment("conv_01-AB.c~"), "conv_01-AB.c~");
        assert_eq!(path_segment("a/../b?x=1"), "a%2F%2E%2E%2Fb%3Fx%3D1");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("é"), "%C3%A9");
        let append = ApiRequest::conversation_append(
            "c/1",
            &crate::models::ConversationAppendRequest::new("hi"),
        )
        .unwrap();
        assert_eq!(append.path, "/v1/conversations/c%2F1");
        assert_eq!(
            append.model.as_deref(),
            Some("c/1"),
            "the conversation's own budget"
        );
    }

    #[test]
    fn token_estimate_rule() {
        assert_eq!(estimate_tokens(0, Some(10)), 11);
        assert_eq!(estimate_tokens(400, Some(100)), 200);
        assert_eq!(
            estimate_tokens(401, None),
            101 + DEFAULT_COMPLETION_ESTIMATE
        );
    }

    #[test]
    fn custom_user_agent() {
        let t = Target::new(DEFAULT_BASE_URL, key(), false)
            .unwrap()
            .with_user_agent("my-app/1.0")
            .unwrap();
        let r = t.http_request(&ApiRequest::get("/v1/models")).unwrap();
        assert_eq!(r.headers()[header::USER_AGENT], "my-app/1.0");
        assert!(
            Target::new(DEFAULT_BASE_URL, key(), false)
                .unwrap()
                .with_user_agent("a\nb")
                .is_err()
        );
    }
}
