//! Persistence end to end, against the real `sluice-ingester` binary: every
//! scenario runs twice, on SQLite + a local directory and on PostgreSQL +
//! S3 (`s3s-fs`), from the same test function (see [`backend`]).
//!
//! | module | what it proves |
//! |---|---|
//! | [`million`] | 1M rows with rewrites → sorted, deduplicated Parquet; WAL emptied; catalog complete |
//! | [`consistency`] | `include_persisted` before/during/after persistence; exactly-once buffer + files |
//! | [`crash`] | rotation racing writes, `kill -9` during persist: nothing lost, nothing doubled |
//! | [`backpressure`] | a stopped object store + tiny queue → `RESOURCE_EXHAUSTED`, recovery, bounded RSS |
//! | [`memory`] | a partition many times the persist memory pool persists (spilling) |
//! | [`shutdown`] | `PrepareShutdown` under writes, twice, and after a crash mid-drain |
//! | [`restart`] | replay never brings back a value older than a persisted one; numbers continue; no orphan objects |

mod backend;
mod backpressure;
mod consistency;
mod crash;
mod files;
mod memory;
mod million;
mod restart;
mod rows;
mod shutdown;

use std::time::Duration;

use backend::Kind;

/// One `#[tokio::test]` per backend for each scenario.
macro_rules! on_both_backends {
    ($($module:ident :: $test:ident within $secs:expr;)*) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::backend::run(
                        super::Kind::Local,
                        stringify!($test),
                        super::Duration::from_secs($secs),
                        super::$module::$test,
                    )
                    .await;
                }
            )*
        }
        mod pg_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::backend::run(
                        super::Kind::PgS3,
                        stringify!($test),
                        super::Duration::from_secs($secs),
                        super::$module::$test,
                    )
                    .await;
                }
            )*
        }
    };
}

on_both_backends! {
    million::million_rows_persist_sorted_deduplicated within 240;
    consistency::include_persisted_same_rows_before_during_after within 120;
    consistency::exactly_once_while_persisting within 120;
    crash::rotation_race_and_kill9_during_persist within 150;
    memory::partition_larger_than_persist_memory_limit within 120;
    shutdown::prepare_shutdown_under_writes within 150;
    restart::replay_keeps_newer_persisted_values within 90;
}

/// Needs its own object store to stop and kill: one variant, SQLite catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backpressure_stopped_object_store() {
    sluice_e2e::within(
        Duration::from_secs(240),
        "backpressure",
        backpressure::backpressure_stopped_object_store(),
    )
    .await;
}
