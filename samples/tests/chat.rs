//! `chat` end to end: a room process and client processes of a local cluster.
//! Messages fan out to the other members; a killed client is dropped from the
//! room and the others are told; a client stopped by SIGTERM says goodbye; the
//! room stops cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use remora_testing::LocalCluster;

/// The scripted run takes about 3 s; this only keeps a hung run from hanging the test.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// How long a line a test expects may take (the room notices a lost client within
/// about 3 s).
const LINE_WITHIN: Duration = Duration::from_secs(20);

/// The index of the first line equal to `line`, or of the first starting with it
/// when it ends in `(`.
fn position(lines: &[&str], line: &str, output: &str) -> usize {
    lines
        .iter()
        .position(|l| {
            if line.ends_with('(') {
                l.starts_with(line)
            } else {
                *l == line
            }
        })
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{output}"))
}

#[test]
fn a_scripted_chat_fans_out_and_drops_the_killed_client() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_chat"), RUN_WITHIN);
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("room process listening on 127.0.0.1:"),
        "{stdout}"
    );

    // Each message reaches every other member, and not its sender.
    position(&lines, "  alice | [bob] hi alice", &stdout);
    position(&lines, "  alice | [carol] hello, both of you", &stdout);
    position(&lines, "  bob   | [carol] hello, both of you", &stdout);
    position(&lines, "  alice | * carol joined", &stdout);
    position(&lines, "  bob   | * carol joined", &stdout);
    for sender in ["alice", "bob", "carol"] {
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with(&format!("  {sender:<5} | [{sender}]"))),
            "{sender} was told its own message:\n{stdout}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains("[alice] anyone here?")),
        "alice spoke alone, yet someone heard her:\n{stdout}"
    );

    // Carol is killed after she spoke; the room notices and tells the others.
    let before = position(&lines, "room members: alice, bob, carol", &stdout);
    let killed = position(&lines, "killed carol's process (SIGKILL) mid-chat", &stdout);
    let spoke = position(&lines, "  bob   | [carol] hello, both of you", &stdout);
    assert!(before < killed && spoke < killed, "{stdout}");
    let alice_told = position(&lines, "  alice | * carol left (", &stdout);
    let bob_told = position(&lines, "  bob   | * carol left (", &stdout);
    let after = position(&lines, "room members: alice, bob", &stdout);
    assert!(killed < alice_told && killed < bob_told, "{stdout}");
    assert!(alice_told < after && bob_told < after, "{stdout}");
    assert!(
        lines[alice_told].contains("unreachable"),
        "carol's node was lost, not shut down:\n{stdout}"
    );
    assert_eq!(
        lines.last(),
        Some(&"stopped the room and the clients"),
        "{stdout}"
    );
}

/// Follows a cluster node's output after its `READY` line, line by line.
fn follow(output: BufReader<std::process::ChildStdout>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in output.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(screen: &mpsc::Receiver<String>, expected: &str) -> String {
    screen
        .recv_timeout(LINE_WITHIN)
        .unwrap_or_else(|_| panic!("no line {expected:?} within {LINE_WITHIN:?}"))
}

#[test]
fn a_client_stopped_by_sigterm_says_goodbye() {
    let chat = env!("CARGO_BIN_EXE_chat");
    let mut cluster = LocalCluster::new().unwrap();
    let registry = cluster.start(chat, ["room"]).unwrap().addr.clone();
    let client = |name, says| {
        [
            "client",
            "--registry",
            &registry,
            "--name",
            name,
            "--say",
            says,
        ]
    };
    let alice = cluster.start(chat, client("alice", "anyone?")).unwrap();
    let alice = follow(alice.output.take().unwrap());
    assert_eq!(next_line(&alice, "in the room"), "in the room: alice");

    let bob = cluster.start(chat, client("bob", "hi, and bye")).unwrap();
    assert_eq!(next_line(&alice, "bob joined"), "* bob joined");
    assert_eq!(next_line(&alice, "bob's line"), "[bob] hi, and bye");

    let status = bob.terminate().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM, got {status:?}");
    assert_eq!(
        next_line(&alice, "bob left"),
        "* bob left (said goodbye)",
        "bob left the room on his way out, before his node went"
    );
}

#[test]
fn the_room_stops_cleanly_on_sigterm() {
    let chat = env!("CARGO_BIN_EXE_chat");
    let mut cluster = LocalCluster::new().unwrap();
    let room = cluster.start(chat, ["room"]).unwrap();
    let status = room.terminate().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM, got {status:?}");
}
