//! The `testlake` binary's command line: help, and clear errors for bad invocations.
//! (Building these tests also builds the binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn testlake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testlake"))
}

#[test]
fn help_lists_every_stage() {
    let out = testlake().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["ingest", "compute", "serve", "all", "produce"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn produce_needs_a_source() {
    let out = testlake().args(["produce", "--brokers", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--file FILE or --synthetic"), "{stderr}");
}

#[test]
fn a_bad_crash_spec_is_a_configuration_error() {
    let lake = tempfile::tempdir().unwrap();
    let out = testlake()
        .args(["ingest", "--brokers", "127.0.0.1:1", "--lake", lake.path().to_str().unwrap()])
        .env("TESTLAKE_CRASH_AT", "nowhere:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown crash point"), "{stderr}");
}

#[test]
fn a_bad_lake_location_is_reported() {
    let out = testlake().args(["compute", "--once", "--lake", "nosuchscheme://x/y"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nosuchscheme"), "{stderr}");
}
