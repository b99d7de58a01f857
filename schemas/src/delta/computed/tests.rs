use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use super::*;
use crate::delta::view::LakeView;
use crate::paths::ComputedVersion;

fn date(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

/// Puts a (not Parquet: nothing here reads it) file for `date` written under `generation`.
async fn put(lake: &Lake, date: NaiveDate, generation: u64) -> ComputedFilePath {
    let path = ComputedFilePath {
        table: Table::TrendsDaily,
        date,
        version: Some(ComputedVersion::new(generation, 1, "0123456789abcdef")),
    };
    lake.store().put(&lake.path(&path.to_string()), format!("g{generation}").into()).await.unwrap();
    path
}

async fn shown(lake: &Lake) -> BTreeSet<String> {
    let files = lake.delta().computed_files(lake, Table::TrendsDaily).await.unwrap().unwrap();
    files.into_iter().map(|f| f.path.to_string()).collect()
}

async fn listed(store: &dyn object_store::ObjectStore, lake: &Lake, under: &str) -> BTreeSet<String> {
    let objects: Vec<_> = store.list(Some(&lake.path(under))).try_collect().await.unwrap();
    objects.iter().filter_map(|o| lake.relative(&o.location)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_date_shows_its_newest_file_and_the_view_lists_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    assert!(lake.delta().computed_files(&lake, Table::TrendsDaily).await.unwrap().is_none());
    let first = put(&lake, date(1), 1).await;
    let other = put(&lake, date(2), 1).await;
    assert_eq!(lake.delta().replace(&lake, &first, 2, 1).await.unwrap(), Replaced::Committed(1), "0 created it");
    assert_eq!(lake.delta().replace(&lake, &other, 2, 1).await.unwrap(), Replaced::Committed(2));
    let second = put(&lake, date(1), 2).await;
    // A file no version shows yet (a writer between its file and its commit): not listed by the view.
    let pending = put(&lake, date(1), 3).await;
    lake.delta().replace(&lake, &second, 2, 1).await.unwrap();
    let want: BTreeSet<String> = [second.to_string(), other.to_string()].into();
    assert_eq!(shown(&lake).await, want);

    // The replaced file is gone; the pending one is still there, and young, so kept.
    let everything = listed(lake.store().as_ref(), &lake, "trends_daily").await;
    assert!(!everything.contains(&first.to_string()), "{everything:?}");
    assert!(everything.contains(&pending.to_string()));
    assert!(everything.iter().any(|p| p.starts_with("trends_daily/_delta_log/")));

    let view = LakeView::current(&lake).await.unwrap();
    assert_eq!(listed(&view, &lake, "trends_daily").await, want, "no pending file, no _delta_log");
    let by_delimiter = view.list_with_delimiter(Some(&lake.path("trends_daily"))).await.unwrap();
    let folders: BTreeSet<_> = by_delimiter.common_prefixes.iter().filter_map(|p| p.filename()).collect();
    assert_eq!(folders, ["date=2026-11-01", "date=2026-11-02"].into());
    let in_date = view.list_with_delimiter(Some(&lake.path("trends_daily/date=2026-11-01"))).await.unwrap();
    let names: Vec<_> = in_date.objects.iter().filter_map(|o| lake.relative(&o.location)).collect();
    assert_eq!(names, [second.to_string()]);
    // Other tables list as they are, except their _delta_log.
    lake.store().put(&lake.path("results/_delta_log/0.json"), "{}".into()).await.unwrap();
    lake.store().put(&lake.path("results/date=2026-11-01/hour=0/x.parquet"), "x".into()).await.unwrap();
    assert_eq!(listed(&view, &lake, "results").await, ["results/date=2026-11-01/hour=0/x.parquet".to_owned()].into());

    // Once the pending file is an hour old, the next write of its date deletes it.
    let on_disk = dir.path().join(pending.to_string());
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options().write(true).open(&on_disk).unwrap().set_modified(old).unwrap();
    let third = put(&lake, date(1), 4).await;
    lake.delta().replace(&lake, &third, 2, 1).await.unwrap();
    let everything = listed(lake.store().as_ref(), &lake, "trends_daily/date=2026-11-01").await;
    assert_eq!(everything, [third.to_string()].into());
}

/// Writers of different generations commit the same date at once, each through its own process's
/// view of the table (its own `Lake`): whatever the order, the table ends holding the highest
/// generation's file, and every write below it that came after it was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_of_a_date_leave_the_highest_generation() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    let lake = Lake::open(&root).unwrap();
    let seed = put(&lake, date(5), 0).await;
    lake.delta().replace(&lake, &seed, 2, 1).await.unwrap();
    let mut writers = Vec::new();
    for generation in 1..=6u64 {
        let root = root.clone();
        writers.push(tokio::spawn(async move {
            let lake = Lake::open(&root).unwrap();
            let file = put(&lake, date(5), generation).await;
            (generation, lake.delta().replace(&lake, &file, 2, 1).await.unwrap())
        }));
    }
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.unwrap());
    }
    let files = shown(&lake).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files.iter().next().unwrap().contains("/g6_f1_"), "{files:?} {outcomes:?}");
    for (generation, outcome) in &outcomes {
        if let Replaced::Fenced { by } = outcome {
            assert!(by > generation, "{outcomes:?}");
        }
    }
    let commits = lake.store().list(Some(&lake.path("trends_daily/_delta_log"))).try_collect::<Vec<_>>().await.unwrap();
    let committed = outcomes.iter().filter(|(_, o)| matches!(o, Replaced::Committed(_))).count();
    assert_eq!(commits.iter().filter(|c| c.location.as_ref().ends_with(".json")).count(), 2 + committed);
}
