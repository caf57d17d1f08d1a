//! The shared limiter on a real Redis Cluster that the test starts itself
//! (`redis-server --cluster-enabled yes` per node, `redis-cli --cluster create`):
//!
//! - a fleet of both clients (a process of each, 32 threads and 32 tasks) against an
//!   emulator of 20 requests a second, through `MISTRAL_LIMITER=redis+cluster://…` with a
//!   password, on three masters with a replica each; the master serving the budget's
//!   slot is killed mid-run and its replica takes over. Judged by the emulator's log
//!   (refusals, the server's own rule over every request sent, the goodput before, during
//!   and after the failover) and by the cluster (the budget's key on its slot's master
//!   and nowhere else, written after the failover);
//! - `MOVED` and `ASK`: the budget's slot migrated to another master (its key moved
//!   between the two steps) while both clients keep spending one budget, which goes on
//!   where it was;
//! - TLS (`rediss+cluster://…?ca=`) and a user and password, as for one server; a wrong
//!   password refused without showing it.
//!
//! The fleet's children are this test binary re-run in child mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mistral_core::ApiKey;
use mistral_core::limiter::{LimiterConfig, Limits};
use mistral_emulator::redis_cluster::{ClusterOptions, ClusterTls, RedisCluster};
use mistral_emulator::{Config, Emulator, Era, Log, Semantics};
use mistral_limiter::store::{StoreOps, codec};
use mistral_limiter::{AdmitOp, Candidate, Decision};

const MODEL: &str = "mistral-small-latest";
const CHILD: &str = "MISTRAL_REDIS_CLUSTER_CHILD";
const RUN_FOR: &str = "MISTRAL_REDIS_CLUSTER_RUN_MS";
/// The server's limit: 20 requests a second, a bucket of 20.
const RATE: u64 = 20;
/// Threads or tasks per child process.
const CALLERS: usize = 32;
/// The fleet's run, from the emulator's start, and when the master goes.
const RUN: Duration = Duration::from_secs(22);
const KILL_AT: Duration = Duration::from_secs(9);
const PASSWORD: &str = "cluster-s3cret";

/// One test at a time: the fleet's timing is judged, on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn request() -> mistral_core::models::ChatRequest {
    mistral_core::models::ChatRequest::new(
        MODEL,
        vec![mistral_core::models::Message::user("hello")],
    )
    .max_tokens(16)
}

/// The child's work (nothing outside child mode): `CALLERS` threads (`blocking`) or tasks
/// (`async`) send chat requests through a client built from the environment until the
/// run's time is up; any failed call fails the child. Prints `done <calls> <attempts>`.
#[test]
fn child_worker() {
    let Ok(kind) = std::env::var(CHILD) else {
        return;
    };
    let run_for = Duration::from_millis(std::env::var(RUN_FOR).unwrap().parse().unwrap());
    // The limiter's fallback and its return, on stderr for the test to read.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,mistral_limiter=info",
        ))
        .init();
    let start = Instant::now();
    let (calls, attempts) = if kind == "blocking" {
        let client = mistral_blocking::Client::from_env().expect("client from the environment");
        let done = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..CALLERS {
                s.spawn(|| {
                    while start.elapsed() < run_for {
                        client.chat(request()).expect("a blocking call");
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        (done.into_inner(), client.stats().attempts)
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = mistral_async::Client::from_env().expect("client from the environment");
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let mut done = 0;
                        while start.elapsed() < run_for {
                            client.chat(request()).await.expect("an async call");
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            let mut calls = 0;
            for t in tasks {
                calls += t.await.unwrap();
            }
            (calls, client.stats().attempts)
        })
    };
    println!("done {calls} {attempts}");
}

fn spawn(emu: &Emulator, kind: &str, limiter: &str, run_for: Duration) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_worker",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, kind)
        .env(RUN_FOR, run_for.as_millis().to_string())
        .env("MISTRAL_API_KEY", emu.key())
        .env("MISTRAL_BASE_URL", emu.url())
        .env("MISTRAL_LIMITER", limiter)
        .env_remove("MISTRAL_LIMITS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a child")
}

/// Requests sent (and refused) per second of the emulator's life, for the output.
fn timeline(log: &Log) -> String {
    let mut bins: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for e in log.entries() {
        let bin = bins.entry(e.arrived.as_secs()).or_default();
        bin.0 += 1;
        bin.1 += usize::from(e.status == 429);
    }
    bins.iter()
        .map(|(at, (sent, refused))| match refused {
            0 => format!("{at}:{sent}"),
            r => format!("{at}:{sent}({r})"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A plain connection to one node (no redirects followed).
fn node(cluster: &RedisCluster, port: u16) -> redis::Connection {
    redis::Client::open(cluster.node_url(port))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

/// The store id in a budget's key, `mistral-limiter:{<id>}:<model>`.
fn id_of(key: &str) -> &str {
    let open = key.find('{').expect("a hash tag");
    let close = key.find('}').expect("a hash tag");
    &key[open + 1..close]
}

/// The live masters, by their port.
fn masters(cluster: &RedisCluster) -> Vec<u16> {
    cluster
        .live_ports()
        .into_iter()
        .filter(|&p| {
            cluster
                .cli(p, &["ROLE"])
                .is_ok_and(|role| role.starts_with("master"))
        })
        .collect()
}

#[test]
fn both_clients_share_a_budget_through_a_cluster_that_loses_a_master() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Instant::now();
    let Some(mut cluster) = mistral_suites::redis_cluster_or_skip(
        ClusterOptions {
            replicas: 1,
            password: Some(PASSWORD.into()),
            ..ClusterOptions::default()
        },
        "the fleet through a Redis Cluster",
    ) else {
        return;
    };
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://default:"), "{url}");
    let start = Instant::now();
    let emu = Emulator::start(
        Config {
            era: Era::Y2026,
            semantics: Semantics::Bucket,
            window_secs: 1.0,
            ..Config::default()
        }
        .model(MODEL, mistral_emulator::Limits::new(Some(RATE), None)),
    );
    eprintln!("cluster of 6 up in {:?}", start - setup);
    // The key the children's limiters use, and the master that serves its slot.
    let key = mistral_blocking::stores::RedisLimiter::new(
        &url,
        &emu.url(),
        &ApiKey::new(emu.key()).unwrap(),
        LimiterConfig::default(),
    )
    .unwrap()
    .key_of(MODEL);
    let slot = cluster.keyslot(&key).unwrap();
    assert_eq!(
        slot,
        cluster.keyslot(&format!("{{{}}}", id_of(&key))).unwrap(),
        "{key}: every key of a budget hashes to the slot of its id"
    );
    let victim = cluster.master_of_slot(slot).unwrap();
    let children: Vec<(&str, Child)> = ["blocking", "async"]
        .into_iter()
        .map(|kind| {
            (
                kind,
                spawn(&emu, kind, &url, RUN.saturating_sub(start.elapsed())),
            )
        })
        .collect();
    std::thread::sleep(KILL_AT.saturating_sub(start.elapsed()));
    cluster.kill(victim);
    let killed_at = start.elapsed();
    let new_master = cluster
        .wait_for_slot_served(slot, Duration::from_secs(12))
        .unwrap();
    let served_at = start.elapsed();
    assert_ne!(new_master, victim);
    let mut calls = BTreeMap::new();
    for (kind, child) in children {
        let out = child.wait_with_output().expect("a child's output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{kind}: a child failed:\n{text}\n{warnings}"
        );
        assert!(!warnings.contains(PASSWORD), "{kind}: {warnings}");
        let done = text
            .lines()
            .find_map(|l| l.split("done ").nth(1))
            .unwrap_or_else(|| panic!("{kind}: no count from a child:\n{text}"));
        let mut numbers = done.split(' ').map(|n| n.parse::<u64>().unwrap());
        calls.insert(kind, (numbers.next().unwrap(), numbers.next().unwrap()));
        // The limiter fell back when the master went, and came back to the cluster.
        let failed = warnings.rfind("store failed");
        let back = warnings.rfind("store is back");
        eprintln!("{kind}: the limiter's log:\n{}", warnings.trim_end());
        assert!(
            failed.is_some() && back > failed,
            "{kind}: expected a fallback, then the store back:\n{warnings}"
        );
    }
    // The cluster: the key on the master now serving its slot, written there after the
    // failover (its time is Redis's, close to now), and no key on any other master.
    let mut conn = node(&cluster, new_master);
    let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    let value = value.unwrap_or_else(|| panic!("{key} is not on {new_master}"));
    let state = codec::decode_value(&value, MODEL).unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).unwrap();
    let written_ago =
        Duration::from_micros((secs * 1_000_000 + micros).saturating_sub(state.seen_us));
    let in_slot: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut conn)
        .unwrap();
    let elsewhere: Vec<(u16, u64)> = masters(&cluster)
        .into_iter()
        .filter(|&p| p != new_master)
        .map(|p| {
            let keys: u64 = redis::cmd("DBSIZE").query(&mut node(&cluster, p)).unwrap();
            (p, keys)
        })
        .collect();

    let log = emu.log();
    let rate = |(sent, refused): (usize, usize), from: Duration, to: Duration| {
        (sent - refused) as f64 / (to - from).as_secs_f64() / RATE as f64
    };
    let steady_from = Duration::from_secs(2);
    // Rejoined: a reconnection pause (3 s) after the slot is served again, and a second.
    let healed_from = served_at + Duration::from_secs(4);
    let steady = log.sent_between(MODEL, steady_from, killed_at);
    let outage = log.sent_between(MODEL, killed_at, healed_from);
    let healed = log.sent_between(MODEL, healed_from, RUN);
    let over = log.attempts_as_admitted(MODEL).violations();
    let total: u64 = calls.values().map(|(c, _)| c).sum();
    eprintln!(
        "cluster fleet: {total} calls {calls:?} (calls, attempts), {} admitted, {} 429s \
         ({} in the first {steady_from:?}, the budget's discovery); \
         slot {slot}: master 127.0.0.1:{victim} killed at {killed_at:.1?}, 127.0.0.1:{new_master} \
         served it from {served_at:.1?}; goodput (of {RATE}/s) steady {:.2} ({steady:?} sent, \
         refused), failover {:.2} ({outage:?}), healed from {healed_from:.1?} {:.2} \
         ({healed:?}); {} attempts over the limit, the first: {:?}; the key: {in_slot} in its \
         slot on the new master, written {written_ago:.1?} before the end; keys on the other \
         masters: {elsewhere:?}\nsent (refused) per second: {}",
        log.admitted_for(MODEL),
        log.count_429(),
        log.sent_between(MODEL, Duration::ZERO, steady_from).1,
        rate(steady, steady_from, killed_at),
        rate(outage, killed_at, healed_from),
        rate(healed, healed_from, RUN),
        over.len(),
        over.first(),
        timeline(&log),
    );
    assert_eq!(in_slot, 1, "the budget's one key, in its slot");
    assert!(
        elsewhere.iter().all(|&(_, keys)| keys == 0),
        "keys on other masters: {elsewhere:?}"
    );
    assert!(
        written_ago < Duration::from_secs(3),
        "the fleet did not write through the new master: last {written_ago:?} before the end"
    );
    // The server's own rule over what it admitted; and near no refusal: a request the
    // fleet sent over the limit is refused (the bucket is kept near empty). The first
    // seconds are the budget's discovery (its limits learned from the answers, as with
    // any store, and judged by the other fleets): their refusals are printed, not judged
    // here; nor, for the same reason, is the count of attempts over the limit (counting
    // the refused as admitted, one refusal leaves every later request of a fleet that
    // runs at the limit "over").
    assert!(log.violations().is_empty(), "{:?}", log.violations());
    let end = RUN + Duration::from_secs(10);
    let after_discovery = log.sent_between(MODEL, steady_from, end).1;
    assert!(
        after_discovery <= 3,
        "{after_discovery} refusals: the fleet ran over the shared budget\n{}",
        timeline(&log)
    );
    // When the store heals: near no refusal from the failover on.
    let after_kill = log.sent_between(MODEL, killed_at, end).1;
    assert!(
        after_kill <= 2,
        "{after_kill} refusals from the failover on\n{}",
        timeline(&log)
    );
    assert!(
        rate(steady, steady_from, killed_at) >= 0.8,
        "through the cluster the fleet is too slow: {steady:?}"
    );
    // Two processes on stand-ins at a quarter share each for part of it: not a stall.
    assert!(
        rate(outage, killed_at, healed_from) >= 0.3,
        "{outage:?} during the failover"
    );
    // Back on the shared budget (the children's logs and the key's last write say it
    // rejoined; the stand-ins alone, with the room the server says remains, go near as
    // fast): no stall once the replica took over.
    assert!(
        rate(healed, healed_from, RUN) >= 0.6,
        "{healed:?} once the replica took over"
    );
}

/// One caller of `model`, admitted however far ahead it fits: the answer says when the
/// budget could take it.
fn one(model: &str) -> StoreOps {
    StoreOps {
        model: model.into(),
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

/// One request a minute: each admission waits a minute more than the one before, so
/// the wait says how many the budget has admitted.
fn one_a_minute() -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(1, Duration::from_secs(60))),
        ..LimiterConfig::default()
    }
}

/// How many minutes ahead an answer admits its caller (rounded).
fn minutes_ahead(answer: Result<mistral_limiter::AdmitAnswer, String>) -> u64 {
    match answer.expect("the cluster answers").decisions[0] {
        Decision::Go { wait_us, .. } => (wait_us + 30_000_000) / 60_000_000,
        other => panic!("expected Go, got {other:?}"),
    }
}

/// Both clients' limiters on `url` (the same budget), and a runtime for the async one.
fn limiters(
    url: &str,
) -> (
    mistral_blocking::stores::RedisLimiter,
    mistral_async::stores::RedisLimiter,
    tokio::runtime::Runtime,
) {
    let key = ApiKey::new("sk-cluster-test").unwrap();
    let base = "https://api.mistral.ai";
    let blocking =
        mistral_blocking::stores::RedisLimiter::new(url, base, &key, one_a_minute()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let asynchronous = rt.block_on(async {
        mistral_async::stores::RedisLimiter::new(url, base, &key, one_a_minute()).unwrap()
    });
    (blocking, asynchronous, rt)
}

#[test]
fn moved_and_ask_are_followed_while_the_budget_moves_to_another_master() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cluster) = mistral_suites::redis_cluster_or_skip(
        ClusterOptions::default(),
        "MOVED and ASK through the Redis store",
    ) else {
        return;
    };
    // The redis crate's form of a cluster's URL: a list of node URLs.
    let url = cluster
        .ports()
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect::<Vec<_>>()
        .join(",");
    let (blocking, asynchronous, rt) = limiters(&url);
    let key = blocking.key_of("m");
    assert_eq!(key, asynchronous.key_of("m"));
    let slot = cluster.keyslot(&key).unwrap();
    let from = cluster.master_of_slot(slot).unwrap();
    let to = *masters(&cluster).iter().find(|&&p| p != from).unwrap();
    let (from_id, to_id) = (cluster.node_id(from).unwrap(), cluster.node_id(to).unwrap());

    assert_eq!(minutes_ahead(blocking.run_direct(&one("m"))), 0);
    assert_eq!(
        minutes_ahead(rt.block_on(asynchronous.run_direct(&one("m")))),
        1
    );
    let s = slot.to_string();
    // The slot migrates: its key moves first, so the old master answers `ASK`.
    cluster
        .cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])
        .unwrap();
    cluster
        .cli(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])
        .unwrap();
    let migrated = cluster
        .cli(
            from,
            &[
                "MIGRATE",
                "127.0.0.1",
                &to.to_string(),
                "",
                "0",
                "5000",
                "KEYS",
                &key,
            ],
        )
        .unwrap();
    assert_eq!(migrated.trim(), "OK");
    let asked_at_from = cluster.cli(from, &["GET", &key]).unwrap_or_else(|e| e);
    assert!(asked_at_from.contains("ASK"), "{asked_at_from}");
    assert_eq!(
        minutes_ahead(rt.block_on(asynchronous.run_direct(&one("m")))),
        2
    );
    assert_eq!(minutes_ahead(blocking.run_direct(&one("m"))), 3);
    // The slot is the new master's: the old one answers `MOVED`.
    for port in masters(&cluster) {
        cluster
            .cli(port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id])
            .unwrap();
    }
    let moved_at_from = cluster.cli(from, &["GET", &key]).unwrap_or_else(|e| e);
    assert!(moved_at_from.contains("MOVED"), "{moved_at_from}");
    assert_eq!(minutes_ahead(blocking.run_direct(&one("m"))), 4);
    assert_eq!(
        minutes_ahead(rt.block_on(asynchronous.run_direct(&one("m")))),
        5
    );
    // A second model of the budget: its key in the same slot, on the same master.
    assert_eq!(minutes_ahead(blocking.run_direct(&one("m2"))), 0);
    let count = |port: u16| {
        cluster
            .cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &s])
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let (on_to, on_from) = (count(to), count(from));
    eprintln!(
        "slot {slot} moved from 127.0.0.1:{from} to 127.0.0.1:{to}: ASK and MOVED followed by \
         both clients, six admissions in one budget; keys in the slot: {on_to} on the new \
         master, {on_from} on the old"
    );
    assert_eq!((on_to, on_from), (2, 0));
    assert!(!blocking.is_degraded() && !asynchronous.is_degraded());
}

/// A CA and a certificate for `127.0.0.1` signed by it, written into `dir`.
fn tls_files(dir: &std::path::Path) -> ClusterTls {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mistral cluster test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    ClusterTls {
        cert: write("node.pem", cert.pem()),
        key: write("node.key", key.serialize_pem()),
        ca: write("ca.pem", ca_cert.pem()),
    }
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_and_a_password_as_for_one_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir(std::env::temp_dir().join(format!(
        "mistral-cluster-tls-{}-{}",
        std::process::id(),
        fastrand_u32()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let tls = tls_files(&dir.0);
    let ca = tls.ca.display().to_string();
    let Some(cluster) = mistral_suites::redis_cluster_or_skip(
        ClusterOptions {
            password: Some(PASSWORD.into()),
            tls: Some(tls),
            ..ClusterOptions::default()
        },
        "a Redis Cluster over TLS",
    ) else {
        return;
    };
    let url = format!("{}?ca={ca}", cluster.url());
    assert!(url.starts_with("rediss+cluster://default:"), "{url}");
    let (blocking, asynchronous, rt) = limiters(&url);
    assert_eq!(minutes_ahead(blocking.run_direct(&one("m"))), 0);
    assert_eq!(
        minutes_ahead(rt.block_on(asynchronous.run_direct(&one("m")))),
        1
    );
    assert_eq!(minutes_ahead(blocking.run_direct(&one("m"))), 2);
    let key = blocking.key_of("m");
    let master = cluster
        .master_of_slot(cluster.keyslot(&key).unwrap())
        .unwrap();
    let exists = cluster.cli(master, &["EXISTS", &key]).unwrap();
    assert_eq!(exists.trim(), "1", "{key} on 127.0.0.1:{master}");
    // A wrong password: refused, and never shown.
    let wrong = url.replace(PASSWORD, "not-the-password");
    let (blocking, asynchronous, rt) = limiters(&wrong);
    let refused = [
        blocking.run_direct(&one("m")).unwrap_err(),
        rt.block_on(asynchronous.run_direct(&one("m"))).unwrap_err(),
    ];
    eprintln!(
        "over TLS with a password: 3 admissions in one budget from both clients; a wrong password: {refused:?}"
    );
    for error in refused {
        assert!(!error.contains("not-the-password"), "{error}");
        assert!(
            error.to_ascii_lowercase().contains("pass")
                || error.to_ascii_lowercase().contains("auth"),
            "{error}"
        );
    }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
