//! `logs` end to end: a log server, a follower and a client as processes of a
//! local cluster. The follower receives exactly the lines appended, in order;
//! the server's count of an upload (size, chunks, checksum) is the client's; a
//! slow follower holds its producer back; a follower whose server is killed
//! fails rather than ending cleanly.

mod common;

use std::io::{BufRead, Read};
use std::time::{Duration, Instant};

use remora_testing::LocalCluster;

/// The scripted run takes a few seconds; this only keeps a hung run from hanging the test.
const RUN_WITHIN: Duration = Duration::from_secs(90);

/// What the demo's client appends (the sample's `DEMO_LINES`).
const APPENDED: [&str; 3] = [
    "boot: 3 workers up",
    "worker-2: job 17 done in 41 ms",
    "worker-1: job 18 failed: disk full",
];

/// `(seq, text)` of every line `#SEQ TEXT` after `prefix`.
fn numbered<'a>(lines: &[&'a str], prefix: &str) -> Vec<(u64, &'a str)> {
    lines
        .iter()
        .filter_map(|l| {
            let (seq, text) = l.strip_prefix(prefix)?.strip_prefix('#')?.split_once(' ')?;
            Some((seq.parse().ok()?, text))
        })
        .collect()
}

/// What follows `prefix` on the only line that starts with it.
fn after<'a>(lines: &[&'a str], prefix: &str, stdout: &str) -> &'a str {
    let found: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one line {prefix:?} in:\n{stdout}");
    found[0]
}

/// The number after `word ` in `text`.
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {text:?}"))
        + word.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn a_follower_sees_every_line_and_an_upload_arrives_whole() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_logs"), RUN_WITHIN);
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();

    // The client appended its lines in order, numbered from 0.
    let appended = numbered(&lines, "  client   | appended ");
    let expected: Vec<(u64, &str)> = (0..).zip(APPENDED).collect();
    assert_eq!(appended, expected, "{stdout}");

    // The upload: what the client sent is what the server counted.
    let sent = after(&lines, "  client   | sent blob-4MiB.bin: ", &stdout);
    let counted = after(
        &lines,
        "  client   | the server counted blob-4MiB.bin: ",
        &stdout,
    );
    let (counted, logged_as) = counted.split_once(", logged as #").unwrap();
    assert_eq!(counted, sent, "{stdout}");
    let bytes: u64 = sent.split_once(" bytes").unwrap().0.parse().unwrap();
    assert_eq!(bytes, 4 << 20, "4 MiB: {sent}");
    assert_eq!(number_after(sent, "bytes in "), 64, "64 KiB chunks: {sent}");
    assert!(sent.contains(", fnv1a64 "), "{sent}");
    let logged_as: u64 = logged_as.parse().unwrap();
    assert_eq!(logged_as, APPENDED.len() as u64, "{stdout}");

    // The follower process received exactly those lines, in order, and the
    // server's line logging the upload, with the same count.
    let upload_line = format!("uploaded blob-4MiB.bin: {sent}");
    let mut all = expected.clone();
    all.push((logged_as, &upload_line));
    assert_eq!(numbered(&lines, "  follower | "), all, "{stdout}");
    // So did the client's own tail.
    assert_eq!(numbered(&lines, "  client   | followed "), all, "{stdout}");
    assert!(
        lines.contains(&"  client   | the tail followed every line added, in order"),
        "{stdout}"
    );

    // Both tails' producers ended once their followers were gone.
    let gone = lines
        .iter()
        .position(|l| l.starts_with("the server's producers noticed their followers gone"));
    let stopped = lines
        .iter()
        .position(|l| *l == "stopped the follower process (SIGTERM)");
    assert!(stopped.is_some() && gone > stopped, "{stdout}");

    // A slow follower held its producer to a few pipes' worth of the 300 lines.
    let slow = after(&lines, "a slow follower read #", &stdout);
    let (sent, capacity) = (
        number_after(slow, "has sent "),
        number_after(slow, "capacity "),
    );
    assert!(
        sent >= capacity && sent <= 3 * capacity,
        "the producer sent {sent} lines into a pipe of {capacity} its follower did not read:\n{stdout}"
    );
    assert!(
        lines.contains(&"the slow follower read on: 300 lines, #4 to #303, in order"),
        "{stdout}"
    );
    assert_eq!(
        lines.last(),
        Some(&"stopped the server process (SIGTERM)"),
        "{stdout}"
    );
}

/// A follower whose server is killed hears of it as a failure, not as the end.
#[test]
fn a_follower_of_a_killed_server_fails_instead_of_ending() {
    const LINE_WITHIN: Duration = Duration::from_secs(20);
    let logs = env!("CARGO_BIN_EXE_logs");
    let mut cluster = LocalCluster::new().unwrap();
    let addr = cluster.start(logs, ["server"]).unwrap().addr.clone();
    let follower = cluster
        .start(logs, ["follow", "--registry", &addr])
        .unwrap();
    let mut output = follower.output.take().unwrap();
    let client = cluster
        .start(logs, ["client", "--registry", &addr, "--line", "hello"])
        .unwrap();
    assert!(client.child.wait().unwrap().success());

    // The follower shows the line (a read blocks at most until the follower
    // exits, which the cluster makes sure of when dropped).
    for expected in ["following the log from #0", "#0 hello"] {
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), expected);
    }

    cluster.nodes()[0].kill().unwrap();
    // The follower notices the lost connection within the peer timeout, then exits.
    let deadline = Instant::now() + LINE_WITHIN;
    let status = loop {
        if let Some(status) = cluster.nodes()[1].child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the follower never noticed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    output.read_to_string(&mut rest).unwrap();
    assert!(!status.success(), "a lost log is a failure: {status:?}");
    assert!(
        !rest.contains("the log ended"),
        "a clean end claimed: {rest}"
    );
}
