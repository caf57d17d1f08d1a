//! Two API keys of one organisation, one budget: two OS processes, each with its own
//! key, told the same budget id (`MISTRAL_LIMITER=…?budget=acme`), judged by the
//! emulator's log (the emulator counts both keys against the organisation's one limit).
//! The children are this test binary re-run in child mode, configured only through the
//! environment (`Client::from_env`), limits included (`MISTRAL_LIMITS`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mistral_emulator::{Config, Era, Limits, Semantics};
use mistral_emulator::{Emulator, Log};

mod children;

const MODEL: &str = "mistral-small-latest";
const CHILD: &str = "MISTRAL_BUDGET_ID_CHILD";
const PER_CHILD: usize = 30;
const KEYS: [&str; 2] = ["org-key-one-0123456789", "org-key-two-9876543210"];
/// The organisation's limit: 20 per 2 s (10/s), for both keys together.
const LIMIT: u64 = 20;
const WINDOW: Duration = Duration::from_secs(2);
/// Paced at exactly the limit with no burst, one request held up by a busy machine can
/// meet a later one in a sliding window: a shared budget may see a refusal or two. Two
/// budgets overrun the limit twice over (16 refusals of 60 in the runs seen).
const MAX_SHARED_429: usize = 3;

/// The child's work: `PER_CHILD` chat requests from 3 threads through a client built
/// from the environment alone. Prints its limiter counters. Does nothing outside child
/// mode.
#[test]
fn child_worker() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let client = children::chats_from_env(MODEL, 3, PER_CHILD);
    let stats = client.stats();
    eprintln!("child limiter counters: {:?}", stats.limiter);
    assert_eq!(stats.successes, PER_CHILD as u64);
}

fn emulator(headers: bool) -> Emulator {
    Emulator::start(
        Config {
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            era: Era::Late2025,
            semantics: Semantics::SlidingLog,
            window_secs: WINDOW.as_secs_f64(),
            headers,
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(LIMIT), None)),
    )
}

/// One child per key, with `env` on top of the key and base URL.
fn spawn_children(emu: &Emulator, env: &[(&str, String)]) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    KEYS.iter()
        .map(|key| {
            let mut command = Command::new(&exe);
            command
                .args([
                    "--exact",
                    "child_worker",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, "1")
                .env("MISTRAL_API_KEY", key)
                .env("MISTRAL_BASE_URL", emu.url())
                .env_remove("MISTRAL_LIMITER")
                .env_remove("MISTRAL_LIMITS")
                .stdout(Stdio::null());
            for (name, value) in env {
                command.env(name, value);
            }
            command.spawn().expect("spawn a child")
        })
        .collect()
}

fn judge(name: &str, emu: &Emulator, children: Vec<Child>, start: Instant) -> Log {
    for mut child in children {
        assert!(child.wait().unwrap().success(), "{name}: a child failed");
    }
    let span = start.elapsed();
    let log = emu.log();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for entry in log.entries().iter().filter(|e| e.admitted()) {
        *per_key
            .entry(entry.key_hash.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let busiest = log.max_admitted_in_any_window(MODEL, WINDOW);
    eprintln!(
        "{name}: {} admitted in {:.2} s ({:.3} of {}/s), {} 429s, busiest {} s window {busiest} \
         (limit {LIMIT}), per key {:?}, violations {:?}",
        log.admitted_for(MODEL),
        span.as_secs_f64(),
        log.admitted_for(MODEL) as f64 / span.as_secs_f64() / (LIMIT as f64 / 2.0),
        LIMIT / 2,
        log.count_429(),
        WINDOW.as_secs(),
        per_key.values().collect::<Vec<_>>(),
        log.violations()
    );
    assert_eq!(
        log.admitted_for(MODEL),
        2 * PER_CHILD,
        "{name}: every request admitted"
    );
    assert_eq!(per_key.len(), 2, "{name}: both keys were used: {per_key:?}");
    assert!(log.violations().is_empty(), "{name}");
    log
}

fn state_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".state"))
        .collect();
    names.sort();
    names
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mistral-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Limits from `MISTRAL_LIMITS`, no headers to learn from: with one budget id the two
/// keys' processes pace as one and the organisation's limit is never hit; the store
/// holds one state file, named after neither key nor id.
#[test]
fn two_keys_with_one_budget_id_share_one_budget_across_processes() {
    let emu = emulator(false);
    let dir = temp_dir("budget-id");
    let start = Instant::now();
    let children = spawn_children(
        &emu,
        &[
            (
                "MISTRAL_LIMITER",
                format!("file:{}/?budget=acme", dir.display()),
            ),
            ("MISTRAL_LIMITS", format!("{MODEL}={LIMIT}/2s; *=1/s")),
        ],
    );
    let log = judge("one budget id", &emu, children, start);
    assert!(
        log.count_429() <= MAX_SHARED_429,
        "one budget: {} 429s",
        log.count_429()
    );
    assert!(
        log.max_admitted_in_any_window(MODEL, WINDOW) <= LIMIT as usize,
        "the organisation's limit held"
    );
    let files = state_files(&dir);
    assert_eq!(files.len(), 1, "one budget, one state file: {files:?}");
    for secret in KEYS.iter().chain(["acme"].iter()) {
        assert!(!files[0].contains(secret), "{files:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same without a budget id: each key paces its own budget at the organisation's
/// full limit, so together they send twice what it admits and the emulator refuses the
/// excess (the 429s are absorbed by retries). This is what the budget id prevents.
#[test]
fn without_a_budget_id_each_key_has_its_own_budget() {
    let emu = emulator(false);
    let dir = temp_dir("no-budget-id");
    let start = Instant::now();
    let children = spawn_children(
        &emu,
        &[
            ("MISTRAL_LIMITER", format!("file:{}/", dir.display())),
            ("MISTRAL_LIMITS", format!("{MODEL}={LIMIT}/2s")),
        ],
    );
    let log = judge("a budget per key", &emu, children, start);
    assert_eq!(state_files(&dir).len(), 2, "one state file per key");
    assert!(
        log.count_429() >= 2 * MAX_SHARED_429,
        "two budgets at the full limit each overrun it: {} 429s",
        log.count_429()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// In one process: two clients of two keys given the same `budget_id` in code share
/// one in-process limiter (no store), configured in code with `limits`.
#[test]
fn two_keys_with_one_budget_id_share_one_in_process_limiter() {
    let emu = emulator(false);
    let limits = mistral_core::LimiterConfig {
        models: [(
            MODEL.to_owned(),
            mistral_core::Limits::requests(LIMIT, WINDOW),
        )]
        .into(),
        ..Default::default()
    };
    let clients: Vec<_> = KEYS
        .iter()
        .map(|key| {
            mistral_blocking::Client::builder()
                .api_key(*key)
                .base_url(emu.url())
                .budget_id("acme")
                .limits(limits.clone())
                .build()
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for client in &clients {
            for _ in 0..3 {
                s.spawn(move || {
                    for _ in 0..(PER_CHILD / 3) {
                        let request = mistral_core::models::ChatRequest::new(
                            MODEL,
                            vec![mistral_core::models::Message::user("hello")],
                        )
                        .max_tokens(16);
                        client.chat(&request).expect("served");
                    }
                });
            }
        }
    });
    let log = emu.log();
    assert_eq!(log.admitted_for(MODEL), 2 * PER_CHILD);
    assert!(
        log.count_429() <= MAX_SHARED_429,
        "one in-process budget: {} 429s",
        log.count_429()
    );
    assert!(log.violations().is_empty());
    let sum = |f: fn(&mistral_core::LimiterCounts) -> u64| -> u64 {
        clients.iter().map(|c| f(&c.stats().limiter)).sum()
    };
    let queued = sum(|c| c.queued);
    let at_once = sum(|c| c.admitted_at_once);
    assert!(queued >= 30, "most calls waited in line: {queued}");
    // Every attempt was admitted once, in line or at once.
    let attempts: u64 = clients.iter().map(|c| c.stats().attempts).sum();
    assert_eq!(
        queued + at_once,
        attempts,
        "queued {queued}, at once {at_once}, attempts {attempts}"
    );
    let average = clients[0].stats().limiter.average_wait().unwrap();
    assert!(average > Duration::from_millis(100), "{average:?}");
}

/// A `redis-server` with only a TLS port, a CA and a server certificate this test made,
/// stopped on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_tls_redis() -> Option<TlsRedis> {
    let server =
        std::env::var("MISTRAL_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let dir = temp_dir("rediss");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fleet test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(&server)
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--tls-cert-file")
        .arg(dir.join("server.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args(["--tls-auth-clients", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is required in CI: {e}"
            );
            eprintln!("SKIPPED: redis-server not found ({e}); `cargo xtask test` installs it");
            return None;
        }
    };
    let redis = TlsRedis { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(redis)
}

/// End to end over `rediss://`: two processes of two keys share one budget id through a
/// Redis that speaks only TLS, trusting the test's CA through `ca=`. No 429, every
/// request served, the limit held, and nothing paced in-process instead (a Redis that
/// could not be reached would leave each process a quarter of the limit: over twice as
/// slow).
#[test]
fn two_keys_with_one_budget_id_share_one_budget_through_redis_over_tls() {
    let Some(redis) = start_tls_redis() else {
        return;
    };
    let emu = emulator(false);
    let url = format!(
        "rediss://127.0.0.1:{}/?ca={}&budget=acme",
        redis.port,
        redis.dir.join("ca.pem").display()
    );
    let start = Instant::now();
    let children = spawn_children(
        &emu,
        &[
            ("MISTRAL_LIMITER", url),
            ("MISTRAL_LIMITS", format!("{MODEL}={LIMIT}/2s")),
        ],
    );
    let log = judge("rediss, one budget id", &emu, children, start);
    assert!(
        log.count_429() <= MAX_SHARED_429,
        "one budget: {} 429s",
        log.count_429()
    );
    assert!(log.max_admitted_in_any_window(MODEL, WINDOW) <= LIMIT as usize);
    // 60 at 10/s take about 6 s; two stand-ins at a quarter each would take 12 s.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "paced through Redis, not in-process: {:?}",
        start.elapsed()
    );
}
