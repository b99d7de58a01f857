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
    assert_eq!(computed_file_path(Table::TrendsDaily, d), "trends_daily/date=2026-03-09/data.parquet");
    assert_eq!("trends_hourly".parse::<Table>().unwrap(), Table::TrendsHourly);
}
