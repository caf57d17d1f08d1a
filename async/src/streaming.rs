//! A chat or FIM completion read as it is generated.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use mistral_core::{Error, Limiter, StreamReader, Success};

use crate::client::now;
use crate::transport::transport_error;
use crate::{ChatChunk, Usage};

/// The chunks of a streamed completion, as they arrive.
///
/// A [`Stream`] of `Result<ChatChunk, Error>` (use `futures_util::StreamExt::next`, or
/// [`ChatStream::next_chunk`]). After an error the stream ends. A stream that sends
/// nothing for the policy's `stream_idle_timeout` fails with [`crate::StreamFailure::Idle`];
/// one that ends before `data: [DONE]` with [`crate::StreamFailure::Cut`]. Nothing is
/// retried once the stream is open. When it is over, the real token count goes to the
/// limiter.
pub struct ChatStream {
    head: Success,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    reader: StreamReader<ChatChunk>,
    idle: Pin<Box<tokio::time::Sleep>>,
    limiter: Arc<dyn Limiter>,
    usage: Option<Usage>,
}

impl ChatStream {
    pub(crate) fn new(
        success: Success,
        response: Option<reqwest::Response>,
        reader: StreamReader<ChatChunk>,
        limiter: Arc<dyn Limiter>,
    ) -> Self {
        let body = response.map_or_else(|| stream::empty().boxed(), |r| r.bytes_stream().boxed());
        let idle = Box::pin(tokio::time::sleep_until(reader.idle_deadline().into()));
        let usage = None;
        Self {
            head: success,
            body,
            reader,
            idle,
            limiter,
            usage,
        }
    }

    /// The response that opened the stream (its body is empty: its events are this
    /// stream): the limits it announced, its correlation id, the attempts made and the
    /// time waited.
    pub fn head(&self) -> &Success {
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
        let item = ready!(this.poll_item(cx));
        if let Some(Ok(chunk)) = &item {
            this.usage = chunk.usage.clone().or(this.usage.take());
        }
        if let Some(report) = this.reader.take_report() {
            this.limiter.report(now(), &report);
        }
        Poll::Ready(item)
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("head", &self.head)
            .field("over", &self.reader.is_over())
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}
