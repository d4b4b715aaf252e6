//! What the measurement binaries share: figure lines and a process's memory.

/// Prints one figure as `NAME<TAB>VALUE<TAB>UNIT` (BENCH.md's format).
pub fn figure(name: &str, value: f64, unit: &str) {
    println!("{name}\t{value:.1}\t{unit}");
}

/// A line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
