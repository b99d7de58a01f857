//! The handlers, a file per endpoint (the probes share one). Each file declares its routes as
//! `pub const` [`Endpoint`](crate::endpoint::Endpoint)s — path, parameters, handler, cache key —
//! and `routes::ENDPOINTS` lists them. A new endpoint is a new file here and a line in that table.

pub mod compare;
pub mod dashboard;
pub mod events;
pub mod flaky;
pub mod health_score;
pub mod history;
pub mod page;
pub mod probes;
pub mod sql;
pub mod trends;
