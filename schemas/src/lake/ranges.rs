//! A read of a range that the object no longer has is an error, on S3 as on a local folder.
//!
//! A reader lists a file with its size, then reads ranges of it by that size; compute may have
//! replaced the file in between (a trends file is rebuilt whole). A local folder then fails the
//! read (`OutOfRange`). `object_store`'s S3 client instead clamps the range to the new, shorter
//! object and returns fewer bytes than asked for, and Parquet's metadata decoder asserts on that
//! (`Range length must match buffer length`): the reading thread panicked — seen when two
//! compute processes on S3 read and replaced trends files at once. This store wraps the S3 one
//! and turns the short read into an error, which readers already retry from a fresh listing.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// The store it wraps, with bounded range reads checked (see the module's documentation).
#[derive(Debug)]
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) struct WholeRanges(pub(crate) Arc<dyn ObjectStore>);

impl fmt::Display for WholeRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for WholeRanges {
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let asked = match &options.range {
            Some(GetRange::Bounded(range)) => Some(range.clone()),
            _ => None,
        };
        let got = self.0.get_opts(location, options).await?;
        match asked {
            Some(asked) if got.range != asked => Err(object_store::Error::Generic {
                store: "lake",
                source: format!(
                    "{location} changed while it was read: bytes {asked:?} asked for, {:?} of {} there",
                    got.range, got.meta.size
                )
                .into(),
            }),
            _ => Ok(got),
        }
    }

    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    /// The store's own (S3's `start-after`), not the default that lists everything and filters.
    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.0.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.0.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    /// What S3 does when a range outlives its object: the memory store clamps the same way.
    #[tokio::test]
    async fn a_range_the_object_no_longer_has_is_an_error() {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = WholeRanges(Arc::clone(&inner));
        let path = Path::from("trends_daily/date=2026-12-01/data.parquet");
        store.put(&path, PutPayload::from_static(b"0123456789")).await.unwrap();
        assert_eq!(store.get_range(&path, 2..6).await.unwrap().as_ref(), b"2345");
        assert_eq!(store.get_ranges(&path, &[0..2, 8..10]).await.unwrap().concat(), b"0189");

        // Replaced by a shorter file after a reader listed it: the store clamps, the wrapper refuses.
        store.put(&path, PutPayload::from_static(b"01234567")).await.unwrap();
        assert_eq!(inner.get_range(&path, 6..10).await.unwrap().len(), 2, "the inner store returns fewer bytes");
        let err = store.get_range(&path, 6..10).await.unwrap_err().to_string();
        assert!(err.contains("changed while it was read"), "{err}");
        assert!(store.get_ranges(&path, &[0..2, 6..10]).await.is_err());
        // Whole reads and suffixes are what the object has now.
        assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap().len(), 8);
        assert_eq!(store.to_string(), inner.to_string());
    }
}
