//! Support for testlake's integration tests. A real tansu broker on a free port, with a unique
//! topic per test ([`broker`]), or behind TLS and SASL ([`secure`]); lakes on each backend — a
//! folder, or a bucket on an S3 server on a free port ([`s3`]); events produced to it, or
//! committed straight into a lake, and the ids that landed checked against them ([`landing`]);
//! the stack and the `testlake` processes under test ([`stack`]) and a client of its event stream
//! ([`sse`]); an object store that injects faults ([`faulty_store`]) and an HTTP proxy that
//! injects them in front of an S3 server ([`fault_proxy`]); and an independent model of the
//! numbers the lake must hold ([`model`]).
//!
//! A test that needs the broker, an S3 server or a tool (stunnel, openssl, the PyPI packages)
//! fails when it is missing; it never skips.

pub mod broker;
pub mod delta;
pub mod fault_proxy;
pub mod faulty_store;
pub mod landing;
pub mod model;
pub mod s3;
pub mod secure;
pub mod sse;
pub mod stack;

pub use broker::{Broker, Storage, committed_offsets, free_port, unique_topic};
pub use landing::{
    Produced, assert_exactly_once, land_committed, land_committed_chunks, landed_ids, landed_ids_in, produce_events,
    produce_fleet, trend_runs,
};
pub use s3::{Backend, TestLake};
pub use secure::{SecureKafka, Security};
pub use sse::SseClient;
pub use stack::{IngestRun, Running, TestStack, last_assignment, signal, testlake_binary};
