//! A small counter-based random number generator.
//!
//! Every random choice of the pipeline (shuffle order, crop offsets, flips, cutout holes)
//! is drawn from a generator seeded by `(seed, epoch, sample index, stream)` only, so a batch
//! does not depend on which worker thread produced it, on the number of workers, or on where
//! an epoch was resumed. SplitMix64 is enough: we need decorrelated streams, not cryptography.

/// Finaliser of SplitMix64: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic generator for one `(seed, epoch, index, stream)` tuple.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// Stream ids so that different uses of the same `(seed, epoch, index)` never share draws.
pub(crate) mod stream {
    pub const AUGMENT: u64 = 1;
    pub const SHUFFLE: u64 = 2;
    pub const SPLIT: u64 = 3;
}

impl Rng {
    /// Generator for the given coordinates.
    pub fn new(seed: u64, epoch: u64, index: u64, stream: u64) -> Self {
        // Chain the coordinates through the mixer so nearby tuples give unrelated states.
        let mut s = mix(seed ^ 0x6A09_E667_F3BC_C908);
        s = mix(s ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        s = mix(s ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        s = mix(s ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
        Rng { state: s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform integer in `0..n` (`n > 0`), by multiply-shift (bias below 2^-40 for our `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform float in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(1, 2, 3, 4).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::new(1, 2, 3, 4).next_u64(),
            Rng::new(1, 2, 4, 4).next_u64()
        );
        assert_ne!(
            Rng::new(1, 2, 3, 4).next_u64(),
            Rng::new(1, 3, 3, 4).next_u64()
        );
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = Rng::new(0, 0, 0, 0);
        let mut seen = [false; 9];
        for _ in 0..1000 {
            let v = r.below(9) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
