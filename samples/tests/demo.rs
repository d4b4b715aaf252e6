//! Runs the demo end to end, as the README tells a newcomer to: a registry and
//! three node processes, accounts placed across them, looked up by name, a
//! reference passed between nodes, one node killed, everything shut down.

mod common;

use std::time::Duration;

/// The demo takes a few seconds; past this it is hung.
const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn demo_runs_a_cluster_and_tells_its_story() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_demo"), LIMIT);
    let ok = status.success();
    assert!(
        ok,
        "the demo failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));

    // Three node processes, and the accounts spread one per node.
    for name in ["north", "south", "east"] {
        assert!(
            has(&format!("{name:<9} listening on 127.0.0.1:")),
            "{stdout}"
        );
    }
    let mut branches: Vec<&str> = ["alice", "bob", "carol"]
        .iter()
        .map(|owner| {
            let line = lines
                .iter()
                .find(|l| l.starts_with(&format!("{owner:<5} -> spawned on `")))
                .unwrap_or_else(|| panic!("no placement line for {owner}\n{stdout}"));
            line.rsplit('`').nth(1).unwrap()
        })
        .collect();
    branches.sort();
    assert_eq!(branches, ["east", "north", "south"], "one account per node");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("registry: ") && l.contains(" Account on node "))
            .count(),
        3
    );

    // Calls by name, a reference passed between nodes, errors that say why.
    for expected in [
        "alice.deposit(100) -> 100",
        "carol.deposit(50)  -> 50",
        "lookup(\"dave\")     -> nothing is bound under \"dave\"",
        "alice.pay(bob, 30) -> Ok(70)",
        "alice.balance()    -> 70",
        "bob.balance()      -> 30",
        "alice.pay(bob, 500) -> Err(\"alice has only 70\")",
    ] {
        assert!(has(expected), "missing {expected:?}\n{stdout}");
    }

    // The killed node: errors, the monitor's reason, the registry's cleanup.
    assert!(has("killed `"), "{stdout}");
    assert!(has("carol.balance() -> Err("), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("monitor(carol) -> node ") && l.contains("is unreachable")),
        "{stdout}"
    );
    assert!(has("registry: `carol` is gone"), "{stdout}");
    assert!(
        has("alice.balance()    -> 70 (the other nodes keep serving)"),
        "{stdout}"
    );
    assert!(
        has("alice.pay(carol, 10) -> Err(\"the transfer did not reach its target"),
        "{stdout}"
    );

    // Everything stopped cleanly.
    assert!(has("3 processes stopped cleanly (SIGTERM)"), "{stdout}");
}
