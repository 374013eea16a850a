//! An index of the bytes that can end a token in one line: one bit per byte.
//!
//! Candidates are every byte up to 0x20 (space, tab, newline, NUL and the
//! other control characters), `,`, `=` and `\`. Each part of the grammar stops
//! at a subset of these and steps over the others (a tag value steps over
//! `=`, everything steps over `\r`).
//!
//! Why: finding where each name ends with a byte loop costs a few
//! instructions per byte plus a mispredicted loop exit per name (every name
//! has a different length). Indexing the whole line first costs about one
//! instruction per byte with no data-dependent branch; then each name's end is
//! a shift and a `trailing_zeros`. On x86_64 the index uses SSE2, which every
//! x86_64 CPU has; elsewhere a portable SWAR version (8 bytes per `u64`).

/// Candidate positions of the current line; reused from line to line.
#[derive(Debug, Default)]
pub(super) struct Delimiters {
    /// Bit `i % 64` of word `i / 64` is set when byte `i` of the line is a
    /// candidate. No bit is set past the end of the line.
    words: Vec<u64>,
    len: usize,
}

impl Delimiters {
    /// Index the line `input[start..end]`, replacing the previous one, and
    /// tell whether the line is ASCII (no byte at or above 0x80), which
    /// makes it valid UTF-8 without a separate pass. Bytes after `end` may
    /// be read (it is cheaper than copying the last block) but are never
    /// reported.
    pub fn index(&mut self, input: &[u8], start: usize, end: usize) -> bool {
        self.len = end - start;
        self.words.clear();
        self.words.resize(self.len.div_ceil(64), 0);
        let mut high = 0;
        let mut last_high = 0;
        for (w, word) in self.words.iter_mut().enumerate() {
            let at = start + 64 * w;
            let (candidates, high_bits) = match input[at..].first_chunk::<64>() {
                Some(chunk) => mask64(chunk),
                None => {
                    // The input ends within these 64 bytes: pad with a byte
                    // that is not a candidate.
                    let tail = &input[at..];
                    let mut chunk = [b'a'; 64];
                    chunk[..tail.len()].copy_from_slice(tail);
                    mask64(&chunk)
                }
            };
            *word = candidates;
            high |= last_high;
            last_high = high_bits;
        }
        // Only the last word can hold bytes past the end of the line.
        let tail_mask = if self.len.is_multiple_of(64) {
            u64::MAX
        } else {
            (1u64 << (self.len % 64)) - 1
        };
        if let Some(last) = self.words.last_mut() {
            *last &= tail_mask;
        }
        high |= last_high & tail_mask;
        high == 0
    }

    /// Offset of the first candidate at or after `from`, or the line length.
    #[inline(always)]
    pub fn next(&self, from: usize) -> usize {
        let mut word = from / 64;
        let Some(&first) = self.words.get(word) else {
            return self.len;
        };
        let mut bits = first & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return word * 64 + bits.trailing_zeros() as usize;
            }
            word += 1;
            match self.words.get(word) {
                Some(&next) => bits = next,
                None => return self.len,
            }
        }
    }
}

/// The candidates of a line in order, one at a time (each step clears the
/// lowest set bit: a few instructions, no search).
#[derive(Debug, Clone)]
pub(super) struct Candidates<'d> {
    words: &'d [u64],
    /// Index of the word `bits` came from.
    word: usize,
    /// The candidates of that word not yet returned.
    bits: u64,
}

impl<'d> Candidates<'d> {
    /// Candidates at or after offset `from` of the line `delimiters` indexes.
    #[inline(always)]
    pub fn from(delimiters: &'d Delimiters, from: usize) -> Self {
        let word = from / 64;
        let bits = delimiters
            .words
            .get(word)
            .map_or(0, |w| w & (u64::MAX << (from % 64)));
        Self {
            words: &delimiters.words,
            word,
            bits,
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.word += 1;
            self.bits = *self.words.get(self.word)?;
        }
        let at = self.word * 64 + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(at)
    }
}

/// Candidate bits of 64 bytes (bit `i` for byte `i`), and the bits of the
/// bytes at or above 0x80.
#[inline(always)]
fn mask64(chunk: &[u8; 64]) -> (u64, u64) {
    let (blocks, _) = chunk.as_chunks::<16>();
    blocks
        .iter()
        .enumerate()
        .fold((0, 0), |(candidates, high), (k, block)| {
            let (c, h) = mask16(block);
            (
                candidates | u64::from(c) << (16 * k),
                high | u64::from(h) << (16 * k),
            )
        })
}

/// Candidate bits of 16 bytes (bit `i` for byte `i`), and the bits of the
/// bytes at or above 0x80.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn mask16(block: &[u8; 16]) -> (u16, u16) {
    // SAFETY: `mask16_sse2` only requires the `sse2` target feature, which
    // the `cfg` above guarantees is enabled for this build (it is part of the
    // x86_64 baseline).
    unsafe { mask16_sse2(block) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn mask16_sse2(block: &[u8; 16]) -> (u16, u16) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    let (halves, _) = block.as_chunks::<8>();
    let (lo, hi) = (halves[0], halves[1]);
    let v = _mm_set_epi64x(i64::from_le_bytes(hi), i64::from_le_bytes(lo));
    let byte = |b: u8| _mm_set1_epi8(b as i8);
    // Unsigned `v <= 0x20` as `min(v, 0x20) == v`.
    let low = _mm_cmpeq_epi8(_mm_min_epu8(v, byte(0x20)), v);
    let comma = _mm_cmpeq_epi8(v, byte(b','));
    let equals = _mm_cmpeq_epi8(v, byte(b'='));
    let backslash = _mm_cmpeq_epi8(v, byte(b'\\'));
    let any = _mm_or_si128(_mm_or_si128(low, comma), _mm_or_si128(equals, backslash));
    // `movemask` yields 16 bits in an i32 (one per byte's top bit); the
    // casts keep exactly those.
    (_mm_movemask_epi8(any) as u16, _mm_movemask_epi8(v) as u16)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn mask16(block: &[u8; 16]) -> (u16, u16) {
    swar::mask16(block)
}

/// The portable version: 8 bytes at a time in a `u64`.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
mod swar {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = !HIGH;

    /// Per byte of `y`: high bit set iff the byte is not zero.
    #[inline(always)]
    fn nonzero(y: u64) -> u64 {
        ((y & LOW7) + LOW7) | y
    }

    /// One bit per byte from the high bits of `bits` (bytes of `x` in
    /// little-endian order), packed into 8 bits.
    #[inline(always)]
    fn gather(bits: u64) -> u8 {
        // Gather one bit per byte into the top byte: the partial products
        // land on distinct bits, so nothing carries.
        (((bits & HIGH) >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
    }

    /// Candidate bits of 8 bytes (little-endian `x`), packed into 8 bits.
    #[inline(always)]
    fn mask8(x: u64) -> u8 {
        // High bit set iff the byte is above 0x20 (bytes >= 0x80 included):
        // OR-ing 0x80 in keeps each byte's subtraction from borrowing.
        let above_space = ((x | HIGH) - ONES * 0x21) | x;
        let keep = above_space
            & nonzero(x ^ (ONES * u64::from(b',')))
            & nonzero(x ^ (ONES * u64::from(b'=')))
            & nonzero(x ^ (ONES * u64::from(b'\\')));
        gather(!keep)
    }

    #[inline(always)]
    pub(super) fn mask16(block: &[u8; 16]) -> (u16, u16) {
        let (halves, _) = block.as_chunks::<8>();
        let (lo, hi) = (u64::from_le_bytes(halves[0]), u64::from_le_bytes(halves[1]));
        let candidates = u16::from(mask8(lo)) | u16::from(mask8(hi)) << 8;
        let high = u16::from(gather(lo)) | u16::from(gather(hi)) << 8;
        (candidates, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_candidate(b: u8) -> bool {
        b <= 0x20 || matches!(b, b',' | b'=' | b'\\')
    }

    #[test]
    fn masks_match_the_definition_for_every_byte() {
        for b in 0..=255u8 {
            for position in 0..16 {
                let mut block = [b'a'; 16];
                block[position] = b;
                let expected = (
                    if is_candidate(b) { 1 << position } else { 0 },
                    if b >= 0x80 { 1 << position } else { 0 },
                );
                assert_eq!(mask16(&block), expected, "byte {b:#x} at {position}");
                assert_eq!(
                    swar::mask16(&block),
                    expected,
                    "swar: byte {b:#x} at {position}"
                );
            }
        }
        // Neighbours do not disturb each other (no borrow or carry).
        let block: [u8; 16] = *b"\0\x01 !,-=>\\]\x7f\x80\xff\t\n\r";
        let bits = |f: fn(u8) -> bool| {
            (0..16)
                .filter(|&i| f(block[i]))
                .fold(0u16, |m, i| m | 1 << i)
        };
        let expected = (bits(is_candidate), bits(|b| b >= 0x80));
        assert_eq!(mask16(&block), expected);
        assert_eq!(swar::mask16(&block), expected);
    }

    #[test]
    fn ascii_is_judged_on_the_line_only() {
        let mut delimiters = Delimiters::default();
        // A non-ASCII byte at every position of lines of several lengths,
        // with non-ASCII bytes right after the line (read, not reported).
        for len in [1, 15, 16, 63, 64, 65, 130] {
            let mut input = vec![b'a'; len];
            input.extend_from_slice(&[0xC3, 0xA9].repeat(40));
            assert!(delimiters.index(&input, 0, len), "len {len}");
            for at in 0..len {
                let mut bad = input.clone();
                bad[at] = 0xFF;
                assert!(!delimiters.index(&bad, 0, len), "len {len}, at {at}");
            }
        }
    }

    #[test]
    fn next_finds_every_candidate_from_every_offset() {
        // Every byte value, in an order that puts each at many offsets.
        let input: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(97) % 256) as u8)
            .collect();
        let mut delimiters = Delimiters::default();
        for (start, end) in [
            (0, 0),
            (0, 1),
            (3, 10),
            (0, 64),
            (1, 65),
            (5, 133),
            (0, 300),
            (290, 300),
        ] {
            let line = &input[start..end];
            let ascii = delimiters.index(&input, start, end);
            assert_eq!(ascii, line.is_ascii(), "line {start}..{end}");
            for from in 0..=line.len() + 1 {
                let expected: Vec<usize> = (from..line.len())
                    .filter(|&i| is_candidate(line[i]))
                    .collect();
                let first = expected.first().copied().unwrap_or(line.len());
                assert_eq!(
                    delimiters.next(from),
                    first,
                    "line {start}..{end}, from {from}"
                );
                let all: Vec<usize> = Candidates::from(&delimiters, from).collect();
                assert_eq!(all, expected, "line {start}..{end}, from {from}");
            }
        }
    }
}
