//! Request parameters shared by the endpoints, parsed and validated before any query runs.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use serde::Deserialize;

use crate::error::ApiError;

/// `from`/`to` (RFC 3339 or `YYYY-MM-DD`, UTC) and the dimension filters.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub from: Option<String>,
    pub to: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub suite: Option<String>,
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// How far back a request without `from` looks.
pub const DEFAULT_RANGE_DAYS: i64 = 7;
/// The widest range one request may cover.
pub const MAX_RANGE_DAYS: i64 = 3660;

/// Years a `from` or `to` may name. Outside them, the date arithmetic of a range (a week
/// before `to`, two periods of `compare`) could leave what chrono represents and panic.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

pub fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let parsed = DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDate::parse_from_str(value, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN).and_utc()));
    match parsed {
        Ok(t) if YEARS.contains(&t.year()) => Ok(t),
        Ok(_) => Err(ApiError::BadRequest(format!(
            "`{name}` must lie in the years {}..={}, got {value:?}",
            YEARS.start(),
            YEARS.end()
        ))),
        Err(_) => Err(ApiError::BadRequest(format!("`{name}` must be RFC 3339 or YYYY-MM-DD, got {value:?}"))),
    }
}

/// The end of the UTC hour `t` falls in.
pub fn end_of_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let hour = Duration::hours(1);
    DateTime::from_timestamp_micros(t.timestamp_micros() - t.timestamp_micros().rem_euclid(3_600_000_000)).unwrap_or(t)
        + hour
}

impl Filters {
    /// A canonical text of the filters and range, for cache keys.
    pub fn key(&self, range: Range) -> String {
        format!(
            "{}|{}|{:?}|{:?}|{:?}",
            range.from.timestamp_micros(),
            range.to.timestamp_micros(),
            self.repository,
            self.branch,
            self.suite
        )
    }

    /// The requested range; defaults to the last seven days: `to` is the end of the current UTC
    /// hour (so the range includes the hour in progress, and stays the same — and cacheable —
    /// until the hour ends), `from` seven days before it.
    pub fn range(&self, now: DateTime<Utc>) -> Result<Range, ApiError> {
        let to = self.to.as_deref().map(|v| parse_time("to", v)).transpose()?.unwrap_or_else(|| end_of_hour(now));
        let from = self
            .from
            .as_deref()
            .map(|v| parse_time("from", v))
            .transpose()?
            .unwrap_or(to - Duration::days(DEFAULT_RANGE_DAYS));
        if from >= to {
            return Err(ApiError::BadRequest(format!("`from` ({from}) must be before `to` ({to})")));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(ApiError::BadRequest(format!("the range may span at most {MAX_RANGE_DAYS} days")));
        }
        Ok(Range { from, to })
    }

    /// The dimension filters that are set, as (column, value).
    pub fn dimensions(&self) -> Vec<(&'static str, &str)> {
        [("repository", &self.repository), ("branch", &self.branch), ("suite", &self.suite)]
            .into_iter()
            .filter_map(|(col, v)| v.as_deref().map(|v| (col, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ranges_default_and_validate() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let r = Filters::default().range(now).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 11, 27, 13, 0, 0).unwrap();
        assert_eq!((r.from, r.to), (end - Duration::days(7), end));
        let later = Filters::default().range(now + Duration::minutes(59)).unwrap();
        assert_eq!(later, r, "the default range stays put within the hour");
        let f = Filters {
            from: Some("2026-11-01".into()),
            to: Some("2026-11-02T06:00:00+02:00".into()),
            ..Default::default()
        };
        let r = f.range(now).unwrap();
        assert_eq!(r.from, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        assert_eq!(r.to, Utc.with_ymd_and_hms(2026, 11, 2, 4, 0, 0).unwrap());
        for (from, to) in [
            ("2026-11-02", "2026-11-01"),
            ("yesterday", "2026-11-01"),
            ("1900-01-01", "2026-01-01"),
            // Far outside chrono's arithmetic: a week before it panicked instead of answering 400.
            ("2026-01-01", "-262143-01-01"),
            ("+262142-12-31", "2026-01-01"),
            ("0000-12-31T23:00:00Z", "2026-01-01"),
        ] {
            let f = Filters { from: Some(from.into()), to: Some(to.into()), ..Default::default() };
            assert!(matches!(f.range(now), Err(ApiError::BadRequest(_))), "{from}..{to}");
        }
    }
}
