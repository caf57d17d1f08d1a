//! What only the async driver can get wrong, against a tiny scripted server on loopback
//! (raw HTTP/1.1, one connection per request): how reqwest's failures map to transport
//! kinds (a connection closed before the response, a peer that does not speak TLS, a
//! stream broken mid-chunk), the rustls provider, `from_env`, `Send` futures, and waits on
//! tokio's (paused) clock. Every behaviour both clients share (calls, retries, waits,
//! streams, errors, the limits exposed, the key kept out of every output) is a row of the
//! conformance table, run on both clients against the emulator:
//! `tests/suites/tests/conformance.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_async::stores::{Ask, Grant, Limiter, Report};
use mistral_async::{
    ApiRequest, ChatRequest, Client, Error, KeyError, Message, RetryPolicy, StreamFailure,
    TransportKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does with one request.
enum Step {
    /// Reads the request, writes these bytes, then closes the connection.
    Reply(String),
}

/// A scripted server: one step per connection.
struct Server {
    base_url: String,
}

impl Server {
    async fn start(script: Vec<Step>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for Step::Reply(bytes) in script {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    read_request(&mut socket).await;
                    let _ = socket.write_all(bytes.as_bytes()).await;
                });
            }
        });
        Server { base_url }
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

#[test]
fn an_https_client_builds_without_a_crypto_provider_panic() {
    let client = Client::builder().api_key("k").build().unwrap();
    let debug = format!("{client:?}");
    assert!(debug.contains("https://api.mistral.ai"), "{debug}");
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
    /// Keeps every call in line for a minute.
    #[derive(Debug, Default)]
    struct MinutePacing(std::sync::Mutex<Option<Instant>>);
    impl Limiter for MinutePacing {
        fn poll_admit(
            &self,
            now: Instant,
            _place: &mut mistral_async::stores::Place,
            _ask: &Ask,
            _waker: &std::task::Waker,
        ) -> mistral_async::stores::Admit {
            let until = *self
                .0
                .lock()
                .unwrap()
                .get_or_insert(now + Duration::from_secs(60));
            if now >= until {
                mistral_async::stores::Admit::Ready(Grant::Now)
            } else {
                mistral_async::stores::Admit::Pending { until }
            }
        }
        fn leave(&self, _place: &mut mistral_async::stores::Place) {}
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
        .limiter(Arc::new(MinutePacing::default()))
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
