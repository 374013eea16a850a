//! Reading persisted Parquet files back, as any Parquet reader would, and
//! the checks every file must pass: the catalog's figures match the file,
//! rows are sorted by the sort key recorded in the file's metadata (which is
//! the catalog's), and no two rows share a series and timestamp.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_proto::v1;

use crate::backend::Backend;

/// One persisted file: its catalog entry, its key/value metadata, its rows.
pub struct File {
    pub meta: v1::ParquetFile,
    pub kv: HashMap<String, String>,
    pub batches: Vec<RecordBatch>,
}

impl File {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The sort key recorded in the file.
    pub fn sort_key(&self) -> Vec<String> {
        self.kv
            .get("sluice.sort_key")
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Reads `object_path` from the store with the `parquet` crate.
pub async fn read(store: &Arc<dyn ObjectStore>, meta: v1::ParquetFile) -> File {
    let path = object_store::path::Path::from(meta.object_path.as_str());
    let bytes = store
        .get(&path)
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert_eq!(
        bytes.len() as i64,
        meta.file_size_bytes,
        "{path}: size in the catalog"
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap_or_else(|e| panic!("{path} is not a Parquet file: {e}"));
    let kv: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .unwrap_or_else(|e| panic!("{path}: reader: {e}"));
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{path}: decoding: {e}"));
    File { meta, kv, batches }
}

/// Lists a table's files in the catalog (`CatalogService.ListParquetFiles`)
/// and reads every one, in (partition, batch number) order. Checks that the
/// object store holds the cataloged files under the table's prefix — and no
/// other unless `orphans_allowed` (a process killed between writing a file
/// and recording it leaves one behind; its rows are replayed and persisted
/// again).
pub async fn read_table(
    backend: &Backend,
    ing: &sluice_e2e::Ingester,
    namespace: &str,
    table: &str,
    orphans_allowed: bool,
) -> Vec<File> {
    let mut metas = ing
        .parquet_files(namespace, table)
        .await
        .expect("ListParquetFiles");
    metas.sort_by_key(|m| (m.partition_id, m.batch_number, m.id));
    let cataloged: BTreeSet<String> = metas.iter().map(|m| m.object_path.clone()).collect();
    assert_eq!(cataloged.len(), metas.len(), "object paths are unique");
    let stored: BTreeSet<String> = backend
        .list_objects(&format!("{namespace}/{table}"))
        .await
        .into_iter()
        .map(|o| o.location.to_string())
        .collect();
    if orphans_allowed {
        let missing: Vec<_> = cataloged.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "cataloged files missing from the store: {missing:?}"
        );
    } else {
        assert_eq!(
            stored, cataloged,
            "the object store holds exactly the files the catalog lists"
        );
    }
    let mut files = Vec::with_capacity(metas.len());
    for m in metas {
        files.push(read(&backend.store, m).await);
    }
    files
}

/// A tag column as strings (None = null), whatever its encoding.
pub fn tag_strings(batch: &RecordBatch, name: &str) -> Vec<Option<Arc<str>>> {
    let Some(col) = batch.column_by_name(name) else {
        return vec![None; batch.num_rows()];
    };
    if let Some(dict) = col.as_any_dictionary_opt() {
        let values = cast(dict.values(), &DataType::Utf8).expect("dictionary values as Utf8");
        let values = values.as_string::<i32>();
        let interned: Vec<Arc<str>> = (0..values.len())
            .map(|i| Arc::from(values.value(i)))
            .collect();
        let keys = cast(dict.keys(), &DataType::Int64).expect("keys as Int64");
        let keys = keys.as_primitive::<arrow::datatypes::Int64Type>();
        return (0..keys.len())
            .map(|i| (keys.is_valid(i)).then(|| Arc::clone(&interned[keys.value(i) as usize])))
            .collect();
    }
    let utf8: ArrayRef = cast(col, &DataType::Utf8).expect("tag as Utf8");
    let a = utf8.as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| Arc::from(a.value(i))))
        .collect()
}

/// The `time` column's values.
pub fn times(batch: &RecordBatch) -> Vec<i64> {
    let col = batch.column_by_name("time").expect("a time column");
    assert!(
        matches!(
            col.data_type(),
            DataType::Timestamp(TimeUnit::Nanosecond, _)
        ),
        "time is {}",
        col.data_type()
    );
    assert_eq!(col.null_count(), 0, "time is never null");
    col.as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec()
}

/// Checks one file: catalog figures, sorted by its recorded sort key, no
/// duplicate (tags, time). Returns its (tags, time) keys in file order.
pub fn check_file(f: &File, tags: &[&str]) -> Vec<(Vec<Option<Arc<str>>>, i64)> {
    let path = &f.meta.object_path;
    let key = f.sort_key();
    assert_eq!(key, f.meta.sort_key, "{path}: sort key in file vs catalog");
    assert_eq!(
        key.last().map(String::as_str),
        Some("time"),
        "{path}: {key:?}"
    );
    let mut sorted_tags: Vec<&str> = key[..key.len() - 1].iter().map(String::as_str).collect();
    sorted_tags.sort_unstable();
    let mut want_tags = tags.to_vec();
    want_tags.sort_unstable();
    assert_eq!(
        sorted_tags, want_tags,
        "{path}: the sort key names every tag"
    );
    assert_eq!(
        f.kv.get("sluice.partition_key"),
        Some(&f.meta.partition_key),
        "{path}: partition key"
    );
    assert_eq!(
        f.kv.get("sluice.min_sequence_number"),
        Some(&f.meta.min_sequence_number.to_string()),
        "{path}"
    );
    assert_eq!(
        f.kv.get("sluice.max_sequence_number"),
        Some(&f.meta.max_sequence_number.to_string()),
        "{path}"
    );
    assert_eq!(f.rows() as i64, f.meta.row_count, "{path}: row count");
    let mut keys = Vec::with_capacity(f.rows());
    for b in &f.batches {
        let cols: Vec<Vec<Option<Arc<str>>>> = key[..key.len() - 1]
            .iter()
            .map(|t| tag_strings(b, t))
            .collect();
        let t = times(b);
        for (i, time) in t.into_iter().enumerate() {
            keys.push((cols.iter().map(|c| c[i].clone()).collect(), time));
        }
    }
    let (lo, hi) = keys.iter().fold((i64::MAX, i64::MIN), |(lo, hi), (_, t)| {
        (lo.min(*t), hi.max(*t))
    });
    assert_eq!(
        (lo, hi),
        (f.meta.min_time, f.meta.max_time),
        "{path}: time range"
    );
    for (n, w) in keys.windows(2).enumerate() {
        // Tags compare as strings with nulls first, then time.
        assert!(
            w[0] < w[1],
            "{path}: rows {n} and {} are out of sort-key order or duplicates: {:?} then {:?}",
            n + 1,
            w[0],
            w[1]
        );
    }
    keys
}
