//! The chaos suite, for a minute: `remora-chaos` kills and restarts worker
//! processes, partitions and mistreats QUIC links through its fault proxies,
//! cuts an in-process wire, and checks every call against Remora's promises
//! (deadlines, at-most-once, exactly-once, `may_have_executed`, registry
//! leases, counters back to baseline). It exits non-zero on any violation.

use std::process::Command;

const CHAOS: &str = env!("CARGO_BIN_EXE_remora-chaos");

/// A number in the summary line starting with `prefix` (`"calls: "`).
fn count(summary: &str, prefix: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{summary}"))
}

#[test]
fn a_minute_of_chaos_breaks_no_promise() {
    let out = Command::new(CHAOS)
        .args(["--secs", "50"])
        .output()
        .expect("remora-chaos runs");
    let summary = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "remora-chaos failed ({}):\n{summary}\n{errors}",
        out.status
    );
    assert!(summary.contains("RESULT: PASS"), "{summary}");
    assert!(count(&summary, "calls: ") > 1000, "{summary}");
    assert!(count(&summary, "kills: ") >= 2, "{summary}");
    assert_eq!(count(&summary, "violations: "), 0, "{summary}");
}
