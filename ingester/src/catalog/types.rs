//! The catalog's data types: ids, column types, table schemas, partitions, files.
//!
//! These are plain values: every backend returns owned copies, so a caller may cache
//! them freely. A cached [`TableSchema`] can only be *behind* the catalog (columns are
//! never dropped or retyped), which is why callers may trust a cached column type and
//! only go to the catalog for columns they have not seen.

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw database id.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// Catalog id of a namespace (a database, in InfluxDB terms).
    NamespaceId
);
id_type!(
    /// Catalog id of a table (a measurement).
    TableId
);
id_type!(
    /// Catalog id of a column, unique across all tables.
    ColumnId
);
id_type!(
    /// Catalog id of a partition (one table's data for one partition key).
    PartitionId
);
id_type!(
    /// Catalog id of a recorded Parquet file.
    ParquetFileId
);

/// The type of a column. Once recorded for a table it never changes.
///
/// The database encoding ([`ColumnType::as_i16`]) matches the protobuf
/// `sluice.ingester.v1.ColumnType` numbers and MUST NOT change: it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// A tag (series key part), stored as a dictionary-encoded string.
    Tag,
    /// The `time` column, nanoseconds since the Unix epoch.
    Time,
    /// A signed 64-bit integer field.
    I64,
    /// An unsigned 64-bit integer field.
    U64,
    /// A 64-bit float field.
    F64,
    /// A boolean field.
    Bool,
    /// A string field.
    String,
}

impl ColumnType {
    /// Every column type, in encoding order.
    pub const ALL: [ColumnType; 7] = [
        Self::Tag,
        Self::Time,
        Self::I64,
        Self::U64,
        Self::F64,
        Self::Bool,
        Self::String,
    ];

    /// The stable database (and protobuf) code.
    pub fn as_i16(self) -> i16 {
        match self {
            Self::Tag => 1,
            Self::Time => 2,
            Self::I64 => 3,
            Self::U64 => 4,
            Self::F64 => 5,
            Self::Bool => 6,
            Self::String => 7,
        }
    }

    /// Decodes [`ColumnType::as_i16`]; `None` for an unknown code.
    pub fn from_i16(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_i16() == code)
    }

    /// The stable lower-case name, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::Time => "time",
            Self::I64 => "i64",
            Self::U64 => "u64",
            Self::F64 => "f64",
            Self::Bool => "bool",
            Self::String => "string",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error from parsing a [`ColumnType`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown column type {0:?} (expected tag, time, i64, u64, f64, bool or string)")]
pub struct UnknownColumnType(pub String);

impl FromStr for ColumnType {
    type Err = UnknownColumnType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownColumnType(s.to_owned()))
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Catalog id.
    pub id: ColumnId,
    /// Column name, unique within its table.
    pub name: String,
    /// The column's type, fixed once recorded.
    pub column_type: ColumnType,
}

/// A table and all its columns, as the catalog knew them when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Catalog id.
    pub id: TableId,
    /// The namespace the table belongs to.
    pub namespace_id: NamespaceId,
    /// Table name, unique within its namespace.
    pub name: String,
    /// Sorted by name (the invariant [`TableSchema::column`] relies on).
    columns: Vec<ColumnSchema>,
}

impl TableSchema {
    /// Builds a schema; `columns` may come in any order.
    pub fn new(
        id: TableId,
        namespace_id: NamespaceId,
        name: String,
        mut columns: Vec<ColumnSchema>,
    ) -> Self {
        columns.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Self {
            id,
            namespace_id,
            name,
            columns,
        }
    }

    /// All columns, sorted by name.
    pub fn columns(&self) -> &[ColumnSchema] {
        &self.columns
    }

    /// Looks a column up by name (binary search, no allocation).
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.columns[i])
    }

    /// The type of column `name`, if the table has it.
    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.column(name).map(|c| c.column_type)
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the table has no columns yet.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

/// One table's data for one partition key (a UTC day, in Sluice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Catalog id.
    pub id: PartitionId,
    /// The table the partition belongs to.
    pub table_id: TableId,
    /// The partition key, unique within its table.
    pub key: String,
    /// The column order the partition's Parquet files are sorted by. Empty until the
    /// first persist; only ever changed with [`crate::catalog::Catalog::cas_sort_key`].
    pub sort_key: Vec<String>,
}

/// What a persist job records about the Parquet file it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFileParams {
    /// Namespace of the data.
    pub namespace_id: NamespaceId,
    /// Table of the data.
    pub table_id: TableId,
    /// Partition of the data.
    pub partition_id: PartitionId,
    /// Location in the object store; unique across the catalog.
    pub object_path: String,
    /// Size of the file.
    pub file_size_bytes: u64,
    /// Rows in the file.
    pub row_count: u64,
    /// Smallest `time` value in the file (nanoseconds since the Unix epoch).
    pub min_time: i64,
    /// Largest `time` value in the file (nanoseconds since the Unix epoch).
    pub max_time: i64,
    /// Smallest sequence number of the writes in the file.
    pub min_sequence_number: u64,
    /// Largest sequence number of the writes in the file.
    pub max_sequence_number: u64,
    /// The sort key the file was written with.
    pub sort_key: Vec<String>,
    /// The ingester that wrote the file.
    pub ingester_id: String,
    /// Which persisted batch of its partition (by this ingester) the file holds.
    pub batch_number: u64,
}

/// What one ingester persisted of one partition (see
/// [`Catalog::ingester_partitions`](super::Catalog::ingester_partitions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngesterPartition {
    /// The partition.
    pub partition_id: PartitionId,
    /// The highest batch number of the ingester's files of the partition.
    pub max_batch_number: u64,
    /// The highest sequence number in the ingester's files of the partition.
    pub max_sequence_number: u64,
}

/// A recorded Parquet file: its params plus the catalog's id and record time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFile {
    /// Catalog id.
    pub id: ParquetFileId,
    /// Namespace of the data.
    pub namespace_id: NamespaceId,
    /// Table of the data.
    pub table_id: TableId,
    /// Partition of the data.
    pub partition_id: PartitionId,
    /// Location in the object store; unique across the catalog.
    pub object_path: String,
    /// Size of the file.
    pub file_size_bytes: u64,
    /// Rows in the file.
    pub row_count: u64,
    /// Smallest `time` value in the file (nanoseconds since the Unix epoch).
    pub min_time: i64,
    /// Largest `time` value in the file (nanoseconds since the Unix epoch).
    pub max_time: i64,
    /// Smallest sequence number of the writes in the file.
    pub min_sequence_number: u64,
    /// Largest sequence number of the writes in the file.
    pub max_sequence_number: u64,
    /// The sort key the file was written with.
    pub sort_key: Vec<String>,
    /// The ingester that wrote the file.
    pub ingester_id: String,
    /// Which persisted batch of its partition (by this ingester) the file holds.
    pub batch_number: u64,
    /// When the file was recorded: Unix epoch nanoseconds, from the recording
    /// ingester's clock (so only roughly comparable across pods).
    pub created_at: i64,
}

impl ParquetFile {
    /// Combines recorded `params` with the catalog-assigned fields.
    pub fn from_params(id: ParquetFileId, params: ParquetFileParams, created_at: i64) -> Self {
        let ParquetFileParams {
            namespace_id,
            table_id,
            partition_id,
            object_path,
            file_size_bytes,
            row_count,
            min_time,
            max_time,
            min_sequence_number,
            max_sequence_number,
            sort_key,
            ingester_id,
            batch_number,
        } = params;
        Self {
            id,
            namespace_id,
            table_id,
            partition_id,
            object_path,
            file_size_bytes,
            row_count,
            min_time,
            max_time,
            min_sequence_number,
            max_sequence_number,
            sort_key,
            ingester_id,
            batch_number,
            created_at,
        }
    }
}

/// Now, as Unix epoch nanoseconds (saturating; 0 if the clock is before 1970).
pub(super) fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_type_codes_are_stable_and_round_trip() {
        // Stored in databases and sent over the wire: these numbers must not move.
        let expected = [
            (ColumnType::Tag, 1, "tag"),
            (ColumnType::Time, 2, "time"),
            (ColumnType::I64, 3, "i64"),
            (ColumnType::U64, 4, "u64"),
            (ColumnType::F64, 5, "f64"),
            (ColumnType::Bool, 6, "bool"),
            (ColumnType::String, 7, "string"),
        ];
        for (t, code, name) in expected {
            assert_eq!(t.as_i16(), code);
            assert_eq!(ColumnType::from_i16(code), Some(t));
            assert_eq!(t.to_string(), name);
            assert_eq!(name.parse::<ColumnType>(), Ok(t));
        }
        assert_eq!(ColumnType::from_i16(0), None);
        assert_eq!(ColumnType::from_i16(8), None);
        assert!("float".parse::<ColumnType>().is_err());
    }

    #[test]
    fn table_schema_lookup_by_name_with_unsorted_input() {
        let col = |id, name: &str, column_type| ColumnSchema {
            id: ColumnId(id),
            name: name.to_owned(),
            column_type,
        };
        let schema = TableSchema::new(
            TableId(1),
            NamespaceId(1),
            "cpu".into(),
            vec![
                col(3, "usage", ColumnType::F64),
                col(1, "time", ColumnType::Time),
                col(2, "host", ColumnType::Tag),
            ],
        );
        let names: Vec<_> = schema.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["host", "time", "usage"]);
        assert_eq!(schema.column_type("host"), Some(ColumnType::Tag));
        assert_eq!(schema.column("usage").map(|c| c.id), Some(ColumnId(3)));
        assert_eq!(schema.column_type("missing"), None);
        assert_eq!(schema.len(), 3);
    }
}
