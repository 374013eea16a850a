//! Telling a torn final write from corruption, in the newest segment.
//!
//! Why only the newest: a segment is closed (fsynced) before its successor is
//! created, and within a segment each entry is written with one write and
//! fdatasynced before the next one is written (a failed one is truncated away
//! first). So a crash can damage only the bytes after the last durable entry of
//! the newest segment, and those bytes all come from ONE write: the entry being
//! written, possibly partial, possibly zeros or stale blocks if the file size
//! reached the disk before the data did.
//!
//! Hence the rule, applied at the first entry of the newest segment that does
//! not verify:
//!
//! - if NO valid entry starts anywhere after it, the rest of the file is that
//!   one torn write: the file is truncated there, with a warning naming the
//!   file, offset and bytes dropped. Nothing acknowledged is lost: an entry is
//!   acknowledged only after its fdatasync, and the torn one never completed.
//! - if a valid entry does start after it, data that was once durable is
//!   damaged: [`WalError::Corrupt`], and start-up stops.
//!
//! The same rule covers the header: a newest segment whose header is missing or
//! damaged and that holds no valid entry (a crash while creating it) is removed;
//! with a valid entry after a bad header it is corrupt.
//!
//! The forward scan tests every byte offset, but [`is_valid_frame_at`] rejects
//! nearly all of them after reading the length and walking a few op headers,
//! so a torn tail of a few MiB scans in milliseconds. (The one false alarm it
//! can raise: a torn entry whose payload itself embeds a valid WAL entry is
//! reported as corrupt. That errs on the safe side.)

use std::path::Path;

use super::{
    SegmentId, WalError,
    segment::{
        FRAME_HEADER_LEN, HEADER_LEN, MIN_BODY_LEN, check_header, is_valid_frame_at, read_frame,
    },
};

/// What the newest segment's bytes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte belongs to a verified entry.
    Clean,
    /// A torn write starts at `offset`; everything from there is to be dropped.
    Torn { offset: usize, reason: String },
    /// The header is missing or damaged and no entry follows: the file was
    /// being created when the process stopped.
    NoHeader { reason: String },
}

/// Classify the contents of the newest segment.
pub(crate) fn inspect(data: &[u8], id: SegmentId, path: &Path) -> Result<Tail, WalError> {
    if let Err(reason) = check_header(data, Some(id)) {
        return match find_valid_frame(data, 0) {
            Some(at) => Err(WalError::corrupt(
                path,
                0,
                format!("{reason}; but a valid entry follows at offset {at}"),
            )),
            None => Ok(Tail::NoHeader { reason }),
        };
    }
    let mut pos = HEADER_LEN;
    while pos < data.len() {
        match read_frame(data, pos) {
            Ok(frame) => pos = frame.end,
            Err(e) => {
                return match find_valid_frame(data, pos + 1) {
                    Some(at) => Err(WalError::corrupt(
                        path,
                        pos,
                        format!(
                            "{e}; but a valid entry follows at offset {at}, so this is not a torn write"
                        ),
                    )),
                    None => Ok(Tail::Torn {
                        offset: pos,
                        reason: e.to_string(),
                    }),
                };
            }
        }
    }
    Ok(Tail::Clean)
}

/// The first offset at or after `from` where a valid entry starts.
fn find_valid_frame(data: &[u8], from: usize) -> Option<usize> {
    let last = data.len().checked_sub(FRAME_HEADER_LEN + MIN_BODY_LEN)?;
    (from..=last).find(|&at| is_valid_frame_at(data, at))
}

/// What [`recover_newest`] did to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// The file is intact; `len` bytes.
    Intact { len: u64 },
    /// A torn tail was cut off; the file now has `len` bytes.
    Truncated { len: u64 },
    /// The file held no header and no entry and was deleted.
    Removed,
}

/// Inspect the newest segment and repair a torn tail in place (truncate and
/// fsync, or remove a header-less file). The caller fsyncs the directory after
/// a removal.
pub(crate) fn recover_newest(path: &Path, id: SegmentId) -> Result<Recovered, WalError> {
    let data = std::fs::read(path).map_err(|e| WalError::io("read segment", path, e))?;
    match inspect(&data, id, path)? {
        Tail::Clean => Ok(Recovered::Intact {
            len: data.len() as u64,
        }),
        Tail::Torn { offset, reason } => {
            let dropped = data.len() - offset;
            if data[offset..].iter().all(|&b| b == 0) {
                // Most often the zeros the writer puts ahead of small
                // entries (`writer.rs`); at worst a write whose size reached
                // the disk before its data, never acknowledged.
                tracing::info!(
                    file = %path.display(),
                    offset,
                    bytes_dropped = dropped,
                    "WAL: cutting the zeros after the last entry of the newest segment"
                );
            } else {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes_dropped = dropped,
                    %reason,
                    "WAL: truncating torn write at the end of the newest segment"
                );
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| WalError::io("open segment to truncate torn tail", path, e))?;
            f.set_len(offset as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| WalError::io("truncate torn tail of segment", path, e))?;
            Ok(Recovered::Truncated { len: offset as u64 })
        }
        Tail::NoHeader { reason } => {
            tracing::warn!(
                file = %path.display(),
                offset = 0,
                bytes_dropped = data.len(),
                %reason,
                "WAL: removing newest segment that was never completely created (no header, no entries)"
            );
            std::fs::remove_file(path)
                .map_err(|e| WalError::io("remove header-less segment", path, e))?;
            Ok(Recovered::Removed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::segment::{encode_header, tests::build_entry};

    const ID: SegmentId = SegmentId::new(3);

    fn segment(entries: &[Vec<(u64, Vec<u8>)>]) -> (Vec<u8>, Vec<usize>) {
        let mut data = encode_header(ID).to_vec();
        let mut starts = Vec::new();
        for e in entries {
            starts.push(data.len());
            data.extend_from_slice(&build_entry(e));
        }
        (data, starts)
    }

    fn entries() -> Vec<Vec<(u64, Vec<u8>)>> {
        (0..4u64)
            .map(|i| {
                vec![
                    (i, format!("cpu,host=h{i} usage={i}").into_bytes()),
                    (i + 100, vec![i as u8; 50]),
                ]
            })
            .collect()
    }

    #[test]
    fn clean_segment() {
        let (data, _) = segment(&entries());
        assert_eq!(inspect(&data, ID, Path::new("x")).unwrap(), Tail::Clean);
    }

    #[test]
    fn every_cut_of_the_last_entry_is_torn_at_its_start() {
        let (data, starts) = segment(&entries());
        let last = *starts.last().unwrap();
        for cut in last + 1..data.len() {
            match inspect(&data[..cut], ID, Path::new("x")).unwrap() {
                Tail::Torn { offset, .. } => assert_eq!(offset, last, "cut {cut}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // A cut exactly at an entry boundary is a clean (shorter) segment.
        assert_eq!(
            inspect(&data[..last], ID, Path::new("x")).unwrap(),
            Tail::Clean
        );
    }

    #[test]
    fn zero_and_garbage_tails_are_torn() {
        let (mut data, _) = segment(&entries());
        let end = data.len();
        data.extend_from_slice(&[0u8; 8192]);
        assert!(
            matches!(inspect(&data, ID, Path::new("x")).unwrap(), Tail::Torn { offset, .. } if offset == end)
        );
        data.truncate(end);
        // Deterministic pseudo-random garbage.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..65_536 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x as u8);
        }
        assert!(
            matches!(inspect(&data, ID, Path::new("x")).unwrap(), Tail::Torn { offset, .. } if offset == end)
        );
    }

    #[test]
    fn damaged_middle_entry_is_corrupt() {
        let (data, starts) = segment(&entries());
        // One flip in each byte of entry 1: length, checksum, body.
        for at in starts[1]..starts[2] {
            let mut d = data.clone();
            d[at] ^= 0x10;
            let err = inspect(&d, ID, Path::new("/wal/x.wal")).unwrap_err();
            match &err {
                WalError::Corrupt { offset, .. } => {
                    assert_eq!(*offset as usize, starts[1], "flip at {at}")
                }
                other => panic!("flip at {at}: {other}"),
            }
            assert!(err.to_string().contains("/wal/x.wal"));
        }
    }

    #[test]
    fn header_damage() {
        let (data, _) = segment(&entries());
        let mut d = data.clone();
        d[2] ^= 1;
        assert!(matches!(
            inspect(&d, ID, Path::new("x")),
            Err(WalError::Corrupt { offset: 0, .. })
        ));
        // Header-only, damaged: nothing to lose.
        assert!(matches!(
            inspect(&d[..HEADER_LEN], ID, Path::new("x")),
            Ok(Tail::NoHeader { .. })
        ));
        assert!(matches!(
            inspect(&[], ID, Path::new("x")),
            Ok(Tail::NoHeader { .. })
        ));
        assert!(matches!(
            inspect(&[0; 7], ID, Path::new("x")),
            Ok(Tail::NoHeader { .. })
        ));
    }
}
