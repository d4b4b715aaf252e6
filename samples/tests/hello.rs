//! `hello` end to end: a registry and a server as separate processes of a local
//! cluster, and a client that looks the server up by name and calls it.

use std::process::Command;

#[test]
fn hello_runs_across_processes() {
    let out = Command::new(env!("CARGO_BIN_EXE_hello"))
        .output()
        .expect("hello runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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
    use remora_samples::cluster::LocalCluster;
    let hello = env!("CARGO_BIN_EXE_hello");
    let mut cluster = LocalCluster::new().unwrap();
    let registry = cluster.start(hello, &["registry"]).unwrap().addr.clone();
    let server = cluster
        .start(hello, &["server", "--registry", &registry])
        .unwrap();
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM, got {status:?}");
}
