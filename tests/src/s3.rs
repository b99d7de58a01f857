//! Lakes on each backend the tests run against ([`Backend`]): a local folder, or a fresh bucket on
//! an S3 server started for the test on a free 127.0.0.1 port ([`S3Server`]) — `s3s-fs`, a real
//! file-backed server that checks credentials (its conditional writes are not atomic under
//! concurrency: sequential tests), or `moto`, whose conditional writes are atomic (the race
//! tests). A test whose server is missing fails naming `deploy/scripts/setup.sh`; it never skips.
//!
//! A [`TestLake`] is what a test needs to point testlake at the lake: in this process
//! ([`TestLake::lake`], opened with explicit store options) and in child processes
//! ([`TestLake::apply`]: `--lake` and the `AWS_*` variables a user would set), and to read what
//! landed directly from the store, whatever the backend.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::TryStreamExt;
use testlake_schemas::Lake;

use crate::broker::{free_port, wait_for_port};

/// Where a test's lake lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary folder (`file://`).
    Local,
    /// A bucket on `s3s-fs` (file-backed, credentials checked; sequential tests only).
    S3sFs,
    /// A bucket on `moto` (in memory; conditional writes atomic: the race tests).
    Moto,
}

/// An S3 server process on 127.0.0.1, killed on drop.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub backend: Backend,
    /// The secret the server checks (`s3s-fs`; `moto` accepts any).
    secret: String,
    /// `s3s-fs`'s root folder: one sub-folder per bucket.
    _root: tempfile::TempDir,
}

/// The access key id every test server is given.
pub const ACCESS_KEY_ID: &str = "testlake-tests";
/// The region every test lake names.
pub const REGION: &str = "us-east-1";

/// An executable of the test venv (`$TESTLAKE_VENV/bin`, default `~/.cache/testlake/venv/bin`),
/// where `deploy/scripts/setup.sh` installs the PyPI tools.
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("TESTLAKE_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/testlake/venv")))
        .expect("TESTLAKE_VENV or HOME");
    let bin = venv.join("bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run deploy/scripts/setup.sh (it installs it into $TESTLAKE_VENV, default \
         ~/.cache/testlake/venv)",
        bin.display()
    );
    bin
}

impl S3Server {
    /// Starts the server of `backend` (not [`Backend::Local`]) on a free port, waits until it
    /// answers, and creates `bucket`. Panics, naming the cause, if it cannot.
    pub fn start(backend: Backend, bucket: &str) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let port = free_port();
        let quiet = std::env::var_os("TESTLAKE_TEST_LOG").is_none();
        let mut command = match backend {
            Backend::Local => panic!("a local lake has no server"),
            Backend::S3sFs => {
                // A bucket is a folder of the root.
                std::fs::create_dir(root.path().join(bucket)).expect("bucket folder");
                let mut command = Command::new("s3s-fs");
                command
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY_ID, "--secret-key", &secret])
                    .arg(root.path())
                    .env("RUST_LOG", "warn");
                command
            }
            Backend::Moto => {
                let mut command = Command::new(venv_tool("moto_server"));
                command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                command
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(if quiet { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {backend:?} S3 server ({e}); run deploy/scripts/setup.sh"));
        let server = Self { child, port, backend, secret, _root: root };
        wait_for_port(port, &format!("the {backend:?} S3 server"));
        if backend == Backend::Moto {
            // moto checks no signature: a plain request creates the bucket.
            let status = http_status(port, &format!("PUT /{bucket} HTTP/1.1"));
            assert_eq!(status, 200, "creating the bucket {bucket} on moto");
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Store options that reach this server (for `Lake::open_with`).
    pub fn options(&self) -> Vec<(String, String)> {
        vec![
            ("endpoint".to_owned(), self.endpoint()),
            ("region".to_owned(), REGION.to_owned()),
            ("access_key_id".to_owned(), ACCESS_KEY_ID.to_owned()),
            ("secret_access_key".to_owned(), self.secret.clone()),
        ]
    }

    /// The `AWS_*` variables that point a process at this server, as a user sets them
    /// (`AWS_ALLOW_HTTP` left out: an http:// endpoint is enough), through `endpoint` if given (a
    /// proxy) instead of the server itself.
    pub fn env(&self, endpoint: Option<&str>) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".to_owned(), endpoint.map_or_else(|| self.endpoint(), str::to_owned)),
            ("AWS_REGION".to_owned(), REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), self.secret.clone()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of one bodiless HTTP/1.1 request to 127.0.0.1:`port`.
fn http_status(port: u16, request_line: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(stream, "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("answer: {answer:?}"))
}

/// A test's lake on one backend; the server (if any) and the folders go with it.
pub struct TestLake {
    pub backend: Backend,
    /// The lake as this process opens it.
    pub lake: Lake,
    location: String,
    /// Store options of this process's lake (endpoint, credentials, region).
    options: Vec<(String, String)>,
    scratch: tempfile::TempDir,
    server: Option<S3Server>,
}

impl TestLake {
    /// A fresh lake: a folder, or a bucket of its own on a server of its own.
    pub fn start(backend: Backend) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        let (location, options, server) = match backend {
            Backend::Local => (scratch.path().join("lake").to_str().expect("utf-8 path").to_owned(), Vec::new(), None),
            Backend::S3sFs | Backend::Moto => {
                let bucket = format!("lake-{}", uuid::Uuid::new_v4().simple());
                let server = S3Server::start(backend, &bucket);
                (format!("s3://{bucket}/lake"), server.options(), Some(server))
            }
        };
        let lake = Lake::open_with(&location, &options).expect("open the test lake");
        Self { backend, lake, location, options, scratch, server }
    }

    /// `--lake` of a `testlake` command.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The store options of [`Self::lake`] (for `StackConfig::lake_options`).
    pub fn options(&self) -> &[(String, String)] {
        &self.options
    }

    /// A folder for the test's logs and files; outside the lake.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// The S3 server, if the lake has one.
    pub fn server(&self) -> Option<&S3Server> {
        self.server.as_ref()
    }

    /// [`S3Server::env`] of this lake's server (none for a folder).
    pub fn env_via(&self, endpoint: Option<&str>) -> Vec<(String, String)> {
        self.server.as_ref().map(|server| server.env(endpoint)).unwrap_or_default()
    }

    /// Points `command` (a `testlake` subcommand) at this lake: `--lake` and, for S3, the
    /// server's `AWS_*` variables (none of the test process's own `AWS_*` is passed on).
    pub fn apply<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        self.apply_via(command, None)
    }

    /// [`Self::apply`] through `endpoint` (a proxy in front of the server).
    pub fn apply_via<'c>(&self, command: &'c mut Command, endpoint: Option<&str>) -> &'c mut Command {
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                command.env_remove(key);
            }
        }
        command.args(["--lake", &self.location]).envs(self.env_via(endpoint))
    }

    /// The same lake opened through `endpoint` (a proxy), with `extra` store options.
    pub fn open_via(&self, endpoint: &str, extra: &[(&str, &str)]) -> Lake {
        let mut options: Vec<(String, String)> =
            self.options.iter().filter(|(k, _)| k != "endpoint").cloned().collect();
        options.push(("endpoint".to_owned(), endpoint.to_owned()));
        options.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Lake::open_with(&self.location, &options).expect("open the lake through the endpoint")
    }
}

/// Every `.parquet` data file under `folder` (`results`) of `lake`, relative to the lake root, as
/// a reader listing the folders finds them (not the Delta log's checkpoints).
pub async fn parquet_files(lake: &Lake, folder: &str) -> BTreeSet<String> {
    let listed: Vec<_> = lake.store().list(Some(&lake.path(folder))).try_collect().await.expect("list the lake");
    listed
        .iter()
        .filter_map(|o| lake.relative(&o.location))
        .filter(|path| path.ends_with(".parquet") && !path.contains("/_delta_log/"))
        .collect()
}
