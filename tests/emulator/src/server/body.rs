//! The response body: frames handed over one by one, optionally spaced (SSE events),
//! stalled or cut on purpose (the modifying faults); it holds the request's place in
//! flight until its last frame is handed over.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::config::Fault;
use crate::limits::SlotGuard;

/// What comes after the last frame of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Finish,
    Stall { after: u32, hold: Duration },
    Cut { after: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Gap,
    Stall,
    /// A short pause before a cut, so that hyper flushes what was sent so far.
    Cut,
}

/// A response body: frames sent one by one, optionally spaced, stalled or cut.
#[derive(Debug)]
pub(crate) struct Body {
    frames: VecDeque<Bytes>,
    sent: u32,
    end: End,
    gap: Duration,
    waiting: Waiting,
    gap_done: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    exact: Option<u64>,
    /// The request's place in flight: released when hyper drops the body, after the
    /// last frame has been handed over (or when the connection goes away).
    pub(super) guard: Option<SlotGuard>,
}

impl Body {
    pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            exact: Some(bytes.len() as u64),
            frames: if bytes.is_empty() {
                VecDeque::new()
            } else {
                VecDeque::from([bytes])
            },
            sent: 0,
            end: End::Finish,
            gap: Duration::ZERO,
            waiting: Waiting::Nothing,
            gap_done: false,
            sleep: None,
            guard: None,
        }
    }

    pub(super) fn events(events: Vec<Bytes>, gap: Duration) -> Body {
        Body {
            frames: events.into(),
            exact: None,
            sent: 0,
            end: End::Finish,
            gap,
            waiting: Waiting::Nothing,
            gap_done: false,
            sleep: None,
            guard: None,
        }
    }

    /// Ends an event stream after `after` events with `event` (an error sent inside the
    /// stream): the events after them, `[DONE]` included, are not sent. A plain body is
    /// left whole.
    pub(super) fn interrupt(mut self, after: u32, event: Bytes) -> Body {
        if self.exact.is_none() {
            self.frames.truncate(after as usize);
            self.frames.push_back(event);
        }
        self
    }

    /// Applies a stall or cut after `after` frames. A plain body is split in halves and
    /// spoiled after the first half whatever `after` says.
    pub(super) fn spoil(mut self, fault: Fault, hold: Duration) -> Body {
        let after = match fault {
            Fault::StallAfter(n) | Fault::CutAfter(n) => n,
            _ => return self,
        };
        let after = if self.exact.is_some() {
            if let Some(whole) = self.frames.pop_front() {
                let half = whole.len() / 2;
                self.frames.push_back(whole.slice(..half));
                self.frames.push_back(whole.slice(half..));
            }
            1
        } else {
            after
        };
        self.end = match fault {
            Fault::StallAfter(_) => End::Stall { after, hold },
            _ => End::Cut { after },
        };
        self
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                match std::mem::replace(&mut this.waiting, Waiting::Nothing) {
                    Waiting::Cut => {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "response cut on purpose",
                        ))));
                    }
                    Waiting::Stall => {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "stalled response given up",
                        ))));
                    }
                    Waiting::Gap => this.gap_done = true,
                    Waiting::Nothing => {}
                }
            }
            match this.end {
                End::Stall { after, hold } if this.sent >= after => {
                    this.waiting = Waiting::Stall;
                    this.sleep = Some(Box::pin(tokio::time::sleep(hold)));
                    this.end = End::Finish;
                    this.frames.clear();
                    continue;
                }
                End::Cut { after } if this.sent >= after => {
                    this.waiting = Waiting::Cut;
                    this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(10))));
                    this.end = End::Finish;
                    this.frames.clear();
                    continue;
                }
                _ => {}
            }
            if this.frames.is_empty() {
                this.guard = None;
                return Poll::Ready(None);
            }
            if this.sent > 0 && !this.gap.is_zero() && !this.gap_done {
                this.waiting = Waiting::Gap;
                this.sleep = Some(Box::pin(tokio::time::sleep(this.gap)));
                continue;
            }
            this.gap_done = false;
            if let Some(frame) = this.frames.pop_front() {
                this.sent += 1;
                if this.frames.is_empty() && this.end == End::Finish {
                    // The last frame: the response is handed over whole.
                    this.guard = None;
                }
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.end == End::Finish && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
