-- Start-up reads, per partition, the highest batch and sequence numbers of
-- the files one ingester recorded (`Catalog::ingester_partitions`).
CREATE INDEX parquet_files_ingester_id_idx ON parquet_files (ingester_id, partition_id);
