//! Small deterministic randomness: every draw is a function of the seed and of what it
//! is for (a request number, a text), so runs are reproducible and need no shared state.

/// SplitMix64 finaliser: a bijection on `u64` that mixes well.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `[0, 1)` for `(seed, purpose, index)`.
pub(crate) fn unit(seed: u64, purpose: u64, index: u64) -> f64 {
    let bits = mix(mix(seed ^ purpose.wrapping_mul(0xA24B_AED4_963E_E407)) ^ index);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// Xorshift64 stream.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(mix(seed) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[-1, 1)`.
    pub(crate) fn next_signed(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A UUID-shaped id (8-4-4-4-12 hex) for `(seed, index)`.
pub(crate) fn uuid(seed: u64, index: u64) -> String {
    let a = mix(seed ^ mix(index));
    let b = mix(a ^ 0x5555_5555_5555_5555);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        0x8000 | ((b >> 48) & 0x3FFF),
        b & 0xFFFF_FFFF_FFFF
    )
}

/// 32 lowercase hex characters for `(seed, index)`.
pub(crate) fn hex32(seed: u64, index: u64) -> String {
    let a = mix(seed ^ mix(index ^ 0x1234_5678));
    format!("{:016x}{:016x}", a, mix(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_deterministic_and_spread() {
        assert_eq!(unit(1, 2, 3), unit(1, 2, 3));
        let hits = (0..10_000).filter(|&i| unit(7, 1, i) < 0.25).count();
        assert!((2200..2800).contains(&hits), "{hits}");
        assert_ne!(uuid(1, 1), uuid(1, 2));
        assert_eq!(uuid(1, 1).len(), 36);
    }
}
