//! `bank` end to end: accounts placed round-robin over three branch processes,
//! transfers between branches, a branch killed halfway through a transfer and
//! restarted from its files, and the total balance conserved.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

/// The scripted run takes about 2 s; this only keeps a hung run from hanging the test.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// The number at the end of the line starting with `prefix`.
fn number_after(stdout: &str, prefix: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"));
    line[prefix.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn the_total_is_conserved_through_a_killed_and_restarted_branch() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_bank"), RUN_WITHIN);
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");

    // Six accounts, opened round-robin: two at each of three branches.
    let opened: Vec<(&str, u64, &str)> = stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("opened ")?;
            let (name, rest) = rest.split_once(" with ")?;
            let (balance, branch) = rest.split_once(" at ")?;
            Some((name, balance.parse().ok()?, branch))
        })
        .collect();
    assert_eq!(opened.len(), 6, "{stdout}");
    let branches: BTreeSet<&str> = opened.iter().map(|(_, _, b)| *b).collect();
    assert_eq!(
        branches,
        BTreeSet::from(["branch-1", "branch-2", "branch-3"]),
        "{stdout}"
    );
    for branch in &branches {
        let held = opened.iter().filter(|(_, _, b)| b == branch).count();
        assert_eq!(held, 2, "{branch} holds {held} accounts:\n{stdout}");
    }
    assert!(
        stdout.contains("accounts spread over 3 branches"),
        "{stdout}"
    );

    // One branch was killed mid-transfer and restarted; the deposit it missed
    // was retried until the restarted branch acknowledged it.
    let killed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("killed ")?.split_once(" (SIGKILL)"))
        .map(|(branch, _)| branch)
        .unwrap_or_else(|| panic!("no branch was killed:\n{stdout}"));
    assert!(branches.contains(killed), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"))
    };
    let killed_at = at(&format!("killed {killed} (SIGKILL)"));
    let retried_at = at("    Deposit of transfer #");
    let restarted_at = at(&format!("restarted {killed} (process "));
    assert!(
        killed_at < retried_at && killed_at < restarted_at,
        "{stdout}"
    );
    // A deposit resent to the restarted branch is not counted twice.
    let resent = lines
        .iter()
        .find(|l| l.starts_with("resent the deposit of transfer #"))
        .unwrap_or_else(|| panic!("no deposit was resent:\n{stdout}"));
    let (_, balances) = resent.split_once(": balance ").unwrap();
    let (held, after) = balances.split_once(" before, ").unwrap();
    assert_eq!(format!("{held} after"), after, "{stdout}");

    // Every transfer went through, and no money was made or lost.
    for id in 1..=24 {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("transfer #{id}: ")) && l.contains(" from ")),
            "transfer #{id} is missing:\n{stdout}"
        );
    }
    let opening: u64 = opened.iter().map(|(_, b, _)| b).sum();
    let before = number_after(&stdout, "total before: ");
    let after = number_after(&stdout, "total after: ");
    assert_eq!(before, opening, "{stdout}");
    assert_eq!(after, before, "{stdout}");
    assert!(
        stdout.contains("every balance matches the transfers acknowledged"),
        "{stdout}"
    );
}
