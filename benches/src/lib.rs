//! Shared helpers for testlake's benchmarks: timing and the report format every bench prints.

use std::time::{Duration, Instant};

/// Runs `f` `iterations` times after one warm-up run and returns the fastest run's time.
pub fn best_of<T>(iterations: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    (0..iterations.max(1))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .min()
        .expect("at least one iteration")
}

/// Prints one figure as `name: value unit`, aligned, for closing notes.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name:<48} {value:>14.3} {unit}");
}
