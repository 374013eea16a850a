//! The on-disk format of a segment, and segment file naming.
//!
//! ```text
//! segment  = header entry*
//! header   = magic "SLCWAL" (6) | version u16 LE (2) | segment id u64 LE (8)       16 bytes
//! entry    = len u32 LE | crc32c u32 LE | body[len]               one per group commit
//! body     = op_count u32 LE | op[op_count]
//! op       = sequence_number u64 LE | uncompressed_len u32 LE | stored u32 LE
//!            | data[stored & 0x7fff_ffff]
//! ```
//!
//! `stored` is the length of `data`; its top bit says how `data` holds the
//! payload: set, the bytes as they are (then the length equals
//! `uncompressed_len`); clear, an LZ4 block. The writer stores payloads as
//! they are: they are columnar records (`write/wal_record.rs`) whose float
//! columns barely compress, and LZ4 was the largest CPU cost of the write
//! path when the WAL stored line protocol. LZ4 ops (all ops of segments
//! written by earlier releases) are still read. The format version stays 1:
//! a release that predates the flag refuses such an op as corrupt at replay
//! (its length runs past the entry) instead of mistaking the segment for a
//! torn one.
//!
//! Why this shape:
//!
//! - The CRC covers the whole body, so any bit flip in an entry is detected;
//!   a flipped length makes the CRC cover the wrong bytes and fail as well.
//!   Every header byte is checked exactly (magic, version, and the id must
//!   equal the id in the file name).
//! - The body's op headers must add up to exactly `len`. That is checked
//!   before the CRC, so scanning a damaged tail for "is there any valid entry
//!   after this point" (see `recovery.rs`) rejects almost every offset after
//!   reading a few bytes instead of checksumming megabytes.
//! - Each op record is built on its own, by the appending task (see
//!   `mod.rs`), so the writer thread only concatenates finished records.

use std::path::{Path, PathBuf};

use super::{SegmentId, WalError};

/// File magic at offset 0 of every segment.
pub(crate) const MAGIC: [u8; 6] = *b"SLCWAL";
/// Format version written after the magic; readers refuse any other.
pub(crate) const VERSION: u16 = 1;
/// Size of the segment file header.
pub(crate) const HEADER_LEN: usize = 16;
/// `len` + `crc` in front of every entry body.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// The op count at the start of every body.
pub(crate) const BODY_PREFIX_LEN: usize = 4;
/// Sequence number, uncompressed length, stored length.
pub(crate) const OP_HEADER_LEN: usize = 16;
/// Top bit of an op's stored length: the payload is stored as it is.
pub(crate) const STORED_RAW: u32 = 1 << 31;
/// An entry always holds at least one op.
pub(crate) const MIN_BODY_LEN: usize = BODY_PREFIX_LEN + OP_HEADER_LEN;
/// Largest entry body a writer produces or a reader accepts. Bounds the
/// memory one corrupt length field can make a reader believe in.
pub(crate) const MAX_BODY_LEN: usize = 1 << 30;
/// Largest payload of a single operation (uncompressed).
pub const MAX_OP_BYTES: usize = 256 << 20;
/// File name extension of segments.
const EXTENSION: &str = "wal";

/// The path of segment `id` in `dir`: `<dir>/<id:020>.wal`. Zero padding makes
/// lexical order equal numeric order for anyone listing the directory.
pub(crate) fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{:020}.{EXTENSION}", id.get()))
}

/// The id encoded in a segment file name, or `None` for any other file.
pub(crate) fn parse_segment_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentId::new)
}

/// Segment files in `dir`, oldest (lowest id) first. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(SegmentId, PathBuf)>, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io("list WAL directory", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list WAL directory", dir, e))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        out.push((id, entry.path()));
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// Fsync a directory so that file creations/removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync WAL directory", dir, e))
}

/// The header of segment `id`.
pub(crate) fn encode_header(id: SegmentId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(&MAGIC);
    h[6..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..].copy_from_slice(&id.get().to_le_bytes());
    h
}

/// Check a segment header. `expected` is the id from the file name, when it
/// has one. Returns the id in the header.
pub(crate) fn check_header(buf: &[u8], expected: Option<SegmentId>) -> Result<SegmentId, String> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Err(format!(
            "file has {} bytes, shorter than the {HEADER_LEN}-byte segment header",
            buf.len()
        ));
    };
    if h[..6] != MAGIC {
        return Err(format!(
            "bad magic {:02x?}, not a Sluice WAL segment",
            &h[..6]
        ));
    }
    let version = u16::from_le_bytes([h[6], h[7]]);
    if version != VERSION {
        return Err(format!(
            "unsupported segment format version {version} (expected {VERSION})"
        ));
    }
    let id = SegmentId::new(read_u64(h, 8));
    match expected {
        Some(e) if e != id => Err(format!(
            "header names segment {id} but the file name says {e}"
        )),
        _ => Ok(id),
    }
}

/// Encode one operation as an op record (header + the payload as it is),
/// ready to be placed in an entry body. Runs in the appending task.
pub(crate) fn encode_op(sequence_number: u64, payload: &[u8]) -> Result<Vec<u8>, WalError> {
    check_op_size(sequence_number, payload)?;
    let mut rec = Vec::with_capacity(OP_HEADER_LEN + payload.len());
    rec.extend_from_slice(&sequence_number.to_le_bytes());
    // payload.len() <= MAX_OP_BYTES < 2^31: the flag bit is free.
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&(payload.len() as u32 | STORED_RAW).to_le_bytes());
    rec.extend_from_slice(payload);
    Ok(rec)
}

fn check_op_size(sequence_number: u64, payload: &[u8]) -> Result<(), WalError> {
    if payload.len() > MAX_OP_BYTES {
        return Err(WalError::OpTooLarge {
            sequence_number,
            bytes: payload.len(),
            max: MAX_OP_BYTES,
        });
    }
    Ok(())
}

/// An op record with an LZ4-compressed payload, as releases before the
/// columnar WAL record wrote them (tests check they are still read).
#[cfg(test)]
pub(crate) fn encode_op_lz4(sequence_number: u64, payload: &[u8]) -> Result<Vec<u8>, WalError> {
    check_op_size(sequence_number, payload)?;
    let bound = lz4_flex::block::get_maximum_output_size(payload.len());
    let mut rec = vec![0u8; OP_HEADER_LEN + bound];
    let compressed = lz4_flex::block::compress_into(payload, &mut rec[OP_HEADER_LEN..])
        .expect("output buffer sized by get_maximum_output_size");
    rec[..8].copy_from_slice(&sequence_number.to_le_bytes());
    rec[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    rec[12..16].copy_from_slice(&(compressed as u32).to_le_bytes());
    rec.truncate(OP_HEADER_LEN + compressed);
    Ok(rec)
}

/// The 12 bytes in front of a group's op records: `len`, `crc`, `op_count`.
/// `records` must be non-empty and their total size at most
/// [`MAX_BODY_LEN`] - 4 (the writer's group cap guarantees both).
pub(crate) fn entry_prefix<'a>(records: impl Iterator<Item = &'a [u8]> + Clone) -> [u8; 12] {
    let count = records.clone().count() as u32;
    let count_bytes = count.to_le_bytes();
    let mut crc = crc32c::crc32c(&count_bytes);
    let mut len = BODY_PREFIX_LEN;
    for r in records {
        crc = crc32c::crc32c_append(crc, r);
        len += r.len();
    }
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&(len as u32).to_le_bytes());
    p[4..8].copy_from_slice(&crc.to_le_bytes());
    p[8..].copy_from_slice(&count_bytes);
    p
}

/// Why the bytes at some offset are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The frame (header or body) runs past the end of the file.
    Incomplete { need: usize, have: usize },
    /// The length field is impossible.
    BadLength(u32),
    /// The body does not match its checksum.
    Checksum { stored: u32, actual: u32 },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete { need, have } => {
                write!(
                    f,
                    "incomplete entry: needs {need} bytes, {have} left in the file"
                )
            }
            Self::BadLength(l) => write!(
                f,
                "entry length {l} is outside the valid range {MIN_BODY_LEN}..={MAX_BODY_LEN}"
            ),
            Self::Checksum { stored, actual } => write!(
                f,
                "entry checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
            ),
        }
    }
}

/// A checksummed entry body and the offset just past it.
pub(crate) struct Frame<'a> {
    pub(crate) body: &'a [u8],
    pub(crate) end: usize,
}

/// Parse and checksum the entry starting at `at`.
pub(crate) fn read_frame(buf: &[u8], at: usize) -> Result<Frame<'_>, FrameError> {
    let (stored, body, end) = locate(buf, at)?;
    let actual = crc32c::crc32c(body);
    if actual != stored {
        return Err(FrameError::Checksum { stored, actual });
    }
    Ok(Frame { body, end })
}

/// Cheap plausibility test used when scanning a damaged region: length in
/// range, inside the file, op headers add up, and only then the checksum.
pub(crate) fn is_valid_frame_at(buf: &[u8], at: usize) -> bool {
    let Ok((stored, body, _)) = locate(buf, at) else {
        return false;
    };
    check_body(body).is_ok() && crc32c::crc32c(body) == stored
}

/// The checksum, body and end offset of the frame at `at`, without checking
/// the checksum.
fn locate(buf: &[u8], at: usize) -> Result<(u32, &[u8], usize), FrameError> {
    let have = buf.len().saturating_sub(at);
    let Some(h) = buf.get(at..at + FRAME_HEADER_LEN) else {
        return Err(FrameError::Incomplete {
            need: FRAME_HEADER_LEN,
            have,
        });
    };
    let len = read_u32(h, 0);
    let stored = read_u32(h, 4);
    let body_len = len as usize;
    if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(FrameError::BadLength(len));
    }
    let start = at + FRAME_HEADER_LEN;
    let end = start + body_len;
    let Some(body) = buf.get(start..end) else {
        return Err(FrameError::Incomplete {
            need: FRAME_HEADER_LEN + body_len,
            have,
        });
    };
    Ok((stored, body, end))
}

/// Summary of a structurally valid body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyInfo {
    pub(crate) ops: u32,
    /// Sum of the ops' uncompressed lengths.
    pub(crate) uncompressed: usize,
}

/// Walk the op headers of `body`: there must be at least one op, each op's
/// stored bytes must lie inside the body (and equal its length if stored
/// uncompressed), each uncompressed length must be
/// at most [`MAX_OP_BYTES`], and the ops must end exactly at the end of the
/// body. Returns an error describing the first violation.
pub(crate) fn check_body(body: &[u8]) -> Result<BodyInfo, String> {
    let Some(prefix) = body.get(..BODY_PREFIX_LEN) else {
        return Err("entry body shorter than its op count".into());
    };
    let ops = read_u32(prefix, 0);
    if ops == 0 {
        return Err("entry holds zero operations".into());
    }
    let mut pos = BODY_PREFIX_LEN;
    let mut uncompressed = 0usize;
    for i in 0..ops {
        let Some(h) = body.get(pos..pos + OP_HEADER_LEN) else {
            return Err(format!(
                "op {i} of {ops}: header runs past the end of the entry"
            ));
        };
        let ulen = read_u32(h, 8) as usize;
        let stored = read_u32(h, 12);
        let clen = (stored & !STORED_RAW) as usize;
        if ulen > MAX_OP_BYTES {
            return Err(format!(
                "op {i} of {ops}: uncompressed length {ulen} exceeds {MAX_OP_BYTES}"
            ));
        }
        if stored & STORED_RAW != 0 && clen != ulen {
            return Err(format!(
                "op {i} of {ops}: stored length {clen} of an uncompressed op differs from its length {ulen}"
            ));
        }
        pos += OP_HEADER_LEN;
        if clen > body.len() - pos {
            return Err(format!(
                "op {i} of {ops}: stored length {clen} runs past the end of the entry"
            ));
        }
        pos += clen;
        uncompressed += ulen;
    }
    if pos != body.len() {
        return Err(format!(
            "{} trailing bytes after the last of {ops} ops",
            body.len() - pos
        ));
    }
    Ok(BodyInfo { ops, uncompressed })
}

/// One op of a structurally valid body.
pub(crate) struct OpRef<'a> {
    pub(crate) sequence_number: u64,
    pub(crate) uncompressed_len: usize,
    /// The payload itself when `raw`, else an LZ4 block.
    pub(crate) stored: &'a [u8],
    pub(crate) raw: bool,
}

/// Iterate over the ops of a body that passed [`check_body`]. Stops early
/// (rather than panicking) if it did not.
pub(crate) struct OpIter<'a> {
    body: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> OpIter<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        let left = body.get(..BODY_PREFIX_LEN).map_or(0, |p| read_u32(p, 0));
        Self {
            body,
            pos: BODY_PREFIX_LEN,
            left,
        }
    }
}

impl<'a> Iterator for OpIter<'a> {
    type Item = OpRef<'a>;

    fn next(&mut self) -> Option<OpRef<'a>> {
        if self.left == 0 {
            return None;
        }
        let h = self.body.get(self.pos..self.pos + OP_HEADER_LEN)?;
        let stored_len = read_u32(h, 12);
        let clen = (stored_len & !STORED_RAW) as usize;
        let start = self.pos + OP_HEADER_LEN;
        let stored = self.body.get(start..start + clen)?;
        self.pos = start + clen;
        self.left -= 1;
        Some(OpRef {
            sequence_number: read_u64(h, 0),
            uncompressed_len: read_u32(h, 8) as usize,
            stored,
            raw: stored_len & STORED_RAW != 0,
        })
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An entry as the writer lays it out.
    pub(crate) fn build_entry(ops: &[(u64, Vec<u8>)]) -> Vec<u8> {
        build_entry_with(ops, encode_op)
    }

    /// An entry of LZ4 ops, as earlier releases wrote them.
    pub(crate) fn build_lz4_entry(ops: &[(u64, Vec<u8>)]) -> Vec<u8> {
        build_entry_with(ops, encode_op_lz4)
    }

    fn build_entry_with(
        ops: &[(u64, Vec<u8>)],
        encode: fn(u64, &[u8]) -> Result<Vec<u8>, WalError>,
    ) -> Vec<u8> {
        let recs: Vec<Vec<u8>> = ops.iter().map(|(s, p)| encode(*s, p).unwrap()).collect();
        let mut out = entry_prefix(recs.iter().map(Vec::as_slice)).to_vec();
        for r in &recs {
            out.extend_from_slice(r);
        }
        out
    }

    fn decode(entry: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let f = read_frame(entry, 0).unwrap();
        assert_eq!(f.end, entry.len());
        let info = check_body(f.body).unwrap();
        let ops: Vec<_> = OpIter::new(f.body)
            .map(|op| {
                if op.raw {
                    return (op.sequence_number, op.stored.to_vec());
                }
                let mut out = vec![0u8; op.uncompressed_len];
                let n = lz4_flex::block::decompress_into(op.stored, &mut out).unwrap();
                assert_eq!(n, op.uncompressed_len);
                (op.sequence_number, out)
            })
            .collect();
        assert_eq!(ops.len(), info.ops as usize);
        ops
    }

    proptest! {
        #[test]
        fn framing_roundtrip(ops in prop::collection::vec(
            (any::<u64>(), prop_oneof![
                prop::collection::vec(any::<u8>(), 0..2000),
                // Compressible payloads exercise LZ4 matches.
                (0u8..4, 0usize..5000).prop_map(|(b, n)| vec![b; n]),
            ]), 1..20)) {
            for entry in [build_entry(&ops), build_lz4_entry(&ops)] {
                prop_assert!(is_valid_frame_at(&entry, 0));
                prop_assert_eq!(decode(&entry), ops.clone());
            }
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            ops in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)), 1..5),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut entry = build_entry(&ops);
            let bit = bit.index(entry.len() * 8);
            entry[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(read_frame(&entry, 0).is_err());
            prop_assert!(!is_valid_frame_at(&entry, 0));
        }
    }

    #[test]
    fn names_roundtrip_and_reject_others() {
        let p = segment_path(Path::new("/x"), SegmentId::new(42));
        assert_eq!(p, Path::new("/x/00000000000000000042.wal"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name), Some(SegmentId::new(42)));
        for bad in [
            "42.wal",
            "0000000000000000004a.wal",
            "00000000000000000042.wal.tmp",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_checks() {
        let h = encode_header(SegmentId::new(7));
        assert_eq!(
            check_header(&h, Some(SegmentId::new(7))),
            Ok(SegmentId::new(7))
        );
        assert!(
            check_header(&h, Some(SegmentId::new(8)))
                .unwrap_err()
                .contains("file name says 8")
        );
        assert!(
            check_header(&h[..10], None)
                .unwrap_err()
                .contains("shorter")
        );
        let mut bad = h;
        bad[6] = 9;
        assert!(check_header(&bad, None).unwrap_err().contains("version"));
        bad = h;
        bad[0] = b'X';
        assert!(check_header(&bad, None).unwrap_err().contains("magic"));
    }

    #[test]
    fn body_structure_errors() {
        let entry = build_entry(&[(1, b"abc".to_vec()), (2, b"defg".to_vec())]);
        let body = &entry[8..];
        assert_eq!(check_body(body).unwrap().ops, 2);
        assert_eq!(check_body(body).unwrap().uncompressed, 7);
        // Trailing byte.
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(check_body(&longer).unwrap_err().contains("trailing"));
        // Zero ops.
        assert!(check_body(&[0, 0, 0, 0]).unwrap_err().contains("zero"));
        // Op count larger than the body holds.
        let mut more = body.to_vec();
        more[0] = 3;
        assert!(check_body(&more).unwrap_err().contains("past the end"));
        // A raw op whose stored length differs from its length.
        let mut raw = body.to_vec();
        let ulen = BODY_PREFIX_LEN + 8;
        raw[ulen..ulen + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(check_body(&raw).unwrap_err().contains("differs"));
        // Zeros are never a frame.
        assert!(!is_valid_frame_at(&[0u8; 64], 0));
        assert_eq!(
            read_frame(&[0u8; 64], 0).err(),
            Some(FrameError::BadLength(0))
        );
    }

    #[test]
    fn too_large_op_is_refused() {
        let big = vec![0u8; MAX_OP_BYTES + 1];
        assert!(matches!(
            encode_op(9, &big),
            Err(WalError::OpTooLarge {
                sequence_number: 9,
                ..
            })
        ));
    }
}
