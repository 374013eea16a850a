//! A read-through cache of the catalog for the write and query paths.
//!
//! Namespaces, table schemas and partition ids are looked up on every write;
//! the catalog (possibly PostgreSQL, shared by many pods) is asked only the
//! first time, or when a write brings a column the cached schema lacks.
//! Column types never change once recorded, so a cached column is
//! authoritative; a column missing from the cache is always checked by the
//! catalog, which arbitrates between concurrent writers (and pods).

use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::RwLock;

use super::{Catalog, CatalogError, ColumnType, NamespaceId, PartitionId, TableId, TableSchema};

/// One namespace's cached names.
#[derive(Debug)]
pub(crate) struct CachedNamespace {
    pub(crate) id: NamespaceId,
    pub(crate) name: Arc<str>,
    tables: RwLock<HashMap<String, Arc<TableSchema>>>,
    partitions: RwLock<HashMap<TableId, HashMap<String, PartitionId>>>,
}

impl CachedNamespace {
    /// The cached schema of `table`, if any.
    pub(crate) fn cached_table(&self, table: &str) -> Option<Arc<TableSchema>> {
        self.tables.read().get(table).cloned()
    }
}

#[derive(Debug)]
pub(crate) struct SchemaCache {
    catalog: Arc<dyn Catalog>,
    namespaces: RwLock<HashMap<String, Arc<CachedNamespace>>>,
}

impl SchemaCache {
    pub(crate) fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            namespaces: RwLock::new(HashMap::new()),
        }
    }

    fn insert_namespace(&self, name: &str, id: NamespaceId) -> Arc<CachedNamespace> {
        let mut w = self.namespaces.write();
        Arc::clone(w.entry(name.to_string()).or_insert_with(|| {
            Arc::new(CachedNamespace {
                id,
                name: name.into(),
                tables: RwLock::new(HashMap::new()),
                partitions: RwLock::new(HashMap::new()),
            })
        }))
    }

    /// The namespace, created in the catalog on first use.
    pub(crate) async fn namespace(&self, name: &str) -> Result<Arc<CachedNamespace>, CatalogError> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return Ok(Arc::clone(ns));
        }
        let id = self.catalog.get_or_create_namespace(name).await?;
        Ok(self.insert_namespace(name, id))
    }

    /// The namespace if it exists (never creates it).
    pub(crate) async fn existing_namespace(
        &self,
        name: &str,
    ) -> Result<Option<Arc<CachedNamespace>>, CatalogError> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return Ok(Some(Arc::clone(ns)));
        }
        Ok(self
            .catalog
            .get_namespace(name)
            .await?
            .map(|id| self.insert_namespace(name, id)))
    }

    /// The table's schema if it exists (never creates it), refreshed from
    /// the catalog when not cached.
    pub(crate) async fn existing_table(
        &self,
        ns: &CachedNamespace,
        table: &str,
    ) -> Result<Option<Arc<TableSchema>>, CatalogError> {
        if let Some(t) = ns.cached_table(table) {
            return Ok(Some(t));
        }
        Ok(self
            .catalog
            .get_table(ns.id, table)
            .await?
            .map(|s| self.store_table(ns, s)))
    }

    /// Refreshes a table's schema from the catalog (columns added by other
    /// pods become visible to queries).
    pub(crate) async fn refresh_table(
        &self,
        ns: &CachedNamespace,
        table: &str,
    ) -> Result<Option<Arc<TableSchema>>, CatalogError> {
        Ok(self
            .catalog
            .get_table(ns.id, table)
            .await?
            .map(|s| self.store_table(ns, s)))
    }

    fn store_table(&self, ns: &CachedNamespace, schema: TableSchema) -> Arc<TableSchema> {
        let mut w = ns.tables.write();
        let schema = Arc::new(schema);
        match w.get(&schema.name) {
            // Keep whichever knows more columns (schemas only grow).
            Some(existing) if existing.len() >= schema.len() => Arc::clone(existing),
            _ => {
                w.insert(schema.name.clone(), Arc::clone(&schema));
                schema
            }
        }
    }

    /// Creates the table if needed and adds `new_columns`, atomically in the
    /// catalog. A type conflict with the catalog is an error and adds nothing.
    pub(crate) async fn resolve_table(
        &self,
        ns: &CachedNamespace,
        table: &str,
        new_columns: &[(String, ColumnType)],
    ) -> Result<Arc<TableSchema>, CatalogError> {
        let schema = match ns.cached_table(table) {
            Some(s) => s,
            None => {
                let s = self.catalog.get_or_create_table(ns.id, table).await?;
                self.store_table(ns, s)
            }
        };
        let missing: Vec<(String, ColumnType)> = new_columns
            .iter()
            .filter(|(name, t)| schema.column(name).map(|c| c.column_type) != Some(*t))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(schema);
        }
        let updated = self.catalog.add_columns(schema.id, &missing).await?;
        Ok(self.store_table(ns, updated))
    }

    /// The partition id of (`table`, `key`), created on first use.
    pub(crate) async fn partition(
        &self,
        ns: &CachedNamespace,
        table: TableId,
        key: &str,
    ) -> Result<PartitionId, CatalogError> {
        if let Some(id) = ns.partitions.read().get(&table).and_then(|t| t.get(key)) {
            return Ok(*id);
        }
        let p = self.catalog.get_or_create_partition(table, key).await?;
        ns.partitions
            .write()
            .entry(table)
            .or_default()
            .insert(key.to_string(), p.id);
        Ok(p.id)
    }
}
