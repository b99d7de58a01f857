//! Freshness, what it says: landed notices (from ingest and compute) invalidate exactly the
//! cached answers they cover and are pushed to connected dashboards as [`LiveEvent`]s, with
//! pass-rate [`Alert`]s when a repository's pass rate today falls below the configured
//! threshold. No timer is involved: a dashboard hears of new data the moment its notice arrives.
//! `handlers::events` applies the notices and serves the event stream.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use testlake_schemas::Landed;

/// A pass-rate alert: a repository's pass rate on `date` is below `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub repository: String,
    pub date: NaiveDate,
    pub pass_rate: f64,
    pub threshold: f64,
    /// Passed + failed executions behind the rate.
    pub executions: i64,
}

/// What connected dashboards are told.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// New files landed in a table partition: answers covering it changed.
    Update(Landed),
    Alert(Alert),
}

/// When alerts fire.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// Alert when a repository's pass rate today drops below this (`None`: no alerts).
    pub pass_rate_below: Option<f64>,
    /// ... on at least this many passed + failed executions today.
    pub min_executions: i64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self { pass_rate_below: Some(0.8), min_executions: 20 }
    }
}

/// When alerts fire: a repository's pass rate on a date going below the threshold raises one
/// alert, and no other until a check finds it back above.
#[derive(Debug, Default)]
pub struct AlertTracker {
    /// Per (repository, date): whether the last check found it below the threshold.
    below: HashMap<(String, NaiveDate), bool>,
}

impl AlertTracker {
    /// The alerts raised by `date`'s pass rates, as (repository, passed, passed + failed).
    pub fn check(&mut self, config: &AlertConfig, date: NaiveDate, rates: Vec<(String, i64, i64)>) -> Vec<Alert> {
        let Some(threshold) = config.pass_rate_below else { return Vec::new() };
        let mut alerts = Vec::new();
        for (repository, passed, executions) in rates {
            if executions < config.min_executions {
                continue;
            }
            let pass_rate = passed as f64 / executions as f64;
            let is_below = pass_rate < threshold;
            let was_below = self.below.insert((repository.clone(), date), is_below).unwrap_or(false);
            if is_below && !was_below {
                alerts.push(Alert { repository, date, pass_rate, threshold, executions });
            }
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_fires_once_per_fall_below() {
        let config = AlertConfig { pass_rate_below: Some(0.8), min_executions: 10 };
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let mut tracker = AlertTracker::default();
        let rates = |passed: i64, executions: i64| vec![("acme/a".to_owned(), passed, executions)];
        assert!(tracker.check(&config, date, rates(5, 9)).is_empty(), "too few executions");
        assert_eq!(tracker.check(&config, date, rates(7, 10)).len(), 1);
        assert!(tracker.check(&config, date, rates(6, 10)).is_empty(), "still below: no second alert");
        assert!(tracker.check(&config, date, rates(9, 10)).is_empty());
        assert_eq!(tracker.check(&config, date, rates(1, 10)).len(), 1, "below again");
        let off = AlertConfig { pass_rate_below: None, ..config };
        assert!(tracker.check(&off, date, rates(0, 10)).is_empty());
    }
}
