//! `rediss://`: the async client's Redis store over TLS (tokio-rustls) against a real `redis-server` listening only on
//! a TLS port, with a certificate authority and a server certificate this test makes.
//!
//! Needs `redis-server` built with TLS (Debian's is; or its path in
//! `MISTRAL_TEST_REDIS_SERVER`). Without it the test fails when `CI` is set and is
//! skipped loudly otherwise.

#![cfg(feature = "redis")]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mistral_async::stores::{self, AsyncLimiter, BudgetId, LimiterSpec, RedisLimiter};
use mistral_core::limiter::{LimiterConfig, Limits};
use mistral_core::{ApiKey, Ask, Error, Grant, Priority, Sizing};
use mistral_limiter::store::StoreOps;
use mistral_limiter::{AdmitOp, Candidate, Decision};

const BASE: &str = "https://api.mistral.ai";

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "mistral-async-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

struct TlsRedis {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA, a certificate for `localhost` and `127.0.0.1` signed by it, and a
    /// `redis-server` with only a TLS port (`--port 0`) that does not ask clients for
    /// certificates; `None` (said loudly) when there is no redis-server and no `CI`.
    fn start() -> Option<TlsRedis> {
        let bin = std::env::var("MISTRAL_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let found = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let ci = std::env::var("CI").is_ok_and(|v| {
                !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false")
            });
            assert!(!ci, "`{bin}` not found and CI is set");
            eprintln!("\n*** SKIP: `{bin}` not found; the rediss:// test did not run. ***\n");
            return None;
        }
        let dir = TempDir::new("redis-tls");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mistral-stores test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = write("ca.pem", ca_cert.pem());
        let cert = write("server.pem", server_cert.pem());
        let key = write("server.key", server_key.serialize_pem());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = TlsRedis { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }
}

fn config() -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(10, Duration::from_secs(1))),
        ..LimiterConfig::default()
    }
}

fn ask() -> Ask {
    Ask {
        model: Some("m".into()),
        tokens: 1,
        size: Sizing::default(),
        attempt: 1,
        within: None,
        priority: Priority::Default,
    }
}

/// One caller of `m` at the head of a line, as the client's line asks for it.
fn one_caller() -> StoreOps {
    StoreOps {
        model: "m".into(),
        reports: Vec::new(),
        admit: Some(AdmitOp {
            proc_id: 1,
            waiting: [0, 1, 0],
            candidates: vec![Candidate {
                lane: Priority::Default.lane(),
                size: Sizing::default(),
                tokens: 1,
                within_us: u64::MAX,
            }],
            horizon_us: 5_000,
            late_us: 0,
            ask_gap_us: 100_000,
            reserve_ppm: [0; 3],
        }),
    }
}

#[test]
fn rediss_with_the_servers_ca_shares_one_budget_over_tls() {
    let Some(redis) = TlsRedis::start() else {
        return;
    };
    let url = format!(
        "rediss://127.0.0.1:{}/?ca={}&budget=acme",
        redis.port,
        redis.ca_file().display()
    );
    let (spec, budget) = LimiterSpec::parse_with_budget(&url).unwrap();
    let LimiterSpec::Redis(redis_url) = &spec else {
        panic!("{spec:?}");
    };
    // Two keys of one budget id, two limiters (as two processes would have).
    let key_a = ApiKey::new("sk-key-A-0123456789").unwrap();
    let key_b = ApiKey::new("sk-key-B-9876543210").unwrap();
    let a = RedisLimiter::for_budget(redis_url, BASE, &key_a, budget.as_ref(), config()).unwrap();
    let b = RedisLimiter::for_budget(redis_url, BASE, &key_b, budget.as_ref(), config()).unwrap();
    assert_eq!(a.key_of("m"), b.key_of("m"));
    assert!(!a.key_of("m").contains("acme") && !a.key_of("m").contains("sk-key"));
    let (starts, seqs) = block_on(async {
        // The compare-and-set round runs over TLS (no in-process fallback here) ...
        let answer = a
            .run_direct(&one_caller())
            .await
            .expect("the round runs over TLS");
        assert!(
            matches!(answer.decisions[..], [Decision::Go { .. }]),
            "{answer:?}"
        );
        // ... and so do the clients' admissions, alternating between the keys.
        let mut starts = Vec::new();
        let mut seqs = Vec::new();
        for limiter in [&b, &a, &b, &a] {
            let ask = ask();
            match limiter.admit(&ask).await {
                Grant::Go { after, ticket } => {
                    assert!(after <= Duration::from_millis(10), "{after:?}");
                    starts.push(Instant::now() + after);
                    seqs.push(ticket.seq);
                }
                other => panic!("expected an admission, got {other:?}"),
            }
        }
        (starts, seqs)
    });
    assert!(!a.is_degraded() && !b.is_degraded());
    // One budget at 10 per second: numbered in one sequence, each admission about
    // 100 ms (and a safety margin) after the one before, whichever key made it.
    assert_eq!(seqs, [2, 3, 4, 5]);
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(90) && gap < Duration::from_secs(1),
            "{gap:?} apart"
        );
    }

    // Through the factory the clients use, too.
    let limiter = stores::limiter_for_budget(&spec, BASE, &key_a, budget.as_ref(), config());
    assert!(limiter.is_ok(), "{limiter:?}");
}

#[test]
fn rediss_checks_the_certificate() {
    let Some(redis) = TlsRedis::start() else {
        return;
    };
    let key = ApiKey::new("sk-key-A-0123456789").unwrap();
    // The system's authorities do not know the test's CA: refused, never sent in clear.
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let limiter = RedisLimiter::new(&url, BASE, &key, config())
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let refused = block_on(limiter.run_direct(&one_caller()));
    let message = refused.expect_err("an unknown CA must fail");
    assert!(
        message.to_ascii_lowercase().contains("certificate")
            || message.to_ascii_lowercase().contains("issuer"),
        "{message}"
    );
    // Through the client's admission, the limiter falls back in-process instead (never
    // unlimited, never over the unchecked connection).
    let grant = block_on(async { limiter.admit(&ask()).await });
    assert!(matches!(grant, Grant::Go { .. }), "{grant:?}");
    assert!(limiter.is_degraded());
    // A CA file that is not there is a configuration error at once.
    let missing = format!("rediss://127.0.0.1:{}/?ca=/nonexistent/ca.pem", redis.port);
    match RedisLimiter::new(&missing, BASE, &key, config()) {
        Err(Error::Config(message)) => assert!(message.contains("CA file"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Skipping the check is refused outright, pointing at `ca=`.
    let insecure = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    match RedisLimiter::new(&insecure, BASE, &key, config()) {
        Err(Error::Config(message)) => assert!(message.contains("ca="), "{message}"),
        other => panic!("{other:?}"),
    }
    // A budget id with no store still parses alone.
    assert!(BudgetId::new("acme").is_ok());
}
