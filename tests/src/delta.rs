//! The Delta table as an independent reader sees it: `tests/scripts/read_delta.py` (PyPI
//! `deltalake` and `polars`, no testlake code) run against a test's lake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::TestLake;
use crate::s3::venv_tool;

/// One version of the table as the reader read it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DeltaVersion {
    pub version: u64,
    /// Why the version could not be read (its files deleted after a later compaction's grace).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub files: usize,
    #[serde(default)]
    pub rows: usize,
    #[serde(default)]
    pub distinct: usize,
    /// The event ids of the version (the newest only).
    #[serde(default)]
    pub ids: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_delta.py")
}

fn command(lake: &TestLake, args: &[&str]) -> Command {
    let mut command = Command::new(venv_tool("python"));
    let uri = format!("{}/results", lake.location().trim_end_matches('/'));
    command.arg(script()).arg(uri).args(args).envs(lake.env_via(None)).stderr(Stdio::inherit());
    command
}

fn parse(stdout: &[u8]) -> Vec<DeltaVersion> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn run(lake: &TestLake, args: &[&str]) -> Vec<DeltaVersion> {
    let out = command(lake, args).output().expect("run read_delta.py");
    assert!(out.status.success(), "read_delta.py {args:?} failed");
    parse(&out.stdout)
}

/// The sum of `column` per date (`YYYY-MM-DD`) in the newest version of the computed Delta table
/// `table` of the lake at `location` (a local folder or an S3 URL with `env`).
pub fn delta_sums(location: &str, env: &[(String, String)], table: &str, column: &str) -> BTreeMap<String, i64> {
    let uri = format!("{}/{table}", location.trim_end_matches('/'));
    let out = Command::new(venv_tool("python"))
        .arg(script())
        .args([uri.as_str(), "sum", column])
        .envs(env.iter().cloned())
        .stderr(Stdio::inherit())
        .output()
        .expect("run read_delta.py");
    assert!(out.status.success(), "read_delta.py {uri} sum {column} failed");
    #[derive(serde::Deserialize)]
    struct Sums {
        sums: BTreeMap<String, i64>,
    }
    serde_json::from_slice::<Sums>(&out.stdout).unwrap_or_else(|e| panic!("{e}")).sums
}

/// Every version of the lake's `results` table, oldest first.
pub fn delta_versions(lake: &TestLake) -> Vec<DeltaVersion> {
    run(lake, &["all"])
}

/// The event ids of the newest version, counted.
pub fn delta_ids(lake: &TestLake) -> BTreeMap<String, usize> {
    let newest = run(lake, &["newest"]).pop().expect("the newest version");
    let mut ids = BTreeMap::new();
    for id in newest.ids {
        *ids.entry(id).or_default() += 1;
    }
    ids
}

/// Asserts that no version holds an event twice (each version's rows are distinct ids), and
/// that every version was read (none had files deleted under it).
pub fn assert_no_version_doubles(what: &str, versions: &[DeltaVersion]) {
    assert!(!versions.is_empty(), "{what}: no Delta version read");
    for v in versions {
        assert!(v.error.is_none(), "{what}: Delta version {} unreadable: {v:?}", v.version);
        assert_eq!(
            v.rows, v.distinct,
            "{what}: Delta version {} ({:?}) holds an event twice: {v:?}",
            v.version, v.operation
        );
    }
}

/// A reader reading each new version as it appears, until [`Self::stop`].
pub struct DeltaFollower {
    child: Child,
    stop: tempfile::TempDir,
}

impl DeltaFollower {
    pub fn start(lake: &TestLake) -> Self {
        let stop = tempfile::tempdir().expect("temp dir");
        let stop_file = stop.path().join("stop");
        let child = command(lake, &["follow", stop_file.to_str().expect("utf-8 path")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start read_delta.py follow");
        Self { child, stop }
    }

    /// Stops following (after reading the newest version once more) and returns what was read.
    pub fn stop(self) -> Vec<DeltaVersion> {
        std::fs::write(self.stop.path().join("stop"), b"").expect("stop file");
        let out = self.child.wait_with_output().expect("read_delta.py follow");
        assert!(out.status.success(), "read_delta.py follow failed");
        parse(&out.stdout)
    }
}
