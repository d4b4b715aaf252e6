//! The `remora` binary as a user runs it: certificates, a standalone registry in
//! its own process (memory and etcd), `remora ls`, and the errors people hit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use remora::Node;
use remora_integration_tests::etcd::EtcdServer;
use remora_integration_tests::{CounterRef, Tally};
use remora_registry::Registry;

const REMORA: &str = env!("CARGO_BIN_EXE_remora");

fn remora(args: &[&str]) -> Output {
    Command::new(REMORA)
        .args(args)
        .output()
        .expect("remora runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `remora registry` process, killed when dropped.
struct RegistryProcess {
    child: Child,
    addr: String,
}

impl RegistryProcess {
    fn start(extra: &[&str]) -> RegistryProcess {
        let mut child = Command::new(REMORA)
            .args(["registry", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("remora registry starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "registry listening on ADDR (node ..., store: ...)"
        let addr = line
            .strip_prefix("registry listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        RegistryProcess { child, addr }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = remora(&["cert", "init", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

#[test]
fn cert_writes_a_root_and_named_node_certificates() {
    let dir = cluster();
    for file in ["ca.pem", "ca.key"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let root = dir.path().to_str().unwrap();
    let again = remora(&["cert", "init", root]);
    assert!(
        !again.status.success(),
        "a second init must not clobber the root"
    );
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );

    let out = remora(&["cert", "node", root, "--name", "web-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let node_dir = dir.path().join("web-1");
    for file in ["node.pem", "node.key", "ca.pem"] {
        assert!(node_dir.join(file).exists(), "{file}");
    }
    // The files load as a node's credentials.
    remora::Credentials::from_dir(&node_dir).unwrap();

    let missing = tempfile::tempdir().unwrap();
    let out = remora(&[
        "cert",
        "node",
        missing.path().to_str().unwrap(),
        "--name",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("remora cert init"),
        "{}",
        text(&out.stderr)
    );
}

async fn bind_one(credentials: &std::path::Path, addr: &str, name: &str) -> (Node, CounterRef) {
    let node = Node::builder()
        .credentials(credentials)
        .listen("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let registry = Registry::connect(&node, addr).await.unwrap();
    let counter: CounterRef = node.spawn(Tally::default());
    registry.bind(name, &counter).await.unwrap();
    (node, counter)
}

fn ls(addr: &str, credentials: &std::path::Path, prefix: &str) -> String {
    let out = remora(&[
        "ls",
        addr,
        prefix,
        "--credentials",
        credentials.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_registry_serves_binds_and_ls_lists_them() {
    let dir = cluster();
    let root = dir.path().to_str().unwrap();
    let registry = RegistryProcess::start(&["--credentials", root]);
    let (node, _counter) = bind_one(dir.path(), &registry.addr, "bank/alice").await;
    bind_one(dir.path(), &registry.addr, "other").await;

    let listing = ls(&registry.addr, dir.path(), "bank/");
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(lines[0].starts_with("NAME"), "{listing}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..3], ["bank/alice", "Counter", &node.id().to_string()]);
    assert_eq!(row[3], node.listen_addr().unwrap().to_string());
    assert_eq!(ls(&registry.addr, dir.path(), "").lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server)"
)]
async fn a_standalone_registry_keeps_its_names_in_etcd() {
    let etcd = EtcdServer::start();
    let dir = cluster();
    let root = dir.path().to_str().unwrap();
    let prefix = format!("/cli-{}/", uuid::Uuid::new_v4());
    let registry = RegistryProcess::start(&[
        "--credentials",
        root,
        "--etcd",
        etcd.url(),
        "--etcd-prefix",
        &prefix,
    ]);
    bind_one(dir.path(), &registry.addr, "kept-in-etcd").await;
    // A second registry on the same etcd sees the name.
    let second = RegistryProcess::start(&[
        "--credentials",
        root,
        "--etcd",
        etcd.url(),
        "--etcd-prefix",
        &prefix,
    ]);
    let listing = ls(&second.addr, dir.path(), "");
    assert!(listing.contains("kept-in-etcd"), "{listing}");
}

#[test]
fn errors_say_what_to_do() {
    // No registry there: the user hears where and why, and about credentials.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let out = Command::new(REMORA)
        .args(["ls", &addr])
        .env_remove("REMORA_CREDENTIALS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(err.contains("--credentials"), "{err}");

    // etcd not there.
    let out = remora(&[
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--etcd",
        &format!("http://{addr}"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("etcd"), "{}", text(&out.stderr));

    // A bad listen address.
    let out = remora(&["registry", "--listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not-an-address"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_standalone_registry_exits_cleanly_on_sigterm() {
    let dir = cluster();
    let mut registry = RegistryProcess::start(&["--credentials", dir.path().to_str().unwrap()]);
    let pid = registry.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = registry.child.wait().unwrap();
    assert!(status.success(), "exit 0 on SIGTERM, got {status:?}");
}
