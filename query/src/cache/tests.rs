use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use testlake_schemas::HourPartition;

use super::*;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

fn coverage(table: Table, from: u32, to: u32) -> Coverage {
    Coverage::of(table, Some(day(from)..=day(to)))
}

fn notice(table: Table, d: u32) -> Landed {
    Landed::new(table, HourPartition { date: day(d), hour: 0 }, vec![], 1)
}

/// A loader that counts its calls and answers the call number, after `delay`.
struct Source {
    loads: AtomicUsize,
    delay: Duration,
}

impl Source {
    fn new(delay: Duration) -> Self {
        Self { loads: AtomicUsize::new(0), delay }
    }

    async fn load(&self) -> Result<Loaded, ApiError> {
        let n = self.loads.fetch_add(1, Ordering::SeqCst) as i64 + 1;
        tokio::time::sleep(self.delay).await;
        let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![n; 100])) as _)])?;
        Ok(Loaded { head: Map::new(), batch, object: false })
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

fn value(a: &Answer) -> i64 {
    a.batch.column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn a_second_read_is_a_hit() {
    let (cache, source) = (AnswerCache::new(1 << 20), Source::new(Duration::ZERO));
    let c = coverage(Table::TrendsHourly, 1, 7);
    let (a, hit) = cache.get("k", &c, || source.load()).await.unwrap();
    assert!(!hit);
    let (b, hit) = cache.get("k", &c, || source.load()).await.unwrap();
    assert!(hit);
    assert_eq!((value(&a), value(&b), source.loads()), (1, 1, 1));
    assert_eq!(a.version, b.version);
}

#[tokio::test]
async fn a_notice_invalidates_exactly_the_answers_covering_it() {
    let (cache, source) = (AnswerCache::new(1 << 20), Source::new(Duration::ZERO));
    let week1 = coverage(Table::TrendsHourly, 1, 7);
    let week2 = coverage(Table::TrendsHourly, 8, 14);
    let daily = coverage(Table::TrendsDaily, 1, 7).and(Table::FlakyScores, None);
    for (key, c) in [("week1", &week1), ("week2", &week2), ("daily", &daily)] {
        cache.get(key, c, || source.load()).await.unwrap();
    }
    assert_eq!(source.loads(), 3);
    cache.invalidate(&notice(Table::TrendsHourly, 3));
    let (_, hit1) = cache.get("week1", &week1, || source.load()).await.unwrap();
    let (_, hit2) = cache.get("week2", &week2, || source.load()).await.unwrap();
    let (_, hit3) = cache.get("daily", &daily, || source.load()).await.unwrap();
    assert_eq!((hit1, hit2, hit3), (false, true, true), "only the hourly answer covering day 3 reloads");
    assert_eq!(source.loads(), 4);
    assert_eq!(cache.stats.invalidated_answers.load(Ordering::Relaxed), 1);
    cache.invalidate(&notice(Table::FlakyScores, 28));
    let (_, hit) = cache.get("daily", &daily, || source.load()).await.unwrap();
    assert!(!hit, "a table covered at any date");
}

#[tokio::test]
async fn a_notice_racing_a_load_never_lets_the_stale_answer_be_served_after_it() {
    let cache = Arc::new(AnswerCache::new(1 << 20));
    let source = Arc::new(Source::new(Duration::from_millis(200)));
    let c = coverage(Table::TrendsDaily, 1, 7);
    let loading = {
        let (cache, source, c) = (Arc::clone(&cache), Arc::clone(&source), c.clone());
        tokio::spawn(async move { value(&cache.get("k", &c, || source.load()).await.unwrap().0) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The data changes while the first load reads: its answer is stale when it lands.
    cache.invalidate(&notice(Table::TrendsDaily, 2));
    assert_eq!(loading.await.unwrap(), 1);
    let (after, hit) = cache.get("k", &c, || source.load()).await.unwrap();
    assert!(!hit);
    assert_eq!(value(&after), 2, "the read after the notice reloads");
    assert_eq!(cache.stats.stale.load(Ordering::Relaxed), 1);
    let (again, hit) = cache.get("k", &c, || source.load()).await.unwrap();
    assert!(hit && value(&again) == 2);
}

/// Requests waiting on a load while notices keep arriving take that load's answer (the notices
/// are concurrent with them) instead of reloading after each; a request that starts after a
/// notice still never gets an answer loaded before it.
#[tokio::test]
async fn waiters_take_the_load_they_waited_for_while_notices_keep_arriving() {
    let cache = Arc::new(AnswerCache::new(1 << 20));
    let source = Arc::new(Source::new(Duration::from_millis(200)));
    let c = coverage(Table::Results, 1, 7);
    let get = |cache: &Arc<AnswerCache>, source: &Arc<Source>| {
        let (cache, source, c) = (Arc::clone(cache), Arc::clone(source), c.clone());
        tokio::spawn(async move { value(&cache.get("k", &c, || source.load()).await.unwrap().0) })
    };
    let first = get(&cache, &source);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiters: Vec<_> = (0..4).map(|_| get(&cache, &source)).collect();
    for d in 2..6 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        cache.invalidate(&notice(Table::Results, d)); // landings every 30 ms, loads take 200 ms
    }
    assert_eq!(first.await.unwrap(), 1);
    for w in waiters {
        assert_eq!(w.await.unwrap(), 1, "a waiter took the load it waited on");
    }
    assert_eq!(source.loads(), 1);
    let after = get(&cache, &source).await.unwrap();
    assert_eq!(after, 2, "a request after the notices reloads");
}

#[tokio::test]
async fn concurrent_misses_of_one_key_load_once() {
    let cache = Arc::new(AnswerCache::new(1 << 20));
    let source = Arc::new(Source::new(Duration::from_millis(100)));
    let c = coverage(Table::TrendsDaily, 1, 7);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (cache, source, c) = (Arc::clone(&cache), Arc::clone(&source), c.clone());
            tokio::spawn(async move { value(&cache.get("k", &c, || source.load()).await.unwrap().0) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    assert_eq!(source.loads(), 1);
}

#[tokio::test]
async fn the_budget_bounds_the_cached_bytes() {
    let source = Source::new(Duration::ZERO);
    let one = source.load().await.unwrap().batch.get_array_memory_size() as u64 + 256;
    let cache = AnswerCache::new(one * 3);
    let c = coverage(Table::TrendsDaily, 1, 7);
    for i in 0..20 {
        cache.get(&format!("k{i}"), &c, || source.load()).await.unwrap();
    }
    cache.sync().await;
    assert!(cache.weighted_size() <= one * 3, "{} > {}", cache.weighted_size(), one * 3);
    assert!(cache.entry_count() <= 3);
    assert!(cache.stats.evictions.load(Ordering::Relaxed) >= 17);
}

/// Distinct long URLs each make an answer that holds little data but a long key, a long head
/// (the filters) and a rendering: what an entry holds counts, so they cannot outgrow the budget.
#[tokio::test]
async fn distinct_long_urls_stay_within_the_budget() {
    const LONG: usize = 16 << 10;
    const BUDGET: u64 = 256 << 10;
    let cache = AnswerCache::new(BUDGET);
    let c = coverage(Table::TrendsDaily, 1, 7);
    for i in 0..200 {
        let repository = format!("{i:0>LONG$}");
        let key = format!("trends|{repository}");
        cache
            .get(&key, &c, || async {
                let mut head = Map::new();
                head.insert("filters".into(), Value::String(repository.clone()));
                let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1])) as _)])?;
                Ok(Loaded { head, batch, object: false })
            })
            .await
            .unwrap();
    }
    cache.sync().await;
    // Independently of the weigher: every entry keeps its key, its head and a body holding both.
    let held = cache.entry_count() * 3 * LONG as u64;
    assert!(held <= BUDGET, "{} entries hold at least {held} bytes, over {BUDGET}", cache.entry_count());
    assert!(cache.weighted_size() >= held, "the metric shows {} of {held} bytes", cache.weighted_size());
    assert!(cache.entry_count() >= 1);
}

/// A load past the time limit is abandoned with a 503, without waiting for it.
#[tokio::test]
async fn a_slow_load_times_out() {
    let cache = AnswerCache::new(1 << 20).with_load_timeout(Duration::from_millis(50));
    let source = Source::new(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let Err(e) = cache.get("k", &coverage(Table::TrendsDaily, 1, 7), || source.load()).await else {
        panic!("answered")
    };
    assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// Equal rows give equal versions (ETags), whether or not the batch is sliced; other rows not.
#[test]
fn versions_follow_the_content() {
    let rows = |v: Vec<i64>| RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(v)) as _)]).unwrap();
    let version = |batch| Answer::uncached(Loaded { head: Map::new(), batch, object: false }).unwrap().version;
    let many: Vec<i64> = (0..20_000).collect();
    assert_eq!(version(rows(many.clone())), version(rows(many.clone())));
    assert_eq!(version(rows(many[5..].to_vec())), version(rows(many.clone()).slice(5, 19_995)));
    let mut other = many.clone();
    other[19_999] = -1;
    assert_ne!(version(rows(many)), version(rows(other)));
}

#[tokio::test]
async fn a_notice_listing_repositories_spares_answers_about_others() {
    let (cache, source) = (AnswerCache::new(1 << 20), Source::new(Duration::ZERO));
    let billing = coverage(Table::TrendsDaily, 1, 7).for_repository(Some("acme/billing"));
    let search = coverage(Table::TrendsDaily, 1, 7).for_repository(Some("acme/search"));
    let everyone = coverage(Table::TrendsDaily, 1, 7);
    for (key, c) in [("billing", &billing), ("search", &search), ("all", &everyone)] {
        cache.get(key, c, || source.load()).await.unwrap();
    }
    let mut n = notice(Table::TrendsDaily, 2);
    n.repositories = Some(vec!["acme/billing".into()]);
    cache.invalidate(&n);
    let (_, b) = cache.get("billing", &billing, || source.load()).await.unwrap();
    let (_, s) = cache.get("search", &search, || source.load()).await.unwrap();
    let (_, a) = cache.get("all", &everyone, || source.load()).await.unwrap();
    assert_eq!((b, s, a), (false, true, false), "billing's and the unfiltered answer reload; search's stays");
    // A notice without repositories concerns every repository.
    cache.invalidate(&notice(Table::TrendsDaily, 2));
    let (_, s) = cache.get("search", &search, || source.load()).await.unwrap();
    assert!(!s);
}

#[tokio::test]
async fn missing_notices_drop_everything() {
    let (cache, source) = (AnswerCache::new(1 << 20), Source::new(Duration::ZERO));
    let c = coverage(Table::FlakyScores, 1, 1);
    cache.get("k", &c, || source.load()).await.unwrap();
    cache.invalidate_all("missed_notices");
    let (_, hit) = cache.get("k", &c, || source.load()).await.unwrap();
    assert!(!hit);
}
