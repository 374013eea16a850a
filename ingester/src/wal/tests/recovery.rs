//! Start-up recovery through the public API: torn tails are cut, everything
//! else is reported as corruption with file and offset.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

/// Truncate the last entry at every byte offset: the entries before it are
/// all served, the file is cut back to the last good entry, and the WAL
/// keeps working after reopening.
#[tokio::test]
async fn torn_last_entry_at_every_byte_offset() {
    let src = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(src.path())).unwrap();
    for s in 0..5 {
        within(wal.append(&op(s))).await.unwrap();
    }
    let last_start = wal.segments().open_segment_bytes as usize;
    within(wal.append(&op(5))).await.unwrap();
    let full = wal.segments().open_segment_bytes as usize;
    within(wal.shutdown()).await.unwrap();
    let name = segment_path(Path::new(""), SegmentId::new(0));
    let bytes = std::fs::read(src.path().join(&name)).unwrap();
    assert_eq!(bytes.len(), full);

    for cut in last_start + 1..full {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&name);
        std::fs::write(&path, &bytes[..cut]).unwrap();

        let (wal, files) = open(config(dir.path())).unwrap();
        assert_eq!(files.len(), 1, "cut {cut}");
        assert_eq!(files[0].bytes as usize, last_start, "cut {cut}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            last_start,
            "cut {cut}"
        );
        assert_eq!(replay(&files), expected(0..5), "cut {cut}");
        // Appending after recovery and reopening again: for a sample of the
        // cuts only, as each round costs several fsyncs.
        if !(cut % 8 == 0 || cut == last_start + 1 || cut == full - 1) {
            within(wal.shutdown()).await.unwrap();
            continue;
        }
        assert_eq!(
            within(wal.append(&op(100))).await.unwrap(),
            SegmentId::new(1)
        );
        within(wal.shutdown()).await.unwrap();

        let (wal, files) = open(config(dir.path())).unwrap();
        assert_eq!(replay(&files), expected((0..5).chain([100])), "cut {cut}");
        within(wal.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn zero_tail_and_headerless_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    within(wal.append(&op(1))).await.unwrap();
    let good = wal.segments().open_segment_bytes;
    within(wal.shutdown()).await.unwrap();
    let seg0 = segment_path(dir.path(), SegmentId::new(0));
    // File size reached the disk, the data blocks did not.
    let mut data = std::fs::read(&seg0).unwrap();
    data.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg0, &data).unwrap();
    // And a newer segment whose creation was cut short.
    let seg1 = segment_path(dir.path(), SegmentId::new(1));
    std::fs::write(&seg1, &b"SLCW"[..]).unwrap();

    // First open: seg1 is the newest; it is removed.
    let (wal, files) = open(config(dir.path())).unwrap();
    assert!(!seg1.exists());
    assert_eq!(files.iter().map(|f| f.id.get()).collect::<Vec<_>>(), [0]);
    // Ids never go back, even past a removed segment.
    assert_eq!(wal.segments().open_segment, SegmentId::new(2));
    within(wal.shutdown()).await.unwrap();
    std::fs::remove_file(segment_path(dir.path(), SegmentId::new(2))).unwrap();

    // Now seg0 is the newest: its zero tail is cut.
    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(files[0].bytes, good);
    assert_eq!(std::fs::metadata(&seg0).unwrap().len(), good);
    assert_eq!(replay(&files), expected([1]));
    within(wal.shutdown()).await.unwrap();
}

/// Two segments written by the WAL, one op per entry.
struct Fixture {
    older: Vec<u8>,
    newest: Vec<u8>,
    /// Start offset of each entry, and the end of the file last.
    older_entries: Vec<usize>,
    newest_entries: Vec<usize>,
}

const PER_SEGMENT: u64 = 6;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = open(config(dir.path())).unwrap();
            let mut starts = [Vec::new(), Vec::new()];
            for (i, starts) in starts.iter_mut().enumerate() {
                for s in 0..PER_SEGMENT {
                    starts.push(wal.segments().open_segment_bytes as usize);
                    within(wal.append(&op(i as u64 * PER_SEGMENT + s)))
                        .await
                        .unwrap();
                }
                starts.push(wal.segments().open_segment_bytes as usize);
                if i == 0 {
                    within(wal.rotate()).await.unwrap();
                }
            }
            within(wal.shutdown()).await.unwrap();
            let read = |id| std::fs::read(segment_path(dir.path(), SegmentId::new(id))).unwrap();
            let [older_entries, newest_entries] = starts;
            Fixture {
                older: read(0),
                newest: read(1),
                older_entries,
                newest_entries,
            }
        })
    })
}

/// Index of the entry holding byte `at`, or `None` for the file header.
fn entry_of(starts: &[usize], at: usize) -> Option<usize> {
    if at < HEADER_LEN {
        return None;
    }
    Some(
        starts
            .iter()
            .rposition(|&s| s <= at)
            .expect("inside an entry"),
    )
}

fn check_corrupt(err: &WalError, file: u64, want_offset: u64) {
    let name = format!("{file:020}.wal");
    match err {
        WalError::Corrupt { path, offset, .. } => {
            assert!(path.ends_with(&name), "{path:?}");
            assert_eq!(*offset, want_offset, "{err}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&name) && msg.contains(&format!("offset {want_offset}")),
        "{msg}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A bit flip anywhere in an older segment: `Wal::open` leaves it alone
    /// (only the newest can be torn), and replay stops with `Corrupt` at the
    /// entry holding the flip, after serving every entry before it.
    #[test]
    fn bit_flip_in_older_segment_is_corrupt(bit in any::<prop::sample::Index>()) {
        let f = fixture();
        let bit = bit.index(f.older.len() * 8);
        let mut older = f.older.clone();
        older[bit / 8] ^= 1 << (bit % 8);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), SegmentId::new(0)), &older).unwrap();
        std::fs::write(segment_path(dir.path(), SegmentId::new(1)), &f.newest).unwrap();

        let (wal, files) = open(config(dir.path())).unwrap();
        let mut served = Vec::new();
        let err = match files[0].reader() {
            Err(e) => e,
            Ok(r) => {
                let mut err = None;
                for x in r {
                    match x {
                        Ok(op) => served.push(op),
                        Err(e) => { err = Some(e); break; }
                    }
                }
                err.expect("a flipped bit must be detected")
            }
        };
        let entry = entry_of(&f.older_entries, bit / 8);
        let offset = entry.map_or(0, |e| f.older_entries[e]);
        check_corrupt(&err, 0, offset as u64);
        prop_assert_eq!(served, expected(0..entry.unwrap_or(0) as u64));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(wal.shutdown()).unwrap();
    }

    /// A bit flip in the newest segment's header or in any entry but the last
    /// (valid entries follow it, so it is not a torn write) stops `Wal::open`.
    #[test]
    fn bit_flip_in_middle_of_newest_segment_is_corrupt(bit in any::<prop::sample::Index>()) {
        let f = fixture();
        let last_start = f.newest_entries[f.newest_entries.len() - 2];
        let bit = bit.index(last_start * 8);
        let mut newest = f.newest.clone();
        newest[bit / 8] ^= 1 << (bit % 8);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), SegmentId::new(0)), &f.older).unwrap();
        let path = segment_path(dir.path(), SegmentId::new(1));
        std::fs::write(&path, &newest).unwrap();

        let err = open(config(dir.path())).unwrap_err();
        let offset = entry_of(&f.newest_entries, bit / 8).map_or(0, |e| f.newest_entries[e]);
        check_corrupt(&err, 1, offset as u64);
        // Nothing was "repaired".
        prop_assert_eq!(std::fs::read(&path).unwrap(), newest);
        prop_assert!(!segment_path(dir.path(), SegmentId::new(2)).exists());
    }

    /// A bit flip in the newest segment's LAST entry is indistinguishable
    /// from a torn write: that entry alone is dropped.
    #[test]
    fn bit_flip_in_last_entry_of_newest_segment_drops_only_it(off in any::<prop::sample::Index>(), b in 0u8..8) {
        let f = fixture();
        let last_start = f.newest_entries[f.newest_entries.len() - 2];
        let at = last_start + off.index(f.newest.len() - last_start);
        let mut newest = f.newest.clone();
        newest[at] ^= 1 << b;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), SegmentId::new(0)), &f.older).unwrap();
        std::fs::write(segment_path(dir.path(), SegmentId::new(1)), &newest).unwrap();

        let (wal, files) = open(config(dir.path())).unwrap();
        prop_assert_eq!(files[1].bytes as usize, last_start);
        prop_assert_eq!(replay(&files), expected(0..2 * PER_SEGMENT - 1));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(wal.shutdown()).unwrap();
    }
}
