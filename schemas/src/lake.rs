//! The lake root: one URL (`file:///…` by default, `s3://…` in production) and the object store
//! behind it. Every stage opens the lake the same way, so paths agree.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {input:?} is not a URL or a path: {message}")]
    BadLocation { input: String, message: String },
    #[error("cannot create the lake folder {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("no object store for {url}: {source} (s3:// needs a build with `--features s3`)")]
    Store { url: String, source: Box<object_store::Error> },
}

/// An opened lake: where it is, and the store that holds it.
#[derive(Clone, Debug)]
pub struct Lake {
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl Lake {
    /// Opens a lake from a URL (`file:///var/lib/testlake`, `memory:///`, and `s3://bucket/prefix`
    /// in builds with the `s3` feature) or a plain filesystem path, which is made absolute and
    /// created if missing.
    pub fn open(location: &str) -> Result<Self, LakeError> {
        let bad = |message: String| LakeError::BadLocation { input: location.to_owned(), message };
        let mut url = match Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
                Url::from_directory_path(&path).map_err(|()| bad("not an absolute path".into()))?
            }
        };
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|()| bad("not a local path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|source| LakeError::CreateDir { path: dir.display().to_string(), source })?;
        }
        // Store settings (credentials, region, endpoint) come from the environment, e.g.
        // AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT for an S3-compatible store.
        let (store, prefix) = object_store::parse_url_opts(&url, std::env::vars())
            .map_err(|e| LakeError::Store { url: url.to_string(), source: Box::new(e) })?;
        Ok(Self { url, store: Arc::from(store), prefix })
    }

    /// A lake over an in-memory store, for tests.
    pub fn in_memory() -> Self {
        Self::with_store(Url::parse("memory:///").expect("valid URL"), Arc::new(object_store::memory::InMemory::new()))
    }

    /// A lake at `url` whose objects live in `store` (a wrapping store that injects faults, say).
    pub fn with_store(url: Url, store: Arc<dyn ObjectStore>) -> Self {
        let prefix = Path::from_url_path(url.path()).unwrap_or_default();
        Self { url, store, prefix }
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
        assert!(err.contains("--features s3"), "{err}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_open_without_connecting() {
        let lake = Lake::open("s3://bucket/some/lake").unwrap();
        assert_eq!(lake.table_url(crate::Table::Results).as_str(), "s3://bucket/some/lake/results/");
        assert_eq!(lake.store_url().as_str(), "s3://bucket/");
    }
}
