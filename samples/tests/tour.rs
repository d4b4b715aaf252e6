//! Runs the demo binary end to end, as the README tells a newcomer to, and checks
//! that it exits cleanly and that its narrative shows what it promises.

mod common;

use std::time::Duration;

/// The demo finishes in about two seconds; past this it is hung.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn tour_runs_and_tells_its_story() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_tour"), LIMIT);
    let ok = status.success();
    assert!(
        ok,
        "the demo failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );

    // Key lines, in the order the demo prints them.
    let expected = [
        "alice.deposit(100)  -> 100",
        "alice.withdraw(30)  -> Ok(120)",
        "bob.withdraw(500)   -> Err(InsufficientFunds { balance: 20, wanted: 500 })",
        "alice.balance()     -> 120",
        "bob.balance()       -> 20",
        r#"alice.statement()                -> ["opened by the demo", "checked by the demo"]"#,
        "alice.with_timeout(100 ms).statement() -> Err(Timeout { after: 100ms, may_have_executed: true })",
        "carol.audit(note 2).try_tell() -> Ok (queued)",
        "carol.audit(note 3).try_tell() -> Ok (queued)",
        "carol.audit(note 4).try_tell() -> Err(MailboxFull { capacity: 2 })",
        "may_have_executed() = false",
        "carol.audit(note 4).await -> Ok",
        r#"carol.statement() -> ["note 1", "note 2", "note 3", "note 4"]"#,
        r#"bob.share(0) -> Err(Panicked { message: "attempt to divide by zero" })"#,
        "node.monitor(&bob) -> stopped: panicked: attempt to divide by zero",
        "bob.balance() -> Err(ActorStopped)",
        "alice.balance() -> 120 (the other actors keep serving)",
        "dave.deposit(70) -> 70",
        r#"dave.share(0) -> Err(Panicked { message: "attempt to divide by zero" })"#,
        "dave.balance() -> 0 (restarted with fresh state; stopped: false)",
        r#"dave.share(0) -> Err(Panicked { message: "attempt to divide by zero" })"#,
        "node.monitor(&dave) -> stopped: panicked: attempt to divide by zero",
        "node.monitor(&carol) -> stopped: normal",
        "carol.balance() -> Err(ActorStopped)",
        "node.shutdown().await -> done; actors running: 0",
        "node.monitor(&alice) -> stopped: node shutdown",
        "alice.balance() -> Err(ActorStopped)",
        "Done.",
    ];
    let mut rest = stdout.as_str();
    let mut missing = Vec::new();
    for line in expected {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => missing.push(line),
        }
    }
    assert!(
        missing.is_empty(),
        "the demo's output lacks (or misorders) these lines:\n  {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        missing.join("\n  ")
    );
}
