//! How budgets are written down: the state file (every model's [`BudgetState`],
//! checksummed) and one budget's value in Redis. Both hold the states as JSON, with the
//! field names of the one declaration ([`crate::record`]), so a state written by an older
//! version of this crate loads (a field it lacks takes its default).
//!
//! ```text
//! state file
//! offset  size  field
//!      0     4  magic "MLIM"
//!      4     1  version (3)
//!      5     3  zero
//!      8     4  payload length, little-endian
//!     12     4  CRC-32 (IEEE) of the payload, little-endian
//!     16     n  payload: a JSON object, model id → state
//!
//! Redis value: "MLIM3 " followed by one state as a JSON object
//! ```
//!
//! Versions 1 and 2 (the booking limiter's) are not read: a file or value of theirs is
//! a [`CodecError::Version`], and the store starts from what this process knows, at a
//! cautious share (its callers then learn the limits again from the first answer).
//! Anything else that does not decode (a torn write, garbage, a value out of range) is a
//! [`CodecError`] too: never a panic.

use std::collections::{BTreeMap, HashMap};

use crate::budget::BudgetState;

/// The first bytes of a state file.
pub const MAGIC: [u8; 4] = *b"MLIM";
/// The format's version.
pub const VERSION: u8 = 3;
const HEADER: usize = 16;
/// Largest payload accepted (a file this large is not ours).
pub const MAX_PAYLOAD: usize = 4 << 20;
/// The first bytes of one budget's value in Redis.
pub const VALUE_PREFIX: &[u8] = b"MLIM3 ";

/// Why stored bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Shorter than its header or its declared payload.
    #[error("truncated: {len} bytes")]
    Truncated {
        /// Bytes read.
        len: usize,
    },
    /// Not a state file.
    #[error("not a limiter state (bad magic)")]
    Magic,
    /// Written by another version.
    #[error("unsupported limiter state version {0}")]
    Version(u8),
    /// Longer than its declared payload, or a payload over [`MAX_PAYLOAD`].
    #[error("bad length: {declared} bytes declared, {len} bytes read")]
    Length {
        /// The header's payload length.
        declared: usize,
        /// Bytes read.
        len: usize,
    },
    /// The payload does not match its checksum.
    #[error("checksum mismatch")]
    Checksum,
    /// The payload is not a state.
    #[error("bad payload: {0}")]
    Payload(String),
    /// A state holds a value out of range.
    #[error("state of model {0:?} out of range")]
    Range(String),
}

/// Encodes `states` as a state file (sorted by model, so equal states give equal bytes).
pub fn encode(states: &HashMap<String, BudgetState>) -> Vec<u8> {
    let sorted: BTreeMap<&String, &BudgetState> = states.iter().collect();
    let payload = serde_json::to_vec(&sorted).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a state file's bytes. An empty file is empty budgets.
pub fn decode(bytes: &[u8]) -> Result<HashMap<String, BudgetState>, CodecError> {
    if bytes.is_empty() {
        return Ok(HashMap::new());
    }
    let len = bytes.len();
    if len < HEADER {
        return Err(CodecError::Truncated { len });
    }
    if bytes[..4] != MAGIC {
        return Err(CodecError::Magic);
    }
    if bytes[4] != VERSION || bytes[5..8] != [0; 3] {
        return Err(CodecError::Version(bytes[4]));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let declared = usize::try_from(word(8)).unwrap_or(usize::MAX);
    if declared > MAX_PAYLOAD {
        return Err(CodecError::Length { declared, len });
    }
    let payload = &bytes[HEADER..];
    if payload.len() < declared {
        return Err(CodecError::Truncated { len });
    }
    if payload.len() > declared {
        return Err(CodecError::Length { declared, len });
    }
    if crc32fast::hash(payload) != word(12) {
        return Err(CodecError::Checksum);
    }
    let states: HashMap<String, BudgetState> =
        serde_json::from_slice(payload).map_err(|e| CodecError::Payload(e.to_string()))?;
    if let Some((model, _)) = states.iter().find(|(_, s)| !s.is_valid()) {
        return Err(CodecError::Range(model.clone()));
    }
    Ok(states)
}

/// Encodes one budget as its Redis value.
pub fn encode_value(state: &BudgetState) -> Vec<u8> {
    let mut out = VALUE_PREFIX.to_vec();
    serde_json::to_writer(&mut out, state).unwrap_or_default();
    out
}

/// Decodes one budget's Redis value.
pub fn decode_value(bytes: &[u8], model: &str) -> Result<BudgetState, CodecError> {
    let Some(json) = bytes.strip_prefix(VALUE_PREFIX) else {
        return Err(match bytes.strip_prefix(b"MLIM") {
            Some(rest) => CodecError::Version(rest.first().map_or(0, |b| b.wrapping_sub(b'0'))),
            None => CodecError::Magic,
        });
    };
    let state: BudgetState =
        serde_json::from_slice(json).map_err(|e| CodecError::Payload(e.to_string()))?;
    if !state.is_valid() {
        return Err(CodecError::Range(model.to_owned()));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states() -> HashMap<String, BudgetState> {
        let mut s = BudgetState::new(5, None);
        s.req_tat_us = 42;
        s.req_us = 12.5;
        HashMap::from([("m".to_owned(), s)])
    }

    #[test]
    fn a_file_round_trips_and_every_damage_is_an_error() {
        let bytes = encode(&states());
        assert_eq!(decode(&bytes).unwrap(), states());
        assert_eq!(decode(&[]).unwrap(), HashMap::new());
        assert_eq!(decode(&bytes[..10]), Err(CodecError::Truncated { len: 10 }));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(CodecError::Magic));
        let mut old = bytes.clone();
        old[4] = 2;
        assert_eq!(decode(&old), Err(CodecError::Version(2)));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped), Err(CodecError::Checksum));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn a_value_round_trips_and_an_older_state_without_new_fields_loads() {
        let s = states()["m"].clone();
        assert_eq!(decode_value(&encode_value(&s), "m").unwrap(), s);
        // A state written before a field existed: the field takes its default.
        let old = br#"MLIM3 {"seen_us":9,"req_tat_us":7}"#;
        let loaded = decode_value(old, "m").unwrap();
        assert_eq!((loaded.seen_us, loaded.req_tat_us), (9, 7));
        assert_eq!(loaded.share, 1.0);
        assert!(matches!(
            decode_value(b"MLIM2 {}", "m"),
            Err(CodecError::Version(2))
        ));
        assert!(matches!(
            decode_value(br#"MLIM3 {"share":7.0}"#, "m"),
            Err(CodecError::Range(_))
        ));
        assert!(matches!(
            decode_value(b"MLIM3 [1,2", "m"),
            Err(CodecError::Payload(_))
        ));
    }
}
