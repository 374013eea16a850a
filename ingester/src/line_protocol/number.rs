//! Numeric tokens: field values and timestamps.
//!
//! The caller has cut the token `b[start..end]` out of the line `b` (a field
//! value ends at a comma, a space or the end of the line; a timestamp at a
//! space, a tab or the end), so each function checks that the *whole* token
//! has InfluxDB's spelling:
//!
//! ```text
//! integer   = "-"? digits "i"            (i64)
//! unsigned  = digits "u"                 (u64)
//! float     = "-"? digits ("." digits)? (("e" | "E") ("+" | "-")? digits)?
//! timestamp = "-"? digits                (i64)
//! ```
//!
//! Digits are read 8 at a time in a `u64` (SWAR): checked and converted with a
//! few multiplications instead of a loop whose exit, at a different length
//! for every value, the CPU would mispredict. These reads may look at bytes of
//! the line around the token, never outside the line.
//!
//! Floats are converted with Clinger's fast path when exact (a mantissa of at
//! most 2^53 scaled by at most 10^22: one correctly rounded operation) and by
//! `f64::from_str` otherwise, so every result is the correctly rounded value.
//! A float that rounds to infinity is refused.

use super::{
    FieldValue,
    error::{InvalidValue, TimestampProblem, quote},
    float,
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const ASCII_ZEROS: u64 = ONES * 0x30;

const POW10_U64: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Why a numeric field value was refused; the caller words the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem {
    InvalidNumber,
    IntegerOutOfRange,
    UnsignedOutOfRange,
    FloatOutOfRange,
}

impl Problem {
    /// The message for the token `b[start..end]`.
    #[cold]
    pub fn describe(self, b: &[u8], start: usize, end: usize) -> InvalidValue {
        let token = quote(std::str::from_utf8(&b[start..end]).unwrap_or_default());
        match self {
            Self::InvalidNumber => InvalidValue::InvalidNumber(token),
            Self::IntegerOutOfRange => InvalidValue::IntegerOutOfRange(token),
            Self::UnsignedOutOfRange => InvalidValue::UnsignedOutOfRange(token),
            Self::FloatOutOfRange => InvalidValue::FloatOutOfRange(token),
        }
    }
}

/// A field value token `b[start..end]` whose first byte is `-` or a digit.
#[inline(always)]
pub(super) fn field(b: &[u8], start: usize, end: usize) -> Result<FieldValue<'static>, Problem> {
    match plain_decimal(b, start, end) {
        Some(value) => Ok(FieldValue::F64(value)),
        None => general_field(b, start, end),
    }
}

/// [`field`] for every spelling (the reference for [`plain_decimal`]).
#[inline(always)]
fn general_field(b: &[u8], start: usize, end: usize) -> Result<FieldValue<'static>, Problem> {
    let negative = b[start] == b'-';
    let int_start = start + usize::from(negative);
    let (int_end, int_value) = digit_run(b, int_start, end);
    let int_digits = int_end - int_start;
    if int_digits == 0 {
        return Err(Problem::InvalidNumber);
    }
    if int_end + 1 == end {
        // The accumulated value is exact up to 19 digits; past that, recheck.
        let magnitude = if int_digits <= 19 {
            Some(int_value)
        } else {
            checked_digits(&b[int_start..int_end])
        };
        match b[int_end] {
            b'i' => {
                return match magnitude.and_then(|m| signed(negative, m)) {
                    Some(v) => Ok(FieldValue::I64(v)),
                    None => Err(Problem::IntegerOutOfRange),
                };
            }
            b'u' if !negative => {
                return match magnitude {
                    Some(v) => Ok(FieldValue::U64(v)),
                    None => Err(Problem::UnsignedOutOfRange),
                };
            }
            _ => {}
        }
    }
    if int_end != end && !matches!(b[int_end], b'.' | b'e' | b'E') {
        return Err(Problem::InvalidNumber);
    }

    // A float: "-"? int ("." frac)? (("e" | "E") ("+" | "-")? exp)?
    let mut i = int_end;
    let (mut frac_start, mut frac_end, mut frac_value) = (i, i, 0);
    if i < end && b[i] == b'.' {
        frac_start = i + 1;
        (frac_end, frac_value) = digit_run(b, frac_start, end);
        if frac_end == frac_start {
            return Err(Problem::InvalidNumber);
        }
        i = frac_end;
    }
    let mut exponent: i64 = 0;
    if i < end && matches!(b[i], b'e' | b'E') {
        i += 1;
        let exp_negative = i < end && b[i] == b'-';
        if i < end && matches!(b[i], b'-' | b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < end && b[i].is_ascii_digit() {
            // Saturate: anything this large takes the slow path anyway.
            exponent = (exponent * 10 + i64::from(b[i] - b'0')).min(1 << 32);
            i += 1;
        }
        if i == exp_start {
            return Err(Problem::InvalidNumber);
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if i != end {
        return Err(Problem::InvalidNumber);
    }

    let frac_digits = frac_end - frac_start;
    let mut value = None;
    if int_digits + frac_digits <= 19 {
        // Both parts together are below 10^19: no overflow.
        let mantissa = int_value * POW10_U64[frac_digits] + frac_value;
        value = float::decimal_to_f64(mantissa, exponent - frac_digits as i64)
            .map(|v| if negative { -v } else { v });
    }
    let value = match value {
        Some(v) => v,
        None => slow_float(b, start, end)?,
    };
    if !value.is_finite() {
        return Err(Problem::FloatOutOfRange);
    }
    Ok(FieldValue::F64(value))
}

/// The float `b[start..end]` if it is spelled `-?D{1,7}.D{1,16}` with at
/// most 19 digits in all and a fast conversion applies: the shape of nearly
/// every float a program writes (TSBS: `58.13171323049762`). `None` sends
/// the token to the general code above, which accepts the same tokens with
/// the same result.
///
/// Straight-line code: the digits before the point are the leading digits
/// of the word read at the token's start; those after it are the last
/// bytes of the 16 that end at the token's end ([`last_digits`]). It needs
/// 8 readable bytes from the integer part's start and 16 before the
/// token's end (the line's start holds the measurement and the field's
/// key), else it declines.
#[inline(always)]
fn plain_decimal(b: &[u8], start: usize, end: usize) -> Option<f64> {
    let negative = b[start] == b'-';
    let int_start = start + usize::from(negative);
    let int_word = u64::from_le_bytes(*b.get(int_start..)?.first_chunk::<8>()?);
    let int_digits = non_digit_bytes(int_word).trailing_zeros() as usize / 8;
    let frac_start = int_start + int_digits + 1;
    // `int_digits` < 8, so the point is within the word just read.
    if int_digits == 0 || int_digits == 8 || b[frac_start - 1] != b'.' {
        return None;
    }
    let frac_digits = end.checked_sub(frac_start)?;
    if frac_digits == 0 || frac_digits > 16 || int_digits + frac_digits > 19 {
        return None;
    }
    let window = b.get(end.checked_sub(16)?..end)?.first_chunk::<16>()?;
    let frac_value = last_digits(window, frac_digits)?;
    // At most 19 digits: below 10^19, no overflow.
    let mantissa = eight_digits(int_word, int_digits) * POW10_U64[frac_digits] + frac_value;
    let value = float::decimal_to_f64(mantissa, -(frac_digits as i64))?;
    Some(if negative { -value } else { value })
}

/// `TOP_BYTES[k]`: the top `k` bytes of a `u64` (the last `k` of 8 bytes
/// read little-endian).
const TOP_BYTES: [u64; 9] = {
    let mut table = [0u64; 9];
    let mut k = 1;
    while k <= 8 {
        table[k] = u64::MAX << (8 * (8 - k));
        k += 1;
    }
    table
};

/// The value of the bytes of `x` under `mask` (whole top bytes, all ASCII
/// digits; the first in memory is the most significant).
#[inline(always)]
fn digits_value(x: u64, mask: u64) -> u64 {
    // Bytes outside the mask become 0: leading zeros. Each digit byte is at
    // least 0x30, so the subtraction borrows nowhere.
    let d = (x & mask) - (ASCII_ZEROS & mask);
    combine_digits(d)
}

/// The value of the last `n` (1..=16) bytes of `window` if they are all
/// ASCII digits (the first is the most significant); `None` otherwise,
/// also for `n` out of range.
#[inline(always)]
fn last_digits(window: &[u8; 16], n: usize) -> Option<u64> {
    if !(1..=16).contains(&n) {
        return None;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: `sse2::last_digits` only requires the `sse2` target feature,
    // which the `cfg` above guarantees is enabled for this build (it is part
    // of the x86_64 baseline).
    return unsafe { sse2::last_digits(window, n) };
    #[allow(unreachable_code)]
    last_digits_swar(window, n)
}

/// [`last_digits`] in two `u64`s: the portable version, and the reference
/// its SSE2 version is tested against. `n` is in 1..=16.
#[inline(always)]
fn last_digits_swar(window: &[u8; 16], n: usize) -> Option<u64> {
    let (words, _) = window.as_chunks::<8>();
    let (hi, lo) = (u64::from_le_bytes(words[0]), u64::from_le_bytes(words[1]));
    let lo_digits = n.min(8);
    let (lo_mask, hi_mask) = (TOP_BYTES[lo_digits], TOP_BYTES[n - lo_digits]);
    if (non_digit_bytes(lo) & lo_mask) | (non_digit_bytes(hi) & hi_mask) != 0 {
        return None;
    }
    Some(digits_value(hi, hi_mask) * 100_000_000 + digits_value(lo, lo_mask))
}

/// 16 digits at a time in one SSE2 register: about 20 instructions where
/// the two-word version takes about 60.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi16, _mm_and_si128, _mm_cmpeq_epi8, _mm_cvtsi128_si64, _mm_loadu_si128,
        _mm_madd_epi16, _mm_max_epu8, _mm_movemask_epi8, _mm_mullo_epi16, _mm_packs_epi32,
        _mm_set1_epi8, _mm_set1_epi16, _mm_set1_epi32, _mm_srli_epi16, _mm_sub_epi8,
    };

    /// `KEEP[n..n + 16]`: 16 - n zero bytes, then n bytes of 0xFF.
    static KEEP: [u8; 32] = {
        let mut table = [0u8; 32];
        let mut i = 16;
        while i < 32 {
            table[i] = 0xFF;
            i += 1;
        }
        table
    };

    /// [`super::last_digits`]; `n` is in 1..=16.
    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn last_digits(window: &[u8; 16], n: usize) -> Option<u64> {
        let keep = KEEP.get(n..n + 16)?.first_chunk::<16>()?;
        // SAFETY: `window` and `keep` are 16 readable bytes each, what
        // `_mm_loadu_si128` reads; it needs no alignment.
        let (v, keep) = unsafe {
            (
                _mm_loadu_si128(window.as_ptr().cast::<__m128i>()),
                _mm_loadu_si128(keep.as_ptr().cast::<__m128i>()),
            )
        };
        // Digit values; a byte is a digit iff its value is at most 9
        // (unsigned: bytes below `0` wrap to large values).
        let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
        let nine = _mm_set1_epi8(9);
        let digits = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(d, nine), nine)) as u32;
        let wanted = (0xFFFF_u32 << (16 - n)) & 0xFFFF;
        if digits & wanted != wanted {
            return None;
        }
        // Bytes before the digits count as leading zeros.
        let d = _mm_and_si128(d, keep);
        // Pairs in 16-bit lanes (the byte at the lower address is the more
        // significant digit), then 4 digits in 32-bit lanes, narrowed back
        // to 16 bits (at most 9999: no saturation), then 8 digits in the
        // two low 32-bit lanes. No lane overflows.
        let first = _mm_and_si128(d, _mm_set1_epi16(0x00FF));
        let second = _mm_srli_epi16(d, 8);
        let pairs = _mm_add_epi16(_mm_mullo_epi16(first, _mm_set1_epi16(10)), second);
        let quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x0001_0064));
        let quads = _mm_packs_epi32(quads, quads);
        let eights = _mm_madd_epi16(quads, _mm_set1_epi32(0x0001_2710));
        let both = _mm_cvtsi128_si64(eights) as u64;
        Some((both & 0xFFFF_FFFF) * 100_000_000 + (both >> 32))
    }
}

/// `f64::from_str` for a token already known to match the float grammar
/// (a subset of what `from_str` accepts).
#[cold]
#[inline(never)]
fn slow_float(b: &[u8], start: usize, end: usize) -> Result<f64, Problem> {
    std::str::from_utf8(&b[start..end])
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .ok_or(Problem::InvalidNumber)
}

/// A timestamp token `b[start..end]` (not empty): `-?digits` within i64.
#[inline(always)]
pub(super) fn timestamp(b: &[u8], start: usize, end: usize) -> Result<i64, TimestampProblem> {
    let negative = b[start] == b'-';
    let digits_start = start + usize::from(negative);
    if let Some(magnitude) = short_digits(b, digits_start, end) {
        return signed(negative, magnitude).ok_or(TimestampProblem::OutOfRange);
    }
    timestamp_by_runs(b, start, end)
}

/// [`timestamp`] through the byte-run code only: the general path, and the
/// reference the tests hold [`short_digits`] to.
fn timestamp_by_runs(b: &[u8], start: usize, end: usize) -> Result<i64, TimestampProblem> {
    let negative = b[start] == b'-';
    let digits_start = start + usize::from(negative);
    let (digits_end, value) = digit_run(b, digits_start, end);
    if digits_start == end || digits_end != end {
        return Err(TimestampProblem::NotAnInteger);
    }
    let magnitude = if end - digits_start <= 19 {
        Some(value)
    } else {
        checked_digits(&b[digits_start..end])
    };
    magnitude
        .and_then(|magnitude| signed(negative, magnitude))
        .ok_or(TimestampProblem::OutOfRange)
}

/// The value of `b[start..end]` if it is 1 to 19 ASCII digits and the 24
/// bytes before `end` are in the line (a timestamp ends a line that holds
/// far more); `None` otherwise. Straight-line code, like
/// [`plain_decimal`]: the last 16 digits through [`last_digits`], the
/// others (at most 3) masked out of the word before.
#[inline(always)]
fn short_digits(b: &[u8], start: usize, end: usize) -> Option<u64> {
    let n = end.checked_sub(start)?;
    if n == 0 || n > 19 {
        return None;
    }
    let window = b.get(end.checked_sub(24)?..end)?.first_chunk::<24>()?;
    let (head, last) = window.split_at(8);
    let last = last.first_chunk::<16>()?;
    let low = n.min(16);
    let low_value = last_digits(last, low)?;
    // The first `n - 16` (at most 3) digits end the first word.
    let head = u64::from_le_bytes(*head.first_chunk::<8>()?);
    let head_mask = TOP_BYTES[n - low];
    if non_digit_bytes(head) & head_mask != 0 {
        return None;
    }
    // At most 19 digits: below 10^19, no overflow.
    Some(digits_value(head, head_mask) * 10_000_000_000_000_000 + low_value)
}

/// The i64 of a sign and a magnitude, if in range.
#[inline(always)]
fn signed(negative: bool, magnitude: u64) -> Option<i64> {
    if negative {
        // -2^63 is representable: wrapping_sub maps 2^63 to i64::MIN.
        (magnitude <= 1 << 63).then(|| 0i64.wrapping_sub(magnitude as i64))
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// The run of ASCII digits starting at `start` (and ending by `end`): where
/// it ends, and its value (exact for up to 19 digits, wrapped beyond).
///
/// Reads 8 bytes at a time while the line has them; the byte at `end` (a
/// delimiter, or the end of the line) is never a digit, so reading past `end`
/// does not change the result.
#[inline(always)]
fn digit_run(b: &[u8], mut at: usize, end: usize) -> (usize, u64) {
    let mut value = 0u64;
    while at < end {
        let Some(word) = b[at..].first_chunk::<8>() else {
            // Fewer than 8 bytes left in the line.
            while at < end && b[at].is_ascii_digit() {
                value = value.wrapping_mul(10).wrapping_add(u64::from(b[at] - b'0'));
                at += 1;
            }
            return (at, value);
        };
        let x = u64::from_le_bytes(*word);
        let non_digits = non_digit_bytes(x);
        let n = (non_digits.trailing_zeros() as usize / 8).min(end - at);
        if n == 0 {
            break;
        }
        value = value
            .wrapping_mul(POW10_U64[n])
            .wrapping_add(eight_digits(x, n));
        at += n;
        if n < 8 {
            break;
        }
    }
    (at, value)
}

/// Per byte of `x`: high bit set iff the byte is not an ASCII digit.
#[inline(always)]
fn non_digit_bytes(x: u64) -> u64 {
    // Digits become 0..=9; a byte is a non-digit iff it is now >= 10.
    // OR-ing 0x80 in keeps each byte's subtraction from borrowing.
    let a = x ^ ASCII_ZEROS;
    (((a | HIGH) - ONES * 10) | a) & HIGH
}

/// The value of the first `n` (1..=8) bytes of `x`, all ASCII digits; byte 0
/// is the most significant.
#[inline(always)]
fn eight_digits(x: u64, n: usize) -> u64 {
    // Digit values, shifted so the n digits fill the top bytes and zeros the
    // rest. Bytes after the digits may borrow in the subtraction, but a
    // borrow only moves up, into bytes the shift drops.
    combine_digits(x.wrapping_sub(ASCII_ZEROS) << (8 * (8 - n)))
}

/// The value of 8 digit values (0..=9), one per byte; byte 0 is the most
/// significant.
#[inline(always)]
fn combine_digits(d: u64) -> u64 {
    // Combine neighbours: pairs, then quads, then all eight. No lane
    // overflows its width.
    let d = (d * 10 + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d * 100 + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    (d * 10_000 + (d >> 32)) & 0xFFFF_FFFF
}

/// The value of a slice of digits, or `None` if it has a non-digit or does
/// not fit in a u64.
#[cold]
fn checked_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| {
        let digit = c.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_agree_with_a_plain_loop() {
        // Runs at every distance from the start and the end of the line, so
        // both the 8-byte reads and the short-line fallback run.
        for text in [
            "7",
            "42",
            "1234567",
            "12345678",
            "123456789",
            "9999999999999999999",
        ] {
            for pad in 0..10 {
                for tail in ["", ",", "i,abcdefgh"] {
                    let line = format!("{}{text}{tail}", "x".repeat(pad));
                    let (start, end) = (pad, pad + text.len() + tail.len().min(1));
                    let expected = (pad + text.len(), text.parse::<u64>().expect("digits"));
                    assert_eq!(digit_run(line.as_bytes(), start, end), expected, "{line}");
                }
            }
        }
        // Stops at `end` even when digits follow.
        assert_eq!(digit_run(b"123456789012", 0, 3), (3, 123));
        assert_eq!(digit_run(b"x,", 0, 1), (0, 0));
        assert_eq!(checked_digits(b"18446744073709551616"), None);
        assert_eq!(checked_digits(b"18446744073709551615"), Some(u64::MAX));
    }

    /// Field value tokens of every shape near the plain decimal, each
    /// followed by several kinds of rest of line (nothing, a short or a long
    /// rest), so the fast path's reads near the end of the line run too.
    fn number_token() -> impl proptest::strategy::Strategy<Value = String> {
        "-?[0-9]{0,9}(\\.[0-9]{0,18})?([eE][-+]?[0-9]{0,3}|[iu.x-])?"
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 20_000, ..Default::default() })]

        /// Whenever the plain-decimal fast path answers, the general code
        /// gives the same bits; and it does answer for the common shape.
        #[test]
        fn plain_decimal_agrees_with_the_general_code(
            prefix in proptest::sample::select(vec!["m f=", "cpu,host=h usage_user=", "m,t=\u{e9}\u{e9}\u{e9}\u{e9} f=", "m f=1.25,g="]),
            token in number_token(),
            rest in proptest::sample::select(vec!["", ",", " 1", ",f=1", " 1767225600000000000", ",a=\"é\""]),
        ) {
            let line = format!("{prefix}{token}{rest}");
            let (start, end) = (prefix.len(), prefix.len() + token.len());
            let b = line.as_bytes();
            if !token.is_empty() && matches!(b[start], b'-' | b'0'..=b'9') {
                let general = general_field(b, start, end);
                if let Some(fast) = plain_decimal(b, start, end) {
                    proptest::prop_assert_eq!(general, Ok(FieldValue::F64(fast)), "{}", line);
                    if let Ok(FieldValue::F64(v)) = general {
                        proptest::prop_assert_eq!(v.to_bits(), fast.to_bits(), "{}", line);
                    }
                }
                proptest::prop_assert_eq!(field(b, start, end), general, "{}", line);
            }
        }
    }

    #[test]
    fn plain_decimal_takes_the_tsbs_shape() {
        for token in [
            "58.13171323049762",
            "-0.5",
            "1.0",
            "1234567.123456789012",
            "0.0000000000000001",
        ] {
            let line = format!("cpu,host=a usage_user={token},g=1 1767225600000000000");
            let end = 22 + token.len();
            let want: f64 = token.parse().unwrap();
            assert_eq!(
                plain_decimal(line.as_bytes(), 22, end).map(f64::to_bits),
                Some(want.to_bits()),
                "{token}"
            );
        }
        // Declined: an exponent, eight digits before the point, a suffix,
        // a non-digit in either word of the fraction, too few bytes before
        // the token's end to read two words, or after its start to read one.
        for (line, start, end) in [
            ("cpu,host=a usage_user=1.5e3,g=1 1", 22, 27),
            ("cpu,host=a usage_user=12345678.5,g=1 1", 22, 32),
            ("cpu,host=a usage_user=1.5i,g=1 1", 22, 26),
            ("cpu,host=a usage_user=1.2345678x,g=1 1", 22, 32),
            ("cpu,host=a usage_user=1.23x56789012,g=1 1", 22, 35),
            ("m f=1.5,g=1 1", 4, 7),
            ("cpu,host=a usage_user=1.5", 22, 25),
        ] {
            assert_eq!(plain_decimal(line.as_bytes(), start, end), None, "{line}");
        }
    }

    #[test]
    fn last_digits_agree_with_the_definition() {
        // Every count, with the digits and the bytes before them drawn from
        // digits and the bytes around them (`/`, `:`) and far from them.
        let bytes = b"0123456789/:.-e \xff\x00";
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut window = [0u8; 16];
            for (i, w) in window.iter_mut().enumerate() {
                // Mostly digits, so that valid windows are common.
                let k = (x >> (4 * (i % 16))) as usize;
                *w = if (x >> i) & 3 != 0 || round % 2 == 0 {
                    b'0' + (k % 10) as u8
                } else {
                    bytes[k % bytes.len()]
                };
            }
            for n in 0..=17 {
                let expected = (1..=16)
                    .contains(&n)
                    .then(|| &window[16 - n.min(16)..])
                    .and_then(|digits| {
                        digits
                            .iter()
                            .all(u8::is_ascii_digit)
                            .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                            .flatten()
                    });
                assert_eq!(last_digits(&window, n), expected, "{window:?} {n}");
                if (1..=16).contains(&n) {
                    assert_eq!(last_digits_swar(&window, n), expected, "{window:?} {n}");
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 20_000, ..Default::default() })]

        /// Timestamps of every length and spelling near the valid one, after
        /// a short or a long line start: the same result either way, and
        /// the straight-line code answers for valid ones in a long line.
        #[test]
        fn timestamps_agree_with_the_byte_runs(
            prefix in proptest::sample::select(vec!["m f=1 ", "cpu,host=h usage_user=1.5 ", "m,t=\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9} f=1 "]),
            token in "-?[0-9]{0,21}[-x0-9]?[0-9]{0,3}",
        ) {
            let line = format!("{prefix}{token}");
            let (start, end) = (prefix.len(), line.len());
            let b = line.as_bytes();
            if !token.is_empty() {
                let want = timestamp_by_runs(b, start, end);
                proptest::prop_assert_eq!(timestamp(b, start, end), want, "{}", line);
                let digits = token.trim_start_matches('-');
                if let Some(fast) = short_digits(b, start + token.len() - digits.len(), end) {
                    proptest::prop_assert_eq!(Ok(fast), digits.parse::<u64>(), "{}", line);
                }
                if end >= 24 && (1..=19).contains(&digits.len()) && digits.bytes().all(|c| c.is_ascii_digit()) {
                    proptest::prop_assert!(short_digits(b, end - digits.len(), end).is_some(), "{}", line);
                }
            }
        }
    }

    proptest::proptest! {
        /// Long mantissas over powers of ten (the TSBS shape) convert to the
        /// same bits as `f64::from_str`, whichever path they take.
        #[test]
        fn long_decimals_round_like_from_str(
            mantissa in 0u64..10_000_000_000_000_000_000,
            frac_digits in 1usize..=19,
            negative in proptest::bool::ANY,
        ) {
            let digits = format!("{mantissa:0>width$}", width = frac_digits + 1);
            let (int, frac) = digits.split_at(digits.len() - frac_digits);
            let text = format!("{}{int}.{frac}", if negative { "-" } else { "" });
            let expected: f64 = text.parse().expect("valid float");
            let got = field(text.as_bytes(), 0, text.len());
            proptest::prop_assert_eq!(got, Ok(FieldValue::F64(expected)), "{}", text);
            if let Ok(FieldValue::F64(v)) = got {
                proptest::prop_assert_eq!(v.to_bits(), expected.to_bits(), "{}", text);
            }
        }
    }
}
