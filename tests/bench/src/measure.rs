//! What a run costs the process that runs it: CPU time and peak memory, read from
//! `/proc/self` (Linux; elsewhere both read as `None`), and latency percentiles.

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`: 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU time of this process so far (every thread, live or ended), from
/// `utime` and `stime` of `/proc/self/stat` (10 ms resolution).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_time_of_stat(&stat)
}

/// `utime + stime` of a `/proc/PID/stat` line. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted after its closing `)`.
pub fn cpu_time_of_stat(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), i.e. indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// Peak resident memory of this process (`VmHWM` of `/proc/self/status`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_kib(&status)
}

/// The `VmHWM:` value of a `/proc/PID/status` text, in KiB.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `q`-quantile (0..=1) of `values`, nearest rank; `None` when empty.
pub fn quantile(values: &[Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_time_of_stat(stat), Some(Duration::from_secs(3)));
        assert_eq!(cpu_time_of_stat("garbage"), None);
    }

    #[test]
    fn hwm_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  2000 kB\nVmHWM:\t  1234 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(1234));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn this_process_can_be_measured_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(cpu_time().is_some());
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
