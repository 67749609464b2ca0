//! Arithmetic in GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1
//! (0x11b), the field Vault and OpenBao use for Shamir shares.
//!
//! Addition (and subtraction) is XOR, written inline as `^`.
//!
//! Every operation runs in time independent of its operands: no table is
//! indexed by a value and no branch depends on one. Share bytes and secret
//! bytes both pass through here, so a lookup table (the usual log/exp speed
//! trick) would leak them through the cache.

/// Multiplication: shift-and-add over the eight bits of `b`, reducing by
/// 0x1b whenever `a` overflows. Masks replace the branches.
#[inline]
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut product = 0u8;
    for _ in 0..8 {
        // 0xff when the low bit of b is set, else 0x00.
        product ^= a & 0u8.wrapping_sub(b & 1);
        // 0xff when a's top bit is set (the shift overflows), else 0x00.
        let overflow = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & overflow);
        b >>= 1;
    }
    product
}

/// Multiplicative inverse as a^254 (Fermat: a^255 = 1 for a ≠ 0) through a
/// fixed chain of squarings and multiplications. The inverse of 0 comes out
/// as 0, which callers never rely on (x-coordinates are non-zero and
/// distinct, so no denominator is 0).
#[inline]
pub(crate) fn inv(a: u8) -> u8 {
    // 254 = 2 + 4 + 8 + 16 + 32 + 64 + 128.
    let mut square = mul(a, a); // a^2
    let mut result = square;
    for _ in 0..6 {
        square = mul(square, square); // a^4, a^8, …, a^128
        result = mul(result, square);
    }
    result
}

/// Division `a / b` (b ≠ 0).
#[inline]
pub(crate) fn div(a: u8, b: u8) -> u8 {
    mul(a, inv(b))
}

/// Doubling (multiplication by x), without a branch.
#[inline]
fn xtime(a: u8) -> u8 {
    (a << 1) ^ (0x1b & 0u8.wrapping_sub(a >> 7))
}

/// 0x01 in every byte of a word.
pub(crate) const LANES_LOW: u64 = 0x0101_0101_0101_0101;

/// Doubling of each of the eight bytes of a word.
#[inline]
fn xtime_lanes(a: u64) -> u64 {
    ((a & 0x7f7f_7f7f_7f7f_7f7f) << 1) ^ (((a >> 7) & LANES_LOW) * 0x1b)
}

/// Lane-wise product of the eight bytes of `a` with the eight bytes of `b`
/// (shift-and-add with masks, as [`mul`], eight lanes at once).
#[inline]
pub(crate) fn mul_lanes(a: u64, b: u64) -> u64 {
    let mut a = a;
    let mut acc = 0u64;
    for i in 0..8 {
        acc ^= a & (((b >> i) & LANES_LOW) * 0xff);
        a = xtime_lanes(a);
    }
    acc
}

/// A constant `c` prepared for multiplying eight field elements at once:
/// `c · 2^i` broadcast to every byte, for i in 0..8. Building it costs eight
/// doublings; each [`Lanes::mul`] then needs no reduction at all.
#[derive(Clone, Copy)]
pub(crate) struct Lanes([u64; 8]);

impl Lanes {
    pub(crate) fn new(c: u8) -> Self {
        let mut powers = [0u64; 8];
        let mut p = c;
        for slot in &mut powers {
            *slot = LANES_LOW * u64::from(p);
            p = xtime(p);
        }
        Self(powers)
    }

    /// Multiplies each of the eight bytes of `v` by the constant, as
    /// `Σ bit_i(v) · (c · 2^i)`: bit `i` of every byte is spread to a full
    /// byte mask (at most 1 per byte, times 0xff, so no carries cross
    /// lanes). Straight-line code: no branch or index depends on `v` or `c`.
    #[inline]
    pub(crate) fn mul(&self, v: u64) -> u64 {
        let mut acc = 0u64;
        for (i, power) in self.0.iter().enumerate() {
            let mask = ((v >> i) & LANES_LOW) * 0xff;
            acc ^= mask & power;
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference multiplication: the textbook "Russian peasant" loop with
    /// branches, independent of the masked version above.
    fn slow_mul(mut a: u8, mut b: u8) -> u8 {
        let mut p = 0u8;
        while b != 0 {
            if b & 1 == 1 {
                p ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= 0x1b;
            }
            b >>= 1;
        }
        p
    }

    #[test]
    fn multiplication_matches_reference_for_every_pair() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
        }
    }

    /// Known answers from FIPS-197 §4.2: {57} • {83} = {c1}, {57} • {13} = {fe}.
    #[test]
    fn fips_197_known_answers() {
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        // FIPS-197 §5.1.1: the S-box starts from the inverse; {53}^-1 = {ca}.
        assert_eq!(inv(0x53), 0xca);
    }

    #[test]
    fn every_non_zero_element_has_its_inverse() {
        assert_eq!(inv(0), 0);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            assert_eq!(div(a, a), 1);
        }
    }

    #[test]
    fn lane_multiplication_matches_scalar_for_every_pair() {
        for c in 0..=255u8 {
            let lanes = Lanes::new(c);
            for base in (0..=255u8).step_by(8) {
                let bytes: [u8; 8] = std::array::from_fn(|j| base.wrapping_add(j as u8));
                let got = lanes.mul(u64::from_le_bytes(bytes)).to_le_bytes();
                for j in 0..8 {
                    assert_eq!(got[j], mul(bytes[j], c), "{} * {c}", bytes[j]);
                }
            }
        }
    }

    #[test]
    fn lane_wise_products_match_scalar_for_every_pair() {
        for a in 0..=255u8 {
            let wa = LANES_LOW * u64::from(a);
            for base in (0..=255u8).step_by(8) {
                let bytes: [u8; 8] = std::array::from_fn(|j| base.wrapping_add(j as u8));
                let got = mul_lanes(wa, u64::from_le_bytes(bytes)).to_le_bytes();
                for j in 0..8 {
                    assert_eq!(got[j], mul(a, bytes[j]), "{a} * {}", bytes[j]);
                }
            }
        }
    }

    #[test]
    fn field_laws_hold() {
        for a in 0..=255u8 {
            assert_eq!(a ^ a, 0);
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            for b in [1u8, 2, 3, 0x1b, 0x80, 0xff] {
                assert_eq!(mul(a, b), mul(b, a));
                for c in [7u8, 0x53, 0xca] {
                    assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
                }
            }
        }
    }
}
