//! Reading a segment back: replay at start-up.
//!
//! The whole file is read with one `read` (segments are bounded by
//! `max_segment_bytes` plus one entry), then entries are checked and
//! decompressed one at a time. Each entry is decompressed into ONE buffer and
//! its ops are handed out as `Bytes` slices of it, so replay costs one
//! allocation per entry, not per op. (A caller that keeps one payload alive
//! keeps its entry's buffer alive; replay consumers apply and drop them.)
//!
//! The reader is strict: anything that does not parse is
//! [`WalError::Corrupt`] with the file and the entry's byte offset, and the
//! iterator ends after it. Deciding that a damaged tail is merely a torn write
//! is `Wal::open`'s job (see `recovery.rs`), done before replay, so a reader
//! over a recovered WAL never sees one.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{
    SegmentId, WalError,
    segment::{HEADER_LEN, OpIter, check_body, check_header, parse_segment_name, read_frame},
};

/// Iterator over the operations of one segment file, in file order, yielding
/// `(sequence_number, payload)` with the payload decompressed.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    id: SegmentId,
    data: Vec<u8>,
    /// Offset of the next entry to decode.
    pos: usize,
    /// Ops of the current entry: `(sequence_number, uncompressed_len)`.
    /// Reused across entries.
    ops: Vec<(u64, usize)>,
    /// Index of the next op in `ops` to hand out.
    next_op: usize,
    /// Decompressed payloads of the current entry, back to back.
    buf: Bytes,
    buf_pos: usize,
    done: bool,
}

impl SegmentReader {
    /// Read the segment at `path` and check its header. When the file name is
    /// a segment name, the id in the header must match it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WalError> {
        let path = path.as_ref().to_path_buf();
        let data = std::fs::read(&path).map_err(|e| WalError::io("read segment", &path, e))?;
        let expected = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_name);
        let id = check_header(&data, expected).map_err(|r| WalError::corrupt(&path, 0, r))?;
        Ok(Self {
            path,
            id,
            data,
            pos: HEADER_LEN,
            ops: Vec::new(),
            next_op: 0,
            buf: Bytes::new(),
            buf_pos: 0,
            done: false,
        })
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
    pub fn file_len(&self) -> usize {
        self.data.len()
    }

    /// Decode the entry at `self.pos` into `self.ops` / `self.buf`.
    fn load_entry(&mut self) -> Result<(), WalError> {
        let at = self.pos;
        let frame = read_frame(&self.data, at).map_err(|e| WalError::corrupt(&self.path, at, e.to_string()))?;
        let info = check_body(frame.body).map_err(|r| WalError::corrupt(&self.path, at, r))?;
        let mut out = vec![0u8; info.uncompressed];
        self.ops.clear();
        let mut off = 0;
        for (i, op) in OpIter::new(frame.body).enumerate() {
            let slot = &mut out[off..off + op.uncompressed_len];
            match lz4_flex::block::decompress_into(op.compressed, slot) {
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
                        format!("op {i} (sequence number {}) does not decompress: {e}", op.sequence_number),
                    ));
                }
            }
            self.ops.push((op.sequence_number, op.uncompressed_len));
            off += op.uncompressed_len;
        }
        self.buf = Bytes::from(out);
        self.buf_pos = 0;
        self.next_op = 0;
        self.pos = frame.end;
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
            if self.pos >= self.data.len() {
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
        let got: Vec<(u64, Vec<u8>)> = r.map(|x| x.map(|(s, b)| (s, b.to_vec())).unwrap()).collect();
        assert_eq!(got, entries.concat());
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
        assert!(msg.contains("00000000000000000005.wal") && msg.contains("offset 0"), "{msg}");
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
