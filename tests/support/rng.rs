//! The simulations' one source of randomness: a small deterministic
//! generator (SplitMix64), so that a seed fixes every draw on every
//! platform and version.
#![allow(dead_code)]

/// A deterministic generator (SplitMix64): the simulation's one source of
/// randomness.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of stream `n` of a run of `seed`: each step of a run
    /// draws from its own, so that leaving steps out (a minimizer) changes
    /// no other step's draws.
    pub fn stream(seed: u64, n: u64) -> Rng {
        Rng::new(Rng::new(seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next())
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}
