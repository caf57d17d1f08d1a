//! `rediss://`: the Redis store over TLS against a real `redis-server` listening only on
//! a TLS port, with a certificate authority and a server certificate this test makes.
//!
//! Needs `redis-server` built with TLS (Debian's is; or its path in
//! `MISTRAL_TEST_REDIS_SERVER`). Without it the test fails when `CI` is set and is
//! skipped loudly otherwise.

#![cfg(feature = "redis")]

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use mistral_blocking::stores::{self, BudgetId, LimiterSpec, RedisLimiter};
use mistral_core::limiter::{LimiterConfig, Limits};
use mistral_core::{ApiKey, Error};
use mistral_limiter::store::StoreOps;
use mistral_limiter::{AdmitOp, Candidate, Decision};

const BASE: &str = "https://api.mistral.ai";

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

/// One caller of `m`, admitted however far ahead it fits.
fn one() -> StoreOps {
    StoreOps {
        model: "m".into(),
        reports: Vec::new(),
        admit: Some(AdmitOp {
            proc_id: 7,
            waiting: [0, 1, 0],
            candidates: vec![Candidate {
                lane: 1,
                size: Default::default(),
                tokens: 1,
                within_us: u64::MAX,
            }],
            horizon_us: u64::MAX,
            late_us: 0,
            ask_gap_us: 1_000_000,
            reserve_ppm: [0; 3],
        }),
    }
}

fn wait_us(decision: Decision) -> u64 {
    match decision {
        Decision::Go { wait_us, .. } => wait_us,
        other => panic!("expected Go, got {other:?}"),
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
    // Warm both connections (a TLS handshake takes a while).
    for limiter in [&a, &b] {
        let _ = limiter.run_direct(&StoreOps {
            model: "warm".into(),
            ..StoreOps::default()
        });
    }
    let t0 = Instant::now();
    let mut slots = Vec::new();
    for limiter in [&a, &b, &a, &b] {
        let asked = t0.elapsed().as_micros() as u64;
        let answer = limiter.run_direct(&one()).expect("the round runs over TLS");
        slots.push(asked + wait_us(answer.decisions[0]));
    }
    // One budget at 10 per second: each caller 100 ms (and a safety margin) after the
    // one before, whichever key asked (a few ms of slack for the round trips).
    assert!(slots[0] < 20_000, "{slots:?}");
    for pair in slots.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((95_000..112_000).contains(&gap), "{slots:?}");
    }
    assert!(!a.is_degraded() && !b.is_degraded());

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
    let refused = limiter.run_direct(&one());
    let message = refused.expect_err("an unknown CA must fail").to_string();
    assert!(
        message.to_ascii_lowercase().contains("certificate")
            || message.to_ascii_lowercase().contains("issuer"),
        "{message}"
    );
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
