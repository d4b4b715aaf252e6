//! `hello` end to end: a registry and a server as separate processes of a local
//! cluster, and a client that looks the server up by name and calls it.

mod common;

use std::time::Duration;

/// It takes seconds; past this it is hung.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn hello_runs_across_processes() {
    let (status, stdout, stderr) = common::run_to_end(env!("CARGO_BIN_EXE_hello"), LIMIT);
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("registry process listening on 127.0.0.1:"),
        "{stdout}"
    );
    assert!(lines[1].contains("bound as `hello`"), "{stdout}");
    assert!(
        lines[2].starts_with("client looked up `hello` and called it: Hello, world! (from node "),
        "{stdout}"
    );
    assert!(lines[3].starts_with("stopped"), "{stdout}");
}

#[test]
fn the_server_stops_cleanly_on_sigterm() {
    use remora_testing::LocalCluster;
    let hello = env!("CARGO_BIN_EXE_hello");
    let mut cluster = LocalCluster::new().unwrap();
    let registry = cluster.start(hello, ["registry"]).unwrap().addr.clone();
    let server = cluster
        .start(hello, ["server", "--registry", &registry])
        .unwrap();
    let status = server.terminate().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM, got {status:?}");
}
