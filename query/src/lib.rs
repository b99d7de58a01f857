//! The query service: an axum router answering dashboards from the lake's materialized tables.
//!
//! A request enters through [`routes`], the one table of endpoints (the router and the
//! [`openapi`] document are built from it), passes [`guard`]'s checks (what a browser may not do) and [`http`]'s auth and metrics, and reaches its
//! file in [`handlers`]. A handler validates its [`params`], names its answer (a cache key and the
//! tables and dates it covers) and says how to load it: a DataFusion plan over the tables
//! registered by [`testlake_compute::catalog`], built with the shared helpers of [`frame`] (or,
//! for `POST /api/v1/sql`, a user's statement run by [`sql`]). Answers are kept in the [`cache`],
//! which landed notices invalidate and [`live`] turns into events for dashboards; [`render`]
//! shapes them into responses, and [`error`] decides every failure's status. [`state`] is what the
//! handlers share; [`serve`] runs it all.

pub mod cache;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod guard;
pub mod handlers;
pub mod http;
pub mod live;
pub mod openapi;
pub mod params;
pub mod pg;
pub mod render;
pub mod routes;
pub mod serve;
pub mod sql;
pub mod state;

pub use routes::router;
pub use serve::serve;
pub use state::{AppState, ServeConfig, ServeLimits};
