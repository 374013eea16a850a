//! A local-directory object store whose writes are on disk when they return.
//!
//! # Why
//!
//! Persistence relies on the store's acknowledgement: once a Parquet file is
//! uploaded and recorded in the catalog, the WAL segments holding its rows
//! are deleted. S3 acknowledges a PUT once the object is durable.
//! `object_store`'s `LocalFileSystem` (0.13) acknowledges once the bytes
//! are in the page cache: it writes a staging file and renames it, without
//! `fsync`. A power loss or kernel crash in the next ~30 s (until the kernel
//! writes dirty pages back) could then leave an empty or missing Parquet
//! file whose WAL is already gone: acknowledged writes lost. A `kill -9`
//! cannot show this; only the OS going down can.
//!
//! # What
//!
//! [`SyncedLocal`] wraps `LocalFileSystem`. After each write that creates
//! an object (put, a multipart upload's completion, copy, rename) it
//! `fsync`s the file and then every directory from the file's up to the
//! store's root, since the store creates missing directories (namespace,
//! table, partition) and each new entry must be durable in its parent.
//! Reads, lists and deletes are passed through: a delete that a crash
//! undoes leaves an orphan file, which is harmless.
//!
//! The syncs run on the blocking pool. They cost the persist job a few
//! milliseconds per file (the data itself is written back either way).

use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// `LocalFileSystem` with `fsync` after every write (see the module docs).
#[derive(Debug)]
pub(crate) struct SyncedLocal {
    inner: Arc<LocalFileSystem>,
    root: Arc<PathBuf>,
    /// Objects made durable so far (read by the tests).
    synced: Arc<AtomicU64>,
}

impl SyncedLocal {
    /// A store in the existing directory `root`, which must be canonical
    /// (the syncs walk up to it, and the store works under it).
    pub(crate) fn new(root: PathBuf) -> Result<Self> {
        let inner = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(Self {
            inner: Arc::new(inner),
            root: Arc::new(root),
            synced: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many objects were made durable.
    #[cfg(test)]
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Relaxed)
    }

    async fn sync(&self, location: &Path) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        sync_object(file, Arc::clone(&self.root), Arc::clone(&self.synced)).await
    }
}

/// `fsync`s `file`, then each directory from its parent up to `root`.
async fn sync_object(file: PathBuf, root: Arc<PathBuf>, synced: Arc<AtomicU64>) -> Result<()> {
    let res = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&file, e))?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(d, e))?;
            if d == root.as_path() || !d.starts_with(root.as_path()) {
                break;
            }
            dir = d.parent();
        }
        synced.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })
    .await;
    match res {
        Ok(r) => r,
        Err(join) => Err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(join),
        }),
    }
}

fn io_error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("fsync {}: {source}", path.display()).into(),
    }
}

impl fmt::Display for SyncedLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Synced({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for SyncedLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            inner: upload,
            file: self.inner.path_to_filesystem(location)?,
            root: Arc::clone(&self.root),
            synced: Arc::clone(&self.synced),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.sync(to).await
    }
}

/// A multipart upload whose completion syncs the finished file.
#[derive(Debug)]
struct SyncedUpload {
    inner: Box<dyn MultipartUpload>,
    file: PathBuf,
    root: Arc<PathBuf>,
    synced: Arc<AtomicU64>,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await?;
        sync_object(
            self.file.clone(),
            Arc::clone(&self.root),
            Arc::clone(&self.synced),
        )
        .await?;
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::buffered::BufWriter;
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn store(dir: &FsPath) -> SyncedLocal {
        SyncedLocal::new(dir.canonicalize().expect("canonical root")).expect("local store")
    }

    /// Every way of creating an object syncs it once and leaves the same
    /// bytes a plain local store would; reads and lists pass through.
    #[tokio::test]
    async fn every_write_is_synced_and_reads_pass_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Arc::new(store(dir.path()));
        let a = Path::from("ns/table/2026-11-26/a.parquet");
        s.put(&a, PutPayload::from_static(b"PAR1 a"))
            .await
            .expect("put");
        assert_eq!(s.synced(), 1);
        assert_eq!(
            std::fs::read(dir.path().join("ns/table/2026-11-26/a.parquet")).expect("on disk"),
            b"PAR1 a"
        );

        // Multipart, through the buffered writer persist uses (parts of 16
        // bytes): synced once, at completion.
        let b = Path::from("ns/table/2026-11-27/b.parquet");
        let store: Arc<dyn ObjectStore> = Arc::clone(&s) as _;
        let mut w = BufWriter::with_capacity(store, b.clone(), 16);
        let body: Vec<u8> = (0..100u8).collect();
        w.write_all(&body).await.expect("write");
        assert_eq!(s.synced(), 1, "not before completion");
        w.shutdown().await.expect("complete");
        assert_eq!(s.synced(), 2);
        let got = s.get(&b).await.expect("get").bytes().await.expect("bytes");
        assert_eq!(&got[..], &body[..]);

        s.copy(&a, &Path::from("c.parquet")).await.expect("copy");
        assert_eq!(s.synced(), 3);
        s.rename(&Path::from("c.parquet"), &Path::from("x/d.parquet"))
            .await
            .expect("rename");
        assert_eq!(s.synced(), 4);

        let mut listed: Vec<String> = s
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        listed.sort();
        assert_eq!(
            listed,
            [
                "ns/table/2026-11-26/a.parquet",
                "ns/table/2026-11-27/b.parquet",
                "x/d.parquet"
            ]
        );
        s.delete(&a).await.expect("delete");
        assert!(s.head(&a).await.is_err());
        assert_eq!(s.synced(), 4, "deletes are not synced");
    }

    /// A failed write is an error, and nothing is counted as synced.
    #[tokio::test]
    async fn a_failed_write_is_not_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let err = s
            .copy(&Path::from("missing"), &Path::from("to"))
            .await
            .expect_err("no source");
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        assert_eq!(s.synced(), 0);
    }
}
