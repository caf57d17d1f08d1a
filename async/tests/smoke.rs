//! Smoke tests of the async client over loopback HTTP: a tiny scripted server answers
//! raw HTTP/1.1, one connection per request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mistral_async::{
    ApiRequest, Ask, ChatRequest, Client, Error, Grant, KeyError, Limiter, Message, Report,
    RetryPolicy, StreamFailure, TransportKind, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does with one request.
enum Step {
    /// Writes these bytes, then closes the connection.
    Reply(String),
    /// Writes these bytes, then holds the connection open without a word.
    Stall(String),
}

/// A scripted server; `requests` holds the head of every request it received.
struct Server {
    base_url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(script: Vec<Step>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        tokio::spawn(async move {
            for step in script {
                let (mut socket, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let head = read_request(&mut socket).await;
                    log.lock().unwrap().push(head);
                    let (Step::Reply(bytes) | Step::Stall(bytes)) = &step;
                    let _ = socket.write_all(bytes.as_bytes()).await;
                    if let Step::Stall(_) = step {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                });
            }
        });
        Server { base_url, requests }
    }

    fn client(&self, policy: RetryPolicy) -> Client {
        Client::builder()
            .api_key("test-key")
            .base_url(&self.base_url)
            .retry_policy(policy)
            .seed(7)
            .build()
            .unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request: the head, then as many body bytes as `content-length` says.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if !data.first().is_some_and(u8::is_ascii_uppercase) {
            return text; // not HTTP (a TLS hello): answer at once
        }
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if n == 0 || data.len() >= end + 4 + length {
                return text[..end].to_owned();
            }
        }
        if n == 0 {
            return text;
        }
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nmistral-correlation-id: corr-1\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// The head of an event stream whose body ends when the connection closes.
const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn chunk(text: &str, last: bool) -> String {
    let (finish, usage) = match last {
        true => (
            r#""stop""#,
            r#","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}"#,
        ),
        false => ("null", ""),
    };
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":\
         [{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":{finish}}}]{usage}}}\n\n"
    )
}

const CHAT_BODY: &str = r#"{"id":"x","object":"chat.completion","model":"mistral-small-latest","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;

fn chat_request() -> ChatRequest {
    ChatRequest::new("mistral-small-latest", vec![Message::user("Hello")])
}

/// Quick retries, so tests that retry after a failure do not wait long.
fn quick() -> RetryPolicy {
    RetryPolicy::default().backoff(Duration::from_millis(1), Duration::from_millis(10))
}

/// A limiter that records what it was asked and told.
#[derive(Debug, Default)]
struct Recorder {
    asks: Mutex<Vec<Ask>>,
    reports: Mutex<Vec<Report>>,
}

impl Limiter for Recorder {
    fn reserve(&self, _now: Instant, ask: &Ask) -> Grant {
        self.asks.lock().unwrap().push(ask.clone());
        Grant::Now
    }
    fn report(&self, _now: Instant, report: &Report) {
        self.reports.lock().unwrap().push(report.clone());
    }
}

#[tokio::test]
async fn a_success_exposes_the_limits_and_counts_in_the_stats() {
    let limits = [
        ("x-ratelimit-limit-req-minute", "60"),
        ("x-ratelimit-remaining-req-minute", "59"),
    ];
    let server = Server::start(vec![Step::Reply(response("200 OK", &limits, CHAT_BODY))]).await;
    let client = server.client(RetryPolicy::default());
    let reply = client.chat(&chat_request()).await.unwrap();
    assert_eq!(reply.text(), Some("Hi there"));
    assert_eq!(reply.trail.attempts, 1);
    assert_eq!(reply.correlation_id.as_deref(), Some("corr-1"));
    let requests = reply
        .limits
        .requests()
        .expect("the request limit is exposed");
    assert_eq!((requests.limit, requests.remaining), (Some(60), Some(59)));

    let head = &server.requests()[0];
    assert!(
        head.starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{head}"
    );
    assert!(head.contains("authorization: Bearer test-key"), "{head}");
    let stats = client.clone().stats();
    assert_eq!((stats.calls, stats.attempts, stats.successes), (1, 1, 1));
    assert!(stats.last_limits.is_some());
}

#[tokio::test]
async fn a_spent_minute_window_is_waited_out_then_retried() {
    let spent = [
        ("x-ratelimit-limit-req-minute", "60"),
        ("x-ratelimit-remaining-req-minute", "0"),
    ];
    let server = Server::start(vec![
        Step::Reply(response(
            "429 Too Many Requests",
            &spent,
            r#"{"message":"Requests rate limit exceeded"}"#,
        )),
        Step::Reply(response("200 OK", &[], CHAT_BODY)),
    ])
    .await;
    let client = server.client(RetryPolicy::default());
    let started = Instant::now();
    let reply = client.chat(&chat_request()).await.unwrap();
    assert_eq!(reply.trail.attempts, 2);
    // 60 per minute: one request comes back every second.
    assert!(
        reply.trail.waited >= Duration::from_secs(1),
        "{:?}",
        reply.trail.waited
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let stats = client.stats();
    assert_eq!(
        (stats.attempts, stats.retries, stats.rate_limited.window),
        (2, 1, 1)
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_refused_key_is_unauthorized_and_not_retried() {
    let body = r#"{"message":"Unauthorized","request_id":"r"}"#;
    let server = Server::start(vec![Step::Reply(response("401 Unauthorized", &[], body))]).await;
    let error = server
        .client(RetryPolicy::default())
        .verify_key()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    assert!(error.to_string().contains("MISTRAL_API_KEY"), "{error}");
    assert!(!error.to_string().contains("test-key"), "{error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_dead_port_is_a_connect_error_after_the_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::builder()
        .api_key("test-key")
        .base_url(base_url)
        .retry_policy(quick().max_attempts(3))
        .build()
        .unwrap();
    let error = client.list_models().await.unwrap_err();
    match &error {
        Error::Transport { kind, trail, .. } => {
            assert_eq!(*kind, TransportKind::Connect, "{error}");
            assert_eq!(trail.attempts, 3);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(client.stats().transport_errors, 3);
}

#[tokio::test]
async fn a_connection_closed_before_the_response_is_a_reset_and_retried() {
    let server = Server::start(vec![
        Step::Reply(String::new()),
        Step::Reply(response("200 OK", &[], r#"{"object":"list","data":[]}"#)),
    ])
    .await;
    let client = server.client(quick());
    let reply = client.list_models().await.unwrap();
    assert_eq!(reply.trail.attempts, 2);
    assert_eq!(client.stats().transport_errors, 1);

    let server = Server::start(vec![Step::Reply(String::new())]).await;
    let error = server
        .client(RetryPolicy::no_retries())
        .list_models()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transport {
                kind: TransportKind::Reset,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_attempt_that_gets_no_answer_times_out() {
    let server = Server::start(vec![Step::Stall(String::new())]).await;
    let client = Client::builder()
        .api_key("test-key")
        .base_url(&server.base_url)
        .retry_policy(RetryPolicy::no_retries())
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = client.list_models().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_peer_that_does_not_speak_tls_is_a_tls_error() {
    let server = Server::start(vec![Step::Reply(response("200 OK", &[], "{}"))]).await;
    let client = Client::builder()
        .api_key("test-key")
        .base_url(server.base_url.replace("http://", "https://"))
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .unwrap();
    let error = client.list_models().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transport {
                kind: TransportKind::Tls,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stream_delivers_its_chunks_and_usage_and_reports_it() {
    let body = format!(
        "{SSE_HEAD}{}{}data: [DONE]\n\n",
        chunk("Hel", false),
        chunk("lo", true)
    );
    let server = Server::start(vec![Step::Reply(body)]).await;
    let limiter = Arc::new(Recorder::default());
    let client = Client::builder()
        .api_key("test-key")
        .base_url(&server.base_url)
        .limiter(limiter.clone())
        .build()
        .unwrap();
    let mut stream = client.chat_stream(&chat_request()).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(chunk.unwrap().text().unwrap_or_default());
    }
    assert_eq!(text, "Hello");
    assert_eq!(stream.usage().map(|u| u.total_tokens), Some(5));
    assert_eq!(stream.used_tokens(), Some(5));
    assert_eq!(stream.head().trail.attempts, 1);
    assert!(stream.next_chunk().await.is_none());

    assert!(server.requests()[0].contains("accept: text/event-stream"));
    let asks = limiter.asks.lock().unwrap().clone();
    assert_eq!(asks.len(), 1);
    assert_eq!(asks[0].model.as_deref(), Some("mistral-small-latest"));
    let reports = limiter.reports.lock().unwrap().clone();
    let signals: Vec<_> = reports.iter().map(|r| (r.verdict, r.used_tokens)).collect();
    assert_eq!(
        signals.last(),
        Some(&(Verdict::Usage, Some(5))),
        "the stream corrects the estimate: {signals:?}"
    );
}

#[tokio::test]
async fn a_stream_is_retried_before_its_first_event() {
    let body = format!("{SSE_HEAD}{}data: [DONE]\n\n", chunk("ok", true));
    let server = Server::start(vec![
        Step::Reply(response(
            "503 Service Unavailable",
            &[],
            r#"{"message":"busy"}"#,
        )),
        Step::Reply(body),
    ])
    .await;
    let mut stream = server
        .client(quick())
        .chat_stream(&chat_request())
        .await
        .unwrap();
    assert_eq!(stream.head().trail.attempts, 2);
    let first = stream.next_chunk().await.unwrap().unwrap();
    assert_eq!(first.text(), Some("ok"));
    assert!(stream.next_chunk().await.is_none());
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_idle_error() {
    let body = format!("{SSE_HEAD}{}", chunk("Hel", false));
    let server = Server::start(vec![Step::Stall(body)]).await;
    let policy = quick().stream_idle_timeout(Duration::from_millis(300));
    let mut stream = server
        .client(policy)
        .chat_stream(&chat_request())
        .await
        .unwrap();
    assert_eq!(
        stream.next_chunk().await.unwrap().unwrap().text(),
        Some("Hel")
    );
    let started = Instant::now();
    let error = stream.next_chunk().await.unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            Error::Stream {
                failure: StreamFailure::Idle(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(
        stream.next_chunk().await.is_none(),
        "the stream ends after an error"
    );
}

#[tokio::test]
async fn a_stream_closed_before_done_is_cut() {
    let body = format!("{SSE_HEAD}{}", chunk("Hel", false));
    let server = Server::start(vec![Step::Reply(body)]).await;
    let mut stream = server
        .client(quick())
        .chat_stream(&chat_request())
        .await
        .unwrap();
    assert!(stream.next_chunk().await.unwrap().is_ok());
    let error = stream.next_chunk().await.unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            Error::Stream {
                failure: StreamFailure::Cut,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(stream.next_chunk().await.is_none());
}

#[tokio::test]
async fn a_stream_whose_connection_breaks_mid_chunk_is_cut() {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                transfer-encoding: chunked\r\n\r\n";
    let event = chunk("Hel", false);
    // One whole chunk, then a chunk that announces more bytes than ever arrive.
    let body = format!("{head}{:x}\r\n{event}\r\n400\r\ndata: {{", event.len());
    let server = Server::start(vec![Step::Reply(body)]).await;
    let mut stream = server
        .client(quick())
        .chat_stream(&chat_request())
        .await
        .unwrap();
    assert!(stream.next_chunk().await.unwrap().is_ok());
    let error = stream.next_chunk().await.unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            Error::Stream {
                failure: StreamFailure::Cut,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn send_calls_any_path_and_returns_its_json() {
    let server = Server::start(vec![Step::Reply(response(
        "200 OK",
        &[],
        r#"{"data":[],"object":"list"}"#,
    ))])
    .await;
    let request = ApiRequest::post_json("/v1/agents/completions", &serde_json::json!({"x": 1}))
        .unwrap()
        .for_model("m", 10);
    let reply = server.client(quick()).send(request).await.unwrap();
    assert_eq!(reply.value["object"], "list");
    assert!(server.requests()[0].starts_with("POST /v1/agents/completions "));
}

#[test]
fn an_https_client_builds_without_a_crypto_provider_panic() {
    let client = Client::builder().api_key("k").build().unwrap();
    let debug = format!("{client:?}");
    assert!(debug.contains("https://api.mistral.ai"), "{debug}");
}

#[test]
fn construction_errors_come_from_build() {
    let error = Client::builder().build().unwrap_err();
    assert_eq!(error, Error::Key(KeyError::Missing));
    let error = Client::new("with space").unwrap_err();
    assert!(
        matches!(error, Error::Key(KeyError::Whitespace { .. })),
        "{error:?}"
    );
    let error = Client::builder()
        .api_key("k")
        .base_url("http://example.com")
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    let insecure = Client::builder()
        .api_key("k")
        .base_url("http://example.com")
        .allow_insecure_http(true)
        .build();
    assert!(insecure.is_ok());
    let error = Client::builder()
        .api_key("k")
        .user_agent("bad\nagent")
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

#[test]
fn debug_output_never_shows_the_key() {
    let secret = "sk-very-secret-key";
    let builder = Client::builder().api_key(secret);
    assert!(!format!("{builder:?}").contains(secret));
    let client = builder.build().unwrap();
    assert!(!format!("{client:?}").contains(secret));
}

/// `from_env` reads the process environment, which tests cannot change safely in
/// process: each case runs this test binary again with its own environment.
#[test]
fn from_env_reads_the_key_and_base_url() {
    if let Ok(case) = std::env::var("MISTRAL_ASYNC_ENV_CASE") {
        let result = Client::from_env();
        match case.as_str() {
            "missing" => assert_eq!(result.unwrap_err(), Error::Key(KeyError::Missing)),
            "malformed" => assert!(matches!(
                result,
                Err(Error::Key(KeyError::Whitespace { .. }))
            )),
            "set" => assert!(format!("{:?}", result.unwrap()).contains("http://127.0.0.1:9")),
            _ => unreachable!(),
        }
        return;
    }
    let cases = [
        ("missing", None),
        ("malformed", Some("key\n")),
        ("set", Some("good-key")),
    ];
    for (case, key) in cases {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "from_env_reads_the_key_and_base_url",
                "--test-threads=1",
            ])
            .env("MISTRAL_ASYNC_ENV_CASE", case)
            .env("MISTRAL_BASE_URL", "http://127.0.0.1:9")
            .env_remove("MISTRAL_API_KEY");
        if let Some(key) = key {
            command.env("MISTRAL_API_KEY", key);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "case {case}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// Every future of the client is `Send`, so calls run inside `tokio::spawn`; the client
/// and its streams move between tasks.
#[allow(dead_code)]
fn futures_are_send(client: &Client, chat: &ChatRequest) {
    fn send<T: Send>(_: T) {}
    fn shared<T: Send + Sync + Clone>(_: &T) {}
    shared(client);
    send(client.chat(chat));
    send(client.chat_stream(chat));
    send(client.fim(&mistral_async::FimRequest::new("m", "p")));
    send(client.embeddings(&mistral_async::EmbeddingRequest::new("m", "x")));
    send(client.list_models());
    send(client.moderations(&mistral_async::ModerationRequest::new("m", "x")));
    send(client.verify_key());
    send(client.send(ApiRequest::list_models()));
    fn stream<T: futures_util::Stream + Send + Unpin>() {}
    stream::<mistral_async::ChatStream>();
}

#[tokio::test]
async fn calls_run_inside_spawned_tasks_sharing_one_client() {
    let server = Server::start(vec![
        Step::Reply(response("200 OK", &[], CHAT_BODY)),
        Step::Reply(response("200 OK", &[], CHAT_BODY)),
    ])
    .await;
    let client = server.client(quick());
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(&chat_request()).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(client.stats().calls, 2, "clones share their statistics");
}

#[tokio::test(start_paused = true)]
async fn waits_run_on_tokios_clock() {
    /// Paces every call by a minute.
    #[derive(Debug)]
    struct MinutePacing;
    impl Limiter for MinutePacing {
        fn reserve(&self, _now: Instant, _ask: &Ask) -> Grant {
            Grant::After(Duration::from_secs(60))
        }
        fn report(&self, _now: Instant, _report: &Report) {}
    }
    let server = Server::start(vec![Step::Reply(response(
        "200 OK",
        &[],
        r#"{"object":"list","data":[]}"#,
    ))])
    .await;
    // No timer may run during the exchange: a paused clock jumps to the next timer
    // whenever the runtime idles, socket I/O or not.
    let policy = RetryPolicy::default().deadline(None).attempt_timeout(None);
    let client = Client::builder()
        .api_key("test-key")
        .base_url(&server.base_url)
        .retry_policy(policy)
        .limiter(Arc::new(MinutePacing))
        .build()
        .unwrap();
    let (real, virtual_start) = (Instant::now(), tokio::time::Instant::now());
    let reply = client.list_models().await.unwrap();
    assert!(
        reply.trail.waited >= Duration::from_secs(60),
        "{:?}",
        reply.trail.waited
    );
    assert!(virtual_start.elapsed() >= Duration::from_secs(60));
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
}

#[tokio::test]
async fn a_stream_collects_into_a_response() {
    let body = format!(
        "{SSE_HEAD}{}{}data: [DONE]\n\n",
        chunk("Hel", false),
        chunk("lo", true)
    );
    let server = Server::start(vec![Step::Reply(body)]).await;
    let stream = server
        .client(quick())
        .chat_stream(&chat_request())
        .await
        .unwrap();
    let response = stream.collect_response().await.unwrap();
    assert_eq!(response.text(), Some("Hello"));
    assert_eq!(response.usage.map(|u| u.total_tokens), Some(5));
}
