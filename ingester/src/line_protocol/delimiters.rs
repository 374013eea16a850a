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
//! a shift and a `trailing_zeros`. On x86_64 the index uses AVX2 (32 bytes
//! per step) when the CPU has it, checked once per parser, else SSE2, which
//! every x86_64 CPU has; elsewhere a portable SWAR version (8 bytes per
//! `u64`). All three give the same bits: a test compares them byte by byte.

/// Which implementation builds the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    Portable,
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    Sse2,
    /// Only ever constructed after checking that the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(super) fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Self::Avx2;
        }
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        return Self::Sse2;
        #[allow(unreachable_code)]
        Self::Portable
    }

    /// Every kernel this CPU runs (for the tests).
    #[cfg(test)]
    pub(super) fn available() -> Vec<Self> {
        let mut all = vec![Self::Portable];
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        all.push(Self::Sse2);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(Self::Avx2);
        }
        all
    }
}

/// Candidate positions of the current line; reused from line to line.
#[derive(Debug)]
pub(super) struct Delimiters {
    /// Bit `i % 64` of word `i / 64` is set when byte `i` of the line is a
    /// candidate. No bit is set past the end of the line.
    words: Vec<u64>,
    len: usize,
    kernel: Kernel,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self::with_kernel(Kernel::best())
    }
}

impl Delimiters {
    /// An empty index built by `kernel` (which must be one [`Kernel::best`]
    /// or [`Kernel::available`] returned).
    pub(super) fn with_kernel(kernel: Kernel) -> Self {
        Self {
            words: Vec::new(),
            len: 0,
            kernel,
        }
    }

    /// Index the line `input[start..end]`, replacing the previous one, and
    /// tell whether the line is ASCII (no byte at or above 0x80), which
    /// makes it valid UTF-8 without a separate pass. Bytes after `end` may
    /// be read (it is cheaper than copying the last block) but are never
    /// reported.
    #[inline]
    pub fn index(&mut self, input: &[u8], start: usize, end: usize) -> bool {
        match self.kernel {
            Kernel::Portable => self.index_with(input, start, end, swar::mask64),
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            Kernel::Sse2 => self.index_with(input, start, end, sse2::mask64),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // SAFETY: `index_avx2` only requires the `avx2` target
                // feature, and `Kernel::Avx2` is only constructed (by
                // `Kernel::best` and `Kernel::available`) after
                // `is_x86_feature_detected!("avx2")` said the CPU has it.
                unsafe { self.index_avx2(input, start, end) }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn index_avx2(&mut self, input: &[u8], start: usize, end: usize) -> bool {
        self.index_with(input, start, end, |chunk| avx2::mask64(chunk))
    }

    /// [`index`](Self::index) with `mask64`, which gives the candidate
    /// bits and the bits of the bytes at or above 0x80 of 64 bytes.
    #[inline(always)]
    fn index_with(
        &mut self,
        input: &[u8],
        start: usize,
        end: usize,
        mask64: impl Fn(&[u8; 64]) -> (u64, u64),
    ) -> bool {
        self.len = end - start;
        self.words.clear();
        self.words.resize(self.len.div_ceil(64), 0);
        let mut high = 0;
        let mut last_high = 0;
        for (w, word) in self.words.iter_mut().enumerate() {
            let at = start + 64 * w;
            // One call of `mask64` for both cases: with a call in each
            // arm, LLVM took the AVX2 masks apart bit by bit (~250
            // instructions per 64 bytes instead of ~40).
            let padded: [u8; 64];
            let chunk = match input[at..].first_chunk::<64>() {
                Some(chunk) => chunk,
                None => {
                    // The input ends within these 64 bytes: pad with a byte
                    // that is not a candidate.
                    let tail = &input[at..];
                    let mut chunk = [b'a'; 64];
                    chunk[..tail.len()].copy_from_slice(tail);
                    padded = chunk;
                    &padded
                }
            };
            let (candidates, high_bits) = mask64(chunk);
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

/// SSE2, 16 bytes per step; part of the x86_64 baseline.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// Candidate bits of 64 bytes (bit `i` for byte `i`), and the bits of
    /// the bytes at or above 0x80.
    #[inline(always)]
    pub(super) fn mask64(chunk: &[u8; 64]) -> (u64, u64) {
        let (blocks, _) = chunk.as_chunks::<16>();
        let mut candidates = 0;
        let mut high = 0;
        for (k, block) in blocks.iter().enumerate() {
            // SAFETY: `mask16` only requires the `sse2` target feature,
            // which the `cfg` of this module guarantees is enabled for
            // this build.
            let (c, h) = unsafe { mask16(block) };
            candidates |= u64::from(c) << (16 * k);
            high |= u64::from(h) << (16 * k);
        }
        (candidates, high)
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn mask16(block: &[u8; 16]) -> (u16, u16) {
        // SAFETY: `block` is 16 readable bytes, what `_mm_loadu_si128`
        // reads; it needs no alignment.
        let v = unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) };
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
}

/// AVX2, 32 bytes per step; used only when the CPU has it (see
/// [`Kernel::best`](super::Kernel::best)).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };

    /// Candidate bits of 64 bytes (bit `i` for byte `i`), and the bits of
    /// the bytes at or above 0x80.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn mask64(chunk: &[u8; 64]) -> (u64, u64) {
        let (halves, _) = chunk.as_chunks::<32>();
        let (c0, h0) = mask32(&halves[0]);
        let (c1, h1) = mask32(&halves[1]);
        (
            u64::from(c0) | u64::from(c1) << 32,
            u64::from(h0) | u64::from(h1) << 32,
        )
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn mask32(block: &[u8; 32]) -> (u32, u32) {
        // SAFETY: `block` is 32 readable bytes, what `_mm256_loadu_si256`
        // reads; it needs no alignment.
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()) };
        let byte = |b: u8| _mm256_set1_epi8(b as i8);
        // Unsigned `v <= 0x20` as `min(v, 0x20) == v`.
        let low = _mm256_cmpeq_epi8(_mm256_min_epu8(v, byte(0x20)), v);
        let comma = _mm256_cmpeq_epi8(v, byte(b','));
        let equals = _mm256_cmpeq_epi8(v, byte(b'='));
        let backslash = _mm256_cmpeq_epi8(v, byte(b'\\'));
        let any = _mm256_or_si256(
            _mm256_or_si256(low, comma),
            _mm256_or_si256(equals, backslash),
        );
        // `movemask` yields 32 bits in an i32 (one per byte's top bit).
        (
            _mm256_movemask_epi8(any) as u32,
            _mm256_movemask_epi8(v) as u32,
        )
    }
}

/// The portable version: 8 bytes at a time in a `u64`.
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

    /// Candidate bits of 64 bytes (bit `i` for byte `i`), and the bits of
    /// the bytes at or above 0x80.
    #[inline(always)]
    pub(super) fn mask64(chunk: &[u8; 64]) -> (u64, u64) {
        let (words, _) = chunk.as_chunks::<8>();
        let mut candidates = 0;
        let mut high = 0;
        for (k, word) in words.iter().enumerate() {
            let x = u64::from_le_bytes(*word);
            candidates |= u64::from(mask8(x)) << (8 * k);
            high |= u64::from(gather(x)) << (8 * k);
        }
        (candidates, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_candidate(b: u8) -> bool {
        b <= 0x20 || matches!(b, b',' | b'=' | b'\\')
    }

    /// `mask64` of `kernel`.
    fn mask64(kernel: Kernel, chunk: &[u8; 64]) -> (u64, u64) {
        match kernel {
            Kernel::Portable => swar::mask64(chunk),
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            Kernel::Sse2 => sse2::mask64(chunk),
            // SAFETY: `Kernel::available` lists AVX2 only when the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::mask64(chunk) },
        }
    }

    #[test]
    fn masks_match_the_definition_for_every_byte() {
        for kernel in Kernel::available() {
            for b in 0..=255u8 {
                for position in 0..64 {
                    let mut chunk = [b'a'; 64];
                    chunk[position] = b;
                    let expected = (
                        if is_candidate(b) { 1 << position } else { 0 },
                        if b >= 0x80 { 1 << position } else { 0 },
                    );
                    assert_eq!(
                        mask64(kernel, &chunk),
                        expected,
                        "{kernel:?}: byte {b:#x} at {position}"
                    );
                }
            }
            // Neighbours do not disturb each other (no borrow or carry).
            let pattern: &[u8; 16] = b"\0\x01 !,-=>\\]\x7f\x80\xff\t\n\r";
            let mut chunk = [0u8; 64];
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = pattern[(i * 7) % 16];
            }
            let bits = |f: fn(u8) -> bool| {
                (0..64)
                    .filter(|&i| f(chunk[i]))
                    .fold(0u64, |m, i| m | 1 << i)
            };
            let expected = (bits(is_candidate), bits(|b| b >= 0x80));
            assert_eq!(mask64(kernel, &chunk), expected, "{kernel:?}");
        }
    }

    #[test]
    fn ascii_is_judged_on_the_line_only() {
        for kernel in Kernel::available() {
            let mut delimiters = Delimiters::with_kernel(kernel);
            // A non-ASCII byte at every position of lines of several lengths,
            // with non-ASCII bytes right after the line (read, not reported).
            for len in [1, 15, 16, 63, 64, 65, 130] {
                let mut input = vec![b'a'; len];
                input.extend_from_slice(&[0xC3, 0xA9].repeat(40));
                assert!(delimiters.index(&input, 0, len), "len {len}");
                for at in 0..len {
                    let mut bad = input.clone();
                    bad[at] = 0xFF;
                    assert!(
                        !delimiters.index(&bad, 0, len),
                        "{kernel:?}: len {len}, at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn next_finds_every_candidate_from_every_offset() {
        // Every byte value, in an order that puts each at many offsets.
        let input: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(97) % 256) as u8)
            .collect();
        for kernel in Kernel::available() {
            let mut delimiters = Delimiters::with_kernel(kernel);
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
                    assert_eq!(
                        all, expected,
                        "{kernel:?}: line {start}..{end}, from {from}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// Every kernel builds the same index and the same ASCII verdict.
        #[test]
        fn kernels_agree(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    3 => proptest::sample::select(b" ,=\\\"\n\r\tab09\x00\x1f\x7f\x80\xc3\xff".to_vec()),
                    1 => proptest::prelude::any::<u8>(),
                ],
                0..300,
            ),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            len in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let start = cut.index(bytes.len() + 1);
            let end = start + len.index(bytes.len() - start + 1);
            let mut reference = Delimiters::with_kernel(Kernel::Portable);
            let ascii = reference.index(&bytes, start, end);
            proptest::prop_assert_eq!(ascii, bytes[start..end].is_ascii());
            for kernel in Kernel::available() {
                let mut d = Delimiters::with_kernel(kernel);
                proptest::prop_assert_eq!(d.index(&bytes, start, end), ascii, "{:?}", kernel);
                proptest::prop_assert_eq!(&d.words, &reference.words, "{:?}", kernel);
            }
        }
    }
}
