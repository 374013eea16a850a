//! The object store for Parquet files, from `--object-store`.
//!
//! `file:///dir` (or a bare path) is a local directory, the single-node
//! default; `s3://bucket/prefix` is S3 or any S3-compatible server
//! (endpoint, region and credentials from flags or the usual `AWS_*`
//! environment variables). A prefix scopes every path Sluice writes.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;

mod synced_local;

use synced_local::SyncedLocal;

/// S3 settings (flags and environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Options {
    /// S3 endpoint URL for S3-compatible servers (e.g. `http://minio:9000`);
    /// plain `http://` is allowed when given here. [default: AWS]
    #[arg(long, env = "SLUICE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "SLUICE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3 access key id. [default: AWS_ACCESS_KEY_ID]
    #[arg(long, env = "SLUICE_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key. [default: AWS_SECRET_ACCESS_KEY]
    #[arg(long, env = "SLUICE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
}

/// A bad `--object-store` setting.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store `{url}`: {reason}")]
    Invalid { url: String, reason: String },
    #[error("object store directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object store `{url}`: {source}")]
    Build {
        url: String,
        source: object_store::Error,
    },
}

/// Builds the store named by `url`.
pub(crate) fn from_url(url: &str, s3: &S3Options) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(StoreError::Invalid {
                url: url.into(),
                reason: "no bucket: expected s3://bucket/prefix".into(),
            });
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&s3.s3_region);
        if let Some(e) = &s3.s3_endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &s3.s3_access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &s3.s3_secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let store: Arc<dyn ObjectStore> =
            Arc::new(b.build().map_err(|source| StoreError::Build {
                url: url.into(),
                source,
            })?);
        return Ok(if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        });
    }
    let path = match url.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if !url.contains("://") => PathBuf::from(url),
        None => {
            return Err(StoreError::Invalid {
                url: url.into(),
                reason: "unsupported scheme: use file:///dir or s3://bucket/prefix".into(),
            });
        }
    };
    std::fs::create_dir_all(&path).map_err(|source| StoreError::Dir {
        path: path.clone(),
        source,
    })?;
    // The store works under the canonical path; the syncs walk up to it.
    let root = path.canonicalize().map_err(|source| StoreError::Dir {
        path: path.clone(),
        source,
    })?;
    // Durable on return, as S3 is: see `synced_local.rs`.
    let store = SyncedLocal::new(root).map_err(|source| StoreError::Build {
        url: url.into(),
        source,
    })?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("objects").display());
        // A local store syncs its writes (see `synced_local.rs`).
        let local = from_url(&url, &S3Options::default()).expect("local store");
        assert!(local.to_string().starts_with("Synced("), "{local}");
        assert!(dir.path().join("objects").is_dir());
        assert!(
            from_url(
                "s3://bucket/some/prefix",
                &S3Options {
                    s3_endpoint: Some("http://127.0.0.1:9".into()),
                    s3_region: "us-east-1".into(),
                    s3_access_key_id: Some("k".into()),
                    s3_secret_access_key: Some("s".into()),
                }
            )
            .is_ok()
        );
        assert!(matches!(
            from_url("s3:///x", &S3Options::default()),
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            from_url("gs://x", &S3Options::default()),
            Err(StoreError::Invalid { .. })
        ));
    }
}
