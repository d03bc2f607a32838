//! Watching service processes: resident memory from `/proc/<pid>/status` (VmRSS now, VmHWM the
//! peak since the process started) and CPU time from `/proc/<pid>/stat`.

use std::str::FromStr;
use std::time::Duration;

/// `name=pid`, as given to `--watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected name=pid"))?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the pid must be a number"))?;
        if name.is_empty() {
            return Err(format!("{s:?}: the name is empty"));
        }
        Ok(Watched {
            name: name.to_owned(),
            pid,
        })
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// (VmRSS, VmHWM) of `pid` in bytes; None once the process is gone.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((status_kb(&status, "VmRSS")?, status_kb(&status, "VmHWM")?))
}

/// User plus system CPU time from the text of `/proc/<pid>/stat`.
pub fn parse_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on (the kernel's ABI for /proc).
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time used so far by `pid` ("self" for this process).
pub fn cpu(pid: &str) -> Option<Duration> {
    parse_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// (busy, total) jiffies of all CPUs from the text of `/proc/stat`: busy is everything but
/// idle and iowait.
pub fn parse_machine_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The machine's busy and total CPU jiffies so far.
pub fn machine_cpu() -> Option<(u64, u64)> {
    parse_machine_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The share of the machine's CPUs busy between two `machine_cpu` readings, in percent.
pub fn busy_percent(start: (u64, u64), end: (u64, u64)) -> Option<f64> {
    let total = end.1.checked_sub(start.1).filter(|t| *t > 0)?;
    let busy = end.0.saturating_sub(start.0);
    Some(100.0 * busy as f64 / total as f64)
}

/// The command name (field 2 of `/proc/<pid>/stat`, without its parentheses) and the CPU time
/// of the process.
pub fn parse_program_cpu(stat: &str) -> Option<(String, Duration)> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    Some((name.to_owned(), parse_cpu(stat)?))
}

/// Every process's command name and CPU time so far, by pid: to say which programs the
/// machine's CPU went to (PostgreSQL's backends, RabbitMQ's `beam.smp`), not only the watched
/// services'.
pub fn all_programs_cpu() -> std::collections::HashMap<u32, (String, Duration)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parse_program_cpu(&stat)?))
    })
    .collect()
}

/// CPU used between two `all_programs_cpu` readings, summed by command name, largest first.
/// Only processes present at both readings count (a process's whole life would otherwise be
/// charged to the window).
pub fn cpu_by_program(
    start: &std::collections::HashMap<u32, (String, Duration)>,
    end: &std::collections::HashMap<u32, (String, Duration)>,
) -> Vec<(String, Duration)> {
    let mut sums: std::collections::HashMap<&str, Duration> = Default::default();
    for (pid, (name, cpu)) in end {
        if let Some((name_before, before)) = start.get(pid).filter(|(n, _)| n == name) {
            *sums.entry(name_before).or_default() += cpu.saturating_sub(*before);
        }
    }
    let mut sums: Vec<(String, Duration)> = sums
        .into_iter()
        .filter(|(_, cpu)| !cpu.is_zero())
        .map(|(name, cpu)| (name.to_owned(), cpu))
        .collect();
    sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sums
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_parses_name_equals_pid() {
        assert_eq!(
            "gateway=123".parse::<Watched>(),
            Ok(Watched {
                name: "gateway".into(),
                pid: 123
            })
        );
        assert!("gateway".parse::<Watched>().is_err());
        assert!("=1".parse::<Watched>().is_err());
        assert!("g=x".parse::<Watched>().is_err());
    }

    #[test]
    fn status_fields_in_bytes() {
        let status = "Name:\tmessage-manag\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(20 * 1024 * 1024));
        assert_eq!(status_kb(status, "VmHWM"), Some(40 * 1024 * 1024));
        assert_eq!(status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn machine_cpu_from_proc_stat() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(parse_machine_cpu(stat), Some((150, 1000)));
        assert_eq!(busy_percent((150, 1000), (650, 2000)), Some(50.0));
        assert_eq!(busy_percent((150, 1000), (150, 1000)), None);
        assert!(machine_cpu().is_some_and(|(busy, total)| busy <= total));
    }

    #[test]
    fn cpu_by_program_sums_processes_seen_at_both_readings() {
        let reading = |rows: &[(u32, &str, u64)]| {
            rows.iter()
                .map(|&(pid, name, ms)| (pid, (name.to_owned(), Duration::from_millis(ms))))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let start = reading(&[
            (1, "postgres", 100),
            (2, "postgres", 50),
            (3, "beam.smp", 10),
        ]);
        let end = reading(&[
            (1, "postgres", 300),
            (2, "postgres", 70),
            (3, "beam.smp", 40),
            // Started during the window: not charged with its whole life.
            (4, "pgbench", 900),
            // Idle throughout: left out.
            (5, "sshd", 0),
        ]);
        assert_eq!(
            cpu_by_program(&start, &end),
            vec![
                ("postgres".to_owned(), Duration::from_millis(220)),
                ("beam.smp".to_owned(), Duration::from_millis(30)),
            ]
        );
        let stat = "7 (tokio-rt worker) R 1 7 7 0 -1 0 0 0 0 0 12 3 0 0 20 0 1 0 1 2 3";
        assert_eq!(
            parse_program_cpu(stat),
            Some(("tokio-rt worker".to_owned(), Duration::from_millis(150)))
        );
        assert!(all_programs_cpu().contains_key(&std::process::id()));
    }

    #[test]
    fn cpu_time_from_stat() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu(stat), Some(Duration::from_secs(3)));
        // This process exists and has used some CPU.
        assert!(cpu("self").is_some());
        assert!(memory(std::process::id()).is_some_and(|(rss, hwm)| rss > 0 && hwm >= rss));
    }
}
