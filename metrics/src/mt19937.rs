//! numpy's legacy `RandomState` as far as torch-fidelity's KID uses it:
//! `RandomState(seed).choice(n, m, replace=False)`, which is `permutation(n)[:m]`, a
//! Fisher–Yates shuffle of `arange(n)` drawing with `random_interval` (masked rejection on
//! 32-bit MT19937 outputs). Reproducing it lets KID match torch-fidelity's subsets exactly.

/// MT19937 (Matsumoto & Nishimura), seeded like numpy's `RandomState(int)` (`init_genrand`).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    /// `np.random.RandomState(seed)` for an integer seed.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, pos: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.pos = 0;
    }

    /// The next tempered 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `random_interval(max)`: uniform on `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.permutation(n)`: a legacy shuffle of `0..n`.
    ///
    /// # Panics
    /// If `n` exceeds `u32::MAX + 1` (numpy then draws 64-bit values; never needed here).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        assert!(n as u64 <= 1 << 32, "permutation of more than 2^32 items");
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            p.swap(i, j);
        }
        p
    }
}
