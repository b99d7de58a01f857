//! The lake's store as a folder-listing reader inside testlake should see it: a computed table's
//! folder lists only the files of its Delta table's newest version (not a replaced file in the
//! moment before its delete, nor one a crashed writer left), and no table lists its `_delta_log/`
//! (a checkpoint is a `.parquet` file, not data). Reads pass through unchanged.
//!
//! DataFusion's listing tables keep working as they did — hive partitions, pruning by `date` —
//! over this store: `testlake_compute::catalog::lake_session` registers it for the lake's URL.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use super::DeltaError;
use crate::{Lake, Table};

/// The lake's store, listing what the lake's Delta tables show (see the module's documentation).
#[derive(Debug, Clone)]
pub struct LakeView {
    lake: Lake,
    /// Per computed table with a Delta table: the files its newest version shows (relative to the
    /// lake root). A table without one lists as its folder is.
    shown: Arc<HashMap<Table, HashSet<String>>>,
}

impl LakeView {
    /// The view as of the computed tables' newest versions.
    pub async fn current(lake: &Lake) -> Result<Self, DeltaError> {
        let mut shown = HashMap::new();
        for table in [Table::TrendsHourly, Table::TrendsDaily, Table::FlakyScores] {
            if let Some(files) = lake.delta().computed_files(lake, table).await? {
                shown.insert(table, files.into_iter().map(|f| f.path.to_string()).collect());
            }
        }
        Ok(Self { lake: lake.clone(), shown: Arc::new(shown) })
    }

    fn lists(&self, location: &Path) -> bool {
        keeps(&self.lake, &self.shown, location)
    }

    fn filtered(&self, listed: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (lake, shown) = (self.lake.clone(), Arc::clone(&self.shown));
        listed
            .filter(move |item| std::future::ready(item.as_ref().map_or(true, |m| keeps(&lake, &shown, &m.location))))
            .boxed()
    }
}

fn keeps(lake: &Lake, shown: &HashMap<Table, HashSet<String>>, location: &Path) -> bool {
    let Some(relative) = lake.relative(location) else {
        return true;
    };
    let mut parts = relative.split('/');
    let Some(table) = parts.next().and_then(|t| t.parse::<Table>().ok()) else {
        return true;
    };
    if parts.next() == Some("_delta_log") {
        return false;
    }
    shown.get(&table).is_none_or(|files| files.contains(&relative))
}

impl fmt::Display for LakeView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeView({})", self.lake.store())
    }
}

#[async_trait]
impl ObjectStore for LakeView {
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.lake.store().get_opts(location, options).await
    }

    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.lake.store().put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.lake.store().put_multipart_opts(location, opts).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.lake.store().delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.filtered(self.lake.store().list(prefix))
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.filtered(self.lake.store().list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.lake.store().list_with_delimiter(prefix).await?;
        listed.objects.retain(|m| self.lists(&m.location));
        listed.common_prefixes.retain(|p| p.filename() != Some("_delta_log"));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.lake.store().copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.lake.store().rename_opts(from, to, options).await
    }
}
