//! Flaky scores on generated fleets whose tests' behaviour is known: the `flaky` state's precision
//! and recall against that ground truth, no regression called flaky, regressions ranked below
//! flakes, and every number equal to an independent computation (`model::flaky_numbers`).
//! Results are written as Parquet files to a real object store (the local filesystem).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Duration, Utc};
use testlake::fleet::{Behaviour, Fleet, FleetConfig};
use testlake_compute::flaky::{FlakyConfig, compute_scores};
use testlake_schemas::files::{encode_parquet, put_create};
use testlake_schemas::tables::{Lineage, ResultsBuilder};
use testlake_schemas::{Lake, TestEvent};
use testlake_tests::model;

struct Fixture {
    _dir: tempfile::TempDir,
    lake: Lake,
    files: Vec<String>,
    events: Vec<TestEvent>,
    truth: BTreeMap<(String, String), Behaviour>,
    as_of: DateTime<Utc>,
}

/// `runs_per_repository` runs of every repository, one run every 7 minutes, written to the lake
/// in files of at most 5,000 rows.
async fn fleet_lake(config: FleetConfig, runs_per_repository: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let repositories = config.repositories;
    let mut fleet = Fleet::new(config);
    let truth = fleet.tests().iter().map(|t| ((t.repository.clone(), t.test_id.clone()), t.behaviour)).collect();
    let start = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().to_utc();
    let mut events = Vec::new();
    for run in 0..runs_per_repository * repositories {
        events.extend(fleet.run(start + Duration::minutes(7 * run as i64)));
    }
    let mut files = Vec::new();
    for (i, chunk) in events.chunks(5_000).enumerate() {
        let mut builder = ResultsBuilder::default();
        for (offset, e) in chunk.iter().enumerate() {
            let from = Lineage { topic: "fleet", partition: 0, offset: offset as i64, ingested_at: e.finished_at };
            builder.append(e, from);
        }
        let path = format!("results/date=2026-11-01/hour=00/fleet_{i:05}.parquet");
        let batch = builder.finish().unwrap();
        put_create(&lake, &path, encode_parquet(&batch, &path).unwrap()).await.unwrap();
        files.push(path);
    }
    let as_of = events.iter().map(|e| e.finished_at).max().unwrap() + Duration::hours(1);
    Fixture { _dir: dir, lake, files, events, truth, as_of }
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Vec<&'a str> {
    let column = batch.column_by_name(name).unwrap().as_string::<i32>();
    (0..column.len()).map(|i| column.value(i)).collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
    batch.column_by_name(name).unwrap().as_primitive::<Int64Type>().values().to_vec()
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<f64> {
    batch.column_by_name(name).unwrap().as_primitive::<Float64Type>().values().to_vec()
}

fn times(batch: &RecordBatch, name: &str) -> Vec<DateTime<Utc>> {
    let column = batch.column_by_name(name).unwrap().as_primitive::<TimestampMicrosecondType>();
    column.values().iter().map(|&t| DateTime::from_timestamp_micros(t).unwrap()).collect()
}

struct Accuracy {
    precision: f64,
    recall: f64,
    broken_called_flaky: usize,
}

/// Scores the fixture, checks every number against the model and returns the accuracy of the
/// `flaky` state among tests with at least 10 executions.
async fn score_and_check(what: &str, fx: &Fixture) -> Accuracy {
    let config = FlakyConfig::default();
    let ctx = testlake_compute::catalog::lake_session(&fx.lake).await.unwrap();
    let batch = compute_scores(&ctx, &fx.lake, &fx.files, fx.as_of, &config).await.unwrap();
    let expected = model::flaky_numbers(&fx.events, fx.as_of - config.window, fx.as_of, config.outage_failure_share);
    assert_eq!(batch.num_rows(), expected.len(), "{what}: one row per test with a counted execution");

    let (repository, test_id, state) =
        (strings(&batch, "repository"), strings(&batch, "test_id"), strings(&batch, "state"));
    let (executions, failures, flakes) =
        (ints(&batch, "executions"), ints(&batch, "failures"), ints(&batch, "same_commit_flakes"));
    let (flips, outages, ewma, score) = (
        ints(&batch, "flips"),
        ints(&batch, "outage_executions"),
        floats(&batch, "ewma_flip_rate"),
        floats(&batch, "score"),
    );
    let (first_seen, last_seen) = (times(&batch, "first_seen"), times(&batch, "last_seen"));
    let outage_total: i64 = outages.iter().sum();
    assert!(outage_total > 0, "{what}: the fleet had outage runs and they were set aside");

    let (mut true_positive, mut false_positive, mut false_negative, mut broken_called_flaky) = (0, 0, 0, 0);
    let (mut lowest_flaky_score, mut highest_broken_score) = (f64::INFINITY, f64::NEG_INFINITY);
    for row in 0..batch.num_rows() {
        let key = (repository[row].to_owned(), test_id[row].to_owned());
        let m = &expected[&key];
        let got = (executions[row], failures[row], flakes[row], flips[row], outages[row]);
        assert_eq!(
            got,
            (m.executions, m.failures, m.same_commit_flakes, m.flips, m.outage_executions),
            "{what}: {key:?}"
        );
        assert!(
            model::close(Some(ewma[row]), Some(m.ewma_flip_rate)),
            "{what}: {key:?} ewma {} vs {}",
            ewma[row],
            m.ewma_flip_rate
        );
        assert_eq!((Some(first_seen[row]), Some(last_seen[row])), (m.first_seen, m.last_seen), "{what}: {key:?}");

        let called_flaky = state[row] == "flaky";
        let behaviour = fx.truth[&key];
        if called_flaky {
            lowest_flaky_score = lowest_flaky_score.min(score[row]);
        }
        if state[row] == "broken" {
            highest_broken_score = highest_broken_score.max(score[row]);
        }
        if matches!(behaviour, Behaviour::Broken { .. }) && called_flaky {
            broken_called_flaky += 1;
        }
        if executions[row] < 10 {
            continue;
        }
        match (matches!(behaviour, Behaviour::Flaky { .. }), called_flaky) {
            (true, true) => true_positive += 1,
            (false, true) => false_positive += 1,
            (true, false) => false_negative += 1,
            (false, false) => {}
        }
    }
    assert!(
        lowest_flaky_score > highest_broken_score,
        "{what}: regressions rank below flakes ({lowest_flaky_score} vs {highest_broken_score})"
    );
    let states = state.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, s| {
        *m.entry(*s).or_default() += 1;
        m
    });
    let accuracy = Accuracy {
        precision: f64::from(true_positive) / f64::from(true_positive + false_positive).max(1.0),
        recall: f64::from(true_positive) / f64::from(true_positive + false_negative).max(1.0),
        broken_called_flaky,
    };
    println!(
        "{what}: {} tests scored, states {states:?}; flaky precision {:.3} recall {:.3} \
         (tp {true_positive}, fp {false_positive}, fn {false_negative}); {outage_total} outage executions set aside",
        batch.num_rows(),
        accuracy.precision,
        accuracy.recall
    );
    accuracy
}

fn fleet(seed: u64, max_attempts: u32) -> FleetConfig {
    FleetConfig {
        repositories: 6,
        suites_per_repository: 4,
        tests_per_suite: 25,
        flaky_share: 0.1,
        broken_share: 0.05,
        skipped_share: 0.03,
        max_attempts,
        outage_share: 0.03,
        seed,
    }
}

fn assert_targets(what: &str, a: &Accuracy) {
    assert!(a.precision >= 0.95, "{what}: precision {:.3} below 0.95", a.precision);
    assert!(a.recall >= 0.9, "{what}: recall {:.3} below 0.9", a.recall);
    assert_eq!(a.broken_called_flaky, 0, "{what}: no regression is called flaky");
}

#[tokio::test]
async fn flaky_state_finds_flaky_tests_in_a_fleet_with_retries() {
    for seed in [1, 2] {
        let fx = fleet_lake(fleet(seed, 3), 60).await;
        let what = format!("retries, seed {seed}");
        assert_targets(&what, &score_and_check(&what, &fx).await);
    }
}

#[tokio::test]
async fn flaky_state_finds_flaky_tests_without_retries() {
    // Without retries the evidence is reruns of a commit and the weighted flip rate.
    let fx = fleet_lake(fleet(3, 1), 60).await;
    assert_targets("no retries", &score_and_check("no retries", &fx).await);
}
