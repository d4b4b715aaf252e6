//! `compute` end to end: an engine process looked up by name runs tasks (values,
//! copied) and calls the client's progress listener (a reference) back.

mod common;

use std::time::Duration;

/// It takes seconds; past this it is hung.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_engine_runs_tasks_and_calls_the_client_back() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_compute"), LIMIT);
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");
    // The answers are right (values went there and back).
    assert!(
        stdout.contains("client: answer: 9592 primes below 100000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client: answer: 77031 starts the longest chain below 100000 (351 steps)"),
        "{stdout}"
    );
    // A task the engine refuses is its answer, not a failed call.
    assert!(
        stdout.contains("client: the engine refused: primes below 1000000000: too large"),
        "{stdout}"
    );
    // A long task given up by dropping its call: the engine stops early and
    // says so (its note reaches the client's listener).
    assert!(
        stdout.contains("client: gave up on it (dropped the call)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client: the engine stopped primes below 50000000 at"),
        "{stdout}"
    );
    // Four callbacks per task that ran, in order, before its answer.
    assert!(
        stdout.contains("client: 8 progress callbacks received"),
        "{stdout}"
    );
    let primes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  progress: primes below 100000:"))
        .collect();
    assert_eq!(
        primes,
        [
            "  progress: primes below 100000: 25%",
            "  progress: primes below 100000: 50%",
            "  progress: primes below 100000: 75%",
            "  progress: primes below 100000: 100%",
        ]
    );
    let answer_at = stdout.find("client: answer: 9592").unwrap();
    let last_update = stdout.find("primes below 100000: 100%").unwrap();
    assert!(
        last_update < answer_at,
        "callbacks happen while the engine works"
    );
}
