-- Sluice catalog, SQLite (single node). Applied inside one BEGIN IMMEDIATE transaction
-- by `catalog::sqlite`, so two processes opening the same file at once cannot both
-- apply it. Never edit an applied migration (sqlx checks its checksum): add a new
-- numbered file instead.

CREATE TABLE namespaces (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE tables (
    id           INTEGER PRIMARY KEY,
    namespace_id INTEGER NOT NULL REFERENCES namespaces (id),
    name         TEXT NOT NULL,
    UNIQUE (namespace_id, name)
);

-- UNIQUE (table_id, name): at most one type can ever be recorded for a column.
CREATE TABLE columns (
    id          INTEGER PRIMARY KEY,
    table_id    INTEGER NOT NULL REFERENCES tables (id),
    name        TEXT NOT NULL,
    column_type INTEGER NOT NULL CHECK (column_type BETWEEN 1 AND 7),
    UNIQUE (table_id, name)
);

-- sort_key is a JSON array of column names (serde_json's canonical encoding, which
-- compare-and-swap relies on: it compares the encoded text).
CREATE TABLE partitions (
    id            INTEGER PRIMARY KEY,
    table_id      INTEGER NOT NULL REFERENCES tables (id),
    partition_key TEXT NOT NULL,
    sort_key      TEXT NOT NULL DEFAULT '[]',
    UNIQUE (table_id, partition_key)
);

CREATE TABLE parquet_files (
    id                  INTEGER PRIMARY KEY,
    namespace_id        INTEGER NOT NULL REFERENCES namespaces (id),
    table_id            INTEGER NOT NULL REFERENCES tables (id),
    partition_id        INTEGER NOT NULL REFERENCES partitions (id),
    object_path         TEXT NOT NULL UNIQUE,
    file_size_bytes     INTEGER NOT NULL CHECK (file_size_bytes >= 0),
    row_count           INTEGER NOT NULL CHECK (row_count >= 0),
    min_time            INTEGER NOT NULL,
    max_time            INTEGER NOT NULL,
    min_sequence_number INTEGER NOT NULL CHECK (min_sequence_number >= 0),
    max_sequence_number INTEGER NOT NULL CHECK (max_sequence_number >= 0),
    sort_key            TEXT NOT NULL,
    ingester_id         TEXT NOT NULL,
    batch_number        INTEGER NOT NULL CHECK (batch_number >= 0),
    -- Unix epoch nanoseconds, from the recording ingester's clock.
    created_at          INTEGER NOT NULL
);

CREATE INDEX parquet_files_table_id_idx ON parquet_files (table_id);
CREATE INDEX parquet_files_partition_id_idx ON parquet_files (partition_id);
