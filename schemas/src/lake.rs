//! The lake root: one URL (`file:///…` by default, `s3://…` in production) and the object store
//! behind it. Every stage opens the lake the same way, so paths agree.
//!
//! An `s3://bucket/prefix` lake is configured as AWS's own tools are: `AWS_ENDPOINT_URL` (MinIO,
//! Ceph, any S3-compatible server), `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, `AWS_ALLOW_HTTP` and the rest of
//! `object_store`'s `AWS_*` keys, with options given to [`Lake::open_with`] taking precedence.
//! Requests are path-style (`endpoint/bucket/key`, what MinIO and Ceph expect) unless
//! virtual-hosted style is asked for, and an `http://` endpoint is plain HTTP without also
//! setting `AWS_ALLOW_HTTP`. Create-only puts are sent with `If-None-Match: *` and conditional
//! replaces with `If-Match: <etag>` (`object_store`'s default `aws_conditional_put=etag`);
//! [`Lake::check_conditional_writes`] checks at start-up that the store honours them. A range
//! read that the object no longer has (replaced meanwhile) is an error, as on a local folder
//! (`lake/ranges.rs`).
//! Credentials never appear in the lake's URL, its `Debug` output or its errors.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions, PutPayload, UpdateVersion};
use url::Url;

mod ranges;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {input:?} is not a URL or a path: {message}")]
    BadLocation { input: String, message: String },
    #[error("cannot create the lake folder {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("no object store for {url}: {source} (s3:// needs a build with the `s3` feature, on by default)")]
    Store { url: String, source: Box<object_store::Error> },
    #[error("the object store of {url} cannot be used: {message}")]
    Unsafe { url: String, message: String },
    #[error("probing the object store of {url} at {path}: {source}")]
    Probe { url: String, path: String, source: Box<object_store::Error> },
}

/// An opened lake: where it is, and the store that holds it.
#[derive(Clone)]
pub struct Lake {
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Shared by the lake's clones: one snapshot and one publisher per process.
    pub(crate) delta: Arc<crate::delta::DeltaTables>,
}

/// The URL and the store's own description (`AmazonS3(bucket)`), never its configuration: that
/// holds the credentials.
impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url.as_str()).field("store", &self.store.to_string()).finish()
    }
}

/// What a store does with a conditional replace (`If-Match`), found by
/// [`Lake::check_conditional_writes`]. Compute's fenced writes use it when it is honoured; where
/// it is not, they check the file right before replacing it (`compute/src/schedule/fence.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    Honoured,
    /// The store refuses conditional replaces (the local filesystem).
    NotSupported,
    /// The store replaced an object whose version did not match: it ignores `If-Match`.
    Ignored,
}

impl Lake {
    /// Opens a lake from a URL (`file:///var/lib/testlake`, `memory:///`, `s3://bucket/prefix`)
    /// or a plain filesystem path, which is made absolute and created if missing. An S3 store
    /// takes its settings from the `AWS_*` environment variables (see the module's documentation).
    pub fn open(location: &str) -> Result<Self, LakeError> {
        Self::open_with(location, &[])
    }

    /// As [`Self::open`], with store options (`object_store`'s keys: `endpoint`, `region`,
    /// `access_key_id`, `allow_http`, `timeout`, …) that take precedence over the environment.
    /// An unknown key is an error naming it; values are never shown.
    pub fn open_with(location: &str, options: &[(String, String)]) -> Result<Self, LakeError> {
        let bad = |message: String| LakeError::BadLocation { input: location.to_owned(), message };
        let mut url = match Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
                Url::from_directory_path(&path).map_err(|()| bad("not an absolute path".into()))?
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            return Err(LakeError::BadLocation {
                input: shown.to_string(),
                message: "credentials in the URL are not read: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            });
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|()| bad("not a local path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|source| LakeError::CreateDir { path: dir.display().to_string(), source })?;
        }
        let store_error = |e| LakeError::Store { url: url.to_string(), source: Box::new(e) };
        let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|e| store_error(e.into()))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            #[cfg(feature = "s3")]
            ObjectStoreScheme::AmazonS3 => {
                Arc::new(ranges::WholeRanges(Arc::new(s3(&url, options).map_err(store_error)?)))
            }
            _ => Arc::from(object_store::parse_url_opts(&url, options.iter().cloned()).map_err(store_error)?.0),
        };
        Ok(Self { url, store, prefix, delta: Arc::default() })
    }
    /// A lake over an in-memory store, for tests.
    pub fn in_memory() -> Self {
        Self::with_store(Url::parse("memory:///").expect("valid URL"), Arc::new(object_store::memory::InMemory::new()))
    }

    /// A lake at `url` whose objects live in `store` (a wrapping store that injects faults, say).
    pub fn with_store(url: Url, store: Arc<dyn ObjectStore>) -> Self {
        let prefix = Path::from_url_path(url.path()).unwrap_or_default();
        Self { url, store, prefix, delta: Arc::default() }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object-store path of a location relative to the lake root (`results/date=…/x.parquet`).
    pub fn path(&self, relative: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// The location relative to the lake root of a path the store listed, if it is inside the lake.
    pub fn relative(&self, path: &Path) -> Option<String> {
        let parts: Vec<_> = path.prefix_match(&self.prefix)?.map(|p| p.as_ref().to_owned()).collect();
        Some(parts.join("/"))
    }

    /// The URL of a table folder, as query engines name it (`file:///lake/results/`).
    pub fn table_url(&self, table: crate::Table) -> Url {
        self.url.join(&format!("{}/", table.name())).expect("table names are valid URL segments")
    }

    /// The scheme and authority alone (`file:///`, `s3://bucket/`), under which the store is
    /// registered with a query engine.
    pub fn store_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("/");
        url
    }

    /// Checks that the store honours what the commit protocol relies on, with a probe object
    /// under `_probe/`: a create-only put of an existing object must fail (`If-None-Match: *` on
    /// S3; without it two writers could both "win" a log entry), and says what it does with a
    /// conditional replace on a stale version (`If-Match`). Stores that ignore `If-None-Match`
    /// (garage, S3 before November 2024 conditional writes, `AWS_CONDITIONAL_PUT=disabled`) are
    /// refused. Writers call it once at start; it costs four requests.
    pub async fn check_conditional_writes(&self) -> Result<IfMatch, LakeError> {
        let relative = format!("_probe/{}", uuid::Uuid::new_v4().simple());
        let path = self.path(&relative);
        let probe =
            |source| LakeError::Probe { url: self.url.to_string(), path: relative.clone(), source: Box::new(source) };
        let unsafe_store = |message: &str| LakeError::Unsafe { url: self.url.to_string(), message: message.to_owned() };
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let first = match self.store.put_opts(&path, PutPayload::from_static(b"1"), create.clone()).await {
            Ok(first) => first,
            Err(object_store::Error::NotImplemented { .. }) => {
                return Err(unsafe_store("it does not support create-only writes (If-None-Match: *)"));
            }
            Err(e) => return Err(probe(e)),
        };
        let result = async {
            match self.store.put_opts(&path, PutPayload::from_static(b"2"), create).await {
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Ok(_) => {
                    return Err(unsafe_store(
                        "it replaced an existing object on a create-only write: it ignores If-None-Match, \
                         so two writers could both commit the same log entry",
                    ));
                }
                Err(e) => return Err(probe(e)),
            }
            // A well-formed tag that is not the object's.
            let tag = "\"00000000000000000000000000000000\"";
            let stale = UpdateVersion { e_tag: Some(tag.to_owned()), version: None };
            debug_assert_ne!(first.e_tag.as_deref(), Some(tag));
            let update = PutOptions { mode: PutMode::Update(stale), ..Default::default() };
            Ok(match self.store.put_opts(&path, PutPayload::from_static(b"3"), update).await {
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                    IfMatch::Honoured
                }
                Err(object_store::Error::NotImplemented { .. }) => IfMatch::NotSupported,
                Ok(_) => IfMatch::Ignored,
                Err(e) => return Err(probe(e)),
            })
        }
        .await;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => result,
            Err(e) => result.and(Err(probe(e))),
        }
    }
}

/// An S3 store for `url` (`s3://bucket/prefix`): the `AWS_*` environment, then `options`.
#[cfg(feature = "s3")]
fn s3(url: &Url, options: &[(String, String)]) -> object_store::Result<object_store::aws::AmazonS3> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

    let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
    let mut allow_http_set = std::env::var_os("AWS_ALLOW_HTTP").is_some();
    for (key, value) in options {
        let key: AmazonS3ConfigKey = key.to_ascii_lowercase().parse()?;
        allow_http_set |= key == AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp);
        builder = builder.with_config(key, value);
    }
    // Whoever names an http:// endpoint (a MinIO on the same host) means plain HTTP, as the AWS
    // CLI takes it; object_store would refuse it without AWS_ALLOW_HTTP.
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if !allow_http_set && endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_become_file_urls_and_are_created() {
        let dir = std::env::temp_dir().join(format!("testlake-lake-{}", std::process::id()));
        let lake = Lake::open(dir.join("x").to_str().unwrap()).unwrap();
        assert_eq!(lake.url().scheme(), "file");
        assert!(lake.url().path().ends_with("/x/"));
        assert!(dir.join("x").is_dir());
        let table = lake.table_url(crate::Table::Results);
        assert!(table.as_str().ends_with("/x/results/"), "{table}");
        let p = lake.path("results/date=2026-01-01/hour=00/f.parquet");
        assert_eq!(lake.relative(&p).unwrap(), "results/date=2026-01-01/hour=00/f.parquet");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_locations_are_errors() {
        assert!(Lake::open("nosuchscheme://x/y").is_err());
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_says_how_to_get_it() {
        let err = Lake::open("s3://bucket/lake").unwrap_err().to_string();
        assert!(err.contains("`s3` feature"), "{err}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_open_without_connecting() {
        let lake = Lake::open("s3://bucket/some/lake").unwrap();
        assert_eq!(lake.table_url(crate::Table::Results).as_str(), "s3://bucket/some/lake/results/");
        assert_eq!(lake.store_url().as_str(), "s3://bucket/");
        assert_eq!(lake.relative(&lake.path("results/x.parquet")).unwrap(), "results/x.parquet");
        assert_eq!(lake.path("results/x.parquet").as_ref(), "some/lake/results/x.parquet");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn secrets_are_never_shown() {
        let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
        let options = [
            ("access_key_id".to_owned(), "AKIDEXAMPLE".to_owned()),
            ("secret_access_key".to_owned(), secret.to_owned()),
            ("endpoint".to_owned(), "http://127.0.0.1:9".to_owned()),
        ];
        let lake = Lake::open_with("s3://bucket/lake", &options).unwrap();
        let shown = format!("{lake:?} {lake:#?}");
        assert!(!shown.contains(secret) && shown.contains("s3://bucket/lake/"), "{shown}");

        let err = Lake::open(&format!("s3://AKIDEXAMPLE:{secret}@bucket/lake")).unwrap_err().to_string();
        assert!(!err.contains(secret) && err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");

        let bad = [("secret_acces_key".to_owned(), secret.to_owned())];
        let err = Lake::open_with("s3://bucket/lake", &bad).unwrap_err().to_string();
        assert!(!err.contains(secret) && err.contains("secret_acces_key"), "{err}");
    }

    #[tokio::test]
    async fn conditional_writes_are_probed() {
        assert_eq!(Lake::in_memory().check_conditional_writes().await.unwrap(), IfMatch::Honoured);
        let dir = tempfile::tempdir().unwrap();
        let local = Lake::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(local.check_conditional_writes().await.unwrap(), IfMatch::NotSupported);
        let probes = std::fs::read_dir(dir.path().join("_probe")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(probes, 0, "the probe object is deleted");
    }
}
