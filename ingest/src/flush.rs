//! When a buffered Kafka partition becomes files: on rows, bytes, hours or age, whichever comes
//! first.

use std::time::Duration;

use crate::buffer::MAX_HOURS_PER_FLUSH;

/// Thresholds that trigger a flush of one Kafka partition's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlushPolicy {
    /// Rows buffered for one Kafka partition. Large values give large files at high volume.
    pub max_rows: usize,
    /// Bytes buffered for one Kafka partition: its input bytes, or what its rows take in memory
    /// if that is more ([`crate::buffer::PartitionBuffer::bytes`]).
    pub max_bytes: usize,
    /// Age of the oldest buffered row; bounds freshness at low volume.
    pub max_age: Duration,
    /// Bytes buffered over all partitions of the process (counted as for `max_bytes`): past it,
    /// the largest buffer is flushed early, so memory stays bounded whatever the backlog, the
    /// partition count or the spread of the events' hours.
    pub max_total_bytes: usize,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        // At high volume 250k rows of ~500 B JSON compress to files of tens of MB;
        // at low volume the age bound gives sub-second freshness.
        Self {
            max_rows: 250_000,
            max_bytes: 128 << 20,
            max_age: Duration::from_millis(500),
            max_total_bytes: 256 << 20,
        }
    }
}

impl FlushPolicy {
    /// Whether a buffer holding `rows` rows and `bytes` bytes in `hours` hour partitions, whose
    /// oldest row is `age` old, must flush. The hours are capped by [`MAX_HOURS_PER_FLUSH`], not by
    /// the policy: a file, a log-entry line and a landed notice each, whatever the volume.
    pub fn should_flush(&self, rows: usize, bytes: usize, hours: usize, age: Duration) -> bool {
        rows > 0
            && (rows >= self.max_rows || bytes >= self.max_bytes || hours >= MAX_HOURS_PER_FLUSH || age >= self.max_age)
    }

    /// Which buffer to flush early when all of them together hold too much: the largest, given
    /// (partition, buffered bytes) of each.
    pub fn over_budget(&self, buffers: impl IntoIterator<Item = (i32, usize)>) -> Option<i32> {
        let (total, largest) = buffers.into_iter().fold((0, None::<(i32, usize)>), |(total, largest), (p, bytes)| {
            (total + bytes, if largest.is_none_or(|(_, b)| bytes > b) { Some((p, bytes)) } else { largest })
        });
        largest.filter(|_| total >= self.max_total_bytes).map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_on_whichever_threshold_comes_first() {
        let p = FlushPolicy { max_rows: 10, max_bytes: 1000, max_age: Duration::from_secs(1), max_total_bytes: 5000 };
        let young = Duration::from_millis(10);
        assert!(!p.should_flush(0, 0, 0, Duration::from_secs(60)), "an empty buffer never flushes");
        assert!(!p.should_flush(9, 999, MAX_HOURS_PER_FLUSH - 1, young));
        assert!(p.should_flush(10, 1, 1, young));
        assert!(p.should_flush(1, 1000, 1, young));
        assert!(p.should_flush(9, 9, MAX_HOURS_PER_FLUSH, young), "rows in as many hours as a flush writes");
        assert!(p.should_flush(1, 1, 1, Duration::from_secs(1)));
    }

    #[test]
    fn over_budget_picks_the_largest_buffer() {
        let p = FlushPolicy { max_total_bytes: 1000, ..FlushPolicy::default() };
        assert_eq!(p.over_budget([(0, 300), (1, 600)]), None, "under budget");
        assert_eq!(p.over_budget([(0, 300), (1, 600), (2, 100)]), Some(1));
        assert_eq!(p.over_budget([]), None);
    }
}
