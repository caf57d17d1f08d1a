//! Server-sent events decoder (sans-IO).
//!
//! Mistral streams chat and FIM completions as `text/event-stream`: every chunk
//! is one event `data: <json>\n\n`, and the stream ends with `data: [DONE]`.
//! [`SseDecoder`] turns the raw bytes of such a body into [`SseEvent`]s. It does
//! no I/O and keeps no clock: the caller reads bytes from wherever it likes,
//! hands them to [`SseDecoder::feed`] in chunks of any size (split anywhere,
//! even inside a CRLF pair or a UTF-8 sequence), and takes the decoded events
//! out with [`SseDecoder::next_event`]. Decoding the JSON of each event into
//! chunk types is left to the caller; the decoder only yields the raw data
//! strings.
//!
//! # Parsing rules
//!
//! The decoder follows the [WHATWG event stream interpretation][spec]:
//!
//! - a leading UTF-8 byte order mark is stripped (only at the very start);
//! - lines end in LF, CR or CRLF; a CR at the end of one `feed` followed by an
//!   LF at the start of the next is one line ending;
//! - a line starting with `:` is a comment and ignored (keep-alives);
//! - `field: value` / `field:value` / `field` lines; one space after the
//!   colon is stripped;
//! - `data` lines accumulate, joined by `\n`; a blank line dispatches the
//!   event; an event without any `data` line dispatches nothing (a bare
//!   `data` or `data:` line counts: it yields an empty string);
//! - `id` and `retry` are accepted and ignored, as is any unknown field: a
//!   stream is never resumed with `Last-Event-ID` (a stream must not be retried
//!   once an event was handed out), so neither would change what a caller
//!   does. `event` is read for one type only: an event of type `error`
//!   (`event: error`, as gateways and other APIs send an error inside a
//!   stream) is reported as [`SseEvent::Error`]; every other type (Mistral
//!   uses none) is an ordinary [`SseEvent::Data`].
//!
//! On top of the specification:
//!
//! - an event whose data is `[DONE]` (surrounding ASCII whitespace ignored)
//!   is reported as [`SseEvent::Done`] and sets [`SseDecoder::is_done`];
//! - the data of an event must be valid UTF-8, otherwise the event is
//!   reported as [`SseError::InvalidUtf8`] and skipped (the specification
//!   would substitute U+FFFD, silently corrupting the JSON);
//! - memory is bounded: the data of one event may be at most
//!   [`SseDecoder::max_event_bytes`] bytes long. A longer event is reported
//!   once as [`SseError::EventTooLarge`], the rest of it is skipped without
//!   being buffered, and decoding resumes after the next blank line. Lines
//!   that are not `data` lines (comments, other fields) are never buffered,
//!   so they may be of any length.
//!
//! Errors are per event: after any [`SseError`] the decoder carries on with
//! the next event. Arbitrary input never makes it panic.
//!
//! # Error events
//!
//! Mistral reports errors (429 included) *before* a stream starts, as a plain
//! JSON body with an error status, so they never reach this decoder. Should an
//! error arrive inside the stream anyway (as some gateways do), it is either an
//! event of type `error` ([`SseEvent::Error`]) or an ordinary
//! [`SseEvent::Data`] that [`looks_like_error`] tells apart from a chunk;
//! [`crate::verdict::classify_event`] then classifies it like a response.
//!
//! # Example
//!
//! ```
//! use mistral_core::sse::{SseDecoder, SseEvent};
//!
//! let mut decoder = SseDecoder::new();
//! let mut events = Vec::new();
//! // Bytes as they come off the socket, split anywhere.
//! for bytes in [&b"data: {\"id\":\"a\",\"p\":\"ab"[..], b"cd\"}\r", b"\n\r\ndata: [DONE]\n\n"] {
//!     decoder.feed(bytes);
//!     while let Some(event) = decoder.next_event() {
//!         events.push(event.expect("well-formed stream"));
//!     }
//! }
//! // End of the body: flush what is left.
//! while let Some(event) = decoder.finish() {
//!     events.push(event.expect("stream ended on an event boundary"));
//! }
//! assert_eq!(
//!     events,
//!     [SseEvent::Data(r#"{"id":"a","p":"abcd"}"#.to_owned()), SseEvent::Done]
//! );
//! assert!(decoder.is_done());
//! ```
//!
//! [spec]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

/// One decoded server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    /// The data of one event: its `data` lines joined by `\n`, without the
    /// `data:` prefix. For Mistral this is the JSON of one chunk, padding
    /// field `p` included.
    Data(String),
    /// The end-of-stream marker `data: [DONE]`.
    Done,
    /// The data of an event of type `error` (`event: error`): an error sent inside
    /// the stream.
    Error(String),
}

/// Why an event could not be decoded. The event is skipped; the decoder
/// carries on with the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// The data of an event was longer than the decoder's limit; the event
    /// was skipped up to the next blank line without being buffered.
    #[error("server-sent event longer than the {limit}-byte limit; skipped")]
    EventTooLarge {
        /// The limit that was exceeded, in bytes
        /// ([`SseDecoder::max_event_bytes`]).
        limit: usize,
    },
    /// The data of an event was not valid UTF-8; the event was skipped.
    #[error("server-sent event data is not valid UTF-8 (valid up to byte {valid_up_to}); skipped")]
    InvalidUtf8 {
        /// Length of the valid UTF-8 prefix of the event's data, in bytes.
        valid_up_to: usize,
    },
    /// The input ended (see [`SseDecoder::finish`]) inside an event, after
    /// some of its data but before the blank line that completes it; the
    /// incomplete event was discarded, as the specification requires. The
    /// stream was most likely cut off.
    #[error("input ended inside a server-sent event; {len} bytes of its data discarded")]
    IncompleteEvent {
        /// Length of the discarded data, in bytes.
        len: usize,
    },
}

/// The UTF-8 byte order mark, stripped from the start of the stream.
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The field the decoder keeps.
const DATA: &[u8; 4] = b"data";

/// The field whose value `error` makes an event an [`SseEvent::Error`].
const EVENT: &[u8; 5] = b"event";

/// The one event type the decoder tells apart.
const ERROR: &[u8; 5] = b"error";

/// Where the decoder stands in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the line read yet.
    Start,
    /// Read the first `n` bytes of `data` (1 ≤ n ≤ 4), nothing else.
    Name(u8),
    /// Read `data:`; a single space may follow.
    DataSpace,
    /// Inside the value of a `data` line: bytes go to the data buffer.
    DataValue,
    /// A comment, another field, or a data line of a skipped event: ignore
    /// everything up to the end of the line.
    Skip,
    /// Read the first `n` bytes of `event` (1 ≤ n ≤ 5), nothing else.
    EventName(u8),
    /// Read `event:`; a single space may follow.
    EventSpace,
    /// Inside the value of an `event` line: `matched` bytes of `error` so far, or
    /// `None` once it cannot be `error`.
    EventValue(Option<u8>),
}

/// Incremental, sans-IO decoder of a `text/event-stream` body.
///
/// Feed it bytes with [`feed`](Self::feed), take events out with
/// [`next_event`](Self::next_event) (until it returns `None`) after every
/// feed, and call [`finish`](Self::finish) at the end of the body. See the
/// [module documentation](self) for the parsing rules.
///
/// `feed` decodes eagerly: besides the events not yet taken out, the decoder
/// holds at most [`max_event_bytes`](Self::max_event_bytes) bytes (the data
/// of the event in progress), whatever the input.
pub struct SseDecoder {
    /// Maximum length of the data of one event, in bytes.
    limit: usize,
    /// Number of bytes of the BOM matched at the start of the stream, or
    /// `None` once the start of the stream is behind us.
    bom: Option<u8>,
    /// The previous byte was a CR: an LF right after it is part of the same
    /// line ending.
    after_cr: bool,
    /// Position in the current line.
    line: Line,
    /// Data of the event in progress (`data` lines joined by `\n`).
    data: Vec<u8>,
    /// The event in progress has at least one `data` line.
    has_data: bool,
    /// The event in progress went over the limit: skip it up to the next
    /// blank line.
    skipping: bool,
    /// Decoded events not yet taken out.
    queue: VecDeque<Result<SseEvent, SseError>>,
    /// `[DONE]` was seen.
    done: bool,
    /// The event in progress is of type `error`.
    error_type: bool,
}

impl SseDecoder {
    /// Default limit on the data of one event: 1 MiB, far above any chunk
    /// Mistral sends (tool calls arrive whole in one chunk, but are still
    /// small).
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

    /// A decoder with the default limit,
    /// [`DEFAULT_MAX_EVENT_BYTES`](Self::DEFAULT_MAX_EVENT_BYTES).
    pub fn new() -> Self {
        Self::with_max_event_bytes(Self::DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that accepts events whose data (the `data` lines joined by
    /// `\n`, i.e. the length of the [`SseEvent::Data`] string) is at most
    /// `limit` bytes long, and reports longer ones as
    /// [`SseError::EventTooLarge`].
    pub fn with_max_event_bytes(limit: usize) -> Self {
        Self {
            limit,
            bom: Some(0),
            after_cr: false,
            line: Line::Start,
            data: Vec::new(),
            has_data: false,
            skipping: false,
            queue: VecDeque::new(),
            done: false,
            error_type: false,
        }
    }

    /// The limit on the data of one event, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.limit
    }

    /// Decodes the next bytes of the body. They may be split anywhere; the
    /// events they complete become available through
    /// [`next_event`](Self::next_event).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while let Some(matched) = self.bom {
            let Some((&byte, rest)) = input.split_first() else {
                return;
            };
            let matched = usize::from(matched);
            if byte == BOM[matched] {
                input = rest;
                self.bom = if matched + 1 == BOM.len() {
                    None
                } else {
                    Some(matched as u8 + 1)
                };
            } else {
                // Not a BOM after all: decode what was held back.
                self.bom = None;
                self.decode(&BOM[..matched]);
            }
        }
        self.decode(input);
    }

    /// Takes out the next decoded event, or an error for an event that could
    /// not be decoded; `None` when every complete event fed so far has been
    /// taken out.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        self.queue.pop_front()
    }

    /// Signals the end of the body, then takes out the next event like
    /// [`next_event`](Self::next_event): call it until it returns `None`.
    ///
    /// What the body left unfinished is handled here:
    /// - an incomplete event whose data is `[DONE]` (a server that omits the
    ///   final blank line) yields [`SseEvent::Done`];
    /// - any other incomplete event that has data is discarded, as the
    ///   specification requires, and reported as
    ///   [`SseError::IncompleteEvent`];
    /// - anything else left over (a partial comment or field line, the rest
    ///   of an event already reported as too large) is dropped silently.
    ///
    /// Calling it again is harmless. Bytes fed afterwards are decoded as a
    /// continuation that starts on a fresh line.
    pub fn finish(&mut self) -> Option<Result<SseEvent, SseError>> {
        if let Some(matched) = self.bom.take() {
            self.decode(&BOM[..usize::from(matched)]);
        }
        if self.has_data && !self.skipping {
            if self.data.trim_ascii() == b"[DONE]" {
                self.done = true;
                self.queue.push_back(Ok(SseEvent::Done));
            } else {
                self.queue.push_back(Err(SseError::IncompleteEvent {
                    len: self.data.len(),
                }));
            }
        }
        self.after_cr = false;
        self.line = Line::Start;
        self.reset_event();
        self.next_event()
    }

    /// Whether the end-of-stream marker `data: [DONE]` has been decoded (it
    /// may still be waiting in the queue). The decoder keeps decoding what
    /// follows it, but a caller would normally stop reading there.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes bytes after the BOM check.
    fn decode(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while let Some(&byte) = bytes.get(i) {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                // Second half of a CRLF.
                i += 1;
                continue;
            }
            if byte == b'\n' || byte == b'\r' {
                self.end_line();
                self.after_cr = byte == b'\r';
                i += 1;
                continue;
            }
            match self.line {
                Line::DataValue | Line::Skip => {
                    // The whole run up to the end of the line at once.
                    let run = &bytes[i..];
                    let len = run
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .unwrap_or(run.len());
                    if self.line == Line::DataValue {
                        self.push_data(&run[..len]);
                    }
                    i += len;
                }
                Line::DataSpace => {
                    self.line = Line::DataValue;
                    if byte == b' ' {
                        i += 1;
                    }
                }
                Line::Start => {
                    self.line = match byte {
                        b'd' => Line::Name(1),
                        b'e' => Line::EventName(1),
                        // A comment, or a field other than `data` and `event`.
                        _ => Line::Skip,
                    };
                    i += 1;
                }
                Line::EventName(n) => {
                    let n = usize::from(n);
                    i += 1;
                    self.line = if n == EVENT.len() && byte == b':' {
                        Line::EventSpace
                    } else if n < EVENT.len() && byte == EVENT[n] {
                        Line::EventName(n as u8 + 1)
                    } else {
                        Line::Skip
                    };
                }
                Line::EventSpace => {
                    self.line = Line::EventValue(Some(0));
                    if byte == b' ' {
                        i += 1;
                    }
                }
                Line::EventValue(matched) => {
                    i += 1;
                    self.line = Line::EventValue(matched.and_then(|m| {
                        let m = usize::from(m);
                        (m < ERROR.len() && byte == ERROR[m]).then_some(m as u8 + 1)
                    }));
                }
                Line::Name(n) => {
                    let n = usize::from(n);
                    i += 1;
                    if n == DATA.len() && byte == b':' {
                        self.line = Line::DataSpace;
                        // May switch the line to `Skip`.
                        self.start_data_line();
                    } else if n < DATA.len() && byte == DATA[n] {
                        self.line = Line::Name(n as u8 + 1);
                    } else {
                        self.line = Line::Skip;
                    }
                }
            }
        }
    }

    /// Handles the end of a line.
    fn end_line(&mut self) {
        match self.line {
            Line::Start => self.dispatch(),
            // A bare `data` line: an empty value.
            Line::Name(n) if usize::from(n) == DATA.len() => self.start_data_line(),
            // The event's type (the last `event` line sets it; a bare one empties it).
            Line::EventValue(matched) => {
                self.error_type = matched == Some(ERROR.len() as u8);
            }
            Line::EventSpace => self.error_type = false,
            Line::EventName(n) if usize::from(n) == EVENT.len() => self.error_type = false,
            _ => {}
        }
        self.line = Line::Start;
    }

    /// Begins the value of a `data` line: joins it to the previous one.
    /// Switches the line to [`Line::Skip`] if the event is being skipped or
    /// goes over the limit.
    fn start_data_line(&mut self) {
        if self.skipping {
            self.line = Line::Skip;
        } else if self.has_data {
            self.push_data(b"\n");
        } else {
            self.has_data = true;
        }
    }

    /// Appends to the data of the event in progress, or starts skipping the
    /// event if that would take it over the limit.
    fn push_data(&mut self, bytes: &[u8]) {
        let needed = self.data.len() + bytes.len();
        if needed > self.limit {
            self.queue
                .push_back(Err(SseError::EventTooLarge { limit: self.limit }));
            self.reset_event();
            self.skipping = true;
            self.line = Line::Skip;
            return;
        }
        if needed > self.data.capacity() {
            // Grow geometrically, but never past the limit.
            let target = needed.max(self.data.capacity().saturating_mul(2).min(self.limit));
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend_from_slice(bytes);
    }

    /// Handles a blank line: dispatches the event in progress, if any.
    fn dispatch(&mut self) {
        if self.has_data && !self.skipping {
            let data = std::mem::take(&mut self.data);
            let error_type = self.error_type;
            let event = if data.trim_ascii() == b"[DONE]" {
                self.done = true;
                Ok(SseEvent::Done)
            } else {
                String::from_utf8(data)
                    .map(|d| match error_type {
                        true => SseEvent::Error(d),
                        false => SseEvent::Data(d),
                    })
                    .map_err(|e| SseError::InvalidUtf8 {
                        valid_up_to: e.utf8_error().valid_up_to(),
                    })
            };
            self.queue.push_back(event);
        }
        self.reset_event();
    }

    /// Forgets the event in progress and releases its buffer.
    fn reset_event(&mut self) {
        self.data = Vec::new();
        self.has_data = false;
        self.skipping = false;
        self.error_type = false;
    }
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SseDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffered data itself could be a megabyte: show sizes only.
        f.debug_struct("SseDecoder")
            .field("max_event_bytes", &self.limit)
            .field("buffered_bytes", &self.data.len())
            .field("skipping", &self.skipping)
            .field("queued_events", &self.queue.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Whether the data of an event is an error object rather than a chunk: a
/// JSON object whose top-level `object` is `"error"` (Mistral's error shape,
/// e.g. `{"object":"error","message":"…","type":"…","code":"…"}`) or that has
/// a non-null top-level `error` member (the shape of OpenAI-compatible
/// gateways).
///
/// Mistral sends its errors before the stream, as the response body, so a
/// caller only needs this when data fails to decode as a chunk, or to guard
/// against a gateway. Data that is not a JSON object gives `false`.
pub fn looks_like_error(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow)]
        object: Option<Cow<'a, str>>,
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
    }
    // A derived `Deserialize` also accepts a struct as a JSON array.
    data.trim_start().starts_with('{')
        && serde_json::from_str::<Probe<'_>>(data)
            .is_ok_and(|probe| probe.object.as_deref() == Some("error") || probe.error.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A realistic Mistral stream: role chunk, content chunks (one with a
    /// multi-byte character), the final chunk with usage, then `[DONE]`.
    const CHUNKS: [&str; 4] = [
        r#"{"id":"cmpl-e5cc70bb28c444948073e77776eb30ef","object":"chat.completion.chunk","created":1702256327,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"p":"abcd"}"#,
        r#"{"id":"cmpl-e5cc70bb28c444948073e77776eb30ef","object":"chat.completion.chunk","created":1702256327,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"Bonjour, ça va ? 🙂"},"finish_reason":null}],"p":"abcdefghijklmnop"}"#,
        r#"{"id":"cmpl-e5cc70bb28c444948073e77776eb30ef","object":"chat.completion.chunk","created":1702256327,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":" Oui."},"finish_reason":null}],"p":"abcdefgh"}"#,
        r#"{"id":"cmpl-e5cc70bb28c444948073e77776eb30ef","object":"chat.completion.chunk","created":1702256327,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"total_tokens":20,"completion_tokens":10},"p":"a"}"#,
    ];

    /// The stream with the given line ending.
    fn mistral_stream(eol: &str) -> Vec<u8> {
        let mut out = String::new();
        for chunk in CHUNKS {
            out.push_str(&format!("data: {chunk}{eol}{eol}"));
        }
        out.push_str(&format!("data: [DONE]{eol}{eol}"));
        out.into_bytes()
    }

    fn expected_events() -> Vec<Result<SseEvent, SseError>> {
        CHUNKS
            .iter()
            .map(|c| Ok(SseEvent::Data((*c).to_owned())))
            .chain([Ok(SseEvent::Done)])
            .collect()
    }

    /// Feeds the pieces one by one, draining after each, then finishes.
    fn decode_pieces<'a>(
        decoder: &mut SseDecoder,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<SseEvent, SseError>> {
        let mut events = Vec::new();
        for piece in pieces {
            decoder.feed(piece);
            events.extend(std::iter::from_fn(|| decoder.next_event()));
        }
        events.extend(std::iter::from_fn(|| decoder.finish()));
        events
    }

    fn decode_all(input: &[u8]) -> Vec<Result<SseEvent, SseError>> {
        decode_pieces(&mut SseDecoder::new(), [input])
    }

    fn data(s: &str) -> Result<SseEvent, SseError> {
        Ok(SseEvent::Data(s.to_owned()))
    }

    #[test]
    fn sse_mistral_stream_whole() {
        let mut decoder = SseDecoder::new();
        assert!(!decoder.is_done());
        let events = decode_pieces(&mut decoder, [&mistral_stream("\n")[..]]);
        assert_eq!(events, expected_events());
        assert!(decoder.is_done());
    }

    #[test]
    fn sse_padding_field_passes_intact() {
        let line = r#"{"id":"x","object":"chat.completion.chunk","choices":[],"p":"abcdefghijklmnopqrstuvwxyz0123"}"#;
        let events = decode_all(format!("data: {line}\n\n").as_bytes());
        assert_eq!(events, [data(line)]);
        let Ok(SseEvent::Data(d)) = &events[0] else {
            unreachable!()
        };
        let value: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(value["p"], "abcdefghijklmnopqrstuvwxyz0123");
    }

    #[test]
    fn sse_split_at_every_byte_position() {
        for eol in ["\n", "\r\n", "\r"] {
            let stream = mistral_stream(eol);
            for cut in 0..=stream.len() {
                let (a, b) = stream.split_at(cut);
                let events = decode_pieces(&mut SseDecoder::new(), [a, b]);
                assert_eq!(events, expected_events(), "eol {eol:?}, cut at {cut}");
            }
        }
    }

    #[test]
    fn sse_split_at_every_pair_of_positions() {
        // Three pieces: covers a CRLF and a 4-byte UTF-8 sequence split
        // across three feeds as well.
        let stream = mistral_stream("\r\n");
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let pieces = [&stream[..i], &stream[i..j], &stream[j..]];
                let events = decode_pieces(&mut SseDecoder::new(), pieces);
                assert_eq!(events, expected_events(), "cuts at {i}, {j}");
            }
        }
    }

    #[test]
    fn sse_byte_at_a_time() {
        let stream = mistral_stream("\r\n");
        let events = decode_pieces(&mut SseDecoder::new(), stream.chunks(1));
        assert_eq!(events, expected_events());
    }

    #[test]
    fn sse_line_endings() {
        for input in [
            &b"data: a\ndata: b\n\ndata: c\n\n"[..],
            b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
            b"data: a\rdata: b\r\rdata: c\r\r",
            b"data: a\r\ndata: b\r\rdata: c\n\r\n",
        ] {
            assert_eq!(
                decode_all(input),
                [data("a\nb"), data("c")],
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn sse_cr_and_lf_split_across_feeds_is_one_line_ending() {
        // Were the CR and the LF two line endings, the blank line between
        // them would dispatch "a" alone.
        let events = decode_pieces(
            &mut SseDecoder::new(),
            [&b"data: a\r"[..], b"\ndata: b\r", b"\n\r", b"\n"],
        );
        assert_eq!(events, [data("a\nb")]);

        // LF then CR is two line endings, even across feeds.
        let events = decode_pieces(
            &mut SseDecoder::new(),
            [&b"data: a\n"[..], b"\rdata: b\n\n"],
        );
        assert_eq!(events, [data("a"), data("b")]);

        // A CR alone at the end of a feed ends the line by itself.
        let events = decode_pieces(
            &mut SseDecoder::new(),
            [&b"data: a\r\r"[..], b"data: b\r\r"],
        );
        assert_eq!(events, [data("a"), data("b")]);
    }

    #[test]
    fn sse_comments_are_ignored() {
        let events = decode_all(b": ping\n\n:\n\ndata: a\n: keep-alive\ndata: b\n\n:data: c\n\n");
        assert_eq!(events, [data("a\nb")]);
    }

    #[test]
    fn sse_multi_line_data() {
        assert_eq!(
            decode_all(b"data: a\ndata:b\ndata:  c\ndata: \n\n"),
            [data("a\nb\n c\n")]
        );
        // Bare `data` and `data:` lines are empty values.
        assert_eq!(decode_all(b"data\n\n"), [data("")]);
        assert_eq!(decode_all(b"data:\ndata\n\n"), [data("\n")]);
        // Only the first colon separates the field; one space is stripped.
        assert_eq!(
            decode_all(b"data: {\"a\": \"b:c\"}\n\n"),
            [data("{\"a\": \"b:c\"}")]
        );
    }

    #[test]
    fn sse_other_fields_are_ignored() {
        let events = decode_all(
            b"event: message\nid: 7\nretry: 1000\nfoo: bar\ndata: x\ndat: no\ndatas: no\nDATA: no\n data: no\n\n",
        );
        assert_eq!(events, [data("x")]);
        // An event without data lines dispatches nothing.
        assert_eq!(decode_all(b"event: ping\nid: 1\n\n\n\n"), []);
    }

    #[test]
    fn sse_done() {
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: {}\n\n");
        assert_eq!(decoder.next_event(), Some(data("{}")));
        assert!(!decoder.is_done());
        decoder.feed(b"data: [DONE]\n\n");
        assert!(decoder.is_done());
        assert_eq!(decoder.next_event(), Some(Ok(SseEvent::Done)));
        assert_eq!(decoder.next_event(), None);
        // `[DONE]` inside a JSON string is data.
        assert_eq!(decode_all(b"data: \"[DONE]x\"\n\n"), [data("\"[DONE]x\"")]);
    }

    #[test]
    fn sse_bom_is_stripped_only_at_start() {
        assert_eq!(decode_all(b"\xEF\xBB\xBFdata: x\n\n"), [data("x")]);
        for cut in 0..4 {
            let input = b"\xEF\xBB\xBFdata: x\n\n";
            let events = decode_pieces(
                &mut SseDecoder::new(),
                [
                    &input[..cut],
                    &input[cut..cut.min(2) + 1],
                    &input[cut.min(2) + 1..],
                ],
            );
            assert_eq!(events, [data("x")], "cut at {cut}");
        }
        // A second BOM makes the line an unknown field.
        assert_eq!(
            decode_all(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n"),
            [data("y")]
        );
        // A partial BOM is given back to the decoder, terminator included.
        let events = decode_pieces(&mut SseDecoder::new(), [&b"\xEF\xBB"[..], b"\ndata: y\n\n"]);
        assert_eq!(events, [data("y")]);
        let events = decode_pieces(
            &mut SseDecoder::new(),
            [&b"\xEF\xBB"[..], b"data: y\n\ndata: z\n\n"],
        );
        assert_eq!(events, [data("z")], "the first line is `\\xEF\\xBBdata: y`");
        let events = decode_pieces(&mut SseDecoder::new(), [&b"d"[..], b"ata: y\n\n"]);
        assert_eq!(events, [data("y")]);
    }

    #[test]
    fn sse_oversized_event_then_recovery() {
        let mut decoder = SseDecoder::with_max_event_bytes(16);
        assert_eq!(decoder.max_event_bytes(), 16);
        let events = decode_pieces(
            &mut decoder,
            [
                // Exactly at the limit: fine.
                &b"data: 0123456789abcdef\n\n"[..],
                // One byte over, on one line.
                b"data: 0123456789abcdefg\n\n",
                // Over through the join of two lines, then more lines.
                b"data: 01234567\ndata: 89abcdef\ndata: more\n\n",
                b"data: ok\n\n",
                b"data: [DONE]\n\n",
            ],
        );
        let too_large = Err(SseError::EventTooLarge { limit: 16 });
        assert_eq!(
            events,
            [
                data("0123456789abcdef"),
                too_large.clone(),
                too_large,
                data("ok"),
                Ok(SseEvent::Done)
            ]
        );
    }

    #[test]
    fn sse_huge_line_is_never_buffered() {
        let mut decoder = SseDecoder::with_max_event_bytes(1024);
        decoder.feed(b"data: ");
        let block = [b'x'; 4096];
        for _ in 0..256 {
            // 1 MiB in all.
            decoder.feed(&block);
            assert!(decoder.data.len() <= 1024);
            assert!(decoder.data.capacity() <= 1024);
        }
        decoder.feed(b"\ndata: still the same event\n\n: a long comment ");
        for _ in 0..256 {
            decoder.feed(&block);
            assert!(decoder.data.capacity() <= 1024);
        }
        decoder.feed(b"\ndata: next\n\n");
        let events: Vec<_> = std::iter::from_fn(|| decoder.next_event()).collect();
        assert_eq!(
            events,
            [Err(SseError::EventTooLarge { limit: 1024 }), data("next")]
        );
    }

    #[test]
    fn sse_zero_limit() {
        let events = decode_all_with(0, b"data:\n\ndata: x\n\ndata\ndata\n\ndata:\n\n");
        let too_large = Err(SseError::EventTooLarge { limit: 0 });
        assert_eq!(events, [data(""), too_large.clone(), too_large, data("")]);
    }

    fn decode_all_with(limit: usize, input: &[u8]) -> Vec<Result<SseEvent, SseError>> {
        decode_pieces(&mut SseDecoder::with_max_event_bytes(limit), [input])
    }

    #[test]
    fn sse_invalid_utf8_is_an_error_then_recovery() {
        let events = decode_all(b"data: ab\xFF\xFEcd\n\ndata: \xC3\n\ndata: ok\n\n");
        assert_eq!(
            events,
            [
                Err(SseError::InvalidUtf8 { valid_up_to: 2 }),
                Err(SseError::InvalidUtf8 { valid_up_to: 0 }),
                data("ok")
            ]
        );
        // Invalid bytes outside data lines do not matter.
        assert_eq!(
            decode_all(b": \xFF\n\xFF: x\nid: \xC3\ndata: ok\n\n"),
            [data("ok")]
        );
    }

    #[test]
    fn sse_utf8_split_across_feeds() {
        let input = "data: é€🙂\n\n".as_bytes();
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                decode_pieces(&mut SseDecoder::new(), [a, b]),
                [data("é€🙂")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sse_finish() {
        // Nothing pending.
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: a\n\n: trailing comm");
        assert_eq!(decoder.finish(), Some(data("a")), "queued events first");
        assert_eq!(decoder.finish(), None);
        assert_eq!(decoder.finish(), None, "idempotent");

        // `[DONE]` without its blank line (or without any line ending).
        for tail in [&b"data: [DONE]\n"[..], b"data: [DONE]", b"data: [DONE]\r"] {
            let mut decoder = SseDecoder::new();
            decoder.feed(tail);
            assert_eq!(decoder.next_event(), None);
            assert_eq!(decoder.finish(), Some(Ok(SseEvent::Done)));
            assert!(decoder.is_done());
            assert_eq!(decoder.finish(), None);
        }

        // A cut-off chunk is discarded and reported.
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: {\"id\":\"x\",\"cho");
        assert_eq!(
            decoder.finish(),
            Some(Err(SseError::IncompleteEvent { len: 14 }))
        );
        assert_eq!(decoder.finish(), None);
        assert!(!decoder.is_done());

        // A complete data line without its blank line is discarded too.
        assert_eq!(
            decode_all(b"data: {}\n"),
            [Err(SseError::IncompleteEvent { len: 2 })]
        );

        // The rest of an oversized event has already been reported.
        assert_eq!(
            decode_all_with(2, b"data: abc\ndata: d"),
            [Err(SseError::EventTooLarge { limit: 2 })]
        );

        // A lone partial BOM or field name leaves nothing behind.
        assert_eq!(decode_all(b"\xEF\xBB"), []);
        assert_eq!(decode_all(b"dat"), []);

        // After finish, feeding starts on a fresh line.
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: a\r");
        assert_eq!(
            decoder.finish(),
            Some(Err(SseError::IncompleteEvent { len: 1 }))
        );
        decoder.feed(b"\ndata: b\n\n");
        assert_eq!(decoder.next_event(), Some(data("b")));
    }

    #[test]
    fn sse_error_events_are_told_apart() {
        assert_eq!(
            decode_all(
                b"data: {\"a\":1}\n\nevent: error\ndata: {\"error\":{\"message\":\"x\"}}\n\n\
                  event:error\r\ndata: y\r\n\r\nevent: ping\ndata: z\n\nevent: error\nevent: other\ndata: w\n\n\
                  event: errors\ndata: v\n\nevent: error\n\ndata: u\n\n"
            ),
            [
                data(r#"{"a":1}"#),
                Ok(SseEvent::Error(r#"{"error":{"message":"x"}}"#.into())),
                Ok(SseEvent::Error("y".into())),
                data("z"),
                data("w"),
                data("v"),
                data("u"),
            ]
        );
        // Split anywhere, the same.
        let input = b"event: error\ndata: e\n\n";
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                decode_pieces(&mut SseDecoder::new(), [a, b]),
                [Ok(SseEvent::Error("e".into()))],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sse_looks_like_error() {
        assert!(looks_like_error(
            r#"{"object":"error","message":"Service unavailable.","type":"internal_server_error","param":null,"code":"1000"}"#
        ));
        assert!(looks_like_error(
            r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden"}]},"type":"invalid_request_error","param":null,"code":null}"#
        ));
        assert!(looks_like_error(
            r#"{"error":{"message":"Rate limit exceeded","type":"rate_limited"}}"#
        ));
        assert!(!looks_like_error(CHUNKS[0]));
        assert!(!looks_like_error(CHUNKS[3]));
        assert!(!looks_like_error(
            r#"{"error":null,"object":"chat.completion.chunk"}"#
        ));
        assert!(!looks_like_error("[DONE]"));
        assert!(!looks_like_error("not json"));
        assert!(!looks_like_error(r#"["object","error"]"#));
    }

    #[test]
    fn sse_debug_shows_sizes_not_data() {
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: secret");
        let debug = format!("{decoder:?}");
        assert!(debug.contains("buffered_bytes: 6"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    /// The specification applied naively to a whole input, without limit:
    /// the raw data of the events it dispatches (and whether their type is
    /// `error`), and of the event still in progress at the end of the input
    /// (counting a last, unterminated line once it has gone past `data:`).
    #[allow(clippy::type_complexity)]
    fn reference_data(input: &[u8]) -> (Vec<(Vec<u8>, bool)>, Option<Vec<u8>>) {
        let input = input.strip_prefix(BOM).unwrap_or(input);
        let mut lines = Vec::new();
        let mut current = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' => {
                    lines.push(std::mem::take(&mut current));
                    if input.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => lines.push(std::mem::take(&mut current)),
                b => current.push(b),
            }
            i += 1;
        }
        let mut events = Vec::new();
        let mut data: Option<Vec<u8>> = None;
        let mut error_type = false;
        let last = current.starts_with(b"data:").then_some(current);
        let ends = std::iter::repeat_n(true, lines.len()).chain([false]);
        for (line, terminated) in lines.into_iter().chain(last).zip(ends) {
            if line.is_empty() && terminated {
                events.extend(data.take().map(|d| (d, error_type)));
                error_type = false;
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(p) => {
                    let value = &line[p + 1..];
                    (&line[..p], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (&line[..], &[][..]),
            };
            if field == b"event" && terminated {
                error_type = value == b"error";
            }
            if field == b"data" {
                match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(value);
                    }
                    None => data = Some(value.to_vec()),
                }
            }
        }
        (events, data)
    }

    /// What the decoder should yield for the raw data of one event.
    fn reference_event(
        data: Vec<u8>,
        error_type: bool,
        limit: usize,
    ) -> Result<SseEvent, SseError> {
        if data.len() > limit {
            Err(SseError::EventTooLarge { limit })
        } else if data.trim_ascii() == b"[DONE]" {
            Ok(SseEvent::Done)
        } else {
            String::from_utf8(data)
                .map(|d| match error_type {
                    true => SseEvent::Error(d),
                    false => SseEvent::Data(d),
                })
                .map_err(|e| SseError::InvalidUtf8 {
                    valid_up_to: e.utf8_error().valid_up_to(),
                })
        }
    }

    /// The events `SseDecoder::with_max_event_bytes(limit)` should yield for
    /// `input`, before `finish`.
    fn reference(input: &[u8], limit: usize) -> Vec<Result<SseEvent, SseError>> {
        let (events, pending) = reference_data(input);
        // An event in progress has been reported already if it is too large.
        let pending = pending.filter(|data| data.len() > limit);
        events
            .into_iter()
            .chain(pending.map(|d| (d, false)))
            .map(|(data, error_type)| reference_event(data, error_type, limit))
            .collect()
    }

    /// Cuts `input` at the given points (taken modulo its length).
    fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts {
            pieces.push(&input[start..cut]);
            start = cut;
        }
        pieces.push(&input[start..]);
        pieces
    }

    /// Inputs built from the fragments that matter to the parser.
    fn stream_like() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            Just(&b"data"[..]),
            Just(&b"data:"[..]),
            Just(&b"data: "[..]),
            Just(&b"dat"[..]),
            Just(&b"event: x"[..]),
            Just(&b"event: error"[..]),
            Just(&b"event:error"[..]),
            Just(&b"event"[..]),
            Just(&b"error"[..]),
            Just(&b"id"[..]),
            Just(&b":"[..]),
            Just(&b" "[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n\n"[..]),
            Just(&b"[DONE]"[..]),
            Just(&b"{\"p\":\"abcd\"}"[..]),
            Just("é🙂".as_bytes()),
            Just(&b"\xFF"[..]),
            Just(&b"\xC3"[..]),
            Just(&BOM[..]),
            Just(&b"\xEF\xBB"[..]),
            Just(&b"x"[..]),
        ];
        prop::collection::vec(fragment, 0..40).prop_map(|fragments| fragments.concat())
    }

    proptest! {
        #[test]
        fn sse_prop_arbitrary_bytes_never_panic_and_stay_bounded(
            input in prop::collection::vec(any::<u8>(), 0..2048),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            limit in 0usize..64,
        ) {
            let mut decoder = SseDecoder::with_max_event_bytes(limit);
            let mut events = Vec::new();
            for piece in split(&input, &cuts) {
                decoder.feed(piece);
                prop_assert!(decoder.data.len() <= limit);
                prop_assert!(decoder.data.capacity() <= limit);
                events.extend(std::iter::from_fn(|| decoder.next_event()));
                prop_assert!(decoder.queue.is_empty());
            }
            events.extend(std::iter::from_fn(|| decoder.finish()));
            for event in &events {
                if let Ok(SseEvent::Data(d)) = event {
                    prop_assert!(d.len() <= limit);
                }
            }
            // Where the input is cut never changes the result.
            let whole = decode_all_with(limit, &input);
            prop_assert_eq!(events, whole);
        }

        #[test]
        fn sse_prop_matches_reference(
            input in stream_like(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            limit in prop_oneof![Just(SseDecoder::DEFAULT_MAX_EVENT_BYTES), 0usize..32],
        ) {
            let mut decoder = SseDecoder::with_max_event_bytes(limit);
            let mut events = Vec::new();
            for piece in split(&input, &cuts) {
                decoder.feed(piece);
                events.extend(std::iter::from_fn(|| decoder.next_event()));
            }
            prop_assert_eq!(&events, &reference(&input, limit));
            prop_assert_eq!(decoder.is_done(), events.contains(&Ok(SseEvent::Done)));
        }
    }
}
