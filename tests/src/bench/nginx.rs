//! A real, independent limiter in front of the emulator: nginx `limit_req` without
//! `burst` (a leaky bucket that refuses a request sooner than `1 ÷ rate` after the
//! previous one, with its own HTML 429 page and no rate-limit header), for the bench's
//! row (c) of issue 9's table.
//!
//! nginx runs in the foreground without a master process, on a free loopback port, with
//! every path it writes under a private directory; it is stopped (this child only) when
//! the handle is dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stores::find_on_path;

/// A running nginx proxying to one upstream.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// The nginx binary: `nginx` on `PATH`, else `/usr/sbin/nginx`.
pub fn program() -> Option<PathBuf> {
    find_on_path("nginx").or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.is_file().then_some(p)
    })
}

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1 in front of `upstream` (`host:port`),
    /// limiting every request to `rate` per second without burst, with its files under
    /// `dir` (created). `Err` says why not.
    pub fn start(dir: &Path, upstream: &str, rate: u32) -> Result<Nginx, String> {
        let program = program().ok_or("nginx is not installed (nor on PATH)")?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             daemon off;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               limit_req_zone $server_name zone=api:1m rate={rate}r/s;\n\
               limit_req_status 429;\n\
               upstream emulator {{ server {upstream}; keepalive 256; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 server_name bench;\n\
                 location / {{\n\
                   limit_req zone=api;\n\
                   proxy_pass http://emulator;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_buffering off;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .map_err(|e| format!("cannot write {}: {e}", conf_path.display()))?;
        let child = Command::new(&program)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut nginx = Nginx {
            child,
            port,
            dir: dir.to_owned(),
        };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(format!(
                    "nginx exited at once ({status}): {}",
                    log.lines().last().unwrap_or("")
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("nginx did not listen within 5 s".into())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Statuses of the access log so far, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines().filter_map(status_of_line).collect()
    }
}

/// The status of a combined-format access log line (`... "POST /x HTTP/1.1" 429 ...`).
pub fn status_of_line(line: &str) -> Option<u16> {
    // The request line is the first quoted field; the status follows it.
    let mut parts = line.splitn(3, '"');
    parts.next()?;
    parts.next()?;
    parts.next()?.split_whitespace().next()?.parse().ok()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_statuses_are_read() {
        let line = r#"127.0.0.1 - - [01/Dec/2026:21:00:00 +0000] "POST /v1/chat/completions HTTP/1.1" 429 162 "-" "ureq""#;
        assert_eq!(status_of_line(line), Some(429));
        assert_eq!(status_of_line("garbage"), None);
    }
}
