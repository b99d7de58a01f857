//! The process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc` at each scrape. Linux only: elsewhere, or
//! when a file cannot be read, the metric is left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`): 100 on every Linux architecture's ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self/stat` says: CPU ticks in user and system mode, and the start time in ticks
/// after boot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name: utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat { utime: field(14)?, stime: field(15)?, starttime: field(22)? })
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib * 1024)
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The `btime` line of `/proc/stat`: when the machine booted, in seconds since the epoch.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The process metrics, read at each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        if let Some(stat) = stat {
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / TICKS_PER_SECOND);
            let help = "Total user and system CPU time spent, in seconds.";
            cpu.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, MetricType::Counter)?)?;
        }
        let mut gauge = |name: &str, help: &str, value: Option<f64>| -> Result<(), std::fmt::Error> {
            match value {
                Some(v) => ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?),
                None => Ok(()),
            }
        };
        let rss = read("/proc/self/status").as_deref().and_then(parse_rss);
        gauge("process_resident_memory_bytes", "Resident memory size, in bytes.", rss.map(|v| v as f64))?;
        let open = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        gauge("process_open_fds", "Open file descriptors.", open)?;
        let max = read("/proc/self/limits").as_deref().and_then(parse_max_fds);
        gauge("process_max_fds", "The limit of open file descriptors.", max.map(|v| v as f64))?;
        let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
        let start = boot.zip(stat).map(|(boot, stat)| boot as f64 + stat.starttime as f64 / TICKS_PER_SECOND);
        gauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.", start)
    }
}
