//! Migrations embedded in the binary.
//!
//! The SQL lives in `ingester/migrations/{sqlite,postgres}/NNNN_description.sql` and is
//! pulled in with `include_str!` (paths relative to this file, so the module builds the
//! same wherever its crate's manifest is; cargo also rebuilds when a file changes).
//! Each backend lists its files in order; sqlx's `Migrator` records applied versions
//! and checksums in `_sqlx_migrations` and refuses to start if an applied file changed.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::CatalogError;

/// One embedded migration: version, description, SQL.
pub(super) type Embedded = (i64, &'static str, &'static str);

/// SQLite migrations, oldest first.
pub(super) const SQLITE: &[Embedded] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "ingester index",
        include_str!("../../migrations/sqlite/0002_ingester_index.sql"),
    ),
];

/// PostgreSQL migrations, oldest first.
pub(super) const POSTGRES: &[Embedded] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "ingester index",
        include_str!("../../migrations/postgres/0002_ingester_index.sql"),
    ),
];

#[derive(Debug)]
struct EmbeddedSource(&'static [Embedded]);

impl MigrationSource<'static> for EmbeddedSource {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A migrator over `migrations` (sqlx's advisory locking left on).
pub(super) async fn migrator(migrations: &'static [Embedded]) -> Result<Migrator, CatalogError> {
    Migrator::new(EmbeddedSource(migrations))
        .await
        .map_err(|source| CatalogError::Migration { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_backends_in_step() {
        for list in [SQLITE, POSTGRES] {
            assert!(list.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(list.iter().all(|m| !m.2.trim().is_empty()));
        }
        let versions = |l: &[Embedded]| l.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
    }
}
