use super::*;

#[test]
fn hour_partitions_round_trip_and_sort() {
    let p: HourPartition = "date=2026-11-27/hour=04".parse().unwrap();
    assert_eq!(p.hour, 4);
    assert_eq!(p.to_string(), "date=2026-11-27/hour=04");
    let later: HourPartition = "date=2026-11-27/hour=10".parse().unwrap();
    assert!(p < later && p.to_string() < later.to_string());
    for bad in ["date=2026-11-27/hour=24", "date=2026-11-27/hour=4", "date=2026-13-01/hour=01", "hour=01", ""] {
        assert!(bad.parse::<HourPartition>().is_err(), "{bad}");
    }
}

#[test]
fn hour_partition_of_an_instant_is_utc() {
    let t = DateTime::parse_from_rfc3339("2026-11-27T00:30:00+02:00").unwrap().with_timezone(&Utc);
    assert_eq!(HourPartition::of(t).to_string(), "date=2026-11-26/hour=22");
    assert_eq!(HourPartition::of(t).start().to_rfc3339(), "2026-11-26T22:00:00+00:00");
}

#[test]
fn data_file_paths_round_trip() {
    let path = DataFilePath {
        table: Table::Results,
        partition: "date=2026-01-02/hour=23".parse().unwrap(),
        file: DataFileName {
            topic: "ci_p9_o-events_e1".into(),
            partition: 3,
            first_offset: 0,
            last_offset: 1999,
            entry: 7,
        },
    };
    let text = path.to_string();
    assert_eq!(
        text,
        "results/date=2026-01-02/hour=23/ci_p9_o-events_e1_p00003_o00000000000000000000-00000000000000001999_e0000000007.parquet"
    );
    assert_eq!(text.parse::<DataFilePath>().unwrap(), path);
    assert!("results/date=2026-01-02/hour=23/x.parquet".parse::<DataFilePath>().is_err());
}

#[test]
fn computed_paths() {
    let d = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
    let legacy = ComputedFilePath { table: Table::TrendsDaily, date: d, version: None };
    assert_eq!(legacy.to_string(), "trends_daily/date=2026-03-09/data.parquet");
    let new = ComputedFilePath { version: Some(ComputedVersion::new(3, 12, "0123456789abcdef")), ..legacy };
    let name = new.to_string();
    assert!(name.starts_with("trends_daily/date=2026-03-09/g3_f12_0123456789abcdef_"), "{name}");
    assert_eq!(name.len(), "trends_daily/date=2026-03-09/g3_f12_0123456789abcdef_".len() + 12 + ".parquet".len());
    assert_ne!(ComputedVersion::new(3, 12, "0123456789abcdef"), ComputedVersion::new(3, 12, "0123456789abcdef"));
    assert_eq!("trends_hourly".parse::<Table>().unwrap(), Table::TrendsHourly);
}

/// Every kind of object name the system writes prints and parses back to itself, and refuses
/// near misses.
#[test]
fn every_written_name_round_trips() {
    fn round_trip<T: FromStr + fmt::Display + PartialEq + fmt::Debug>(value: T, text: &str) {
        assert_eq!(value.to_string(), text);
        assert_eq!(text.parse::<T>().ok(), Some(value), "{text}");
    }
    let hour: HourPartition = "date=2026-11-27/hour=04".parse().unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    round_trip(CompactedFileName { seq: 7, n: 1 }, "compacted_00000000000000000007_0001.parquet");
    round_trip(CompactedFileName { seq: 7, n: 12_345 }, "compacted_00000000000000000007_12345.parquet");
    round_trip(
        HourFilePath::Compacted { table: Table::Results, partition: hour, file: CompactedFileName { seq: 3, n: 0 } },
        "results/date=2026-11-27/hour=04/compacted_00000000000000000003_0000.parquet",
    );
    let ingest =
        "results/date=2026-11-27/hour=04/ci_p00001_o00000000000000000000-00000000000000000009_e0000000000.parquet";
    round_trip(HourFilePath::Ingest(ingest.parse().unwrap()), ingest);
    round_trip(
        ComputedFilePath { table: Table::FlakyScores, date, version: None },
        "flaky_scores/date=2026-11-27/data.parquet",
    );
    let version = ComputedVersion { generation: 4, files: 0, digest: "cbf29ce484222325".into(), nonce: "0a1b".into() };
    round_trip(
        ComputedFilePath { table: Table::TrendsHourly, date, version: Some(version) },
        "trends_hourly/date=2026-11-27/g4_f0_cbf29ce484222325_0a1b.parquet",
    );
    round_trip(LogDir::Partition { topic: "ci-events".into(), partition: 3 }, "_log/ci-events/p00003");
    round_trip(LogDir::Compaction(Table::Results), "_compaction/results");
    for (object, suffix) in
        [(EntryObject::Intent, "intent"), (EntryObject::Outcome, "outcome"), (EntryObject::Cleaned, "cleaned")]
    {
        round_trip(
            LogEntryPath {
                dir: LogDir::Partition { topic: "ci".into(), partition: 0 },
                name: EntryName { seq: 42, object },
            },
            &format!("_log/ci/p00000/00000000000000000042.{suffix}.json"),
        );
    }
    round_trip(
        LeasePath { key: "trends/2026-11-27".into(), generation: 3 },
        "_leases/compute/trends/2026-11-27/0000000003.json",
    );

    for bad in [
        "results/date=2026-11-27/hour=04/compacted_7_0001.parquet",
        "results/date=2026-11-27/hour=04/compacted_00000000000000000007_01.parquet",
        "results/date=2026-11-27/hour=04/compacted_0000000000000000000+_0001.parquet",
        "results/date=2026-11-27/hour=4/compacted_00000000000000000007_0001.parquet",
        "nosuch/date=2026-11-27/hour=04/compacted_00000000000000000007_0001.parquet",
        "results/date=2026-11-27/hour=04/data.parquet",
    ] {
        assert!(bad.parse::<HourFilePath>().is_err(), "{bad}");
    }
    for bad in [
        "results/date=2026-11-27/data.parquet",
        "trends_daily/date=2026-11-27/x.parquet",
        "trends_daily/2026-11-27/data.parquet",
        "trends_daily/date=2026-11-27/g4_f0_cbf29ce48422232_0a1b.parquet",
        "trends_daily/date=2026-11-27/g4_f0_CBF29CE484222325_0a1b.parquet",
        "trends_daily/date=2026-11-27/g4_f0_cbf29ce484222325.parquet",
        "trends_daily/date=2026-11-27/g4_f0_cbf29ce484222325_0a1b_x.parquet",
        "trends_daily/date=2026-11-27/x/g4_f0_cbf29ce484222325_0a1b.parquet",
        "results/date=2026-11-27/g4_f0_cbf29ce484222325_0a1b.parquet",
    ] {
        assert!(bad.parse::<ComputedFilePath>().is_err(), "{bad}");
    }
    for bad in [
        "_log/ci/p3/00000000000000000042.intent.json",
        "_log/ci/p00000/42.intent.json",
        "_log/p00000/00000000000000000042.intent.json",
        "_compaction/nosuch/00000000000000000001.outcome.json",
        "_log/ci/p00000/0000000000000000004+.outcome.json",
        "_log/ci/p00000/00000000000000000042.json",
    ] {
        assert!(bad.parse::<LogEntryPath>().is_err(), "{bad}");
    }
    for bad in ["_leases/compute/k/3.json", "_leases/compute/0000000003.json", "_leases/other/k/0000000003.json"] {
        assert!(bad.parse::<LeasePath>().is_err(), "{bad}");
    }
}

/// Notices and log entries written before tables were an enum named them by these strings.
#[test]
fn tables_serialize_as_their_names() {
    for table in Table::ALL {
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(json, format!("\"{table}\""));
        assert_eq!(serde_json::from_str::<Table>(&json).unwrap(), table);
    }
    assert!(serde_json::from_str::<Table>("\"nosuch\"").is_err());
}
