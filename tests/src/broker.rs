//! A tansu broker on a free port, unique topic names, and a group's committed offsets as the
//! broker holds them.

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

/// Waits until something accepts connections on `port` of 127.0.0.1; panics naming `what`
/// after 30 s.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
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
        Self::spawn(storage, None)
    }

    /// Starts `tansu broker` on a free port, telling clients to connect to `advertised` instead:
    /// the port of a proxy in front of it (TLS, SASL), so that every connection a client makes
    /// goes through the proxy.
    pub fn start_behind(storage: Storage, advertised: u16) -> Self {
        Self::spawn(storage, Some(advertised))
    }

    fn spawn(storage: Storage, advertised: Option<u16>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
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
        wait_for_port(port, "tansu");
        broker
    }

    /// The broker's own address (behind a proxy: where the proxy connects).
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

/// The group's committed offset of each partition that has one, read with the group's id
/// without joining the group.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> std::collections::BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    offsets
        .elements()
        .iter()
        .filter_map(|e| if let Offset::Offset(o) = e.offset() { Some((e.partition(), o)) } else { None })
        .collect()
}
