//! Sockets: the accept loop, and one hyper HTTP/1.1 connection per socket.
//!
//! Each connection keeps a duplicate of its socket so that a handler can kill the
//! connection without answering: the hyper connection future is dropped, and the spare
//! socket is closed with `SO_LINGER` 0 (an RST, [`Fault::Reset`](crate::Fault::Reset)) or
//! normally (a FIN, [`Fault::Close`](crate::Fault::Close)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::routes::handle;
use super::shared::Shared;

/// Runs the accept loop on `listener` until the future is dropped.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(shared.clone(), stream));
            }
            // Out of file descriptors or similar: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

pub(super) const CLOSE: u8 = 1;
pub(super) const RESET: u8 = 2;

/// Lets a handler kill its own connection.
#[derive(Debug, Default)]
pub(super) struct ConnControl {
    kill: Notify,
    mode: AtomicU8,
}

impl ConnControl {
    pub(super) fn kill(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok((stream, spare)) = with_spare(stream) else {
        return;
    };
    let control = Arc::new(ConnControl::default());
    let service = {
        let control = control.clone();
        service_fn(move |req| handle(shared.clone(), control.clone(), req))
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = control.kill.notified() => {}
    }
    // The hyper connection (and its socket) is gone; the spare is the last handle.
    if control.mode.load(Ordering::SeqCst) == RESET
        && let Ok(spare) = TcpStream::from_std(spare)
    {
        let _ = spare.set_zero_linger();
    }
}

fn with_spare(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let spare = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, spare))
}
