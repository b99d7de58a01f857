//! The lake's tables as DataFusion sees them: hive-partitioned listing tables under one root.
//! Used by compute to read `results` and by the query service to read everything; the computed
//! tables are listed as their Delta tables show them.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use testlake_schemas::tables::{flaky_scores_schema, rejected_schema, results_schema, trends_schema};
use testlake_schemas::{Lake, Table};

use crate::dedup::LaterCopy;

/// The schema of each table's files (without the hive partition columns).
pub fn file_schema(table: Table) -> SchemaRef {
    match table {
        Table::Results => results_schema(),
        Table::Rejected => rejected_schema(),
        Table::TrendsHourly | Table::TrendsDaily => trends_schema(),
        Table::FlakyScores => flaky_scores_schema(),
    }
}

/// A session with every lake table registered under its name, each computed table as its Delta
/// table's newest version shows it ([`lake_view`]).
pub async fn lake_session(lake: &Lake) -> Result<SessionContext> {
    let ctx = session();
    ctx.register_object_store(&lake.store_url(), lake_view(lake).await?);
    for table in Table::ALL {
        register(&ctx, lake, table)?;
    }
    Ok(ctx)
}

/// A session over the lake's store with no table registered: compute's, which reads `results`
/// by the files the commit log names ([`register_results_once`]) and no computed table.
pub fn compute_session(lake: &Lake) -> SessionContext {
    let ctx = session();
    ctx.register_object_store(&lake.store_url(), Arc::clone(lake.store()));
    ctx
}

fn session() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2).with_information_schema(true))
}

/// The lake's store as listing readers should see it: a computed table's folder lists what its
/// Delta table's newest version shows, and no `_delta_log/` is listed
/// (`testlake_schemas::delta::view`). Register it for [`Lake::store_url`].
pub async fn lake_view(lake: &Lake) -> Result<Arc<dyn object_store::ObjectStore>> {
    let view = testlake_schemas::delta::view::LakeView::current(lake)
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    Ok(Arc::new(view))
}

/// Registers one table; partition columns (`date`, `hour`) are strings as they appear in paths.
pub fn register(ctx: &SessionContext, lake: &Lake, table: Table) -> Result<()> {
    let url = ListingTableUrl::parse(lake.table_url(table).as_str())?;
    let partition_cols = table.partition_columns().iter().map(|c| ((*c).to_owned(), DataType::Utf8)).collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema(table));
    ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Registers `name` as exactly the given files (paths relative to the lake root) of `table`, no
/// listing involved: how compute reads only what the commit log says is committed.
pub fn register_files(ctx: &SessionContext, lake: &Lake, name: &str, table: Table, files: &[String]) -> Result<()> {
    register_files_as(ctx, lake, name, file_schema(table), files)
}

/// How `results` strings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// As `Utf8`, the files' type.
    Utf8,
    /// As `Utf8View`: the Parquet reader then points into each page's dictionary instead of
    /// copying every string out of it (a day's trends: about 9 % faster). For queries whose
    /// results are conformed to a schema after.
    Views,
}

fn read_schema(table: Table, strings: Strings) -> SchemaRef {
    if strings == Strings::Utf8 {
        return file_schema(table);
    }
    let fields: Vec<_> = file_schema(table)
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
            _ => Arc::clone(f),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Registers `name` as the given committed `results` files with every event counted once: the
/// later copies of an `event_id` ([`crate::dedup`]) left out, by their Kafka coordinates. Returns
/// those copies. When there are none — the usual case — `name` is the files themselves.
pub async fn register_results_once(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    files: &[String],
    strings: Strings,
) -> Result<Vec<LaterCopy>> {
    let copies = crate::dedup::later_copies(lake, files).await?;
    let schema = read_schema(Table::Results, strings);
    if copies.is_empty() {
        register_files_as(ctx, lake, name, schema, files)?;
        return Ok(copies);
    }
    let all = format!("{name}_with_later_copies");
    register_files_as(ctx, lake, &all, schema, files)?;
    let (is_later_copy, keep) = crate::dedup::filter::keep_firsts(&format!("{name}_is_later_copy"), &copies);
    ctx.register_udf(is_later_copy);
    let once = ctx.table(&all).await?.filter(keep)?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, once.into_view())?;
    Ok(copies)
}

fn register_files_as(ctx: &SessionContext, lake: &Lake, name: &str, schema: SchemaRef, files: &[String]) -> Result<()> {
    let urls = files
        .iter()
        .map(|f| {
            ListingTableUrl::parse(
                lake.url().join(f).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?.as_str(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
