//! Which dates reconciliation recomputes: those whose committed inputs differ from what their
//! trends files were built from, whatever their age. Notices can be lost (a lagging channel, a
//! restart, a publish that failed and was only logged); the commit log and the computed files'
//! stamps cannot, so comparing them finds every date a lost notice left stale.
//!
//! Cheap by construction: the commit log is read incrementally (`CommittedFiles`), and the
//! computed tables' stamps are in the names of the files their Delta logs show (brought up to
//! date with the commits since the last pass): no file is read.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use testlake_schemas::{Lake, Table};

use super::fence::{Inputs, Stamp};
use crate::Result;
use crate::trends::Interval;

/// The stamps of the computed files, kept current from the tables' Delta logs. `None`: a file
/// whose inputs are unknown (a `data.parquet` from before the Delta tables).
#[derive(Debug, Default)]
pub struct Stamps {
    known: BTreeMap<(Table, NaiveDate), Option<Stamp>>,
}

impl Stamps {
    /// Reads the stamps of `tables`' current files.
    pub async fn refresh(&mut self, lake: &Lake, tables: &[Table]) -> Result<()> {
        for &table in tables {
            let files = lake.delta().computed_files(lake, table).await?.unwrap_or_default();
            self.known.retain(|(t, _), _| *t != table);
            self.known.extend(files.iter().map(|f| ((table, f.path.date), Stamp::of(&f.path))));
        }
        Ok(())
    }

    /// The stamp of `table`'s file of `date`, as last read.
    pub fn get(&self, table: Table, date: NaiveDate) -> Option<&Stamp> {
        self.known.get(&(table, date))?.as_ref()
    }

    /// The highest generation the files of `tables` on `date` were written under.
    pub fn generation(&self, tables: &[Table], date: NaiveDate) -> u64 {
        tables.iter().filter_map(|t| self.get(*t, date)).map(|s| s.generation).max().unwrap_or(0)
    }
}

/// The dates whose trends files were not built from `inputs` (each date's committed files now),
/// with the intervals to recompute, newest first, among those `checked`. A missing file, or one
/// without a stamp, was built from nothing known.
pub fn stale(
    inputs: &BTreeMap<NaiveDate, Inputs>,
    stamps: &Stamps,
    checked: impl Fn(Interval, NaiveDate) -> bool,
) -> Vec<(NaiveDate, Vec<Interval>)> {
    inputs
        .iter()
        .rev()
        .filter_map(|(&date, inputs)| {
            let intervals: Vec<Interval> = Interval::ALL
                .into_iter()
                .filter(|i| checked(*i, date) && stamps.get(i.table(), date).is_none_or(|s| &s.inputs != inputs))
                .collect();
            (!intervals.is_empty()).then_some((date, intervals))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn inputs(files: &[&str]) -> Inputs {
        Inputs::of(&files.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>())
    }

    fn known(generation: u64, files: &[&str]) -> Option<Stamp> {
        Some(Stamp { generation, inputs: inputs(files) })
    }

    #[test]
    fn stale_dates_are_those_whose_inputs_changed_or_were_never_built_newest_first() {
        let mut stamps = Stamps::default();
        for table in [Table::TrendsHourly, Table::TrendsDaily] {
            stamps.known.insert((table, date(1)), known(3, &["a"]));
            stamps.known.insert((table, date(2)), known(4, &["b"]));
        }
        stamps.known.insert((Table::TrendsDaily, date(3)), known(1, &["c"]));
        stamps.known.insert((Table::TrendsHourly, date(3)), None);
        let now = BTreeMap::from([
            (date(1), inputs(&["a"])),       // unchanged, however old
            (date(2), inputs(&["b", "b2"])), // a file landed without a notice
            (date(3), inputs(&["c"])),       // hourly file without a stamp
            (date(4), inputs(&["d"])),       // never computed
        ]);
        assert_eq!(
            stale(&now, &stamps, |_, _| true),
            vec![
                (date(4), Interval::ALL.to_vec()),
                (date(3), vec![Interval::Hourly]),
                (date(2), Interval::ALL.to_vec()),
            ]
        );
        // Hourly dates from the 3rd are someone else's (the periodic cycle's).
        let older = |i: Interval, d: NaiveDate| i == Interval::Daily || d < date(3);
        assert_eq!(
            stale(&now, &stamps, older),
            vec![(date(4), vec![Interval::Daily]), (date(2), Interval::ALL.to_vec())]
        );
        assert_eq!(stamps.generation(&[Table::TrendsHourly, Table::TrendsDaily], date(2)), 4);
        assert_eq!(stamps.generation(&[Table::TrendsHourly], date(9)), 0);
    }
}
