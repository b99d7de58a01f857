//! When a buffered Kafka partition becomes a file: on rows, bytes or age, whichever comes first.

use std::time::Duration;

/// Thresholds that trigger a flush of one Kafka partition's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlushPolicy {
    /// Rows buffered for one Kafka partition. Large values give large files at high volume.
    pub max_rows: usize,
    /// Approximate input bytes buffered for one Kafka partition.
    pub max_bytes: usize,
    /// Age of the oldest buffered row; bounds freshness at low volume.
    pub max_age: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        // At high volume 250k rows of ~500 B JSON compress to files of tens of MB;
        // at low volume the age bound gives sub-second freshness.
        Self { max_rows: 250_000, max_bytes: 128 << 20, max_age: Duration::from_millis(500) }
    }
}

impl FlushPolicy {
    /// Whether a buffer holding `rows` rows and `bytes` bytes, whose oldest row is `age` old, must flush.
    pub fn should_flush(&self, rows: usize, bytes: usize, age: Duration) -> bool {
        rows > 0 && (rows >= self.max_rows || bytes >= self.max_bytes || age >= self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_on_whichever_threshold_comes_first() {
        let p = FlushPolicy { max_rows: 10, max_bytes: 1000, max_age: Duration::from_secs(1) };
        let young = Duration::from_millis(10);
        assert!(!p.should_flush(0, 0, Duration::from_secs(60)), "an empty buffer never flushes");
        assert!(!p.should_flush(9, 999, young));
        assert!(p.should_flush(10, 1, young));
        assert!(p.should_flush(1, 1000, young));
        assert!(p.should_flush(1, 1, Duration::from_secs(1)));
    }
}
