//! An `ObjectStore` wrapper that injects the faults of a real object store into writes: errors,
//! timeouts, slow puts, and puts that land but whose response is lost.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// Which puts fail, counted over all puts (`0` disables a fault).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Every n-th put fails before writing anything.
    pub fail_every: u64,
    /// Every n-th put hangs for `timeout` and then fails, writing nothing.
    pub timeout_every: u64,
    pub timeout: Duration,
    /// Every n-th put is written, then reported as failed (a lost response).
    pub lose_response_every: u64,
    /// Added to every put.
    pub slow: Duration,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
    puts: AtomicU64,
    injected: AtomicU64,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        Self { inner, faults, puts: AtomicU64::new(0), injected: AtomicU64::new(0) }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn fault(&self, what: &str) -> object_store::Error {
        self.injected.fetch_add(1, Ordering::SeqCst);
        object_store::Error::Generic { store: "faulty", source: format!("injected fault: {what}").into() }
    }
}

fn hits(n: u64, every: u64) -> bool {
    every > 0 && n % every == every - 1
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.faults.slow).await;
        if hits(n, self.faults.fail_every) {
            return Err(self.fault("put failed"));
        }
        if hits(n, self.faults.timeout_every) {
            tokio::time::sleep(self.faults.timeout).await;
            return Err(self.fault("put timed out"));
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        if hits(n, self.faults.lose_response_every) {
            return Err(self.fault("put landed, response lost"));
        }
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
