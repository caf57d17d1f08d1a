//! A private `redis-server` on a free loopback port, for the suites and the bench: a
//! real, independent Redis (started from `PATH`; `Err` when it is not there).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of this process; stopped (this child only) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1, without persistence, and waits
    /// until it answers `PING`. `Err` says why not (not on `PATH`, did not start).
    pub fn start() -> Result<RedisServer, String> {
        let program = redis_server_program()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = spawn(&program, port)?;
        let mut server = RedisServer { child, port };
        server.wait_ready()?;
        Ok(server)
    }

    /// Kills the server and starts a new one on the same port, empty (no persistence):
    /// what a Redis restarted under its clients looks like.
    pub fn restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let program = redis_server_program()?;
        self.child = spawn(&program, self.port)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let server = self;
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if server.ping() {
                return Ok(());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server exited at once ({status})"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("redis-server did not answer PING within 5 s".into())
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `MISTRAL_TEST_REDIS_SERVER` when set (what `cargo xtask test` sets), else
/// `redis-server` on `PATH`.
pub fn redis_server_program() -> Result<PathBuf, String> {
    match std::env::var_os("MISTRAL_TEST_REDIS_SERVER") {
        Some(path) => Ok(PathBuf::from(path)),
        None => find_on_path("redis-server").ok_or_else(|| "redis-server is not on PATH".into()),
    }
}

fn spawn(program: &Path, port: u16) -> Result<Child, String> {
    Command::new(program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// The first `PATH` entry holding an executable file called `name`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|c| {
            c.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
