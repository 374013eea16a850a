//! Start-up replay: every WAL segment, oldest first, into the buffer through
//! the sink chain minus the WAL.
//!
//! Each record holds a write's validated columns; `WriteHandler::replay`
//! resolves their namespace, table and partition in the catalog and applies
//! them with the original sequence number (see `write/replay.rs`). A segment
//! that cannot be read (corruption; the torn tail of the newest segment was
//! already truncated by `Wal::open`), a record that does not decode, or one
//! whose columns the catalog does not know stops start-up with an error
//! naming the segment: replay never skips data silently.

use std::time::Instant;

use super::InitError;
use crate::dml_sink::DmlSink;
use std::sync::Arc;

use crate::wal::{SegmentFile, SegmentId};
use crate::write::{ReplayState, WriteHandler};

/// The sequence numbers each replayed segment holds.
pub(super) type ReplayedSegments = Vec<(SegmentId, Arc<[u64]>)>;

/// Replays `segments`; returns (ops, rows, each segment's sequence numbers).
pub(super) async fn replay<S: DmlSink>(
    segments: &[SegmentFile],
    handler: &WriteHandler<S>,
) -> Result<(u64, u64, ReplayedSegments), InitError> {
    let mut replayed = Vec::with_capacity(segments.len());
    let start = Instant::now();
    let total_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let (mut ops, mut rows) = (0u64, 0u64);
    let mut state = ReplayState::default();
    for (i, seg) in segments.iter().enumerate() {
        let seg_start = Instant::now();
        let reader = seg.reader()?;
        let (mut seg_ops, mut seg_rows) = (0u64, 0u64);
        let mut seqs = Vec::new();
        for entry in reader {
            let (seq, payload) = entry?;
            seqs.push(seq);
            let n = handler
                .replay_with(&mut state, seq, payload)
                .await
                .map_err(|e| {
                    InitError::Replay(format!("segment {}: op {seq}: {e}", seg.path.display()))
                })?;
            seg_ops += 1;
            seg_rows += n as u64;
        }
        // A run of small records ends with its segment.
        let n = handler
            .finish_run(&mut state)
            .await
            .map_err(|e| InitError::Replay(format!("segment {}: {e}", seg.path.display())))?;
        seg_rows += n as u64;
        ops += seg_ops;
        rows += seg_rows;
        seqs.sort_unstable();
        seqs.dedup();
        replayed.push((seg.id, seqs.into()));
        tracing::info!(
            segment = %seg.path.display(),
            n = i + 1,
            of = segments.len(),
            ops = seg_ops,
            rows = seg_rows,
            elapsed = ?seg_start.elapsed(),
            "replayed WAL segment"
        );
    }
    if !segments.is_empty() {
        let secs = start.elapsed().as_secs_f64();
        tracing::info!(
            segments = segments.len(),
            bytes = total_bytes,
            ops,
            rows,
            seconds = secs,
            rows_per_sec = (rows as f64 / secs.max(1e-9)) as u64,
            "WAL replay done"
        );
    }
    Ok((ops, rows, replayed))
}
