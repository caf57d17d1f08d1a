//! A chat or FIM completion read as it is generated.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use mistral_core::{ApiRequest, Error, Reply, RetryPolicy, StreamReader, Telemetry};

use crate::clock::now;
use crate::stores::{AsyncLimiter, BoxFuture};
use crate::transport::transport_error;
use crate::{ChatChunk, ChatResponse, ChatStreamAccumulator, Usage};

/// What the stream gives next.
type Next = Option<Result<ChatChunk, Error>>;

/// The chunks of a streamed completion, as they arrive.
///
/// A [`Stream`] of `Result<ChatChunk, Error>` (use `futures_util::StreamExt::next`, or
/// [`ChatStream::next_chunk`]). After an error the stream ends. A stream that sends
/// nothing for the policy's `stream_idle_timeout` fails with [`crate::StreamFailure::Idle`];
/// one that ends before `data: [DONE]` with [`crate::StreamFailure::Cut`]. Nothing is
/// retried once the stream is open. When it is over, the real token count goes to the
/// limiter (a stream dropped before its end reports nothing: the estimate stands).
pub struct ChatStream {
    head: Reply,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    reader: StreamReader<ChatChunk>,
    idle: Pin<Box<tokio::time::Sleep>>,
    limiter: Arc<dyn AsyncLimiter>,
    telemetry: Arc<Telemetry>,
    usage: Option<Usage>,
    /// The report of the stream's end, still going to the limiter, and the item to give
    /// once it is in.
    reporting: Option<(BoxFuture<'static, ()>, Next)>,
}

impl ChatStream {
    /// Starts reading `response`, the body of the successful streamed call of `request`
    /// (none, never expected, reads as a cut stream); its end goes to the client's
    /// limiter and statistics.
    pub(crate) fn open(
        request: &ApiRequest,
        head: Reply,
        response: Option<reqwest::Response>,
        policy: &RetryPolicy,
        (limiter, telemetry): (Arc<dyn AsyncLimiter>, Arc<Telemetry>),
    ) -> Self {
        let (model, id) = (request.model.clone(), head.correlation_id.clone());
        let (tokens, idle) = (request.token_estimate, policy.stream_idle_timeout);
        let reader =
            StreamReader::new(model, tokens, &head.limits, id, idle, now()).of_reply(&head);
        let idle = Box::pin(tokio::time::sleep_until(reader.idle_deadline().into()));
        Self {
            head,
            body: response.map_or_else(|| stream::empty().boxed(), |r| r.bytes_stream().boxed()),
            reader,
            idle,
            limiter,
            telemetry,
            usage: None,
            reporting: None,
        }
    }

    /// The response that opened the stream (its body is empty: its events are this
    /// stream): the limits it announced, its correlation id, the attempts made and the
    /// time waited.
    pub fn head(&self) -> &Reply {
        &self.head
    }

    /// The next chunk; `None` once the stream is over.
    pub async fn next_chunk(&mut self) -> Option<Result<ChatChunk, Error>> {
        self.next().await
    }

    /// The usage the last chunk announced, once it arrived.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Tokens the stream used (the last chunk's `usage.total_tokens`, or the response's
    /// query-cost header), once known.
    pub fn used_tokens(&self) -> Option<u64> {
        self.reader.used_tokens()
    }

    /// Reads the whole stream and folds it into the response a non-streamed call would
    /// have returned.
    pub async fn collect_response(mut self) -> Result<ChatResponse, Error> {
        let mut response = ChatStreamAccumulator::new();
        while let Some(chunk) = self.next().await {
            response.push(chunk?);
        }
        Ok(response.finish())
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ChatChunk, Error>>> {
        loop {
            if let Some(item) = self.reader.next_item() {
                return Poll::Ready(Some(item));
            }
            if self.reader.is_over() {
                return Poll::Ready(None);
            }
            let failed = match self.body.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    self.reader.feed(now(), &bytes);
                    None
                }
                Poll::Ready(Some(Err(e))) => {
                    Some(self.reader.transport_error(transport_error(e).message))
                }
                Poll::Ready(None) => self.reader.end_of_input(),
                // Nothing to read yet: sleep until the idle deadline (it moves with
                // every byte read), then see whether the stream has stalled.
                Poll::Pending => {
                    self.idle.as_mut().reset(self.reader.idle_deadline().into());
                    ready!(self.idle.as_mut().poll(cx));
                    self.reader.idle_error(now())
                }
            };
            if let Some(error) = failed {
                return Poll::Ready(Some(Err(error)));
            }
        }
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some((mut reporting, item)) = this.reporting.take() {
            if reporting.as_mut().poll(cx).is_pending() {
                this.reporting = Some((reporting, item));
                return Poll::Pending;
            }
            return Poll::Ready(item);
        }
        let item = ready!(this.poll_item(cx));
        if let Some(Ok(chunk)) = &item {
            this.usage = chunk.usage.clone().or(this.usage.take());
        }
        if let Some(report) = this.reader.take_report() {
            this.telemetry.observe_stream_end(now(), &report);
            // The limiter learns the real count before the stream says it is over (at
            // once for an in-process limiter; a store's round trip is awaited here).
            let (limiter, at) = (Arc::clone(&this.limiter), now());
            let mut reporting: BoxFuture<'static, ()> =
                Box::pin(async move { limiter.report(at, &report).await });
            if reporting.as_mut().poll(cx).is_pending() {
                this.reporting = Some((reporting, item));
                return Poll::Pending;
            }
        }
        Poll::Ready(item)
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("head", &self.head)
            .field("over", &self.reader.is_over())
            .finish_non_exhaustive()
    }
}
