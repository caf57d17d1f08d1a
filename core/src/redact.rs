//! The one redaction every string from the network or the configuration goes through
//! before it reaches an error, a log or a `Display`.
//!
//! Servers and proxies echo what they received: a 502 page quoting the request head, a
//! 200 from a captive proxy holding `authorization: Bearer …`, an SSE error event, a
//! `mistral-correlation-id` header, a URL with `?api_key=…`. The core never lets any of
//! it through unredacted: [`Redactor::redact`] is applied to response excerpts and
//! messages (every status), decode errors, stream events and their errors, header
//! values kept in errors, transport messages, and the configuration errors that quote a
//! base URL. A [`Redactor`] removes
//!
//! - the API key itself, wherever it appears;
//! - any `Bearer <token>` of 8 characters or more (another key, or ours split oddly);
//! - the user and password of a URL (`scheme://user:pass@host` → `scheme://***@host`);
//! - the query of a URL (`https://host/path?key=…` → `https://host/path?***`).
//!
//! A 2xx body or event that holds the key is not an answer from Mistral (a proxy or a
//! test server echoing the request): the call fails with [`crate::Error::Decode`] or
//! the stream with an error, both redacted, rather than hand the key to the caller.

use std::fmt;
use std::sync::Arc;

use crate::key::ApiKey;

/// What to remove: the key of a client (or nothing but the generic patterns).
///
/// Cheap to clone (the key and its searcher are shared). `Debug` never prints the key.
#[derive(Clone, Default)]
pub struct Redactor {
    secret: Option<Arc<Secret>>,
}

/// The key, and a searcher for it built once (every response of a call is scanned).
struct Secret {
    text: Box<str>,
    finder: memchr::memmem::Finder<'static>,
}

impl PartialEq for Redactor {
    fn eq(&self, other: &Self) -> bool {
        self.secret.as_ref().map(|s| &s.text) == other.secret.as_ref().map(|s| &s.text)
    }
}

impl Eq for Redactor {}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secret.is_some() {
            "Redactor(key)"
        } else {
            "Redactor"
        })
    }
}

impl Redactor {
    /// A redactor of `key` (and of the generic patterns).
    pub fn new(key: &ApiKey) -> Self {
        Self::of_secret(key.expose())
    }

    /// A redactor of `secret` (empty: only the generic patterns).
    pub fn of_secret(secret: &str) -> Self {
        Self {
            secret: (!secret.is_empty()).then(|| {
                Arc::new(Secret {
                    text: secret.into(),
                    finder: memchr::memmem::Finder::new(secret.as_bytes()).into_owned(),
                })
            }),
        }
    }

    /// A redactor of the generic patterns only (no key known).
    pub fn generic() -> Self {
        Self::default()
    }

    /// `text` with the key, bearer tokens, URL credentials and URL queries replaced by
    /// `***`.
    pub fn redact(&self, text: &str) -> String {
        if !self.may_change(text.as_bytes()) {
            return text.to_owned();
        }
        redact(text, self.secret.as_ref().map(|s| &*s.text))
    }

    /// [`Redactor::redact`] of an owned string: the same string back, not a copy, when
    /// there is nothing to hide.
    pub fn redact_owned(&self, text: String) -> String {
        match self.may_change(text.as_bytes()) {
            true => self.redact(&text),
            false => text,
        }
    }

    /// [`Redactor::redact`] of an optional string.
    pub fn redact_opt(&self, text: Option<String>) -> Option<String> {
        text.map(|t| self.redact_owned(t))
    }

    /// `true` when [`Redactor::redact`] could change `bytes` (cheap; no allocation).
    pub fn may_change(&self, bytes: &[u8]) -> bool {
        self.holds_secret(bytes) || may_hold_a_secret(bytes, None)
    }

    /// `true` when `bytes` hold the key.
    pub fn holds_secret(&self, bytes: &[u8]) -> bool {
        match &self.secret {
            Some(s) => s.finder.find(bytes).is_some(),
            None => false,
        }
    }
}

/// The redaction itself (see the module docs); `secret` is the API key when known.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    // Most text holds nothing to hide: one scan, one copy.
    if !may_hold_a_secret(text.as_bytes(), secret) {
        return text.to_owned();
    }
    let mut out = match secret.filter(|s| !s.is_empty()) {
        Some(s) if text.contains(s) => text.replace(s, "***"),
        _ => text.to_owned(),
    };
    out = redact_bearer(&out);
    if out.contains("://") {
        out = redact_urls(&out);
    }
    out
}

/// `true` when `haystack` holds `needle`: each place its first byte is found (a SIMD
/// scan) is compared; for short needles and the short texts the patterns are looked
/// for in (header values, excerpts), cheaper than building a substring searcher.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return false;
    };
    memchr::memchr_iter(first, haystack).any(|at| haystack[at..].starts_with(needle))
}

/// `true` when `haystack` holds `needle` (ASCII, starting with a letter; any case),
/// without allocating: each place its first letter is found, in either case, is compared.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return false;
    };
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, haystack).any(|at| {
        haystack[at..]
            .get(..needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// `true` when [`redact`] could change `bytes` (the key, a bearer word, a URL with
/// credentials or a query): a cheap test before the work, for header values.
pub fn may_hold_a_secret(bytes: &[u8], secret: Option<&str>) -> bool {
    secret.is_some_and(|s| contains(bytes, s.as_bytes())) || may_hold_a_pattern(bytes)
}

/// A bearer word or a URL with credentials or a query: one scan for the bytes that start
/// them (`b`, `B`, `:`), most header values and texts having none.
fn may_hold_a_pattern(bytes: &[u8]) -> bool {
    let mut url = false;
    for at in memchr::memchr3_iter(b'b', b'B', b':', bytes) {
        let rest = &bytes[at..];
        if rest[0] == b':' {
            url = url || rest.starts_with(b"://");
        } else if rest
            .get(..6)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
        {
            return true;
        }
    }
    url && memchr::memchr2(b'?', b'@', bytes).is_some()
}

/// `Bearer <token>` → `Bearer ***` (any case, any run of spaces, `%20` or `+`).
fn redact_bearer(text: &str) -> String {
    if !contains_ignore_case(text.as_bytes(), b"bearer") {
        return text.to_owned();
    }
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while let Some(found) = lower[i..].find("bearer") {
        let start = i + found;
        let mut j = start + "bearer".len();
        let gap_start = j;
        loop {
            if j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'+' || bytes[j] == b'\t') {
                j += 1;
            } else if lower[j..].starts_with("%20") {
                j += 3;
            } else {
                break;
            }
        }
        let token_start = j;
        while j < bytes.len() && is_token_byte(bytes[j]) {
            j += 1;
        }
        // Tokens are long; a short word after "bearer" is prose (`the bearer of …`).
        if j >= token_start + 8 && token_start > gap_start {
            out.push_str(&text[copied..token_start]);
            out.push_str("***");
            copied = j;
        }
        i = j.max(start + 1);
        while i < text.len() && !text.is_char_boundary(i) {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

/// Every URL in `text` through [`redact_url`]; a URL ends at whitespace or a quote.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` before `://`.
        // (After the character that ends it, whatever its width: `éhttps://` must not
        // cut `é`.)
        let scheme_start = rest[..at]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A URL with its user and password (`scheme://***@host`) and its query (`?***`)
/// hidden; the rest (scheme, host, port, path) kept. A comma-separated list of URLs
/// (`redis://:pw@a:7000,redis://:pw@b:7001`, the nodes of a Redis Cluster) has each of
/// its URLs redacted.
pub fn redact_url(url: &str) -> String {
    let mut pieces = url.split(',');
    let mut urls = vec![pieces.next().unwrap_or_default().to_owned()];
    for piece in pieces {
        if starts_with_scheme(piece) {
            urls.push(piece.to_owned());
        } else if let Some(last) = urls.last_mut() {
            // A comma inside one URL (a password, a query).
            last.push(',');
            last.push_str(piece);
        }
    }
    if urls.len() == 1 {
        return redact_one_url(url);
    }
    urls.iter()
        .map(|u| redact_one_url(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// `true` when `text` starts with `scheme://` (a letter, then letters, digits, `+`, `-`
/// or `.`).
fn starts_with_scheme(text: &str) -> bool {
    let Some(at) = text.find("://") else {
        return false;
    };
    let scheme = &text[..at];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn redact_one_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let fragment = out[q..].find('#').map(|f| q + f);
        let tail = fragment.map(|f| out[f..].to_owned()).unwrap_or_default();
        out.truncate(q);
        out.push_str("?***");
        out.push_str(&tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-Secret-Qz7Wm3Kp9Xv2";

    #[test]
    fn the_key_goes_wherever_it_is() {
        let r = Redactor::of_secret(KEY);
        for text in [
            format!("authorization: Bearer {KEY}"),
            format!("{{\"echo\":\"{KEY}\"}}"),
            format!("x{KEY}y{KEY}"),
            format!("https://h/p?api_key={KEY}"),
            format!("bearer%20{KEY}"),
        ] {
            let out = r.redact(&text);
            assert!(!out.contains(KEY), "{out}");
            assert!(!out.contains("Secret"), "{out}");
        }
        assert!(r.holds_secret(format!("..{KEY}..").as_bytes()));
        assert!(r.may_change(format!("x{KEY}").as_bytes()));
        assert!(r.may_change(b"BeArEr xyz"));
        assert!(r.may_change(b"https://h/?q"));
        assert!(!r.may_change(b"https://h/path"));
        assert!(!r.may_change(b"application/json"));
        assert!(!r.holds_secret(b"nothing"));
        assert_eq!(format!("{r:?}"), "Redactor(key)");
    }

    proptest::proptest! {
        /// `may_change` is what lets `redact` hand text back untouched: it must be true
        /// of every text the redaction changes.
        #[test]
        fn what_may_not_change_does_not(
            text in "([a-zA-Z0-9 :/?@.%+=_-]|Bearer |sk-Secret-Qz7Wm3Kp9Xv2|https://|é){0,12}"
        ) {
            for r in [Redactor::of_secret(KEY), Redactor::generic()] {
                let secret = r.secret.as_ref().map(|s| &*s.text);
                let changed = redact(&text, secret) != text;
                proptest::prop_assert!(!changed || r.may_change(text.as_bytes()), "{text:?}");
                proptest::prop_assert_eq!(r.redact(&text), redact(&text, secret));
                proptest::prop_assert_eq!(r.redact_owned(text.clone()), redact(&text, secret));
                proptest::prop_assert_eq!(r.holds_secret(text.as_bytes()), secret.is_some_and(|s| text.contains(s)));
            }
        }
    }

    #[test]
    fn generic_patterns_without_a_key() {
        let r = Redactor::generic();
        assert_eq!(
            r.redact("Authorization: Bearer abc.DEF-123 next"),
            "Authorization: Bearer *** next"
        );
        assert_eq!(r.redact("BEARER   tok12345"), "BEARER   ***");
        assert_eq!(r.redact("the bearer of news"), "the bearer of news");
        assert_eq!(r.redact("bearer"), "bearer");
        assert_eq!(
            r.redact("see https://u:p@host:1/x?key=v#frag and more"),
            "see https://***@host:1/x?***#frag and more"
        );
        assert_eq!(r.redact("\"http://h/a?b\""), "\"http://h/a?***\"");
        assert_eq!(r.redact("no urls here"), "no urls here");
        assert_eq!(redact_url("redis://:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1/x@y"), "redis://h:1/x@y");
        assert_eq!(redact_url("no scheme"), "no scheme");
        // A Redis Cluster's nodes: every password goes, in either form.
        assert_eq!(
            redact_url("redis://:p@a:1,REDIS://u:q@b:2/?ca=/x"),
            "redis://***@a:1,REDIS://***@b:2/?***"
        );
        assert_eq!(
            redact_url("redis+cluster://u:p,w@a:1,b:2/"),
            "redis+cluster://***@a:1,b:2/"
        );
        assert_eq!(redact_url("redis://:a,b@h:1"), "redis://***@h:1");
        assert_eq!(
            r.redact("at rediss://:p@a:1,rediss://:q@b:2 now"),
            "at rediss://***@a:1,rediss://***@b:2 now"
        );
        // Multibyte text around the patterns is kept whole.
        assert_eq!(r.redact("é bearer é"), "é bearer é");
        assert_eq!(r.redact("ébearer x1234567"), "ébearer ***");
        // A URL right after a multibyte character (this panicked before).
        assert_eq!(r.redact("éhttps://h/p?k=v é"), "éhttps://h/p?*** é");
    }
}
