//! The API key: validated when made, never shown.

use std::fmt;

/// Longest key accepted. Real Mistral keys are 32 characters; anything past this is a
/// pasted file, not a key.
const MAX_KEY_LEN: usize = 1024;

/// A Mistral API key.
///
/// Validated when made: non-empty, printable ASCII only (no whitespace, no control
/// characters), so it is always usable in an `Authorization` header. `Debug` and
/// `Display` print `ApiKey(***)` / `***`; the only way to read the key is
/// [`ApiKey::expose`], which the request builder calls once per request.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

/// Why a string is not a usable API key. Never contains the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key at all.
    #[error("the API key is missing: set MISTRAL_API_KEY (or pass a key to the builder)")]
    Missing,
    /// An empty string.
    #[error("the API key is empty: set MISTRAL_API_KEY to your key")]
    Empty,
    /// Whitespace somewhere in the key (often a trailing newline from a file or a paste).
    #[error(
        "the API key contains whitespace at position {position} of {len} \
         (a trailing newline or space from a file or a paste?)"
    )]
    Whitespace {
        /// Byte offset of the first offending character.
        position: usize,
        /// Length of the rejected key in bytes.
        len: usize,
    },
    /// A control character (cannot go into an HTTP header).
    #[error("the API key contains a control character at position {position} of {len}")]
    Control {
        /// Byte offset of the first offending character.
        position: usize,
        /// Length of the rejected key in bytes.
        len: usize,
    },
    /// A non-ASCII character (keys are ASCII; this is usually a smart quote from a paste).
    #[error("the API key contains a non-ASCII character at position {position} of {len}")]
    NonAscii {
        /// Byte offset of the first offending character.
        position: usize,
        /// Length of the rejected key in bytes.
        len: usize,
    },
    /// Far longer than any real key.
    #[error("the API key is {len} bytes long; no real key is longer than {MAX_KEY_LEN}")]
    TooLong {
        /// Length of the rejected key in bytes.
        len: usize,
    },
}

impl ApiKey {
    /// Validates `key` and wraps it.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        let len = key.len();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if len > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len });
        }
        for (position, c) in key.char_indices() {
            if c.is_whitespace() {
                return Err(KeyError::Whitespace { position, len });
            }
            if c.is_control() {
                return Err(KeyError::Control { position, len });
            }
            if !c.is_ascii() {
                return Err(KeyError::NonAscii { position, len });
            }
        }
        Ok(Self(key.into_boxed_str()))
    }

    /// The key itself. Only for building the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible tag for this key (8 hex digits of a 64-bit FNV-1a
    /// hash), for telling keys apart in logs and file names without showing them.
    pub fn fingerprint(&self) -> String {
        format!("{:08x}", fnv1a(self.0.as_bytes()) >> 32)
    }
}

/// 64-bit FNV-1a: small, stable across versions and platforms.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-Secret0123456789abcdefXYZ";

    #[test]
    fn a_good_key_is_accepted_and_exposed() {
        let key = ApiKey::new(KEY).unwrap();
        assert_eq!(key.expose(), KEY);
    }

    #[test]
    fn debug_and_display_hide_the_key() {
        let key = ApiKey::new(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "***");
        assert!(!format!("{:?}", Some(&key)).contains("Secret"));
    }

    #[test]
    fn bad_keys_get_typed_errors_that_do_not_echo_the_key() {
        let cases = [
            ("", KeyError::Empty),
            (
                "sk-Secret\n",
                KeyError::Whitespace {
                    position: 9,
                    len: 10,
                },
            ),
            (
                "sk Secret",
                KeyError::Whitespace {
                    position: 2,
                    len: 9,
                },
            ),
            (
                "sk-\u{7f}Secret",
                KeyError::Control {
                    position: 3,
                    len: 10,
                },
            ),
            (
                "sk-\u{201c}Secret",
                KeyError::NonAscii {
                    position: 3,
                    len: 12,
                },
            ),
        ];
        for (input, expected) in cases {
            let err = ApiKey::new(input).unwrap_err();
            assert_eq!(err, expected, "input {input:?}");
            let msg = err.to_string();
            assert!(!msg.contains("Secret"), "message echoes the key: {msg}");
        }
        assert_eq!(
            ApiKey::new("a".repeat(5000)).unwrap_err(),
            KeyError::TooLong { len: 5000 }
        );
    }

    #[test]
    fn every_accepted_key_fits_in_a_header() {
        for key in [KEY, "a", "~!@#$%^&*()_+-="] {
            let key = ApiKey::new(key).unwrap();
            let value = format!("Bearer {}", key.expose());
            assert!(http::HeaderValue::from_str(&value).is_ok());
        }
    }

    #[test]
    fn fingerprint_is_stable_and_does_not_contain_the_key() {
        let a = ApiKey::new(KEY).unwrap();
        assert_eq!(a.fingerprint(), ApiKey::new(KEY).unwrap().fingerprint());
        assert_ne!(a.fingerprint(), ApiKey::new("other").unwrap().fingerprint());
        assert_eq!(a.fingerprint().len(), 8);
    }
}
