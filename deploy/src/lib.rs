//! The `testlake` binary's library: how the stages are wired together, plus the producers that
//! feed them (a JSON-lines file, JUnit XML reports through [`junit`], or a synthetic CI [`fleet`]).

pub mod fleet;
pub mod junit;
pub mod kafka;
pub mod lake;
pub mod probes;
pub mod produce;
pub mod shutdown;
pub mod stack;
