//! The state file's format: every model's [`BudgetState`], checksummed.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "MLIM"
//!      4     1  version (1)
//!      5     3  zero
//!      8     4  payload length, little-endian
//!     12     4  CRC-32 (IEEE) of the payload, little-endian
//!     16     n  payload: a JSON object, model id → state (serde field names)
//! ```
//!
//! Only the states are stored; the limits configured for each model belong to each
//! process. Anything that does not decode (a torn write, a truncated file, garbage, a
//! value out of range) is a [`CodecError`]: the store starts afresh from empty budgets,
//! which costs at most one burst of probes, never a panic.

use std::collections::{BTreeMap, HashMap};

use super::budget::BudgetState;

/// The first bytes of a state file.
pub const MAGIC: [u8; 4] = *b"MLIM";
/// The format's version.
pub const VERSION: u8 = 2;
const HEADER: usize = 16;
/// Largest payload accepted (a file this large is not ours).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Why a state file did not decode.
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
    #[error("not a limiter state file (bad magic)")]
    Magic,
    /// Written by another version.
    #[error("unsupported state file version {0}")]
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
    /// The payload is not a map of states.
    #[error("bad payload: {0}")]
    Payload(String),
    /// A state holds a value out of range.
    #[error("state of model {0:?} out of range")]
    Range(String),
}

/// Encodes `states` (sorted by model, so equal states give equal bytes).
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limiter::budget::{Limits, MAX_EXACT, Reserve};

    fn sample() -> HashMap<String, BudgetState> {
        let mut a = BudgetState::new(1_700_000_000_000_000, None);
        let _booked = a.reserve(1_700_000_000_000_000, &Reserve::new(10));
        let mut b = BudgetState::new(5, Some(Limits::requests(50, Duration::from_secs(1))));
        let _booked = b.reserve(
            6,
            &Reserve {
                retry: true,
                ..Reserve::new(1)
            },
        );
        b.meter_rate_milli = MAX_EXACT;
        HashMap::from([("mistral-small".to_owned(), a), ("codestral".to_owned(), b)])
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let states = sample();
        let bytes = encode(&states);
        assert_eq!(&bytes[..4], b"MLIM");
        assert_eq!(decode(&bytes), Ok(states.clone()));
        assert_eq!(encode(&states), bytes);
        assert_eq!(decode(&encode(&HashMap::new())), Ok(HashMap::new()));
        assert_eq!(decode(b""), Ok(HashMap::new()));
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_an_error_never_a_panic() {
        let bytes = encode(&sample());
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "byte {i} bit {bit}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(CodecError::Length { .. })));
    }

    #[test]
    fn garbage_and_foreign_files_are_errors() {
        assert_eq!(decode(b"hello"), Err(CodecError::Truncated { len: 5 }));
        assert_eq!(decode(&[0xff; 64]), Err(CodecError::Magic));
        let mut v1 = encode(&sample());
        v1[4] = 1;
        assert_eq!(
            decode(&v1),
            Err(CodecError::Version(1)),
            "the 17-field layout"
        );
        let mut huge = encode(&sample());
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(CodecError::Length { .. })));
        for _ in 0..200 {
            let n = fastrand::usize(0..300);
            let mut junk: Vec<u8> = (0..n).map(|_| fastrand::u8(..)).collect();
            if junk.len() >= 4 && fastrand::bool() {
                junk[..4].copy_from_slice(&MAGIC);
            }
            let _ = decode(&junk);
        }
    }

    #[test]
    fn a_checksummed_payload_with_values_out_of_range_is_refused() {
        // A state whose request TAT is past what a Lua double holds exactly.
        let state = serde_json::to_string(&BudgetState::default()).unwrap();
        let state = state.replace("\"req_tat_us\":0", "\"req_tat_us\":18446744073709551615");
        let payload = format!("{{\"m\":{state}}}");
        let payload = payload.as_bytes();
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        bytes.extend_from_slice(&[0; 3]);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        assert_eq!(decode(&bytes), Err(CodecError::Range("m".into())));
        let bad_json = b"[1,2]";
        let mut b = bytes[..8].to_vec();
        b.extend_from_slice(&(bad_json.len() as u32).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(bad_json).to_le_bytes());
        b.extend_from_slice(bad_json);
        assert!(matches!(decode(&b), Err(CodecError::Payload(_))));
    }
}
