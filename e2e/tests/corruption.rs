//! Damaged WAL segments on disk.
//!
//! (a) A flipped bit inside an entry of a segment that is not the last
//!     (or inside an entry that is followed by a valid one): start-up
//!     stops with a non-zero exit and an error naming the file and a byte
//!     offset. Never silent loss.
//! (b) The newest segment cut short inside its last entry (a torn write):
//!     start-up truncates it with a warning and serves every row of the
//!     complete writes; the WAL keeps working afterwards.
//!
//! Segment layout (wal/segment.rs): a 16-byte header, then entries of
//! `len u32 LE | crc32c u32 LE | body[len]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_e2e::{Ingester, within};

const NS: &str = "corrupt";
const TABLE: &str = "m";
const HEADER_LEN: usize = 16;
const FRAME_HEADER_LEN: usize = 8;

/// Segment files of a WAL directory, oldest first.
fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(wal)
        .expect("list WAL dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// `(offset, body_len)` of each entry of a segment file.
fn entries(bytes: &[u8]) -> Vec<(usize, usize)> {
    assert!(bytes.len() >= HEADER_LEN, "segment shorter than its header");
    assert_eq!(&bytes[..6], b"SLCWAL", "segment magic");
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos + FRAME_HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        assert!(
            pos + FRAME_HEADER_LEN + len <= bytes.len(),
            "entry at {pos} runs past the end"
        );
        out.push((pos, len));
        pos += FRAME_HEADER_LEN + len;
    }
    assert_eq!(pos, bytes.len(), "trailing bytes after the last entry");
    out
}

/// Rows `range` of the test table, `n` as the key.
fn lines(range: std::ops::Range<u64>) -> String {
    range
        .map(|i| {
            format!(
                "{TABLE},host=h{} n={i}i,f={}.5 {}\n",
                i % 7,
                i,
                sluice_e2e::data::BASE_TIME + i as i64
            )
        })
        .collect()
}

/// The sorted `n` values of the table (with persisted data).
async fn ns_served(ing: &Ingester) -> Vec<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let r = ing
        .query_table_with_persisted(NS, TABLE)
        .await
        .expect("query");
    let mut v: Vec<i64> = r
        .batches
        .iter()
        .flat_map(|b| {
            sluice_e2e::data::column(b, "n")
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    v.sort_unstable();
    v
}

/// The first `offset <digits>` in `log`.
fn logged_offset(log: &str) -> Option<u64> {
    let i = log.find("offset")?;
    let rest = log[i + "offset".len()..].trim_start_matches([' ', '=', ':']);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn flip_bit(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).expect("write segment");
}

/// Starts the ingester expecting it to fail; returns its log.
async fn expect_start_failure(ing: &mut Ingester, what: &str) -> String {
    ing.spawn().expect("spawn");
    let st = ing
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{what}: the ingester must stop by itself: {e:#}"));
    let log = ing.log();
    assert!(!st.success(), "{what}: start must fail; log:\n{log}");
    assert!(!log.contains("panicked"), "{what}: panic; log:\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_an_older_segment_stops_start_up() {
    within(Duration::from_secs(120), "bit flip test", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let objects = tmp.path().join("objects");
        let mut ing = Ingester::new(tmp.path().join("data"))
            .arg("--object-store")
            .arg(format!("file://{}", objects.display()));
        ing.start().await.expect("start");
        // Persisting must fail, so that the closed segment is kept: put a
        // file where the object store's directory was.
        if objects.exists() {
            std::fs::remove_dir_all(&objects).expect("remove objects dir");
        }
        std::fs::write(&objects, b"not a directory").expect("block object store");

        for k in 0..3 {
            ing.write_lp(NS, &lines(k * 100..(k + 1) * 100))
                .await
                .expect("write before rotation");
        }
        let rotated = ing.rotate_wal().await.expect("RotateWal");
        for k in 3..5 {
            ing.write_lp(NS, &lines(k * 100..(k + 1) * 100))
                .await
                .expect("write after rotation");
        }
        assert!(ing.stop().await.expect("stop").success(), "clean stop");
        std::fs::remove_file(&objects).expect("unblock object store");

        let segs = segments(&ing.wal_dir());
        assert!(
            segs.len() >= 2,
            "two segments expected after RotateWal (closed {}): {segs:?}",
            rotated.closed_segment
        );
        let older = segs
            .iter()
            .find(|p| {
                let bytes = std::fs::read(p).expect("read segment");
                !entries(&bytes).is_empty()
            })
            .expect("an older segment with entries")
            .clone();
        assert_ne!(
            Some(&older),
            segs.last(),
            "the damaged segment is not the newest"
        );
        let bytes = std::fs::read(&older).expect("read");
        let (off, len) = entries(&bytes)[0];
        let at = off + FRAME_HEADER_LEN + len / 2;
        let saved = bytes.clone();
        flip_bit(&older, at);

        let log = expect_start_failure(&mut ing, "bit flip in an older segment").await;
        let name = older
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(
            log.contains(&name),
            "the error names the file {name}; log:\n{log}"
        );
        let reported = logged_offset(&log)
            .unwrap_or_else(|| panic!("the error names a byte offset; log:\n{log}"));
        assert!(
            reported as usize >= off && reported as usize <= at,
            "offset {reported} points at the damaged entry ({off}..={at}); log:\n{log}"
        );
        eprintln!(
            "corruption: bit flip at {at} of {name} refused: {}",
            log.lines()
                .find(|l| l.contains(&name) && l.contains("offset"))
                .unwrap_or_default()
        );

        // A torn tail is only forgiven in the newest segment: an older one
        // cut short is corruption too.
        std::fs::write(&older, &saved[..saved.len() - 3]).expect("truncate older segment");
        let log = expect_start_failure(&mut ing, "older segment cut short").await;
        assert!(log.contains(&name), "names the file {name}; log:\n{log}");
        assert!(
            logged_offset(&log).is_some(),
            "names a byte offset; log:\n{log}"
        );

        // Repaired, it starts and serves every row.
        std::fs::write(&older, saved).expect("restore segment");
        ing.start().await.expect("start with the repaired segment");
        let want: Vec<i64> = (0..500).collect();
        assert_eq!(ns_served(&ing).await, want, "rows after repair");
        ing.stop().await.expect("stop");
        ing.assert_no_panic();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_before_a_valid_entry_of_the_newest_segment_stops_start_up() {
    within(
        Duration::from_secs(120),
        "bit flip in newest segment",
        async {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut ing = Ingester::new(tmp.path().join("data"));
            ing.start().await.expect("start");
            for k in 0..3 {
                ing.write_lp(NS, &lines(k * 100..(k + 1) * 100))
                    .await
                    .expect("write");
            }
            assert!(ing.stop().await.expect("stop").success());
            let newest = segments(&ing.wal_dir()).pop().expect("a segment");
            let bytes = std::fs::read(&newest).expect("read");
            let e = entries(&bytes);
            assert!(e.len() >= 3, "one entry per sequential write: {e:?}");
            let (off, len) = e[1];
            flip_bit(&newest, off + FRAME_HEADER_LEN + len / 2);
            let log = expect_start_failure(&mut ing, "bit flip in the middle entry").await;
            let name = newest
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            assert!(log.contains(&name), "names the file; log:\n{log}");
            assert_eq!(
                logged_offset(&log),
                Some(off as u64),
                "names the damaged entry's offset; log:\n{log}"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_entry_is_truncated_with_a_warning() {
    within(Duration::from_secs(120), "torn write test", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ing = Ingester::new(tmp.path().join("data"));
        ing.start().await.expect("start");
        // Sequential writes: one WAL entry each.
        for k in 0..5 {
            ing.write_lp(NS, &lines(k * 100..(k + 1) * 100))
                .await
                .expect("write");
        }
        assert!(ing.stop().await.expect("stop").success());
        let newest = segments(&ing.wal_dir()).pop().expect("a segment");
        let bytes = std::fs::read(&newest).expect("read");
        let e = entries(&bytes);
        assert_eq!(e.len(), 5, "one entry per write: {e:?}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .expect("open segment");
        f.set_len(bytes.len() as u64 - 3).expect("truncate");
        drop(f);

        ing.start().await.expect("start after a torn write");
        let log = ing.log();
        let name = newest
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let warning = log
            .lines()
            .find(|l| l.contains("WARN") && l.to_lowercase().contains("truncat"))
            .unwrap_or_else(|| panic!("a truncation warning; log:\n{log}"));
        assert!(
            warning.contains(&name),
            "the warning names the file: {warning}"
        );
        assert_eq!(
            logged_offset(warning),
            Some(e[4].0 as u64),
            "the warning names the torn entry's offset: {warning}"
        );
        eprintln!("corruption: {warning}");
        // The four complete writes are served, the torn one is not.
        let want: Vec<i64> = (0..400).collect();
        assert_eq!(ns_served(&ing).await, want, "rows after truncation");

        // The WAL goes on: write, crash, and everything is still there.
        ing.write_lp(NS, &lines(1000..1100))
            .await
            .expect("write after truncation");
        ing.kill9();
        ing.start().await.expect("restart after kill");
        let want: Vec<i64> = (0..400).chain(1000..1100).collect();
        assert_eq!(ns_served(&ing).await, want, "rows after a further crash");
        ing.stop().await.expect("stop");
        ing.assert_no_panic();
    })
    .await;
}
