//! A streamed chat or FIM completion: the events of a successful call, read on a small
//! thread so that the iterator can wait for them with the stream's idle timeout.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use mistral_core::models::{ChatChunk, ChatResponse, ChatStreamAccumulator, Usage};
use mistral_core::{
    ApiRequest, Error, Limiter, Reply, RetryPolicy, StreamReader, Telemetry, Trail, TransportKind,
};

use crate::exchange::transport_error;

/// Body pieces read ahead of the consumer (back-pressure beyond that).
const READ_AHEAD: usize = 16;
/// Size of one read from the connection.
const READ_SIZE: usize = 16 * 1024;

/// What the reader thread hands over: bytes, or why the connection failed.
type Piece = Result<Vec<u8>, String>;

/// The chunks of a streamed completion, as they arrive.
///
/// The call behind it was retried (429s, 5xx, resets) until its response head was a
/// success; from the first event on, nothing is retried. The iterator ends after
/// `data: [DONE]`, or with one error: [`StreamFailure::Idle`] when no byte arrived for the
/// policy's `stream_idle_timeout`, [`StreamFailure::Cut`] when the connection ended early,
/// or what the server sent as an error event. Once it ended, the real token count goes to
/// the limiter (also when the stream is dropped after its end).
///
/// [`StreamFailure::Idle`]: mistral_core::StreamFailure::Idle
/// [`StreamFailure::Cut`]: mistral_core::StreamFailure::Cut
#[derive(Debug)]
pub struct ChatStream {
    reader: StreamReader<ChatChunk>,
    pieces: Option<Receiver<Piece>>,
    usage: Option<Usage>,
    head: Reply,
    limiter: Arc<dyn Limiter>,
    telemetry: Arc<Telemetry>,
}

impl ChatStream {
    /// Starts reading `body`, the body of the successful streamed call of `request`;
    /// its end goes to the client's limiter and statistics.
    pub(crate) fn open(
        request: &ApiRequest,
        head: Reply,
        body: Option<ureq::Body>,
        policy: &RetryPolicy,
        (limiter, telemetry): (Arc<dyn Limiter>, Arc<Telemetry>),
    ) -> Result<Self, Error> {
        let (model, id) = (request.model.clone(), head.correlation_id.clone());
        let (tokens, idle) = (request.token_estimate, policy.stream_idle_timeout);
        let reader = StreamReader::new(model, tokens, &head.limits, id, idle, Instant::now())
            .of_reply(&head);
        let (sender, pieces) = mpsc::sync_channel(READ_AHEAD);
        // Without a body (never expected) the sender drops here: the stream is cut.
        if let Some(body) = body {
            std::thread::Builder::new()
                .name("mistral-stream".into())
                .spawn(move || read_body(body, &sender))
                .map_err(|e| Error::Transport {
                    kind: TransportKind::Other,
                    message: format!("could not start the stream reader thread: {e}"),
                    trail: Trail::default(),
                    source: None,
                })?;
        }
        Ok(Self {
            reader,
            pieces: Some(pieces),
            usage: None,
            head,
            limiter,
            telemetry,
        })
    }

    /// Tokens the stream used, once its last chunk said so.
    pub fn used_tokens(&self) -> Option<u64> {
        self.reader.used_tokens()
    }

    /// The usage of the last chunk that carried one (the final chunk does).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The response that opened the stream (its body is empty: its events are this
    /// stream): the limits it announced, its correlation id, the attempts made and the
    /// time waited.
    pub fn head(&self) -> &Reply {
        &self.head
    }

    /// Reads the whole stream and folds it into the response a non-streamed call would
    /// have returned.
    pub fn collect_response(self) -> Result<ChatResponse, Error> {
        let mut response = ChatStreamAccumulator::new();
        for chunk in self {
            response.push(chunk?);
        }
        Ok(response.finish())
    }

    /// The next item: a decoded chunk, or the error that ends the stream; `None` once it
    /// is over.
    fn read(&mut self) -> Option<Result<ChatChunk, Error>> {
        loop {
            if let Some(item) = self.reader.next_item() {
                return Some(item);
            }
            let pieces = self.pieces.as_ref().filter(|_| !self.reader.is_over())?;
            let failed = match pieces.recv_timeout(self.reader.read_timeout(Instant::now())) {
                Ok(Ok(bytes)) => {
                    self.reader.feed(Instant::now(), &bytes);
                    None
                }
                Ok(Err(message)) => Some(self.reader.transport_error(message)),
                Err(RecvTimeoutError::Timeout) => self.reader.idle_error(Instant::now()),
                Err(RecvTimeoutError::Disconnected) => self.reader.end_of_input(),
            };
            if let Some(error) = failed {
                return Some(Err(error));
            }
        }
    }

    /// Once the stream is over: stops reading and gives the limiter the real token count.
    fn finish(&mut self) {
        if let Some(report) = self.reader.take_report() {
            self.pieces = None;
            self.telemetry.observe_stream_end(Instant::now(), &report);
            self.limiter.report(Instant::now(), &report);
        }
    }
}

impl Iterator for ChatStream {
    type Item = Result<ChatChunk, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.read();
        if let Some(Ok(chunk)) = &item {
            self.usage = chunk.usage.clone().or(self.usage.take());
        }
        self.finish();
        item
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The reader thread: hands the body over piece by piece until it ends, fails, or the
/// stream is dropped.
fn read_body(body: ureq::Body, pieces: &SyncSender<Piece>) {
    let mut reader = body.into_reader();
    let mut buf = vec![0; READ_SIZE];
    loop {
        let piece = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => Ok(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(transport_error(ureq::Error::from(e)).message),
        };
        let failed = piece.is_err();
        if pieces.send(piece).is_err() || failed {
            return;
        }
    }
}
