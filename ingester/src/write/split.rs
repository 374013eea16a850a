//! Parsing one large line protocol body on two cores.
//!
//! # Why
//!
//! Parse + validate costs about 1 µs per line on one core, so a 5,000-line
//! request spends ~5 ms there before the WAL sees it. When nothing else is
//! being validated, the other core is idle: parsing the body's second half
//! there halves that part of the request's latency (target 2c in
//! `docs/benchmarks.md`). Under full load every core already validates some
//! request, and splitting would only add the merge, so a body is split only
//! when fewer requests than cores are being validated ([`Validating`]).
//!
//! # Where to cut
//!
//! Line boundaries are decided by a state machine (quotes and escapes; see
//! `line_protocol::scan`), so a newline in the middle of a body is not
//! always the end of a line. A body is cut only where that is certain: at a
//! newline not preceded by a backslash, with no `"` anywhere before it.
//! Without a quote, no line before the cut is inside a string, and a
//! newline is then a line's end unless escaped (comments end at any
//! newline). Bodies with string fields before the middle are not split.
//!
//! # Same result as one pass
//!
//! Both halves are validated against the catalog's cached schema, the
//! second with line numbers continuing the first's. [`merge`] then joins
//! them: a column that the halves typed differently is the type conflict a
//! single pass would have found (named at the second half's line), tables
//! keep their order of first appearance, and each table's rows keep body
//! order (the first half's, then the second's), so a repeated point still
//! resolves to the later line. One difference: when both halves have an
//! error, the first half's is reported, even if a conflict between the
//! halves comes earlier in the body; the request is refused either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::compute::concat_batches;

use super::WriteError;
use super::builder::BuiltTable;
use super::wal_record::column_type_of;
use crate::schema::{align_batch, union_schema};

/// Bodies shorter than this are parsed in one piece: the hand-off to
/// another thread and the merge would cost more than the half saved.
pub(crate) const MIN_SPLIT_BYTES: usize = 128 << 10;

/// Where to cut `body` for two parts of about equal size: `(offset, line)`,
/// the byte offset where the second part starts and its physical line
/// number. `None` if no safe cut exists (see the module docs).
pub(crate) fn split_point(body: &[u8]) -> Option<(usize, usize)> {
    let middle = body.len() / 2;
    let mut from = middle;
    let newline = loop {
        let at = from + memchr::memchr(b'\n', body.get(from..)?)?;
        if at == 0 || body[at - 1] != b'\\' {
            break at;
        }
        from = at + 1;
    };
    let head = &body[..=newline];
    if memchr::memchr(b'"', head).is_some() {
        return None;
    }
    let start = newline + 1;
    if start >= body.len() {
        return None;
    }
    let line = 1 + memchr::memchr_iter(b'\n', head).count();
    Some((start, line))
}

/// Where to cut `body` if it is worth it and a second core is free (taken
/// for the request in `validating` then).
pub(crate) fn split_point_of(
    body: &[u8],
    validating: &mut Validating,
    cores: usize,
) -> Option<(usize, usize)> {
    if body.len() < MIN_SPLIT_BYTES {
        return None;
    }
    let at = split_point(body)?;
    validating.take_second_core(cores).then_some(at)
}

/// Joins the results of a body's two halves into what one pass over the
/// whole body gives (see the module docs).
pub(crate) fn merge(
    head: Result<Vec<BuiltTable>, WriteError>,
    tail: Result<Vec<BuiltTable>, WriteError>,
) -> Result<Vec<BuiltTable>, WriteError> {
    let (mut head, tail) = match (head, tail) {
        (Err(WriteError::Empty), tail) => return tail,
        (Err(e), _) => return Err(e),
        (Ok(head), Err(WriteError::Empty)) => return Ok(head),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(head), Ok(tail)) => (head, tail),
    };
    for t in tail {
        match head.iter_mut().find(|h| h.name == t.name) {
            Some(h) => join(h, t)?,
            None => head.push(t),
        }
    }
    Ok(head)
}

/// Appends the rows of `tail` to `head`, of the same table.
fn join(head: &mut BuiltTable, tail: BuiltTable) -> Result<(), WriteError> {
    let (a, b) = (head.batch.schema(), tail.batch.schema());
    for f in b.fields() {
        let Ok(existing) = a.field_with_name(f.name()) else {
            continue;
        };
        if existing.data_type() == f.data_type() {
            continue;
        }
        let (Some(existing), Some(requested)) = (
            column_type_of(existing.data_type()),
            column_type_of(f.data_type()),
        ) else {
            return Err(WriteError::Internal(format!(
                "column `{}` of table `{}` has an unexpected Arrow type",
                f.name(),
                head.name
            )));
        };
        return Err(WriteError::ColumnTypeConflict {
            line: tail
                .new_columns
                .iter()
                .find(|c| c.name == *f.name())
                .map(|c| c.first_line),
            table: head.name.clone(),
            column: f.name().clone(),
            existing,
            requested,
        });
    }
    let batch = if a == b {
        concat_batches(&a, [&head.batch, &tail.batch])
    } else {
        let schema = union_schema([&a, &b]);
        align_batch(&head.batch, &schema)
            .and_then(|h| Ok((h, align_batch(&tail.batch, &schema)?)))
            .and_then(|(h, t)| concat_batches(&schema, [&h, &t]))
    }
    .map_err(|e| WriteError::Internal(format!("join the halves of table `{}`: {e}", head.name)))?;
    head.batch = batch;
    for c in tail.new_columns {
        if !head.new_columns.iter().any(|h| h.name == c.name) {
            head.new_columns.push(c);
        }
    }
    // Validated against two lookups of the cache: if the schema changed in
    // between, let the catalog resolve the table again.
    let same = match (&head.cached, &tail.cached) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        (None, None) => true,
        _ => false,
    };
    if !same {
        head.cached = None;
    }
    Ok(())
}

/// Requests being validated now, across the process.
static VALIDATING: AtomicUsize = AtomicUsize::new(0);

/// Counts one request in [`VALIDATING`] while alive (two once split, as it
/// then keeps two cores busy).
pub(crate) struct Validating(usize);

impl Validating {
    pub(crate) fn enter() -> Self {
        VALIDATING.fetch_add(1, Ordering::AcqRel);
        Self(1)
    }

    /// Takes a second core for this request if one is free: fewer requests
    /// (a split one counting twice) than `cores` are being validated.
    pub(crate) fn take_second_core(&mut self, cores: usize) -> bool {
        if self.0 > 1 {
            return false;
        }
        if VALIDATING.fetch_add(1, Ordering::AcqRel) >= cores {
            VALIDATING.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.0 = 2;
        true
    }
}

impl Drop for Validating {
    fn drop(&mut self) {
        VALIDATING.fetch_sub(self.0, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, ArrayData};
    use arrow::datatypes::DataType;

    use super::*;
    use crate::write::lp;
    use crate::write::request::Precision;

    /// A table as compared: name, new columns, and columns by name (tags
    /// as plain strings, so dictionaries built apart compare by value).
    type Normal = (String, Vec<String>, Vec<(String, ArrayData)>);

    fn normal(tables: Result<Vec<BuiltTable>, WriteError>) -> Result<Vec<Normal>, String> {
        let tables = tables.map_err(|e| e.to_string())?;
        Ok(tables
            .into_iter()
            .map(|t| {
                let new = t
                    .new_columns
                    .iter()
                    .map(|c| format!("{} {:?} {}", c.name, c.column_type, c.first_line))
                    .collect();
                let mut cols: Vec<(String, ArrayData)> = t
                    .batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(t.batch.columns())
                    .map(|(f, c)| {
                        let c = match c.data_type() {
                            DataType::Dictionary(..) => {
                                arrow::compute::cast(c, &DataType::Utf8).expect("cast")
                            }
                            _ => Arc::clone(c),
                        };
                        (f.name().clone(), c.to_data())
                    })
                    .collect();
                cols.sort_by(|a, b| a.0.cmp(&b.0));
                (t.name, new, cols)
            })
            .collect())
    }

    fn whole(body: &[u8]) -> Result<Vec<BuiltTable>, WriteError> {
        lp::build_tables(body, Precision::Nanoseconds, 0, &|_| None)
    }

    fn halves(body: &[u8], (at, line): (usize, usize)) -> Result<Vec<BuiltTable>, WriteError> {
        let part = |b: &[u8], l| lp::build_part(b, l, Precision::Nanoseconds, 0, &|_| None);
        merge(part(&body[..at], 1), part(&body[at..], line))
    }

    #[test]
    fn cuts_after_the_middle_at_a_certain_line_end() {
        let body = b"a f=1 1\nb f=2 2\nc f=3 3\nd f=4 4\n";
        let (at, line) = split_point(body).expect("cut");
        assert_eq!((&body[at..at + 1], line), (&b"d"[..], 4));

        // An escaped newline is not a line's end: the cut moves past it.
        let body = b"a f=1 1\nb f=2 2,t=xxxxxx\\\ny f=2 2\nc f=3 3\nd f=1 1\n";
        assert_eq!(body[body.len() / 2], b'\n');
        let (at, line) = split_point(body).expect("cut");
        assert_eq!((&body[at..at + 1], line), (&b"c"[..], 4));

        // A quote before the cut: a newline may be inside a string.
        assert_eq!(split_point(b"a s=\"x\n\" 1\nb f=1 1\nc f=2 2\n"), None);
        // A quote after it is the second half's business.
        assert!(split_point(b"a f=1 1\nb f=2 2\nc f=3 3\nd s=\"x\" 4\n").is_some());
        // Nothing after the last newline, or no newline at all.
        assert_eq!(split_point(b"a f=1 1\nbbbbbbbbbbbbbbbbbb f=2 2\n"), None);
        assert_eq!(split_point(b"a f=1 1"), None);
    }

    #[test]
    fn a_conflict_between_the_halves_is_the_conflict_of_one_pass() {
        let body = b"cpu v=1i 1\ncpu w=1 2\ncpu v=2 3\ncpu w=2 4\n";
        let cut = split_point(body).expect("cut");
        assert_eq!(cut.1, 3);
        let one = whole(body).expect_err("conflict");
        let two = halves(body, cut).expect_err("conflict");
        assert!(
            matches!(two, WriteError::ColumnTypeConflict { line: Some(3), .. }),
            "{two}"
        );
        assert_eq!(one.to_string(), two.to_string());

        // A tag in one half, a field of its name in the other.
        let body = b"cpu,x=a v=1 1\ncpu v=1 2\ncpu x=2 3\ncpu v=2 4\n";
        let cut = split_point(body).expect("cut");
        assert_eq!(
            whole(body).expect_err("conflict").to_string(),
            halves(body, cut).expect_err("conflict").to_string()
        );
    }

    #[test]
    fn errors_of_the_second_half_name_the_bodys_line() {
        let body = b"cpu v=1 1\ncpu v=2 2\n\n# note\ncpu v=3 3\ncpu v= 4\n";
        let cut = split_point(body).expect("cut");
        let one = whole(body).expect_err("parse error").to_string();
        assert!(one.contains("line 6"), "{one}");
        assert_eq!(halves(body, cut).expect_err("parse error").to_string(), one);
    }

    #[test]
    fn a_half_of_comments_only_is_no_error() {
        let body = b"# one\n# two\n# three\ncpu v=1 1\n";
        let cut = split_point(body).expect("cut");
        assert_eq!(normal(halves(body, cut)), normal(whole(body)));
    }

    proptest::proptest! {
        /// Two halves merged give exactly what one pass over the body
        /// gives: tables in order, rows in order, new columns with their
        /// first lines, and the same error, across mixed tables, tag sets,
        /// new columns, types (conflicts included), blanks and comments.
        #[test]
        fn two_halves_give_what_one_pass_gives(
            lines in proptest::collection::vec(
                (0usize..4, proptest::collection::vec((0usize..6, 0usize..5), 1..5)),
                2..60,
            ),
            mixed_types in proptest::bool::ANY,
        ) {
            const HEADS: [&str; 4] = ["cpu,host=a", "cpu,host=b,dc=x", "mem,host=a", "# comment"];
            const KEYS: [&str; 6] = ["usage_user", "usage_idle", "f", "g\\ x", "dc", "n"];
            const VALUES: [&str; 5] = ["1.5", "58.1", "2i", "3u", "t"];
            let mut body = String::new();
            for (i, (head, fields)) in lines.iter().enumerate() {
                if *head == 3 {
                    body.push_str("# comment\n\n");
                    continue;
                }
                let fields: Vec<String> = fields
                    .iter()
                    .map(|&(k, v)| {
                        let v = if mixed_types { v } else { v % 2 };
                        format!("{}={}", KEYS[k], VALUES[v])
                    })
                    .collect();
                body.push_str(&format!("{} {} {i}\n", HEADS[*head], fields.join(",")));
            }
            let body = body.as_bytes();
            let Some(cut) = split_point(body) else {
                return Ok(());
            };
            let one = normal(whole(body));
            let two = normal(halves(body, cut));
            let tail = normal(lp::build_part(&body[cut.0..], cut.1, Precision::Nanoseconds, 0, &|_| None));
            match (&one, &tail) {
                // The documented difference: a conflict between the halves
                // that comes before an error inside the second half, which
                // is reported instead.
                (Err(e), Err(t)) if e.contains("conflicts") && two.as_ref().err() == Some(t) => {}
                _ => proptest::prop_assert_eq!(&one, &two, "{}", String::from_utf8_lossy(body)),
            }
        }
    }
}
