//! `CatalogService`: what the catalog knows, for queriers and people.

use std::sync::Arc;

use sluice_proto::v1;
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, CatalogError, ColumnType, NamespaceId, TableSchema};

#[derive(Debug)]
pub(crate) struct CatalogService {
    catalog: Arc<dyn Catalog>,
}

impl CatalogService {
    pub(crate) fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    async fn namespace_id(&self, name: &str) -> Result<NamespaceId, Status> {
        self.catalog
            .get_namespace(name)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("namespace `{name}` not found")))
    }
}

fn status(e: CatalogError) -> Status {
    let msg = e.to_string();
    super::catalog_status(&e, msg)
}

pub(crate) fn proto_column_type(t: ColumnType) -> v1::ColumnType {
    match t {
        ColumnType::Tag => v1::ColumnType::Tag,
        ColumnType::Time => v1::ColumnType::Time,
        ColumnType::I64 => v1::ColumnType::I64,
        ColumnType::U64 => v1::ColumnType::U64,
        ColumnType::F64 => v1::ColumnType::F64,
        ColumnType::Bool => v1::ColumnType::Bool,
        ColumnType::String => v1::ColumnType::String,
    }
}

fn proto_table(namespace: &str, t: &TableSchema) -> v1::TableSchema {
    let mut columns: Vec<v1::Column> = t
        .columns()
        .iter()
        .map(|c| v1::Column {
            id: c.id.get(),
            name: c.name.clone(),
            column_type: proto_column_type(c.column_type) as i32,
        })
        .collect();
    if t.column("time").is_none() {
        columns.push(v1::Column {
            id: 0,
            name: "time".into(),
            column_type: v1::ColumnType::Time as i32,
        });
        columns.sort_by(|a, b| a.name.cmp(&b.name));
    }
    v1::TableSchema {
        id: t.id.get(),
        namespace: namespace.to_string(),
        name: t.name.clone(),
        columns,
    }
}

#[tonic::async_trait]
impl v1::catalog_service_server::CatalogService for CatalogService {
    async fn list_namespaces(
        &self,
        _: Request<v1::ListNamespacesRequest>,
    ) -> Result<Response<v1::ListNamespacesResponse>, Status> {
        let mut namespaces: Vec<_> = self
            .catalog
            .list_namespaces()
            .await
            .map_err(status)?
            .into_iter()
            .map(|(id, name)| v1::Namespace { id: id.get(), name })
            .collect();
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(v1::ListNamespacesResponse { namespaces }))
    }

    async fn list_tables(
        &self,
        request: Request<v1::ListTablesRequest>,
    ) -> Result<Response<v1::ListTablesResponse>, Status> {
        let ns = request.into_inner().namespace;
        let id = self.namespace_id(&ns).await?;
        let mut tables: Vec<_> = self
            .catalog
            .list_tables(id)
            .await
            .map_err(status)?
            .iter()
            .map(|t| proto_table(&ns, t))
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(v1::ListTablesResponse { tables }))
    }

    async fn get_table_schema(
        &self,
        request: Request<v1::GetTableSchemaRequest>,
    ) -> Result<Response<v1::TableSchema>, Status> {
        let r = request.into_inner();
        let id = self.namespace_id(&r.namespace).await?;
        let t = self
            .catalog
            .get_table(id, &r.table)
            .await
            .map_err(status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "table `{}` not found in namespace `{}`",
                    r.table, r.namespace
                ))
            })?;
        Ok(Response::new(proto_table(&r.namespace, &t)))
    }

    async fn list_parquet_files(
        &self,
        request: Request<v1::ListParquetFilesRequest>,
    ) -> Result<Response<v1::ListParquetFilesResponse>, Status> {
        let r = request.into_inner();
        let id = self.namespace_id(&r.namespace).await?;
        let t = self
            .catalog
            .get_table(id, &r.table)
            .await
            .map_err(status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "table `{}` not found in namespace `{}`",
                    r.table, r.namespace
                ))
            })?;
        let partitions = self.catalog.list_partitions(t.id).await.map_err(status)?;
        let files = self
            .catalog
            .list_parquet_files(t.id)
            .await
            .map_err(status)?
            .into_iter()
            .map(|f| v1::ParquetFile {
                id: f.id.get(),
                partition_id: f.partition_id.get(),
                partition_key: partitions
                    .iter()
                    .find(|p| p.id == f.partition_id)
                    .map(|p| p.key.clone())
                    .unwrap_or_default(),
                object_path: f.object_path,
                file_size_bytes: f.file_size_bytes as i64,
                row_count: f.row_count as i64,
                min_time: f.min_time,
                max_time: f.max_time,
                min_sequence_number: f.min_sequence_number,
                max_sequence_number: f.max_sequence_number,
                sort_key: f.sort_key,
                ingester_id: f.ingester_id,
                batch_number: f.batch_number,
            })
            .collect();
        Ok(Response::new(v1::ListParquetFilesResponse { files }))
    }
}
