//! A private Redis Cluster on free loopback ports, for the suites: `redis-server
//! --cluster-enabled yes` once per node and `redis-cli --cluster create` (started from
//! `PATH`, or `MISTRAL_TEST_REDIS_SERVER` and `MISTRAL_TEST_REDIS_CLI`; `Err` says what
//! is missing). Nodes can be killed, and the cluster asked who serves a slot, through
//! `redis-cli`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{find_on_path, redis_server_program};

/// The TLS files of a cluster whose nodes speak only TLS (clients and cluster bus).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The nodes' certificate (PEM), valid for `127.0.0.1`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The certificate authority that signed it (PEM).
    pub ca: PathBuf,
}

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Masters (at least 3, as `redis-cli --cluster create` requires).
    pub masters: usize,
    /// Replicas of each master.
    pub replicas: usize,
    /// The default user's password (`requirepass`, and `masterauth` for the replicas).
    pub password: Option<String>,
    /// TLS only, when set.
    pub tls: Option<ClusterTls>,
    /// `cluster-node-timeout`: how long a master may not answer before it counts as
    /// failed and a replica takes over.
    pub node_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            masters: 3,
            replicas: 0,
            password: None,
            tls: None,
            node_timeout: Duration::from_millis(1_000),
        }
    }
}

/// One node: its client port, and its process (`None` once killed).
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A Redis Cluster of this process; every node stopped (these children only) and its
/// directory removed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    cli: PathBuf,
    options: ClusterOptions,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create`, and waits until
    /// every node sees the cluster whole (`cluster_state:ok`, every replica in sync).
    pub fn start(options: ClusterOptions) -> Result<RedisCluster, String> {
        let server = redis_server_program()?;
        let cli = redis_cli_program()?;
        let count = options.masters * (1 + options.replicas);
        if options.masters < 3 {
            return Err("a Redis Cluster needs at least 3 masters".into());
        }
        let dir = std::env::temp_dir().join(format!(
            "mistral-redis-cluster-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Two free ports per node (clients, cluster bus), all held at once so that none
        // is handed out twice.
        let listeners: Vec<TcpListener> = (0..2 * count)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("no free port: {e}"))?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("no free port: {e}"))?;
        drop(listeners);
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
            cli,
            options,
        };
        for i in 0..count {
            let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
            let child = cluster.spawn(&server, port, bus)?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for port in cluster.ports() {
            cluster.wait_for(port, Duration::from_secs(5), "to answer PING", |c, p| {
                Ok(c.cli(p, &["PING"])?.trim() == "PONG")
            })?;
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        args.extend([
            "--cluster-replicas".into(),
            cluster.options.replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let first = cluster.ports()[0];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster
            .run_cli(first, &args, Duration::from_secs(20))
            .map_err(|e| format!("`redis-cli --cluster create` failed: {e}"))?;
        for port in cluster.ports() {
            cluster.wait_for(
                port,
                Duration::from_secs(10),
                "to see the cluster whole",
                |c, p| {
                    let info = c.cli(p, &["CLUSTER", "INFO"])?;
                    let nodes = c.cli(p, &["CLUSTER", "NODES"])?;
                    let replication = c.cli(p, &["INFO", "replication"])?;
                    Ok(info.contains("cluster_state:ok")
                        && nodes.lines().filter(|l| !l.trim().is_empty()).count() == count
                        && !nodes.contains("fail")
                        && !nodes.contains("handshake")
                        && (!replication.contains("role:slave")
                            || replication.contains("master_link_status:up")))
                },
            )?;
        }
        Ok(cluster)
    }

    fn spawn(&self, server: &Path, port: u16, bus: u16) -> Result<Child, String> {
        let o = &self.options;
        let mut cmd = Command::new(server);
        cmd.args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no"])
            // A replica's first sync at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args([
                "--cluster-node-timeout",
                &o.node_timeout.as_millis().to_string(),
            ])
            .arg("--dir")
            .arg(&self.dir);
        match &o.tls {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
            }
        }
        if let Some(password) = &o.password {
            cmd.args(["--requirepass", password, "--masterauth", password]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(Some(status)) = child.try_wait() {
            let mut why = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut why);
            }
            return Err(format!(
                "{} exited at once ({status}): {}",
                server.display(),
                why.trim()
            ));
        }
        Ok(child)
    }

    /// Polls `check` on `port` until it holds, for at most `within`.
    fn wait_for(
        &self,
        port: u16,
        within: Duration,
        what: &str,
        check: impl Fn(&Self, u16) -> Result<bool, String>,
    ) -> Result<(), String> {
        let until = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < until {
            match check(self, port) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "node 127.0.0.1:{port} did not come {what} within {within:?} {last}"
        ))
    }

    /// The client port of every node started (killed ones included), masters first as
    /// `--cluster create` was given them.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis+cluster://` (or `rediss+cluster://`) with the default user's password and
    /// every node's address, as `MISTRAL_LIMITER` takes it.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let auth = match &self.options.password {
            Some(password) => format!("default:{password}@"),
            None => String::new(),
        };
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("{scheme}://{auth}{}/", nodes.join(","))
    }

    /// `redis://` (or `rediss://`) of one node, with the password.
    pub fn node_url(&self, port: u16) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.options.password {
            Some(password) => format!("{scheme}://default:{password}@127.0.0.1:{port}/"),
            None => format!("{scheme}://127.0.0.1:{port}/"),
        }
    }

    /// One command on one node through `redis-cli` (no redirects followed): its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        self.run_cli(port, args, Duration::from_secs(5))
    }

    fn run_cli(&self, port: u16, args: &[&str], within: Duration) -> Result<String, String> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(tls) = &self.options.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        match &self.options.password {
            Some(password) => cmd.env("REDISCLI_AUTH", password),
            None => cmd.env_remove("REDISCLI_AUTH"),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.cli.display()))?;
        let until = Instant::now() + within;
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-cli {args:?} took over {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.starts_with("ERR") || text.starts_with("NOAUTH") {
            return Err(format!(
                "redis-cli {args:?} on {port}: {} {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(text)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> Result<u16, String> {
        let port = self.any_live()?;
        let out = self.cli(port, &["CLUSTER", "KEYSLOT", key])?;
        out.trim()
            .parse()
            .map_err(|e| format!("CLUSTER KEYSLOT said {out:?}: {e}"))
    }

    /// The port of the master serving `slot`, as the live node `asked` sees it.
    pub fn master_of_slot_as_seen_by(&self, asked: u16, slot: u16) -> Result<u16, String> {
        let nodes = self.cli(asked, &["CLUSTER", "NODES"])?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let range = range.trim_start_matches('[');
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                // `ip:port@bus[,hostname]`.
                let addr = fields[1].split('@').next().unwrap_or_default();
                let port = addr.rsplit(':').next().unwrap_or_default();
                return port
                    .parse()
                    .map_err(|e| format!("CLUSTER NODES address {addr:?}: {e}"));
            }
        }
        Err(format!("no live master serves slot {slot}:\n{nodes}"))
    }

    /// The port of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> Result<u16, String> {
        self.master_of_slot_as_seen_by(self.any_live()?, slot)
    }

    /// The node id of the node at `port` (`CLUSTER MYID`).
    pub fn node_id(&self, port: u16) -> Result<String, String> {
        Ok(self.cli(port, &["CLUSTER", "MYID"])?.trim().to_owned())
    }

    /// Waits until every live node agrees that a live master serves `slot` and the
    /// cluster is whole again (`cluster_state:ok`): that master's port.
    pub fn wait_for_slot_served(&self, slot: u16, within: Duration) -> Result<u16, String> {
        let until = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < until {
            let seen: Result<Vec<u16>, String> = self
                .live_ports()
                .iter()
                .map(|&p| {
                    let info = self.cli(p, &["CLUSTER", "INFO"])?;
                    if !info.contains("cluster_state:ok") {
                        return Err(format!("{p}: cluster_state not ok"));
                    }
                    self.master_of_slot_as_seen_by(p, slot)
                })
                .collect();
            match seen {
                Ok(masters) if masters.windows(2).all(|w| w[0] == w[1]) => {
                    let master = masters[0];
                    if self.live_ports().contains(&master) {
                        return Ok(master);
                    }
                    last = format!("slot {slot} still on the killed node {master}");
                }
                Ok(masters) => last = format!("the nodes disagree: {masters:?}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "slot {slot} not served again within {within:?}: {last}"
        ))
    }

    /// Kills the node at `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn any_live(&self) -> Result<u16, String> {
        self.live_ports()
            .first()
            .copied()
            .ok_or_else(|| "no node of the cluster is running".into())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `MISTRAL_TEST_REDIS_CLI` when set, else `redis-cli` on `PATH`, else next to the
/// `redis-server` found: one that has `--cluster` (Redis 5 or later). `Err` names what
/// is missing.
pub fn redis_cli_program() -> Result<PathBuf, String> {
    let found = match std::env::var_os("MISTRAL_TEST_REDIS_CLI") {
        Some(path) => Some(PathBuf::from(path)),
        None => find_on_path("redis-cli").or_else(|| {
            let server = redis_server_program().ok()?;
            let beside = server.parent()?.join("redis-cli");
            beside.is_file().then_some(beside)
        }),
    };
    let Some(cli) = found else {
        return Err(
            "redis-cli is not on PATH (nor beside redis-server): the Redis Cluster \
                    tests need it for `redis-cli --cluster create` (Debian/Ubuntu package \
                    `redis-tools`, which `redis-server` depends on; or set \
                    MISTRAL_TEST_REDIS_CLI)"
                .into(),
        );
    };
    let help = Command::new(&cli)
        .args(["--cluster", "help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} (the Redis Cluster tests' `redis-cli`; MISTRAL_TEST_REDIS_CLI \
                 names another): {e}",
                cli.display()
            )
        })?;
    let text =
        String::from_utf8_lossy(&help.stdout).to_string() + &String::from_utf8_lossy(&help.stderr);
    if !text.contains("create") {
        return Err(format!(
            "{} has no `--cluster create` (Redis 5 or later is needed): {}",
            cli.display(),
            text.trim()
        ));
    }
    Ok(cli)
}
