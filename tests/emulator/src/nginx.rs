//! A real nginx as an independent rate limiter in front of the emulator (or any loopback
//! server): its own prefix and generated config in a temp dir, a free loopback port,
//! `limit_req` with nginx's own HTML 429 (or 503) page, and an access log of `$msec $status
//! $request_uri` to judge a run by. Killed (and its directory removed) on drop.
//!
//! ```no_run
//! use mistral_emulator::nginx::{LimitReq, Nginx};
//! use mistral_emulator::{Config, Emulator, Limits};
//!
//! let emulator = Emulator::start(Config {
//!     default_limits: Limits::new(None, None),
//!     headers: false,
//!     ..Config::default()
//! });
//! let bin = Nginx::find().expect("nginx installed");
//! let nginx = Nginx::start(&bin, emulator.addr(), &LimitReq::per_second(10))?;
//! // ... drive a client against nginx.url() with emulator.key() ...
//! let admitted = nginx.access_log()?.iter().filter(|e| e.status == 200).count();
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// nginx's `limit_req_zone … rate=` and `limit_req … burst= [nodelay]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitReq {
    /// Requests per `per`.
    pub requests: u64,
    /// `r/s` (false) or `r/m` (true).
    pub per_minute: bool,
    /// `burst=` (0: none, nginx's default).
    pub burst: u64,
    /// `nodelay`: requests within the burst are served at once instead of queued.
    pub nodelay: bool,
    /// `limit_req_status`: the status of a refusal (429 here; nginx's own default is
    /// 503), sent with nginx's own HTML page for that status.
    pub status: u16,
}

impl LimitReq {
    /// `rate=Nr/s`, no burst: a request sooner than `1/N` s after the previous admitted
    /// one is refused.
    pub fn per_second(requests: u64) -> LimitReq {
        LimitReq {
            requests,
            per_minute: false,
            burst: 0,
            nodelay: false,
            status: 429,
        }
    }

    /// `rate=Nr/m`, no burst.
    pub fn per_minute(requests: u64) -> LimitReq {
        LimitReq {
            per_minute: true,
            ..LimitReq::per_second(requests)
        }
    }

    /// The rate as admitted requests per second.
    pub fn per_sec(&self) -> f64 {
        if self.per_minute {
            self.requests as f64 / 60.0
        } else {
            self.requests as f64
        }
    }
}

/// One line of the access log.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessEntry {
    /// `$msec`: when nginx logged it (the end of the request), Unix seconds with
    /// millisecond resolution.
    pub msec: f64,
    /// `$status`.
    pub status: u16,
    /// `$request_uri`.
    pub uri: String,
}

/// A running nginx, killed on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// The nginx binary: `MISTRAL_TEST_NGINX` when set (as `cargo xtask test` sets it),
    /// else `nginx` on `PATH`, else `/usr/sbin/nginx`; `None` when none of them runs.
    pub fn find() -> Option<PathBuf> {
        let candidates: Vec<PathBuf> = match std::env::var_os("MISTRAL_TEST_NGINX") {
            Some(path) => vec![PathBuf::from(path)],
            None => vec![PathBuf::from("nginx"), PathBuf::from("/usr/sbin/nginx")],
        };
        candidates.into_iter().find(|bin| {
            Command::new(bin)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Starts `bin` on a free loopback port with `limit` in front of `upstream`, and
    /// waits until it accepts connections (at most 10 s).
    pub fn start(bin: &Path, upstream: SocketAddr, limit: &LimitReq) -> io::Result<Nginx> {
        let mut last_error = io::Error::other("nginx did not start");
        // The free port may be taken between the probe and nginx's bind: try again.
        for _ in 0..3 {
            match Nginx::try_start(bin, upstream, limit) {
                Ok(nginx) => return Ok(nginx),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn try_start(bin: &Path, upstream: SocketAddr, limit: &LimitReq) -> io::Result<Nginx> {
        let dir = temp_dir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let conf_path = dir.join("nginx.conf");
        std::fs::File::create(&conf_path)?
            .write_all(config(&dir, port, upstream, limit).as_bytes())?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if let Some(status) = nginx.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "nginx exited ({status}): {}",
                    nginx.error_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nginx did not listen within 10 s: {}", nginx.error_log()),
        ))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log so far, in the order nginx wrote it (unreadable lines skipped).
    pub fn access_log(&self) -> io::Result<Vec<AccessEntry>> {
        let text = std::fs::read_to_string(self.dir.join("logs/access.log"))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some(AccessEntry {
                    msec: parts.next()?.parse().ok()?,
                    status: parts.next()?.parse().ok()?,
                    uri: parts.next()?.to_owned(),
                })
            })
            .collect())
    }

    /// nginx's error log so far (its refusals are logged there as "limiting requests").
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (`master_process off`): killing it stops nginx.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> io::Result<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "mistral-nginx-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// The generated `nginx.conf`: one process in the foreground, everything under `dir`.
fn config(dir: &Path, port: u16, upstream: SocketAddr, limit: &LimitReq) -> String {
    let root = dir.display();
    let unit = if limit.per_minute { "r/m" } else { "r/s" };
    let status = limit.status;
    let rate = limit.requests.max(1);
    let mut limit_req = String::from("limit_req zone=api");
    if limit.burst > 0 {
        limit_req.push_str(&format!(" burst={}", limit.burst));
        if limit.nodelay {
            limit_req.push_str(" nodelay");
        }
    }
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    log_format judge '$msec $status $request_uri';
    access_log {root}/logs/access.log judge;
    limit_req_zone $binary_remote_addr zone=api:1m rate={rate}{unit};
    limit_req_status {status};
    upstream emulator {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {limit_req};
            proxy_pass http://emulator;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_says_what_was_asked() {
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9000));
        let c = config(
            Path::new("/tmp/x"),
            8080,
            upstream,
            &LimitReq::per_second(10),
        );
        assert!(c.contains("rate=10r/s;"));
        assert!(c.contains("limit_req zone=api;"));
        assert!(c.contains("limit_req_status 429;"));
        assert!(c.contains("listen 127.0.0.1:8080;"));
        assert!(c.contains("server 127.0.0.1:9000;"));
        assert!(c.contains("log_format judge '$msec $status $request_uri';"));
        let bursty = LimitReq {
            burst: 5,
            nodelay: true,
            ..LimitReq::per_minute(600)
        };
        let c = config(Path::new("/tmp/x"), 8080, upstream, &bursty);
        assert!(c.contains("rate=600r/m;"));
        assert!(c.contains("limit_req zone=api burst=5 nodelay;"));
        let default_status = LimitReq {
            status: 503,
            ..LimitReq::per_second(1)
        };
        let c = config(Path::new("/tmp/x"), 8080, upstream, &default_status);
        assert!(c.contains("limit_req_status 503;"));
        assert_eq!(bursty.per_sec(), 10.0);
    }
}
