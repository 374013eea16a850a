//! The behaviour every [`Catalog`] backend must show, run against each of them.
//!
//! Each test gets a fresh store and two handles on it (`a`, `b`). For the SQL
//! backends these are two separate `connect()`s — separate pools, as two processes or
//! pods would have — so the concurrency tests exercise the database's guarantees, not
//! an in-process lock. PostgreSQL runs only when `SLUICE_TEST_POSTGRES_URL` is set;
//! each test then gets its own schema (via `options[search_path]`), dropped at the end.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Barrier;

use super::*;

/// Environment variable naming a PostgreSQL server for the tests, e.g.
/// `postgres://sluice@127.0.0.1:54329/sluice`.
pub(super) const POSTGRES_URL_ENV: &str = "SLUICE_TEST_POSTGRES_URL";

/// Two handles on one fresh store, plus what must be cleaned up afterwards.
pub(super) struct Harness {
    pub(super) a: Arc<dyn Catalog>,
    pub(super) b: Arc<dyn Catalog>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgScratch>,
}

impl Harness {
    async fn finish(self) {
        drop(self.a);
        drop(self.b);
        if let Some(pg) = self.pg {
            pg.drop_schema().await;
        }
    }
}

pub(super) async fn memory() -> Option<Harness> {
    let a: Arc<dyn Catalog> = Arc::new(MemCatalog::new());
    Some(Harness {
        b: Arc::clone(&a),
        a,
        _dir: None,
        pg: None,
    })
}

pub(super) async fn sqlite() -> Option<Harness> {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory that does not exist yet: connect() must create it.
    let url = format!("sqlite://{}/data/catalog.sqlite", dir.path().display());
    let a = connect(&url).await.expect("sqlite connect a");
    let b = connect(&url).await.expect("sqlite connect b");
    Some(Harness {
        a,
        b,
        _dir: Some(dir),
        pg: None,
    })
}

pub(super) async fn postgres() -> Option<Harness> {
    let pg = PgScratch::new().await?;
    let a = connect(&pg.url).await.expect("postgres connect a");
    let b = connect(&pg.url).await.expect("postgres connect b");
    Some(Harness {
        a,
        b,
        _dir: None,
        pg: Some(pg),
    })
}

/// A fresh schema on the test server; `url` selects it through `search_path`.
pub(super) struct PgScratch {
    admin: sqlx::PgPool,
    schema: String,
    pub(super) url: String,
}

impl PgScratch {
    /// `None` when no test server is configured.
    pub(super) async fn new() -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_URL_ENV) else {
            eprintln!("skipped: {POSTGRES_URL_ENV} is not set");
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "sluice_test_{}_{}_{}",
            std::process::id(),
            super::types::now_unix_nanos() % 1_000_000_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&base)
            .await
            .expect("connect to SLUICE_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("create test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options[search_path]={schema}");
        Some(Self { admin, schema, url })
    }

    pub(super) async fn drop_schema(self) {
        let dropped = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await;
        if let Err(e) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
        self.admin.close().await;
    }

    /// Number of rows in `table` of the test schema.
    pub(super) async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}.{table}", self.schema))
            .fetch_one(&self.admin)
            .await
            .expect("count rows")
    }
}

/// Generates one `#[tokio::test]` per backend and test function.
macro_rules! backend_tests {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(h) = super::$backend().await else { return };
                    tokio::time::timeout(std::time::Duration::from_secs(60), super::$test(&h))
                        .await
                        .expect("test timed out")
                        .expect("catalog call failed");
                    h.finish().await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        backend_tests!(memory: $($test),*);
        backend_tests!(sqlite: $($test),*);
        backend_tests!(postgres: $($test),*);
    };
}

all_backends!(
    namespaces,
    tables,
    add_columns_records_and_is_idempotent,
    add_columns_conflict_records_nothing,
    concurrent_conflicting_add_columns_one_type_wins,
    concurrent_get_or_create_agree,
    partitions,
    cas_sort_key_swaps_only_from_expected,
    concurrent_cas_sort_key_one_winner,
    parquet_files,
    ingester_partitions,
    health,
);

type R = Result<(), CatalogError>;

fn cols(list: &[(&str, ColumnType)]) -> Vec<(String, ColumnType)> {
    list.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
}

fn strs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn names(schema: &TableSchema) -> Vec<&str> {
    schema.columns().iter().map(|c| c.name.as_str()).collect()
}

async fn namespaces(h: &Harness) -> R {
    assert_eq!(h.a.get_namespace("db").await?, None);
    assert!(h.a.list_namespaces().await?.is_empty());
    let db = h.a.get_or_create_namespace("db").await?;
    assert_eq!(h.a.get_or_create_namespace("db").await?, db);
    assert_eq!(
        h.b.get_namespace("db").await?,
        Some(db),
        "visible to the other handle"
    );
    assert_eq!(h.b.get_or_create_namespace("db").await?, db);
    let upper = h.b.get_or_create_namespace("DB").await?;
    let odd = h.a.get_or_create_namespace("ünï cødé 'quoted'").await?;
    assert!(db < upper && upper < odd, "ids follow creation order");
    assert_eq!(
        h.a.list_namespaces().await?,
        vec![
            (db, "db".to_owned()),
            (upper, "DB".to_owned()),
            (odd, "ünï cødé 'quoted'".to_owned())
        ]
    );
    Ok(())
}

async fn tables(h: &Harness) -> R {
    let ns1 = h.a.get_or_create_namespace("ns1").await?;
    let ns2 = h.a.get_or_create_namespace("ns2").await?;
    let cpu = h.a.get_or_create_table(ns1, "cpu").await?;
    assert_eq!((cpu.name.as_str(), cpu.namespace_id), ("cpu", ns1));
    assert!(cpu.is_empty());
    assert_eq!(h.b.get_or_create_table(ns1, "cpu").await?, cpu);
    let cpu2 = h.b.get_or_create_table(ns2, "cpu").await?;
    assert_ne!(
        cpu2.id, cpu.id,
        "same name in another namespace is another table"
    );
    assert_eq!(h.a.get_table(ns1, "mem").await?, None);
    let mem = h.a.get_or_create_table(ns1, "mem").await?;
    h.a.add_columns(
        cpu.id,
        &cols(&[("time", ColumnType::Time), ("host", ColumnType::Tag)]),
    )
    .await?;

    let got = h.b.get_table(ns1, "cpu").await?.expect("cpu exists");
    assert_eq!(names(&got), ["host", "time"]);
    let listed = h.b.list_tables(ns1).await?;
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[0].id, listed[1].id), (cpu.id, mem.id));
    assert_eq!(names(&listed[0]), ["host", "time"]);
    assert!(listed[1].is_empty());
    assert_eq!(h.a.list_tables(ns2).await?, vec![cpu2]);
    assert!(h.a.list_tables(NamespaceId(987_654)).await?.is_empty());

    let missing = NamespaceId(987_654);
    match h.a.get_or_create_table(missing, "t").await {
        Err(CatalogError::NamespaceNotFound { namespace_id }) => assert_eq!(namespace_id, missing),
        other => panic!("expected NamespaceNotFound, got {other:?}"),
    }
    Ok(())
}

async fn add_columns_records_and_is_idempotent(h: &Harness) -> R {
    let ns = h.a.get_or_create_namespace("ns").await?;
    let t = h.a.get_or_create_table(ns, "cpu").await?;
    let first = cols(&[
        ("usage", ColumnType::F64),
        ("time", ColumnType::Time),
        ("host", ColumnType::Tag),
    ]);
    let s1 = h.a.add_columns(t.id, &first).await?;
    assert_eq!(names(&s1), ["host", "time", "usage"]);
    assert_eq!(s1.column_type("usage"), Some(ColumnType::F64));
    assert_eq!(
        h.b.add_columns(t.id, &first).await?,
        s1,
        "re-adding changes nothing"
    );
    assert_eq!(h.b.add_columns(t.id, &[]).await?, s1);

    let s2 =
        h.b.add_columns(
            t.id,
            &cols(&[("usage", ColumnType::F64), ("idle", ColumnType::I64)]),
        )
        .await?;
    assert_eq!(names(&s2), ["host", "idle", "time", "usage"]);
    for c in s1.columns() {
        assert_eq!(
            s2.column(&c.name),
            Some(c),
            "existing columns keep their ids"
        );
    }
    let ids: HashSet<_> = s2.columns().iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 4);

    // Every type round-trips through the store.
    let all: Vec<_> = ColumnType::ALL
        .iter()
        .map(|t| (format!("c_{t}"), *t))
        .collect();
    h.a.add_columns(t.id, &all).await?;
    let stored = h.b.get_table(ns, "cpu").await?.expect("cpu exists");
    for t in ColumnType::ALL {
        assert_eq!(stored.column_type(&format!("c_{t}")), Some(t));
    }

    match h.a.add_columns(TableId(987_654), &first).await {
        Err(CatalogError::TableNotFound { table_id }) => assert_eq!(table_id, TableId(987_654)),
        other => panic!("expected TableNotFound, got {other:?}"),
    }
    Ok(())
}

async fn add_columns_conflict_records_nothing(h: &Harness) -> R {
    let ns = h.a.get_or_create_namespace("ns").await?;
    let t = h.a.get_or_create_table(ns, "cpu").await?;
    h.a.add_columns(t.id, &cols(&[("usage", ColumnType::F64)]))
        .await?;

    let request = cols(&[
        ("aaa", ColumnType::Tag),
        ("usage", ColumnType::I64),
        ("zzz", ColumnType::String),
    ]);
    match h.b.add_columns(t.id, &request).await {
        Err(CatalogError::ColumnTypeConflict {
            table,
            column,
            existing,
            requested,
        }) => {
            assert_eq!((table.as_str(), column.as_str()), ("cpu", "usage"));
            assert_eq!((existing, requested), (ColumnType::F64, ColumnType::I64));
        }
        other => panic!("expected ColumnTypeConflict, got {other:?}"),
    }
    let dup = cols(&[("dup", ColumnType::Bool), ("dup", ColumnType::String)]);
    assert!(matches!(
        h.a.add_columns(t.id, &dup).await,
        Err(CatalogError::ColumnTypeConflict { .. })
    ));
    let after = h.a.get_table(ns, "cpu").await?.expect("cpu exists");
    assert_eq!(
        names(&after),
        ["usage"],
        "a refused request records nothing"
    );

    let same_twice = cols(&[("dup", ColumnType::Bool), ("dup", ColumnType::Bool)]);
    assert_eq!(
        names(&h.a.add_columns(t.id, &same_twice).await?),
        ["dup", "usage"]
    );
    Ok(())
}

async fn concurrent_conflicting_add_columns_one_type_wins(h: &Harness) -> R {
    const TASKS: usize = 16;
    let ns = h.a.get_or_create_namespace("ns").await?;
    let t = h.a.get_or_create_table(ns, "cpu").await?;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        // Types alternate; handles alternate in pairs, so both types go through both.
        let catalog = Arc::clone(if i % 4 < 2 { &h.a } else { &h.b });
        let ty = if i % 2 == 0 {
            ColumnType::I64
        } else {
            ColumnType::F64
        };
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            let request = vec![
                (format!("extra_{i:02}"), ColumnType::Tag),
                ("x".to_owned(), ty),
            ];
            barrier.wait().await;
            (i, ty, catalog.add_columns(t.id, &request).await)
        }));
    }
    let mut results = Vec::with_capacity(TASKS);
    for handle in handles {
        results.push(handle.await.expect("task panicked"));
    }

    let last = h.b.get_table(ns, "cpu").await?.expect("cpu exists");
    let winner = last.column_type("x").expect("x was recorded");
    let mut ok = 0;
    for (i, ty, result) in results {
        let extra = format!("extra_{i:02}");
        if ty == winner {
            let schema = result?;
            assert_eq!(schema.column_type("x"), Some(winner));
            assert!(schema.column(&extra).is_some());
            assert!(
                last.column(&extra).is_some(),
                "{extra} of a successful call is kept"
            );
            ok += 1;
        } else {
            match result {
                Err(CatalogError::ColumnTypeConflict {
                    table,
                    column,
                    existing,
                    requested,
                }) => {
                    assert_eq!((table.as_str(), column.as_str()), ("cpu", "x"));
                    assert_eq!((existing, requested), (winner, ty));
                }
                other => panic!("task {i} ({ty}) should conflict with {winner}: {other:?}"),
            }
            assert!(
                last.column(&extra).is_none(),
                "{extra} of a refused call leaked"
            );
        }
    }
    assert_eq!(ok, TASKS / 2);
    assert_eq!(last.len(), 1 + TASKS / 2);
    Ok(())
}

async fn concurrent_get_or_create_agree(h: &Harness) -> R {
    const TASKS: usize = 16;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let catalog = Arc::clone(if i % 2 == 0 { &h.a } else { &h.b });
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let ns = catalog.get_or_create_namespace("race").await?;
            let t = catalog.get_or_create_table(ns, "t").await?;
            let schema = catalog
                .add_columns(t.id, &cols(&[("time", ColumnType::Time)]))
                .await?;
            let p = catalog.get_or_create_partition(t.id, "2024-01-01").await?;
            Ok::<_, CatalogError>((ns, t.id, schema, p.id))
        }));
    }
    let mut seen = Vec::with_capacity(TASKS);
    for handle in handles {
        seen.push(handle.await.expect("task panicked")?);
    }
    assert!(
        seen.iter().all(|s| *s == seen[0]),
        "all tasks got the same ids: {seen:?}"
    );
    assert_eq!(seen[0].2.column_type("time"), Some(ColumnType::Time));
    assert_eq!(h.a.list_namespaces().await?.len(), 1);
    Ok(())
}

async fn partitions(h: &Harness) -> R {
    let ns = h.a.get_or_create_namespace("ns").await?;
    let cpu = h.a.get_or_create_table(ns, "cpu").await?;
    let mem = h.a.get_or_create_table(ns, "mem").await?;
    let p1 = h.a.get_or_create_partition(cpu.id, "2024-01-01").await?;
    assert_eq!((p1.table_id, p1.key.as_str()), (cpu.id, "2024-01-01"));
    assert!(p1.sort_key.is_empty());
    assert_eq!(h.b.get_or_create_partition(cpu.id, "2024-01-01").await?, p1);
    let p2 = h.b.get_or_create_partition(cpu.id, "2024-01-02").await?;
    let p3 = h.a.get_or_create_partition(mem.id, "2024-01-01").await?;
    assert!(p1.id < p2.id && p2.id < p3.id);
    assert_eq!(h.a.list_partitions(cpu.id).await?, vec![p1, p2]);
    assert_eq!(h.b.list_partitions(mem.id).await?, vec![p3]);
    match h.a.get_or_create_partition(TableId(987_654), "k").await {
        Err(CatalogError::TableNotFound { table_id }) => assert_eq!(table_id, TableId(987_654)),
        other => panic!("expected TableNotFound, got {other:?}"),
    }
    Ok(())
}

async fn cas_sort_key_swaps_only_from_expected(h: &Harness) -> R {
    let ns = h.a.get_or_create_namespace("ns").await?;
    let t = h.a.get_or_create_table(ns, "cpu").await?;
    let p = h.a.get_or_create_partition(t.id, "2024-01-01").await?;
    // Names that stress the encodings: quotes, commas, braces, unicode, empty.
    let k1 = strs(&["host", "we\"ird,{name}", "ünï", "", "time"]);
    let swapped =
        h.a.cas_sort_key(p.id, &[], &k1)
            .await?
            .expect("first swap wins");
    assert_eq!(
        swapped,
        Partition {
            sort_key: k1.clone(),
            ..p.clone()
        }
    );
    let lost =
        h.b.cas_sort_key(p.id, &[], &strs(&["region", "time"]))
            .await?;
    assert_eq!(
        lost,
        Err(k1.clone()),
        "a stale `old` gets the current key back"
    );
    assert_eq!(
        h.b.get_or_create_partition(t.id, "2024-01-01")
            .await?
            .sort_key,
        k1
    );

    let k2 = strs(&["host", "region", "time"]);
    assert_eq!(
        h.b.cas_sort_key(p.id, &k1, &k2).await?.map(|p| p.sort_key),
        Ok(k2.clone())
    );
    assert_eq!(h.a.list_partitions(t.id).await?[0].sort_key, k2);
    // A prefix of the current key is not the current key.
    assert_eq!(
        h.a.cas_sort_key(p.id, &k2[..2], &k1).await?,
        Err(k2.clone())
    );

    let missing = PartitionId(987_654);
    match h.a.cas_sort_key(missing, &[], &k1).await {
        Err(CatalogError::PartitionNotFound { partition_id }) => assert_eq!(partition_id, missing),
        other => panic!("expected PartitionNotFound, got {other:?}"),
    }
    Ok(())
}

async fn concurrent_cas_sort_key_one_winner(h: &Harness) -> R {
    const TASKS: usize = 8;
    let ns = h.a.get_or_create_namespace("ns").await?;
    let t = h.a.get_or_create_table(ns, "cpu").await?;
    let p = h.a.get_or_create_partition(t.id, "2024-01-01").await?;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let catalog = Arc::clone(if i % 2 == 0 { &h.a } else { &h.b });
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            let new = vec![format!("tag_{i}"), "time".to_owned()];
            barrier.wait().await;
            catalog.cas_sort_key(p.id, &[], &new).await
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for handle in handles {
        match handle.await.expect("task panicked")? {
            Ok(p) => winners.push(p.sort_key),
            Err(current) => losers.push(current),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one swap wins");
    assert!(
        losers.iter().all(|k| *k == winners[0]),
        "losers see the winner's key"
    );
    let stored = h.b.get_or_create_partition(t.id, "2024-01-01").await?;
    assert_eq!(stored.sort_key, winners[0]);
    Ok(())
}

fn file(ns: NamespaceId, table: TableId, partition: PartitionId, path: &str) -> ParquetFileParams {
    ParquetFileParams {
        namespace_id: ns,
        table_id: table,
        partition_id: partition,
        object_path: path.to_owned(),
        file_size_bytes: 1234,
        row_count: 10,
        min_time: -5,
        max_time: i64::MAX,
        min_sequence_number: 0,
        max_sequence_number: i64::MAX as u64,
        sort_key: strs(&["host", "we\"ird,{name}", "time"]),
        ingester_id: "ingester-0".to_owned(),
        batch_number: 3,
    }
}

async fn ingester_partitions(h: &Harness) -> R {
    assert!(h.a.ingester_partitions("ingester-0").await?.is_empty());
    let ns = h.a.get_or_create_namespace("ns").await?;
    let cpu = h.a.get_or_create_table(ns, "cpu").await?.id;
    let p1 = h.a.get_or_create_partition(cpu, "d1").await?.id;
    let p2 = h.a.get_or_create_partition(cpu, "d2").await?.id;
    let add = |p, path: &str, ingester: &str, batch, seq| {
        let mut f = file(ns, cpu, p, path);
        f.ingester_id = ingester.to_owned();
        f.batch_number = batch;
        f.min_sequence_number = 1;
        f.max_sequence_number = seq;
        f
    };
    h.a.add_parquet_file(add(p2, "a", "ingester-0", 1, 40))
        .await?;
    h.b.add_parquet_file(add(p1, "b", "ingester-0", 1, 90))
        .await?;
    h.a.add_parquet_file(add(p1, "c", "ingester-0", 2, 70))
        .await?;
    h.b.add_parquet_file(add(p1, "d", "ingester-1", 9, 500))
        .await?;
    let got = h.b.ingester_partitions("ingester-0").await?;
    let want = [(p1, 2, 90), (p2, 1, 40)];
    let got: Vec<_> = got
        .iter()
        .map(|p| (p.partition_id, p.max_batch_number, p.max_sequence_number))
        .collect();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(
        got, want,
        "per partition maxima of this ingester's files only"
    );
    assert_eq!(h.a.ingester_partitions("ingester-1").await?.len(), 1);
    Ok(())
}

async fn parquet_files(h: &Harness) -> R {
    let ns = h.a.get_or_create_namespace("ns").await?;
    let cpu = h.a.get_or_create_table(ns, "cpu").await?.id;
    let mem = h.a.get_or_create_table(ns, "mem").await?.id;
    let p1 = h.a.get_or_create_partition(cpu, "d1").await?.id;
    let p2 = h.a.get_or_create_partition(cpu, "d2").await?.id;
    let p3 = h.a.get_or_create_partition(mem, "d1").await?.id;

    let params = file(ns, cpu, p1, "ns/cpu/d1/1.parquet");
    let f1 = h.a.add_parquet_file(params.clone()).await?;
    assert_eq!(f1.object_path, params.object_path);
    assert_eq!(
        (f1.file_size_bytes, f1.row_count, f1.min_time, f1.max_time),
        (1234, 10, -5, i64::MAX)
    );
    assert_eq!(
        (f1.min_sequence_number, f1.max_sequence_number),
        (0, i64::MAX as u64)
    );
    assert_eq!((f1.sort_key.clone(), f1.batch_number), (params.sort_key, 3));
    assert_eq!(f1.ingester_id, "ingester-0");
    assert!(f1.created_at > 0);
    let f2 =
        h.b.add_parquet_file(file(ns, cpu, p2, "ns/cpu/d2/1.parquet"))
            .await?;
    let f3 =
        h.a.add_parquet_file(file(ns, cpu, p1, "ns/cpu/d1/2.parquet"))
            .await?;
    let f4 =
        h.b.add_parquet_file(file(ns, mem, p3, "ns/mem/d1/1.parquet"))
            .await?;
    assert!(f1.id < f2.id && f2.id < f3.id && f3.id < f4.id);

    let by_table = vec![f1.clone(), f2.clone(), f3.clone()];
    assert_eq!(
        h.b.list_parquet_files(cpu).await?,
        by_table,
        "stored exactly as returned"
    );
    assert_eq!(h.a.list_parquet_files(mem).await?, vec![f4.clone()]);
    assert_eq!(
        h.b.list_parquet_files_by_partition(p1).await?,
        vec![f1.clone(), f3]
    );
    assert_eq!(h.a.list_parquet_files_by_partition(p2).await?, vec![f2]);

    // Paths are unique across the whole catalog, not just per table.
    match h
        .b
        .add_parquet_file(file(ns, mem, p3, "ns/cpu/d1/1.parquet"))
        .await
    {
        Err(CatalogError::ParquetFileExists { object_path }) => {
            assert_eq!(object_path, "ns/cpu/d1/1.parquet")
        }
        other => panic!("expected ParquetFileExists, got {other:?}"),
    }
    assert!(matches!(
        h.a.add_parquet_file(file(ns, cpu, PartitionId(987_654), "dangling"))
            .await,
        Err(CatalogError::ParquetFileDangling { .. })
    ));
    let too_big = ParquetFileParams {
        batch_number: u64::MAX,
        ..file(ns, cpu, p1, "too-big")
    };
    assert!(matches!(
        h.a.add_parquet_file(too_big).await,
        Err(CatalogError::ValueOutOfRange {
            field: "batch_number",
            ..
        })
    ));
    assert_eq!(
        h.a.list_parquet_files(cpu).await?,
        by_table,
        "refused files left no trace"
    );
    assert!(h.a.list_parquet_files(TableId(987_654)).await?.is_empty());
    assert!(
        h.a.list_parquet_files_by_partition(PartitionId(987_654))
            .await?
            .is_empty()
    );
    Ok(())
}

async fn health(h: &Harness) -> R {
    h.a.health().await?;
    h.b.health().await?;
    tokio::time::timeout(Duration::from_secs(5), h.a.health())
        .await
        .expect("health is quick")
}
