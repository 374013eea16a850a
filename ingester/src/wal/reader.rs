//! Reading a segment back: replay at start-up.
//!
//! The file is read sequentially in large chunks (at least [`CHUNK`] bytes per
//! `read`) into one reused window buffer, so memory stays at about one chunk
//! (or one entry, if larger) whatever the segment size, and there is no
//! per-entry syscall. Entries are checked and copied out (LZ4 ops, written by
//! earlier releases, decompressed) one at a time; each
//! entry is copied into ONE buffer and its ops are handed out as `Bytes`
//! slices of it, so replay costs one allocation per entry, not per op. (A
//! caller that keeps one payload alive keeps its entry's buffer alive; replay
//! consumers apply and drop them.)
//!
//! The reader is strict: anything that does not parse is
//! [`WalError::Corrupt`] with the file and the entry's byte offset, and the
//! iterator ends after it. Deciding that a damaged tail is merely a torn write
//! is `Wal::open`'s job (see `recovery.rs`), done before replay, so a reader
//! over a recovered WAL never sees one.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use bytes::{Bytes, BytesMut};

use super::{
    SegmentId, WalError,
    segment::{
        FRAME_HEADER_LEN, FrameError, HEADER_LEN, MAX_BODY_LEN, MIN_BODY_LEN, OpIter, check_body,
        check_header, parse_segment_name, read_frame,
    },
};

/// Minimum size of one `read` from the segment file.
const CHUNK: usize = 4 << 20;

/// Iterator over the operations of one segment file, in file order, yielding
/// `(sequence_number, payload)`, the payload as it was appended.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    id: SegmentId,
    file: File,
    file_len: u64,
    /// Window over the file: `window[lo..hi]` holds the bytes at file offset
    /// `pos` onwards.
    window: Vec<u8>,
    lo: usize,
    hi: usize,
    /// File offset of the next entry to decode.
    pos: u64,
    /// Ops of the current entry: `(sequence_number, uncompressed_len)`.
    /// Reused across entries.
    ops: Vec<(u64, usize)>,
    /// Index of the next op in `ops` to hand out.
    next_op: usize,
    /// Where entries are decompressed. Each entry's bytes are split off and
    /// frozen; once the caller has dropped them, `reserve` reuses the same
    /// allocation, so steady-state replay neither allocates nor page-faults.
    out: BytesMut,
    /// Decompressed payloads of the current entry, back to back.
    buf: Bytes,
    buf_pos: usize,
    done: bool,
}

impl SegmentReader {
    /// Open the segment at `path` and check its header. When the file name is
    /// a segment name, the id in the header must match it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WalError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| WalError::io("open segment", &path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| WalError::io("stat segment", &path, e))?
            .len();
        let expected = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_name);
        let mut r = Self {
            path,
            id: SegmentId::new(0),
            file,
            file_len,
            window: Vec::new(),
            lo: 0,
            hi: 0,
            pos: 0,
            ops: Vec::new(),
            next_op: 0,
            out: BytesMut::new(),
            buf: Bytes::new(),
            buf_pos: 0,
            done: false,
        };
        r.fill(HEADER_LEN.min(r.remaining()))?;
        r.id = check_header(&r.window[r.lo..r.hi], expected)
            .map_err(|e| WalError::corrupt(&r.path, 0, e))?;
        r.consume(HEADER_LEN);
        Ok(r)
    }

    /// The segment's id (from its header).
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of the file from `pos` to its end.
    fn remaining(&self) -> usize {
        usize::try_from(self.file_len.saturating_sub(self.pos)).unwrap_or(usize::MAX)
    }

    /// Make `window[lo..]` hold at least `need` bytes. The caller guarantees
    /// `need <= remaining()`.
    fn fill(&mut self, need: usize) -> Result<(), WalError> {
        if self.hi - self.lo >= need {
            return Ok(());
        }
        if self.window.len() - self.lo < need {
            self.window.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
            if self.window.len() < need {
                self.window.resize(need.max(CHUNK), 0);
            }
        }
        while self.hi - self.lo < need {
            match self.file.read(&mut self.window[self.hi..]) {
                Ok(0) => {
                    return Err(WalError::io(
                        "read segment",
                        &self.path,
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "segment shrank while being read",
                        ),
                    ));
                }
                Ok(n) => self.hi += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WalError::io("read segment", &self.path, e)),
            }
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.lo += n;
        self.pos += n as u64;
    }

    /// Decode the entry at `self.pos` into `self.ops` / `self.buf`.
    fn load_entry(&mut self) -> Result<(), WalError> {
        let at = self.pos as usize;
        let corrupt = |path: &Path, e: FrameError| WalError::corrupt(path, at, e.to_string());
        let remaining = self.remaining();
        if remaining < FRAME_HEADER_LEN {
            return Err(corrupt(
                &self.path,
                FrameError::Incomplete {
                    need: FRAME_HEADER_LEN,
                    have: remaining,
                },
            ));
        }
        self.fill(FRAME_HEADER_LEN)?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.window[self.lo..self.lo + 4]);
        let len = u32::from_le_bytes(len);
        let frame_len = FRAME_HEADER_LEN + len as usize;
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&(len as usize)) {
            return Err(corrupt(&self.path, FrameError::BadLength(len)));
        }
        if frame_len > remaining {
            return Err(corrupt(
                &self.path,
                FrameError::Incomplete {
                    need: frame_len,
                    have: remaining,
                },
            ));
        }
        self.fill(frame_len)?;
        let frame = read_frame(&self.window[self.lo..self.lo + frame_len], 0)
            .map_err(|e| corrupt(&self.path, e))?;
        let info = check_body(frame.body).map_err(|r| WalError::corrupt(&self.path, at, r))?;
        // Drop our handle on the previous entry first, so `reserve` can
        // reclaim its space when the caller holds none of its payloads.
        self.buf = Bytes::new();
        self.out.clear();
        self.out.reserve(info.uncompressed);
        self.out.resize(info.uncompressed, 0);
        let out = &mut self.out[..];
        self.ops.clear();
        let mut off = 0;
        for (i, op) in OpIter::new(frame.body).enumerate() {
            let slot = &mut out[off..off + op.uncompressed_len];
            if op.raw {
                // `check_body` made sure both lengths are equal.
                slot.copy_from_slice(op.stored);
                self.ops.push((op.sequence_number, op.uncompressed_len));
                off += op.uncompressed_len;
                continue;
            }
            match lz4_flex::block::decompress_into(op.stored, slot) {
                Ok(n) if n == op.uncompressed_len => {}
                Ok(n) => {
                    return Err(WalError::corrupt(
                        &self.path,
                        at,
                        format!(
                            "op {i} (sequence number {}) decompresses to {n} bytes, header says {}",
                            op.sequence_number, op.uncompressed_len
                        ),
                    ));
                }
                Err(e) => {
                    return Err(WalError::corrupt(
                        &self.path,
                        at,
                        format!(
                            "op {i} (sequence number {}) does not decompress: {e}",
                            op.sequence_number
                        ),
                    ));
                }
            }
            self.ops.push((op.sequence_number, op.uncompressed_len));
            off += op.uncompressed_len;
        }
        self.buf = self.out.split_to(info.uncompressed).freeze();
        self.buf_pos = 0;
        self.next_op = 0;
        self.consume(frame_len);
        Ok(())
    }
}

impl Iterator for SegmentReader {
    type Item = Result<(u64, Bytes), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.next_op == self.ops.len() {
            if self.pos >= self.file_len {
                self.done = true;
                return None;
            }
            if let Err(e) = self.load_entry() {
                self.done = true;
                return Some(Err(e));
            }
        }
        let (seq, len) = self.ops[self.next_op];
        self.next_op += 1;
        let payload = self.buf.slice(self.buf_pos..self.buf_pos + len);
        self.buf_pos += len;
        Some(Ok((seq, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::segment::{encode_header, entry_prefix, segment_path, tests::build_entry};

    fn write_segment(dir: &Path, id: u64, entries: &[Vec<(u64, Vec<u8>)>]) -> PathBuf {
        let path = segment_path(dir, SegmentId::new(id));
        let mut data = encode_header(SegmentId::new(id)).to_vec();
        for e in entries {
            data.extend_from_slice(&build_entry(e));
        }
        std::fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn reads_all_ops_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            vec![(5, b"a".to_vec()), (3, b"".to_vec())],
            vec![(9, vec![7u8; 10_000])],
        ];
        let path = write_segment(dir.path(), 4, &entries);
        let r = SegmentReader::open(&path).unwrap();
        assert_eq!(r.id(), SegmentId::new(4));
        let got: Vec<(u64, Vec<u8>)> = r
            .map(|x| x.map(|(s, b)| (s, b.to_vec())).unwrap())
            .collect();
        assert_eq!(got, entries.concat());
    }

    #[test]
    fn entries_larger_than_a_chunk_and_across_chunk_boundaries() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        // Incompressible, so the entries really are this large on disk.
        let mut entries = vec![vec![(1, noise(CHUNK + 12_345))]];
        for s in 2..40 {
            entries.push(vec![(s, noise(300_001)), (s + 1000, noise(17))]);
        }
        entries.push(vec![(99, noise(2 * CHUNK))]);
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 0, &entries);
        let r = SegmentReader::open(&path).unwrap();
        assert!(r.file_len() > 3 * CHUNK as u64);
        let got: Vec<(u64, Vec<u8>)> = r
            .map(|x| x.map(|(s, b)| (s, b.to_vec())).unwrap())
            .collect();
        assert_eq!(got, entries.concat());
    }

    #[test]
    fn reads_lz4_ops_of_earlier_releases_next_to_raw_ones() {
        use crate::wal::segment::tests::build_lz4_entry;
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), SegmentId::new(3));
        let old = vec![(1, vec![5u8; 3000]), (2, b"xyz".to_vec())];
        let new = vec![(3, b"raw".to_vec())];
        let mut data = encode_header(SegmentId::new(3)).to_vec();
        data.extend_from_slice(&build_lz4_entry(&old));
        data.extend_from_slice(&build_entry(&new));
        std::fs::write(&path, data).unwrap();
        let got: Vec<(u64, Vec<u8>)> = SegmentReader::open(&path)
            .unwrap()
            .map(|x| x.map(|(s, b)| (s, b.to_vec())).unwrap())
            .collect();
        assert_eq!(got, [old, new].concat());
    }

    #[test]
    fn truncated_entry_is_corrupt_at_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(
            dir.path(),
            2,
            &[vec![(1, b"one".to_vec())], vec![(2, b"two".to_vec())]],
        );
        let mut data = std::fs::read(&path).unwrap();
        let second = HEADER_LEN + build_entry(&[(1, b"one".to_vec())]).len();
        data.truncate(data.len() - 1);
        std::fs::write(&path, &data).unwrap();
        let mut r = SegmentReader::open(&path).unwrap();
        assert_eq!(r.next().unwrap().unwrap().0, 1);
        let e = r.next().unwrap().unwrap_err();
        assert!(
            matches!(e, WalError::Corrupt { offset, .. } if offset == second as u64),
            "{e}"
        );
        assert!(e.to_string().contains("incomplete entry"), "{e}");
    }

    #[test]
    fn header_naming_wrong_id_is_corrupt_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 4, &[]);
        let renamed = segment_path(dir.path(), SegmentId::new(5));
        std::fs::rename(&path, &renamed).unwrap();
        let err = SegmentReader::open(&renamed).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WalError::Corrupt { offset: 0, .. }), "{msg}");
        assert!(
            msg.contains("00000000000000000005.wal") && msg.contains("offset 0"),
            "{msg}"
        );
    }

    #[test]
    fn undecompressable_body_with_valid_crc_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 1, &[vec![(1, b"ok".to_vec())]]);
        // Hand-made op: claims 100 bytes uncompressed, holds an invalid LZ4
        // block (a match offset pointing before the start of the output).
        let mut rec = Vec::new();
        rec.extend_from_slice(&77u64.to_le_bytes());
        rec.extend_from_slice(&100u32.to_le_bytes());
        let block = [0x1fu8, b'x', 0xff, 0xff];
        rec.extend_from_slice(&(block.len() as u32).to_le_bytes());
        rec.extend_from_slice(&block);
        let mut data = std::fs::read(&path).unwrap();
        let bad_at = data.len();
        data.extend_from_slice(&entry_prefix(std::iter::once(rec.as_slice())));
        data.extend_from_slice(&rec);
        std::fs::write(&path, &data).unwrap();

        let mut r = SegmentReader::open(&path).unwrap();
        assert_eq!(r.next().unwrap().unwrap().0, 1);
        let err = r.next().unwrap().unwrap_err();
        match &err {
            WalError::Corrupt { offset, reason, .. } => {
                assert_eq!(*offset, bad_at as u64);
                assert!(reason.contains("sequence number 77"), "{reason}");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(r.next().is_none(), "iteration stops after corruption");
    }
}
