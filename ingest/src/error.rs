//! The ingest's errors, and which of them are worth retrying ([`Error::is_transient`],
//! [`CommitError::is_transient`]; [`crate::retry`] retries only those, and not past shutdown).
//!
//! | error | transient |
//! |---|---|
//! | an object-store fault (a log object, a data file) | yes — but not the store's refusals |
//! | the store's refusals: permission, authentication, invalid path, unsupported, configuration | no |
//! | `Corrupt`: a log entry that is not valid JSON | no: the same bytes come back every time |
//! | `Fenced`: another writer owns the partition | no: the run loop drops the partition |
//! | encoding a file (Arrow, Parquet) | no |
//! | Kafka client set-up, `Config` | no |
//! | `ShuttingDown`: a retry stopped because the process is stopping | no |

use rdkafka::error::KafkaError;
use testlake_schemas::files::WriteError;

use crate::log_writer::CommitError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("arrow error building a batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("bad configuration: {0}")]
    Config(String),
    /// A retry gave up because the shutdown token was cancelled.
    #[error("stopped retrying: shutting down")]
    ShuttingDown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same operation may succeed if tried again (see the table above).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Write(e) => write_is_transient(e),
            Self::Commit(e) => e.is_transient(),
            Self::Kafka(_) | Self::Arrow(_) | Self::Config(_) | Self::ShuttingDown => false,
        }
    }
}

impl CommitError {
    /// Whether the same operation may succeed if tried again: object-store faults are, a corrupt
    /// entry or being fenced are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { source, .. } => store_is_transient(source),
            Self::Write(e) => write_is_transient(e),
            Self::Fenced { .. } | Self::Corrupt { .. } => false,
        }
    }
}

fn write_is_transient(error: &WriteError) -> bool {
    match error {
        WriteError::Store { source, .. } => store_is_transient(source),
        WriteError::Arrow { .. } | WriteError::Parquet { .. } => false,
    }
}

/// Object-store faults are worth retrying (timeouts, 5xx, connection resets, a listing that does
/// not show an object yet), except the store's refusals that no retry changes.
fn store_is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        error,
        E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. }
    )
}
