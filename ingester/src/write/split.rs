//! Validating one large line-protocol body on several cores at once.
//!
//! A 5,000-line request takes its tokio worker for ~4 ms of parsing and
//! column building. When the server is busy that is fine: every core is
//! validating some request. When it is not (half load, say), the request
//! waits for one core while the other idles, and that serial stretch is
//! most of a request's latency. So a body over `--write-split-bytes`,
//! arriving while fewer validations run than there are cores, is cut at
//! line boundaries into one piece per idle core; the pieces are built in
//! parallel (the first on the request's own worker, the rest on tokio's
//! blocking threads) and their tables concatenated in body order.
//!
//! The result must be exactly what one pass over the body gives, so:
//!
//! - Cuts are made only where a line certainly ends: a newline preceded by
//!   an even number of backslashes, with no `"` anywhere before it (a
//!   quote may open a string value that runs over newlines; see
//!   `line_protocol/scan.rs`). A body with an early quote is not split.
//! - Any error in any piece, and any disagreement between pieces (one
//!   column with two types), sends the whole body through one pass, which
//!   finds the first error and names its line as it always does. Refused
//!   requests are the cold path; they pay twice.
//! - Rows keep their order (first piece first), so the last of duplicate
//!   rows still wins; columns keep the order of first appearance.

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::builder::{BuiltTable, NewColumn};
use super::lp;
use super::request::Precision;
use crate::catalog::TableSchema;
use crate::schema::align_batch;

/// Where the pieces after the first start: the first line start at or
/// after `body.len() / pieces * i`, for each `i` in `1..pieces`,
/// increasing. Empty when the body cannot be cut safely (a `"` before the
/// last cut) or has too few lines.
pub(super) fn cut_points(body: &[u8], pieces: usize) -> Vec<usize> {
    let mut cuts = Vec::with_capacity(pieces.saturating_sub(1));
    let mut from = 0;
    for i in 1..pieces {
        let target = (body.len() / pieces * i).saturating_sub(1).max(from);
        let Some(at) = line_end_from(body, target) else {
            break;
        };
        if at + 1 >= body.len() {
            break;
        }
        cuts.push(at + 1);
        from = at + 1;
    }
    // No quote may precede a cut: it could open a string that holds newlines.
    match cuts.last() {
        Some(&last) if memchr::memchr(b'"', &body[..last]).is_none() => cuts,
        _ => Vec::new(),
    }
}

/// The first newline at or after `from` that ends a line when no quote
/// precedes it: one with an even number of backslashes before it.
fn line_end_from(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr(b'\n', body.get(from..)?)?;
        let backslashes = body[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Builds the pieces of `body` that start at `cuts` ([`cut_points`]) at
/// once: the first on this thread, the others on tokio's blocking threads;
/// then [`merge`]s them. `None` when a piece was refused (or its task
/// died), or when pieces disagree: the caller then makes one pass, which
/// reports the body's first error as always.
pub(super) async fn build_in_pieces<L>(
    body: &Bytes,
    cuts: &[usize],
    precision: Precision,
    default_time: i64,
    lookup: L,
) -> Option<Vec<BuiltTable>>
where
    L: Fn(&str) -> Option<Arc<TableSchema>> + Clone + Send + 'static,
{
    let first_end = *cuts.first()?;
    let mut later = Vec::with_capacity(cuts.len());
    for (i, &start) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(body.len());
        let piece = body.slice(start..end);
        let lookup = lookup.clone();
        later.push(tokio::task::spawn_blocking(move || {
            lp::build_tables(&piece, precision, default_time, &lookup)
        }));
    }
    let first = lp::build_tables(&body[..first_end], precision, default_time, &lookup);
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut whole = first.is_ok();
    pieces.extend(first.ok());
    for h in later {
        match h.await {
            Ok(Ok(tables)) => pieces.push(tables),
            _ => whole = false,
        }
    }
    if !whole {
        return None;
    }
    merge(pieces, |i| {
        memchr::memchr_iter(b'\n', &body[..cuts[i - 1]]).count()
    })
}

/// The tables of consecutive pieces as one pass over their bodies would
/// have built them. `line_offset(i)` is the number of physical lines
/// before piece `i` (asked only when a piece brings a column new to the
/// catalog, for its first line). `None` when two pieces disagree on a
/// column's type: the caller validates the body in one pass instead.
pub(super) fn merge(
    pieces: Vec<Vec<BuiltTable>>,
    line_offset: impl Fn(usize) -> usize,
) -> Option<Vec<BuiltTable>> {
    let mut pieces = pieces.into_iter().enumerate();
    let (_, mut tables) = pieces.next()?;
    // Per table of `tables`: the batches of the later pieces.
    let mut later: Vec<Vec<RecordBatch>> = tables.iter().map(|_| Vec::new()).collect();
    for (i, piece) in pieces {
        for t in piece {
            let offset = || line_offset(i);
            match tables.iter().position(|e| e.name == t.name) {
                Some(at) => {
                    let into = &mut tables[at];
                    for c in t.new_columns {
                        match into.new_columns.iter().find(|e| e.name == c.name) {
                            Some(e) if e.column_type != c.column_type => return None,
                            Some(_) => {}
                            None => into.new_columns.push(NewColumn {
                                first_line: c.first_line + offset(),
                                ..c
                            }),
                        }
                    }
                    later[at].push(t.batch);
                }
                None => {
                    let new_columns = t
                        .new_columns
                        .into_iter()
                        .map(|c| NewColumn {
                            first_line: c.first_line + offset(),
                            ..c
                        })
                        .collect();
                    tables.push(BuiltTable { new_columns, ..t });
                    later.push(Vec::new());
                }
            }
        }
    }
    for (t, rest) in tables.iter_mut().zip(later) {
        if rest.is_empty() {
            continue;
        }
        t.batch = concat_in_order(&t.batch, &rest)?;
    }
    Some(tables)
}

/// `first` followed by `rest`, columns in order of first appearance
/// (`first`'s, then any new ones), each column null where a batch lacks
/// it. `None` if one name has two types.
fn concat_in_order(first: &RecordBatch, rest: &[RecordBatch]) -> Option<RecordBatch> {
    let schema = if rest.iter().all(|b| b.schema_ref() == first.schema_ref()) {
        Arc::clone(first.schema_ref())
    } else {
        ordered_union(first.schema_ref(), rest)?
    };
    let aligned = std::iter::once(first)
        .chain(rest)
        .map(|b| align_batch(b, &schema))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    concat_batches(&schema, &aligned).ok()
}

/// `first`'s fields, then the others' new ones in order; time stays last,
/// as the builder puts it. `None` if one name has two types.
fn ordered_union(first: &SchemaRef, rest: &[RecordBatch]) -> Option<SchemaRef> {
    let time = crate::schema::TIME_COLUMN;
    let mut fields: Vec<Arc<Field>> = first
        .fields()
        .iter()
        .filter(|f| f.name() != time)
        .cloned()
        .collect();
    for b in rest {
        for f in b.schema_ref().fields() {
            match fields.iter().find(|e| e.name() == f.name()) {
                Some(e) if e.data_type() != f.data_type() => return None,
                Some(_) => {}
                None if f.name() == time => {}
                None => fields.push(Arc::clone(f)),
            }
        }
    }
    fields.push(Arc::new(first.field_with_name(time).ok()?.clone()));
    Some(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_just_after_line_ends() {
        let body = b"a v=1 1\nb v=2 2\nc v=3 3\nd v=4 4\n";
        let cuts = cut_points(body, 2);
        assert_eq!(
            cuts,
            vec![16],
            "the first line start at or after the middle"
        );
        let cuts = cut_points(body, 4);
        assert_eq!(cuts, vec![8, 16, 24]);
        for &c in &cuts {
            assert_eq!(body[c - 1], b'\n');
        }
        // More pieces than lines: only as many cuts as there are lines.
        assert_eq!(cut_points(b"a v=1\nb v=2", 8), vec![6]);
        // One line, or a newline only at the very end: nothing to cut.
        assert!(cut_points(b"a v=1 1\n", 2).is_empty());
        assert!(cut_points(b"a v=1 1", 2).is_empty());
        assert!(cut_points(b"", 2).is_empty());
    }

    #[test]
    fn escaped_newlines_and_quotes_are_not_cut() {
        // The newline after one backslash continues the line; after two
        // (an escaped backslash) it ends it.
        let body = b"a,t=x\\\ny v=1 1\nb,t=x\\\\\nc v=1 1\nd v=2 2\n";
        let cuts = cut_points(body, 2);
        assert_eq!(cuts.len(), 1);
        let at = cuts[0];
        assert_eq!(&body[..at], b"a,t=x\\\ny v=1 1\nb,t=x\\\\\n");
        let body = b"a v=1 1\nb t=\"x\ny\" 2\nc v=1 1\nd v=2 2\ne v=3 3\n";
        assert!(cut_points(body, 2).is_empty(), "a quote before the cut");
        // A quote after the last cut does not matter.
        let body = b"a v=1 1\nb v=1 1\nc v=1 1\nd t=\"x\" 2\n";
        assert_eq!(cut_points(body, 2), vec![24]);
    }
}
