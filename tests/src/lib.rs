//! Support for testlake's integration tests. A real tansu broker on a free port, with a unique
//! topic per test ([`broker`]); events produced to it, or committed straight into a lake, and
//! the ids that landed checked against them ([`landing`]); the stack and the `testlake`
//! processes under test ([`stack`]) and a client of its event stream ([`sse`]); an object store
//! that injects faults ([`faulty_store`]); and an independent model of the numbers the lake must
//! hold ([`model`]).
//!
//! A test that needs the broker fails when `tansu` is missing; it never skips.

pub mod broker;
pub mod faulty_store;
pub mod landing;
pub mod model;
pub mod sse;
pub mod stack;

pub use broker::{Broker, Storage, committed_offsets, free_port, unique_topic};
pub use landing::{
    Produced, assert_exactly_once, land_committed, land_committed_chunks, landed_ids, produce_events, produce_fleet,
};
pub use sse::SseClient;
pub use stack::{IngestRun, Running, TestStack, last_assignment, signal, testlake_binary};
