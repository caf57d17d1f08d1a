//! Smoke tests of the blocking client against a scripted loopback HTTP server: one
//! connection per scripted reply, each reply written raw (so resets, stalls and cut
//! streams are exactly what the script says).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mistral_blocking::{
    Ask, ChatRequest, Client, EmbeddingRequest, Error, Grant, KeyError, Limiter, Message, Report,
    RetryPolicy, StreamFailure, TransportKind, Verdict,
};

const KEY: &str = "sk-smoke-SECRET";

/// What the server does with one connection.
enum Step {
    /// Writes these bytes and closes.
    Send(String),
    /// Writes these bytes, keeps the connection open this long, then closes.
    Stall(String, Duration),
}

struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves `script`, one step per connection, then stops listening.
fn serve(script: Vec<Step>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    std::thread::spawn(move || {
        for step in script {
            let (mut conn, _) = listener.accept().unwrap();
            log.lock().unwrap().push(read_request(&mut conn));
            let (bytes, hold) = match step {
                Step::Send(bytes) => (bytes, Duration::ZERO),
                Step::Stall(bytes, hold) => (bytes, hold),
            };
            let _ = conn.write_all(bytes.as_bytes());
            let _ = conn.flush();
            std::thread::sleep(hold);
        }
    });
    Server { url, requests }
}

/// Reads one request (head and `content-length` body) and returns it as text.
fn read_request(conn: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = conn.read(&mut buf).unwrap();
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length || n == 0 {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

fn json(status: u16, headers: &[(&str, &str)], body: &str) -> Step {
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    Step::Send(format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    ))
}

const CHAT_BODY: &str = r#"{"id":"c1","object":"chat.completion","model":"mistral-small-latest","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

/// A chunked event-stream response: its head, then one chunk per event.
fn events(events: &[&str], end: bool) -> String {
    let mut s = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\nmistral-correlation-id: corr-stream\r\n\r\n".to_owned();
    for event in events {
        let data = format!("data: {event}\n\n");
        s.push_str(&format!("{:x}\r\n{data}\r\n", data.len()));
    }
    if end {
        s.push_str("0\r\n\r\n");
    }
    s
}

const HEL: &str = r#"{"id":"s","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#;
const LO: &str = r#"{"id":"s","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fn client(url: &str, policy: RetryPolicy) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(url)
        .retry_policy(policy)
        .seed(7)
        .build()
        .unwrap()
}

fn chat() -> ChatRequest {
    ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")])
}

/// Records every report it is given.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Report>>);

impl Limiter for Recorder {
    fn reserve(&self, _now: Instant, _ask: &Ask) -> Grant {
        Grant::Now
    }
    fn report(&self, _now: Instant, report: &Report) {
        self.0.lock().unwrap().push(report.clone());
    }
}

#[test]
fn a_success_exposes_its_limits_and_sends_the_key_only_to_the_server() {
    let server = serve(vec![json(
        200,
        &[
            ("x-ratelimit-limit-req-minute", "60"),
            ("x-ratelimit-remaining-req-minute", "59"),
            ("mistral-correlation-id", "corr-1"),
        ],
        CHAT_BODY,
    )]);
    let client = client(&server.url, policy());
    let reply = client.chat(chat()).unwrap();
    assert_eq!(reply.text(), Some("Hello!"));
    assert_eq!(reply.trail.attempts, 1);
    assert_eq!(reply.correlation_id.as_deref(), Some("corr-1"));
    let requests = reply.limits.requests().unwrap();
    assert_eq!((requests.limit, requests.remaining), (Some(60), Some(59)));

    let sent = server.requests()[0].to_ascii_lowercase();
    assert!(sent.starts_with("post /v1/chat/completions "), "{sent}");
    assert!(sent.contains(&format!(
        "authorization: bearer {}",
        KEY.to_ascii_lowercase()
    )));
    assert!(sent.contains("user-agent: mistral-rs/"), "{sent}");
    assert!(!format!("{client:?}").contains(KEY), "Debug shows the key");
    let stats = client.stats();
    assert_eq!((stats.calls, stats.attempts, stats.successes), (1, 1, 1));
}

#[test]
fn a_spent_window_is_waited_out_then_retried() {
    let server = serve(vec![
        json(
            429,
            &[
                ("x-ratelimit-limit-req-1-second", "20"),
                ("x-ratelimit-remaining-req-1-second", "0"),
            ],
            r#"{"message":"Requests rate limit exceeded","type":"rate_limited","code":"1300"}"#,
        ),
        json(
            200,
            &[],
            r#"{"id":"e","object":"list","model":"mistral-embed","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"usage":{"prompt_tokens":1,"total_tokens":1}}"#,
        ),
    ]);
    let client = client(&server.url, policy());
    let start = Instant::now();
    let reply = client
        .embeddings(EmbeddingRequest::new("mistral-embed", "hi"))
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(reply.trail.attempts, 2);
    // 20 per second: one request comes back every 50 ms (plus up to 25 % jitter).
    assert!(
        reply.trail.waited >= Duration::from_millis(50),
        "{:?}",
        reply.trail.waited
    );
    assert!(elapsed >= Duration::from_millis(50) && elapsed < Duration::from_secs(5));
    let stats = client.stats();
    assert_eq!((stats.attempts, stats.retries), (2, 1));
    assert_eq!(stats.rate_limited.window, 1);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_refused_key_is_not_retried_and_names_the_variable() {
    let server = serve(vec![json(
        401,
        &[],
        r#"{"message":"Unauthorized","request_id":"r1"}"#,
    )]);
    let client = client(&server.url, policy());
    let error = client.verify_key().unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("MISTRAL_API_KEY"), "{text}");
    assert!(!text.contains(KEY) && !format!("{error:?}").contains(KEY));
    assert!(server.requests()[0].starts_with("GET /v1/models "));
    assert_eq!(client.stats().attempts, 1);
}

#[test]
fn a_dead_port_is_a_connect_error_after_every_attempt() {
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let client = client(&url, policy());
    let start = Instant::now();
    let error = client.chat(chat()).unwrap_err();
    match &error {
        Error::Transport { kind, trail, .. } => {
            assert_eq!(*kind, TransportKind::Connect, "{error}");
            assert_eq!(trail.attempts, 3);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(client.stats().transport_errors, 3);
    assert!(!error.to_string().contains(KEY));
}

#[test]
fn a_stream_is_retried_before_its_first_event_and_reports_its_usage() {
    let server = serve(vec![
        json(503, &[], r#"{"message":"Service unavailable"}"#),
        Step::Send(events(&[HEL, LO, "[DONE]"], true)),
    ]);
    let recorder = Arc::new(Recorder::default());
    let client = Client::builder()
        .api_key(KEY)
        .base_url(&server.url)
        .retry_policy(policy())
        .limiter(recorder.clone())
        .build()
        .unwrap();
    let mut stream = client.chat_stream(chat()).unwrap();
    assert_eq!(stream.head().trail.attempts, 2);
    assert_eq!(stream.head().correlation_id.as_deref(), Some("corr-stream"));
    let mut text = String::new();
    for chunk in stream.by_ref() {
        text.push_str(chunk.unwrap().text().unwrap_or_default());
    }
    assert_eq!(text, "Hello");
    assert_eq!(stream.used_tokens(), Some(5));
    assert_eq!(stream.usage().map(|u| u.total()), Some(5));
    let usage: Vec<_> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.verdict == Verdict::Usage)
        .cloned()
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].used_tokens, Some(5));
    let sent = server.requests()[1].to_ascii_lowercase();
    assert!(
        sent.contains("accept: text/event-stream") && sent.contains(r#""stream":true"#),
        "{sent}"
    );
}

#[test]
fn a_collected_stream_is_the_whole_response() {
    let server = serve(vec![Step::Send(events(&[HEL, LO, "[DONE]"], true))]);
    let response = client(&server.url, policy())
        .chat_stream(chat())
        .unwrap()
        .collect_response()
        .unwrap();
    assert_eq!(response.text(), Some("Hello"));
    assert_eq!(response.usage.map(|u| u.total()), Some(5));
}

#[test]
fn a_stalled_stream_ends_with_the_idle_error() {
    let server = serve(vec![Step::Stall(
        events(&[HEL], false),
        Duration::from_secs(3),
    )]);
    let idle = Duration::from_millis(300);
    let client = client(&server.url, policy().stream_idle_timeout(idle));
    let mut stream = client.chat_stream(chat()).unwrap();
    assert_eq!(stream.next().unwrap().unwrap().text(), Some("Hel"));
    let start = Instant::now();
    let error = stream.next().unwrap().unwrap_err();
    assert!(
        matches!(error, Error::Stream { failure: StreamFailure::Idle(d), .. } if d == idle),
        "{error:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250) && start.elapsed() < Duration::from_secs(2)
    );
    assert!(stream.next().is_none());
}

#[test]
fn a_cut_stream_ends_with_the_cut_error() {
    let server = serve(vec![Step::Send(events(&[HEL], false))]);
    let mut stream = client(&server.url, policy()).chat_stream(chat()).unwrap();
    assert_eq!(stream.next().unwrap().unwrap().text(), Some("Hel"));
    let error = stream.next().unwrap().unwrap_err();
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
    assert!(stream.next().is_none());
}

#[test]
fn plain_http_to_a_remote_host_is_refused_at_construction() {
    let error = Client::builder()
        .api_key(KEY)
        .base_url("http://api.example.com")
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert!(
        Client::builder()
            .api_key(KEY)
            .base_url("http://api.example.com")
            .allow_insecure_http(true)
            .build()
            .is_ok()
    );
    assert!(matches!(
        Client::new("two words"),
        Err(Error::Key(KeyError::Whitespace { .. }))
    ));
}

/// Runs `from_env_in_child` in a child process with `env` (the only way to change the
/// environment without `unsafe`).
fn from_env_child(case: &str, env: &[(&str, &str)]) {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "from_env_in_child", "--test-threads", "1"])
        .env_remove("MISTRAL_API_KEY")
        .env_remove("MISTRAL_BASE_URL")
        .env("MISTRAL_BLOCKING_FROM_ENV_CASE", case);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{case}: {stdout}"
    );
}

#[test]
fn from_env_in_child() {
    let Ok(case) = std::env::var("MISTRAL_BLOCKING_FROM_ENV_CASE") else {
        return; // Only meaningful in the child processes of `from_env_reads_...`.
    };
    let result = Client::from_env();
    match case.as_str() {
        "missing" => assert!(
            matches!(result, Err(Error::Key(KeyError::Missing))),
            "{result:?}"
        ),
        "malformed" => assert!(
            matches!(result, Err(Error::Key(KeyError::Whitespace { .. }))),
            "{result:?}"
        ),
        "remote-http" => assert!(matches!(result, Err(Error::Config(_))), "{result:?}"),
        "ok" => assert!(format!("{:?}", result.unwrap()).contains("127.0.0.1:9")),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn from_env_reads_the_key_and_the_base_url() {
    from_env_child("missing", &[]);
    from_env_child("malformed", &[("MISTRAL_API_KEY", "sk-key\n")]);
    from_env_child(
        "remote-http",
        &[
            ("MISTRAL_API_KEY", KEY),
            ("MISTRAL_BASE_URL", "http://api.example.com"),
        ],
    );
    from_env_child(
        "ok",
        &[
            ("MISTRAL_API_KEY", KEY),
            ("MISTRAL_BASE_URL", "http://127.0.0.1:9"),
        ],
    );
}

#[test]
fn send_posts_any_json_and_clients_are_shareable() {
    fn shareable<T: Clone + Send + Sync>() {}
    fn sendable<T: Send>() {}
    shareable::<Client>();
    sendable::<mistral_blocking::ChatStream>();

    let server = serve(vec![json(200, &[], r#"{"answer":42}"#)]);
    let body =
        serde_json::json!({"agent_id": "a1", "messages": [{"role": "user", "content": "hi"}]});
    let request = mistral_blocking::ApiRequest::post_json("/v1/agents/completions", &body)
        .unwrap()
        .for_model("agent", 10);
    let client = client(&server.url, policy());
    let reply = client.clone().send(request).unwrap();
    assert_eq!(reply.value["answer"], 42);
    let sent = &server.requests()[0];
    assert!(sent.starts_with("POST /v1/agents/completions "), "{sent}");
    assert!(sent.ends_with(&body.to_string()), "{sent}");
    assert_eq!(client.stats().successes, 1, "clones share their statistics");
}
