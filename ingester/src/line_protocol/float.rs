//! Decimal to `f64`: `mantissa × 10^scale`, correctly rounded (to nearest,
//! ties to even), fast for the shapes line protocol carries, or `None` to
//! send the caller to `f64::from_str` (which is always right, and slower).
//!
//! Two fast paths:
//! - Clinger's: a mantissa of at most 2^53 and a power of ten of at most
//!   10^22 are both exact doubles, so one multiplication or division rounds
//!   correctly.
//! - Longer mantissas (up to 19 digits, e.g. TSBS's `58.1317132304976170`)
//!   divided by 10^k, k ≤ 27: multiply by a 128-bit reciprocal of 5^k (the
//!   idea of Eisel and Lemire's algorithm, here for this small range only).
//!   The reciprocal is truncated, so the product is at most 2^64 units below
//!   the exact one; that only matters when the bits below the rounding
//!   position are all ones down to there, and those cases (exact ties among
//!   them) go to the slow path.

/// Powers of ten that are exact doubles.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest `k` with a reciprocal: 5^27 < 2^63.
const MAX_K: usize = 27;

/// `RECIPROCALS[k] = (floor(2^(127 + L) / 5^k), L)` where `L` is the bit
/// length of 5^k: 128 bits with the top bit set. Computed at compile time.
static RECIPROCALS: [(u128, u32); MAX_K + 1] = reciprocals();

const fn reciprocals() -> [(u128, u32); MAX_K + 1] {
    let mut table = [(0u128, 0u32); MAX_K + 1];
    let mut five: u64 = 1;
    let mut k = 1;
    while k <= MAX_K {
        five *= 5;
        let bits = 64 - five.leading_zeros();
        let d = five as u128;
        // 2^(127 + L) is 2^(L - 1) followed by two zero 64-bit limbs. Long
        // division, one limb at a time; 2^(L - 1) < d, so the quotient has
        // two limbs.
        let first = (1u128 << (bits - 1)) << 64;
        let (q1, rem) = (first / d, first % d);
        let q0 = (rem << 64) / d;
        table[k] = ((q1 << 64) | q0, bits);
        k += 1;
    }
    table
}

/// `mantissa × 10^scale` correctly rounded, if a fast path applies.
#[inline(always)]
pub(super) fn decimal_to_f64(mantissa: u64, scale: i64) -> Option<f64> {
    if mantissa <= 1 << 53 && (-22..=22).contains(&scale) {
        let m = mantissa as f64;
        return Some(if scale >= 0 {
            m * POW10[scale as usize]
        } else {
            m / POW10[scale.unsigned_abs() as usize]
        });
    }
    let k = usize::try_from(scale.checked_neg()?).ok()?;
    if mantissa == 0 || !(1..=MAX_K).contains(&k) {
        return None;
    }
    let (reciprocal, five_bits) = RECIPROCALS[k];

    // w (top bit set) × reciprocal, a 192-bit product: keep its upper 128
    // bits as `upper` (bits 128..192) and `middle` (bits 64..128).
    let shift = mantissa.leading_zeros();
    let w = u128::from(mantissa << shift);
    let high = w * (reciprocal >> 64);
    let low = w * (reciprocal & u128::from(u64::MAX));
    let middle = (high & u128::from(u64::MAX)) + (low >> 64);
    let upper = ((high >> 64) + (middle >> 64)) as u64;
    let middle = middle as u64;

    // Both factors have their top bit set, so the product's top bit is bit
    // 191 or 190. Keep 54 bits from there: the significand and the rounding
    // bit; `rest` is the part of `upper` below them.
    let top = upper >> 63;
    let kept = 9 + top as u32;
    let bits54 = upper >> kept;
    let rest_mask = (1u64 << kept) - 1;
    // The exact product is above this one by less than 2^64 (a carry into
    // bit 64 at most). It can change the rounding bit only if every bit
    // between it and bit 64 is set; leave that (and exact ties) to the slow
    // path.
    // (Non-short-circuit `&`: the rounding bit is a coin toss, a branch on
    // it would be mispredicted half the time.)
    if (bits54 & 1 == 0) & (upper & rest_mask == rest_mask) & (middle == u64::MAX) {
        return None;
    }
    // A set rounding bit means the exact value is above the halfway point
    // (strictly: the exact product is larger than this one), so round up.
    let mut significand = (bits54 >> 1) + (bits54 & 1);
    // value = product × 2^(-shift - 127 - L - k), and the significand is the
    // product >> (138 + top).
    let mut exponent = 11 + top as i64 - i64::from(shift) - i64::from(five_bits) - k as i64;
    if significand == 1 << 53 {
        significand = 1 << 52;
        exponent += 1;
    }
    let biased = exponent + 1075;
    if !(1..0x7FF).contains(&biased) {
        return None;
    }
    Some(f64::from_bits(
        (biased as u64) << 52 | (significand & ((1 << 52) - 1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expected(mantissa: u64, k: usize) -> f64 {
        format!("{mantissa}e-{k}").parse().expect("valid float")
    }

    #[test]
    fn reciprocals_are_normalised_and_below_the_exact_value() {
        for (k, &(r, bits)) in RECIPROCALS.iter().enumerate().skip(1) {
            assert!(r >> 127 == 1, "k = {k}");
            let five = 5u128.pow(k as u32);
            assert_eq!(128 - five.leading_zeros(), bits);
            // r × 5^k ≤ 2^(127 + L) < (r + 1) × 5^k, checked in 256 bits via
            // r × 5^k = 2^(127 + L) - remainder with 0 < remainder < 5^k.
            let (r_hi, r_lo) = (r >> 64, r & u128::from(u64::MAX));
            let lo = r_lo * five;
            let hi = r_hi * five + (lo >> 64);
            // The product is 2^(127 + L) - remainder: its top part is
            // 2^(63 + L) - 1 and its low 64 bits are 2^64 - remainder.
            assert_eq!(hi, (1u128 << (63 + bits)) - 1, "k = {k}");
            let remainder = (1u128 << 64) - (lo & u128::from(u64::MAX));
            assert!(remainder > 0 && remainder < five, "k = {k}");
        }
    }

    #[test]
    fn known_values_take_the_fast_path() {
        for (mantissa, k) in [
            (581_317_132_304_976_170, 16),
            (9_999_999_999_999_999_999, 19),
            (1, 27),
            (18_446_744_073_709_551_615, 27),
            (17_976_931_348_623_157, 16),
            (12_345, 2),
        ] {
            let got = decimal_to_f64(mantissa, -(k as i64));
            assert_eq!(
                got.map(f64::to_bits),
                Some(expected(mantissa, k).to_bits()),
                "{mantissa}e-{k}"
            );
        }
    }

    #[test]
    fn exact_ties_go_to_the_slow_path() {
        // 2^52 + 0.5 and 2^53 + 1 are exactly halfway between doubles.
        for (mantissa, k) in [(45_035_996_273_704_965, 1), (90_071_992_547_409_930, 1)] {
            assert_eq!(
                decimal_to_f64(mantissa, -(k as i64)),
                None,
                "{mantissa}e-{k}"
            );
        }
    }

    #[test]
    fn almost_all_long_mantissas_take_the_fast_path() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut fast = 0;
        for i in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (mantissa, k) = (x % 10_000_000_000_000_000_000, 1 + i % MAX_K);
            if let Some(got) = decimal_to_f64(mantissa, -(k as i64)) {
                assert_eq!(
                    got.to_bits(),
                    expected(mantissa, k).to_bits(),
                    "{mantissa}e-{k}"
                );
                fast += 1;
            }
        }
        assert!(fast >= 9_950, "only {fast} of 10000 took the fast path");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn rounds_like_from_str(mantissa in any::<u64>(), k in 1usize..=MAX_K) {
            if let Some(got) = decimal_to_f64(mantissa, -(k as i64)) {
                let want = expected(mantissa, k);
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{}e-{}", mantissa, k);
            }
        }

        #[test]
        fn rounds_like_from_str_near_halfway(significand in (1u64 << 52)..(1 << 53), k in 1usize..=10, up in any::<bool>()) {
            // Values a hair away from halfway between two doubles.
            let half = format!("{}.5", significand);
            let digits = half.replace('.', "");
            if let Ok(mantissa) = digits.parse::<u64>() {
                let mantissa = if up { mantissa.saturating_add(1) } else { mantissa.saturating_sub(1) };
                let mantissa = mantissa.saturating_mul(10u64.saturating_pow(k as u32 - 1));
                if let Some(got) = decimal_to_f64(mantissa, -(k as i64)) {
                    let want = expected(mantissa, k);
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "{}e-{}", mantissa, k);
                }
            }
        }
    }
}
