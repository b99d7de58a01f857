//! Support for testlake's integration tests: a real tansu broker on a free port, unique topics,
//! and an independent model of the numbers the lake must hold.
//!
//! A test that needs the broker fails when `tansu` is missing; it never skips.

pub mod model;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker process on 127.0.0.1, killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// The `testlake` binary next to the running test (cargo builds it with the workspace's tests:
/// `deploy/tests/cli.rs` needs it).
pub fn testlake_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let bin = dir.join("testlake");
    assert!(bin.is_file(), "{} is missing: build it with `cargo build -p testlake`", bin.display());
    bin
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Which tansu storage engine a test broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `memory://` (dynostore): fastest. Its fetch returns only record batches whose *base*
    /// offset is at or after the requested offset, so a consumer resuming from an offset inside
    /// a batch silently skips the rest of that batch (tansu-storage 0.6.0, `dynostore.rs`,
    /// `offsets.split_off(&offset)`). Fine for tests that never resume mid-batch.
    Memory,
    /// `sqlite://` (libsql): stores records one by one and fetches from any offset, as Kafka
    /// does. Tests that restart consumers use it.
    Sqlite,
}

impl Broker {
    /// Starts `tansu broker` with the in-memory storage engine (see [`Storage::Memory`]).
    pub fn start() -> Self {
        Self::start_with(Storage::Memory)
    }

    /// Starts `tansu broker` on a free port and waits until it accepts connections. Panics, with
    /// the reason, if it cannot.
    pub fn start_with(storage: Storage) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args([
                "--storage-engine",
                match storage {
                    Storage::Memory => "memory://tansu/",
                    Storage::Sqlite => "sqlite://tansu.db",
                },
            ])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the tansu broker ({e}); run deploy/scripts/setup.sh"));
        let broker = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
