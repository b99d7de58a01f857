//! The lake as the binary opens it: processes that write check first that the store honours the
//! conditional writes the commit protocol relies on (`Lake::check_conditional_writes`).

use anyhow::{Context, Result};
use testlake_schemas::Lake;
use testlake_schemas::lake::IfMatch;
use tracing::{info, warn};

/// Opens the lake at `location` (store `options` over the `AWS_*` environment) for a process that
/// writes to it: refused when the store ignores create-only writes, with a warning when it
/// ignores conditional replaces.
pub async fn open_for_writing(location: &str, options: &[(String, String)]) -> Result<Lake> {
    let lake = Lake::open_with(location, options)?;
    let if_match = lake.check_conditional_writes().await.with_context(|| format!("opening the lake {}", lake.url()))?;
    match if_match {
        IfMatch::Honoured => info!(lake = %lake.url(), "the store honours create-only and conditional writes"),
        IfMatch::NotSupported => {
            info!(lake = %lake.url(), "the store honours create-only writes; computed files are replaced after a check")
        }
        IfMatch::Ignored => warn!(
            lake = %lake.url(),
            "the store ignores If-Match: computed files are replaced after a check of the file in place, \
             not atomically with it"
        ),
    }
    Ok(lake)
}
