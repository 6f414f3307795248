//! What a server costs, read from `/proc`: the CPU time and the memory of every process in its
//! process group (its workers, its forked children, all their threads).

use std::fs;
use std::time::Duration;

/// The group's processes, by pid.
fn members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f.get(2) == Some(&pgid.to_string())))
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): field 0 is
/// the state, 2 the process group, 11..=14 utime, stime, cutime, cstime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Every thread of every process in the group, by thread id.
pub(crate) fn tasks(pgid: u32) -> Vec<i32> {
    members(pgid)
        .into_iter()
        .flat_map(|pid| {
            fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        })
        .collect()
}

/// CPU time (user and system) of every process in the group so far, with what their reaped
/// children used: a `fork` child's time moves to its parent when the parent reaps it, so the
/// sum counts it once either way.
pub(crate) fn cpu_time(pgid: u32) -> Duration {
    // USER_HZ, the unit of /proc's times: 100 on every Linux, whatever the kernel's tick.
    const TICKS_PER_SEC: u64 = 100;
    let ticks: u64 = members(pgid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            (11..=14)
                .filter_map(|i| f.get(i)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}

/// Memory of every process in the group, in bytes: the sum of their proportional set sizes
/// (`Pss`), so pages that forked processes share count once, split among them; where
/// `smaps_rollup` is not there, the resident set size.
pub(crate) fn memory(pgid: u32) -> u64 {
    members(pgid).into_iter().map(process_memory).sum()
}

fn process_memory(pid: u32) -> u64 {
    let kib = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(pss) = kib(&rollup, "Pss:") {
            return pss * 1024;
        }
    }
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| kib(&s, "VmRSS:"))
        .map_or(0, |k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_group() {
        let pgid = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(2)?
                    .parse()
                    .ok()
            })
            .unwrap();
        assert!(members(pgid).contains(&std::process::id()));
        assert!(memory(pgid) > 0);
        let start = cpu_time(pgid);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(
            cpu_time(pgid) > start,
            "50 ms of spinning shows as CPU time"
        );
    }
}
