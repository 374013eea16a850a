//! Catalog errors.
//!
//! Two families matter to callers:
//! - **client errors** (a type conflict, a duplicate file path, an unknown id): retrying
//!   the same request fails the same way; the write path reports them to the client;
//! - **unavailable** ([`CatalogError::is_retryable`]): the database could not be
//!   reached, was busy or restarting, or did not answer in time; the same request may
//!   succeed later, so the write path answers "unavailable" and the persist path
//!   retries with back-off.
//!
//! Messages never include a connection URL (it may hold a password).

use std::time::Duration;

use super::types::{ColumnType, NamespaceId, PartitionId, TableId};

/// Everything that can go wrong talking to the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A column already exists with another type. Nothing of the request was applied.
    #[error(
        "column {column:?} of table {table:?} is of type {existing}, cannot use it as {requested}"
    )]
    ColumnTypeConflict {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// The type recorded in the catalog (or earlier in the same request).
        existing: ColumnType,
        /// The type the request asked for.
        requested: ColumnType,
    },

    /// No namespace has this id.
    #[error("namespace id {namespace_id} not found in the catalog")]
    NamespaceNotFound {
        /// The id asked for.
        namespace_id: NamespaceId,
    },

    /// No table has this id.
    #[error("table id {table_id} not found in the catalog")]
    TableNotFound {
        /// The id asked for.
        table_id: TableId,
    },

    /// No partition has this id.
    #[error("partition id {partition_id} not found in the catalog")]
    PartitionNotFound {
        /// The id asked for.
        partition_id: PartitionId,
    },

    /// A Parquet file with this object path is already recorded.
    #[error("parquet file {object_path:?} is already recorded in the catalog")]
    ParquetFileExists {
        /// The duplicate path.
        object_path: String,
    },

    /// A Parquet file names a namespace, table or partition the catalog does not have.
    #[error("parquet file {object_path:?} refers to an unknown namespace, table or partition")]
    ParquetFileDangling {
        /// The file's path.
        object_path: String,
    },

    /// An unsigned value does not fit the database's signed 64-bit integers.
    #[error("{field} = {value} is too large for the catalog (max {})", i64::MAX)]
    ValueOutOfRange {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: u64,
    },

    /// The catalog URL could not be used.
    #[error("invalid catalog URL: {reason}")]
    InvalidUrl {
        /// What was wrong (never the URL itself, which may hold a password).
        reason: String,
    },

    /// The directory for the SQLite file could not be created.
    #[error("cannot create catalog directory {path:?}: {source}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The database is unreachable, busy or restarting. Retryable.
    #[error("catalog unavailable during {operation}: {source}")]
    Unavailable {
        /// The catalog operation that failed.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The database did not answer in time. Retryable.
    #[error("catalog operation {operation} timed out after {timeout:?}")]
    Timeout {
        /// The catalog operation that timed out.
        operation: &'static str,
        /// The limit that was exceeded.
        timeout: Duration,
    },

    /// Schema migration failed at start-up.
    #[error("catalog schema migration failed: {source}")]
    Migration {
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// The database holds something this code cannot read (e.g. an unknown column type
    /// code written by a newer version).
    #[error("catalog holds unreadable data: {detail}")]
    Corrupt {
        /// What could not be read.
        detail: String,
    },

    /// Any other database error: not expected to go away by retrying.
    #[error("catalog database error during {operation}: {source}")]
    Database {
        /// The catalog operation that failed.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl CatalogError {
    /// Whether the same request may succeed if retried later (the database was down,
    /// busy or slow), as opposed to a client error that will fail again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } => true,
            Self::Migration { source } => matches!(
                source,
                sqlx::migrate::MigrateError::Execute(e) if is_unavailable(e)
            ),
            Self::ColumnTypeConflict { .. }
            | Self::NamespaceNotFound { .. }
            | Self::TableNotFound { .. }
            | Self::PartitionNotFound { .. }
            | Self::ParquetFileExists { .. }
            | Self::ParquetFileDangling { .. }
            | Self::ValueOutOfRange { .. }
            | Self::InvalidUrl { .. }
            | Self::CreateDir { .. }
            | Self::Corrupt { .. }
            | Self::Database { .. } => false,
        }
    }

    /// Classifies a driver error raised during `operation`.
    pub(super) fn from_sqlx(operation: &'static str, source: sqlx::Error) -> Self {
        if is_unavailable(&source) {
            Self::Unavailable { operation, source }
        } else {
            Self::Database { operation, source }
        }
    }
}

/// Whether a driver error means "the database is not serving us right now".
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| retryable_code(&code)),
        _ => false,
    }
}

/// Database error codes that mean "try again later".
///
/// PostgreSQL SQLSTATEs: class 08 (connection), 53 (insufficient resources), 57P01-03
/// (shutdown / starting up), 40001 (serialization), 40P01 (deadlock), 55P03 (lock not
/// available). SQLite reports its (extended) result code as a number: primary code 5
/// (BUSY) or 6 (LOCKED) after the busy timeout ran out.
fn retryable_code(code: &str) -> bool {
    if let Ok(n) = code.parse::<i32>() {
        // SQLite: numeric extended result code; SQLSTATEs like "40001" also parse, so
        // only treat small values as SQLite codes (SQLSTATEs are five characters).
        if code.len() < 5 {
            return matches!(n & 0xff, 5 | 6);
        }
    }
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        for code in [
            "08006", "08001", "53300", "57P01", "40001", "40P01", "5", "261", "517", "6",
        ] {
            assert!(retryable_code(code), "{code} should be retryable");
        }
        for code in ["23505", "23503", "42P01", "19", "2067", "1"] {
            assert!(!retryable_code(code), "{code} should not be retryable");
        }
    }

    #[test]
    fn conflict_is_a_client_error_and_names_everything() {
        let e = CatalogError::ColumnTypeConflict {
            table: "cpu".into(),
            column: "usage".into(),
            existing: ColumnType::F64,
            requested: ColumnType::I64,
        };
        assert!(!e.is_retryable());
        let msg = e.to_string();
        for part in ["\"cpu\"", "\"usage\"", "f64", "i64"] {
            assert!(msg.contains(part), "{msg:?} lacks {part}");
        }
    }

    #[test]
    fn pool_timeout_is_retryable() {
        assert!(CatalogError::from_sqlx("health", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!CatalogError::from_sqlx("health", sqlx::Error::RowNotFound).is_retryable());
    }
}
