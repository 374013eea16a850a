//! Sort + dedup in memory, for [`compact`](super::compact) input whose
//! sort index fits in the executor's memory pool.
//!
//! The general path (DataFusion's `SortExec` over the packed key, then the
//! streaming [`Dedup`](super::dedup::Dedup)) copies every field twice:
//! sorting each ~8 MiB run (`take`), then merging the runs (`interleave`),
//! plus a third time where duplicates collapse; and its merge compares keys
//! row by row through a loser tree. When the whole input is in memory
//! anyway (the buffer holds it), only the keys need sorting:
//!
//! ```text
//!  per row: (key words, batch, row)  ─▶  stable LSD radix sort on the key
//!   ─▶ groups of equal keys (arrival order within: the sort is stable)
//!   ─▶ fields copied in sorted order run by run (runs of ~64 Ki input rows:
//!      random reads that stay in the cache)
//!   ─▶ per output batch: pick the latest row of each group (latest non-null
//!      per nullable field), tags and time decoded from the key, fields
//!      gathered from the sorted runs (sequential reads in each)
//! ```
//!
//! That is the same two copies as the general path (sorted runs, then their
//! merge), without its comparisons: the merge order is already known.
//!
//! The radix sort skips the key bytes that are equal in every row (the high
//! bits of a tag word, the high bytes of `time`), so a typical partition
//! takes 8–11 byte passes. Its index (two arrays of entries) and the sorted
//! copies are reserved from the DataFusion memory pool; when the reservation is refused the
//! caller takes the spilling `SortExec` path instead, so the memory bound
//! holds either way. Output rows and values are exactly those of the
//! general path (a proptest compares them).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, new_null_array};
use arrow::compute::interleave;
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::CompactError;
use super::key::Keys;
use super::layout::{Layout, Mode, Out};

/// Widest dedup key (in 64-bit words) the in-memory sort handles; wider
/// keys take the general path.
const MAX_WORDS: usize = 4;

/// Input rows per run (see [`Sorter::new`]): a run's values of one column
/// (about 512 KiB of 8-byte values) stay in the cache while it is gathered.
const RUN_ROWS: usize = 64 * 1024;

/// One row of the sort index: its key words, then where it comes from
/// (`batch << 32 | row`, increasing in arrival order; after the sort,
/// `run << 32 | position` in the run's sorted copy).
#[derive(Clone, Copy)]
struct Entry<const N: usize> {
    key: [u64; N],
    src: u64,
}

/// Bytes of memory the in-memory sort reserves for `rows` rows with a key
/// of `words` words (the index and the radix sort's scratch copy).
fn index_bytes(rows: usize, words: usize) -> usize {
    rows.saturating_mul(2 * (8 * words + 8))
}

/// The sorted, deduplicated output of `batches` (checked against the
/// layout, arrival order), in batches of up to `batch_size` rows, or
/// `None` (nothing consumed) when the layout is not packed, the key is
/// too wide, or the pool refuses the memory of the index and of the
/// sorted copies of the fields.
pub(super) fn try_sort(
    layout: &Arc<Layout>,
    batches: &[RecordBatch],
    pool: &Arc<dyn MemoryPool>,
    batch_size: usize,
) -> Option<BoxStream<'static, Result<RecordBatch, CompactError>>> {
    let Mode::Packed { packed, .. } = &layout.mode else {
        return None;
    };
    let words = packed.num_words();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if words > MAX_WORDS || u32::try_from(batches.len()).is_err() {
        return None;
    }
    let reservation = MemoryConsumer::new("sluice compact in-memory sort")
        .with_can_spill(true)
        .register(pool);
    // The index, and the sorted copies of the fields.
    let fields: usize = batches
        .iter()
        .flat_map(|b| {
            layout.outputs.iter().filter_map(move |o| match *o {
                Out::Column { pos, .. } => b
                    .column_by_name(layout.sort_schema.field(pos).name())
                    .map(|c| c.get_array_memory_size()),
                Out::Tag(_) | Out::Time => None,
            })
        })
        .sum();
    reservation
        .try_grow(index_bytes(rows, words).saturating_add(fields))
        .ok()?;
    let layout = Arc::clone(layout);
    let batches = batches.to_vec();
    let batch_size = batch_size.max(1);
    Some(match words {
        1 => sorted::<1>(layout, batches, reservation, batch_size),
        2 => sorted::<2>(layout, batches, reservation, batch_size),
        3 => sorted::<3>(layout, batches, reservation, batch_size),
        _ => sorted::<4>(layout, batches, reservation, batch_size),
    })
}

/// The lazy stream: the sort runs on the first poll (on the executor).
fn sorted<const N: usize>(
    layout: Arc<Layout>,
    batches: Vec<RecordBatch>,
    reservation: MemoryReservation,
    batch_size: usize,
) -> BoxStream<'static, Result<RecordBatch, CompactError>> {
    futures::stream::once(async move {
        let sorter = Sorter::<N>::new(layout, batches, reservation).map_err(CompactError::Dedup)?;
        Ok::<_, CompactError>(futures::stream::unfold(
            (sorter, 0usize),
            move |(sorter, at)| async move {
                if at >= sorter.entries.len() {
                    return None;
                }
                let (batch, next) = sorter.output(at, batch_size);
                Some((batch.map_err(CompactError::Dedup), (sorter, next)))
            },
        ))
    })
    .map(|r| match r {
        Ok(s) => s.boxed(),
        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
    })
    .flatten()
    .boxed()
}

struct Sorter<const N: usize> {
    layout: Arc<Layout>,
    /// Sorted by key; equal keys in arrival order.
    entries: Vec<Entry<N>>,
    /// Per output field column (`Out::Column`), its sorted copy of each
    /// run (all null where a batch lacks it) and whether any value is
    /// null. An entry's `src` is (run, position in the copy).
    fields: Vec<Option<(Vec<ArrayRef>, bool)>>,
    _reservation: MemoryReservation,
}

impl<const N: usize> Sorter<N> {
    fn new(
        layout: Arc<Layout>,
        batches: Vec<RecordBatch>,
        reservation: MemoryReservation,
    ) -> Result<Self, ArrowError> {
        let Mode::Packed { packed, .. } = &layout.mode else {
            return Err(ArrowError::SchemaError(
                "in-memory sort needs a packed key".into(),
            ));
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut entries: Vec<Entry<N>> = Vec::with_capacity(rows);
        let mut words: Vec<Vec<u64>> = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            if batch.num_rows() == 0 {
                continue;
            }
            if u32::try_from(batch.num_rows()).is_err() {
                return Err(ArrowError::ComputeError(format!(
                    "input batch of {} rows",
                    batch.num_rows()
                )));
            }
            packed.key_words(batch, &mut words)?;
            let base = (b as u64) << 32;
            entries.extend((0..batch.num_rows()).map(|r| Entry {
                key: std::array::from_fn(|w| words[w][r]),
                src: base | r as u64,
            }));
        }
        radix_sort(&mut entries);

        // Runs: consecutive batches of about RUN_ROWS rows. Each run's rows
        // are gathered in sorted order first (random reads within a run,
        // which stays in cache), then the output gathers from the sorted
        // runs (sequential reads in each). One gather from all the input
        // at once would miss the cache (and the TLB) on nearly every value.
        let mut run_of: Vec<usize> = Vec::with_capacity(batches.len());
        let mut run_first: Vec<usize> = Vec::new();
        let mut in_run = 0usize;
        for (b, batch) in batches.iter().enumerate() {
            if run_first.is_empty() || in_run >= RUN_ROWS {
                run_first.push(b);
                in_run = 0;
            }
            run_of.push(run_first.len() - 1);
            in_run += batch.num_rows();
        }
        // Each run's rows in sorted order (batch within the run, row); each
        // entry's source becomes its place in its run's sorted copy.
        let mut run_rows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); run_first.len()];
        for e in entries.iter_mut() {
            let (b, r) = source(e.src);
            let run = run_of[b];
            let list = &mut run_rows[run];
            e.src = ((run as u64) << 32) | list.len() as u64;
            list.push((b - run_first[run], r));
        }
        let run_batches =
            |run: usize| run_first[run]..run_first.get(run + 1).copied().unwrap_or(batches.len());

        let fields = layout
            .outputs
            .iter()
            .map(|out| match *out {
                Out::Column { pos, .. } => {
                    let field = layout.sort_schema.field(pos);
                    let arrays: Vec<ArrayRef> = batches
                        .iter()
                        .map(|b| match b.column_by_name(field.name()) {
                            Some(c) => Arc::clone(c),
                            None => new_null_array(field.data_type(), b.num_rows()),
                        })
                        .collect();
                    let nulls = arrays.iter().any(|a| a.null_count() > 0);
                    let runs = (0..run_first.len())
                        .map(|run| {
                            let sources: Vec<&dyn Array> = arrays[run_batches(run)]
                                .iter()
                                .map(|a| a.as_ref())
                                .collect();
                            interleave(&sources, &run_rows[run])
                        })
                        .collect::<Result<Vec<ArrayRef>, _>>()?;
                    Ok(Some((runs, nulls)))
                }
                Out::Tag(_) | Out::Time => Ok(None),
            })
            .collect::<Result<_, ArrowError>>()?;
        Ok(Self {
            layout,
            entries,
            fields,
            _reservation: reservation,
        })
    }

    /// The output batch of up to `batch_size` groups starting at entry
    /// `at`; returns it and the entry after its last group.
    fn output(&self, at: usize, batch_size: usize) -> (Result<RecordBatch, ArrowError>, usize) {
        let e = &self.entries;
        // The latest row of every group, and multi-row groups as (output
        // position, first entry, last entry).
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(batch_size.min(e.len() - at));
        let mut groups: Vec<(usize, usize, usize)> = Vec::new();
        let mut keys: Vec<Vec<u64>> = vec![Vec::with_capacity(picks.capacity()); N];
        let mut i = at;
        while i < e.len() && picks.len() < batch_size {
            let start = i;
            while i + 1 < e.len() && e[i + 1].key == e[start].key {
                i += 1;
            }
            if i > start {
                groups.push((picks.len(), start, i));
            }
            picks.push(source(e[i].src));
            for (w, k) in keys.iter_mut().zip(e[start].key) {
                w.push(k);
            }
            i += 1;
        }
        (self.build(&picks, &groups, &keys), i)
    }

    fn build(
        &self,
        picks: &[(usize, usize)],
        groups: &[(usize, usize, usize)],
        keys: &[Vec<u64>],
    ) -> Result<RecordBatch, ArrowError> {
        let Mode::Packed { packed, .. } = &self.layout.mode else {
            return Err(ArrowError::SchemaError(
                "in-memory sort needs a packed key".into(),
            ));
        };
        let keys = Keys::Words(keys);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.layout.outputs.len());
        for (out, field) in self.layout.outputs.iter().zip(&self.fields) {
            columns.push(match (*out, field) {
                (Out::Tag(t), _) => packed.decode_tag(t, &keys, None)?,
                (Out::Time, _) => packed.decode_time(&keys, None),
                (Out::Column { merge, .. }, Some((arrays, nulls))) => {
                    let sources: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                    let fixed = match merge && *nulls {
                        true => self.latest_non_null(arrays, picks, groups),
                        false => None,
                    };
                    interleave(&sources, fixed.as_deref().unwrap_or(picks))?
                }
                (Out::Column { .. }, None) => {
                    return Err(ArrowError::SchemaError("field without sources".into()));
                }
            });
        }
        RecordBatch::try_new_with_options(
            Arc::clone(&self.layout.output_schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(picks.len())),
        )
    }

    /// Where a group's latest row is null in a field, the group takes its
    /// latest non-null value instead; `None` if no pick changes.
    fn latest_non_null(
        &self,
        arrays: &[ArrayRef],
        picks: &[(usize, usize)],
        groups: &[(usize, usize, usize)],
    ) -> Option<Vec<(usize, usize)>> {
        let valid = |(b, r): (usize, usize)| arrays[b].is_valid(r);
        let mut fixed: Option<Vec<(usize, usize)>> = None;
        for &(pos, first, last) in groups {
            if valid(picks[pos]) {
                continue;
            }
            if let Some(j) = (first..last)
                .rev()
                .map(|j| source(self.entries[j].src))
                .find(|&s| valid(s))
            {
                fixed.get_or_insert_with(|| picks.to_vec())[pos] = j;
            }
        }
        fixed
    }
}

fn source(src: u64) -> (usize, usize) {
    ((src >> 32) as usize, (src & u64::from(u32::MAX)) as usize)
}

/// Stable LSD radix sort by `key` (unsigned, word 0 most significant),
/// one byte per pass, skipping bytes equal in every entry.
fn radix_sort<const N: usize>(entries: &mut Vec<Entry<N>>) {
    if entries.len() < 2 {
        return;
    }
    // Bits that differ somewhere: (OR of all) ^ (AND of all).
    let mut or = [0u64; N];
    let mut and = [u64::MAX; N];
    for e in entries.iter() {
        for w in 0..N {
            or[w] |= e.key[w];
            and[w] &= e.key[w];
        }
    }
    // Digits from least to most significant: (word, shift).
    let digits: Vec<(usize, u32)> = (0..N)
        .rev()
        .flat_map(|w| (0..8u32).map(move |b| (w, b * 8)))
        .filter(|&(w, s)| ((or[w] ^ and[w]) >> s) & 0xff != 0)
        .collect();
    if digits.is_empty() {
        return;
    }
    // All histograms in one pass.
    let mut counts = vec![[0usize; 256]; digits.len()];
    for e in entries.iter() {
        for (c, &(w, s)) in counts.iter_mut().zip(&digits) {
            c[((e.key[w] >> s) & 0xff) as usize] += 1;
        }
    }
    let mut scratch: Vec<Entry<N>> = entries.clone();
    let (mut from, mut to) = (entries, &mut scratch);
    let mut swapped = false;
    for (c, &(w, s)) in counts.iter().zip(&digits) {
        let mut offsets = [0usize; 256];
        let mut sum = 0;
        for (o, &n) in offsets.iter_mut().zip(c.iter()) {
            *o = sum;
            sum += n;
        }
        for e in from.iter() {
            let d = ((e.key[w] >> s) & 0xff) as usize;
            to[offsets[d]] = *e;
            offsets[d] += 1;
        }
        std::mem::swap(&mut from, &mut to);
        swapped = !swapped;
    }
    if swapped {
        // The result is in `scratch`.
        std::mem::swap(from, to);
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;
    use crate::persist::compact::test_util::{Col, batch, table_schema};

    #[test]
    fn falls_back_when_the_pool_refuses_the_index() {
        let table = table_schema(&["a"], &[("f", DataType::Float64)]);
        let b = batch(&[
            ("a", Col::Tag(vec![Some("x"), None, Some("x")])),
            ("time", Col::Time(vec![3, 2, 3])),
            ("f", Col::F64(vec![Some(1.0), Some(2.0), None])),
        ]);
        let cols: Vec<String> = ["a", "f", "time"].iter().map(|s| s.to_string()).collect();
        let layout = Arc::new(
            Layout::new(table, &cols, &[], Some(std::slice::from_ref(&b))).expect("layout"),
        );
        // The index alone is not enough: the sorted copy of `f` too.
        let small: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(index_bytes(3, 2)));
        assert!(try_sort(&layout, std::slice::from_ref(&b), &small, 8).is_none());
        let enough: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        assert!(try_sort(&layout, std::slice::from_ref(&b), &enough, 8).is_some());
        // Columns mode (no packed key): never in memory.
        let columns = Arc::new(
            Layout::new(
                table_schema(&["a"], &[("f", DataType::Float64)]),
                &cols,
                &[],
                None,
            )
            .expect("layout"),
        );
        assert!(try_sort(&columns, std::slice::from_ref(&b), &enough, 8).is_none());
    }

    #[test]
    fn radix_sort_is_stable_and_orders_unsigned() {
        let keys: Vec<[u64; 2]> = vec![
            [3, u64::MAX],
            [0, 5],
            [3, 0],
            [u64::MAX, 0],
            [0, 5],
            [3, 1 << 40],
            [0, 4],
        ];
        let mut entries: Vec<Entry<2>> = keys
            .iter()
            .enumerate()
            .map(|(i, &key)| Entry { key, src: i as u64 })
            .collect();
        radix_sort(&mut entries);
        let got: Vec<u64> = entries.iter().map(|e| e.src).collect();
        assert_eq!(got, [6, 1, 4, 2, 5, 0, 3]);
    }

    #[test]
    fn radix_sort_matches_a_stable_sort() {
        // Pseudo-random keys with few distinct values per word: many ties.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut entries: Vec<Entry<3>> = (0..5000)
            .map(|i| {
                let mut next = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                Entry {
                    key: [next() % 7, (next() % 5) << 33, next() % 300],
                    src: i,
                }
            })
            .collect();
        let mut want: Vec<([u64; 3], u64)> = entries.iter().map(|e| (e.key, e.src)).collect();
        want.sort_by_key(|&(k, _)| k);
        radix_sort(&mut entries);
        let got: Vec<([u64; 3], u64)> = entries.iter().map(|e| (e.key, e.src)).collect();
        assert_eq!(got, want);
    }
}
