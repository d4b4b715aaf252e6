//! A node process for the multi-process tests: listens on loopback with the cluster
//! credentials of a directory, serves a counter and a broker, prints
//! `READY <node id> <listen addr> <counter object> <broker object>`, and runs until
//! its standard input closes (the test dropped it) or it is killed.
//!
//! ```text
//! remora-test-node --credentials DIR [--listen 127.0.0.1:0]
//! ```

use std::io::Read;

use remora::Node;
use remora_integration_tests::{BrokerRef, CounterRef, Keeper, Tally};

#[tokio::main]
async fn main() {
    let mut credentials = None;
    let mut listen = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--credentials" => credentials = args.next(),
            "--listen" => listen = args.next().expect("--listen ADDR"),
            other => panic!("unknown argument {other}"),
        }
    }
    let credentials = credentials.expect("--credentials DIR");
    let node = Node::builder()
        .listen(listen)
        .credentials(credentials)
        .build()
        .await
        .expect("node starts");
    let counter: CounterRef = node.spawn(Tally::default());
    let broker: BrokerRef = node.spawn(Keeper::default());
    println!(
        "READY {} {} {} {}",
        node.id(),
        node.listen_addr().expect("listening"),
        node.export(&counter).expect("export"),
        node.export(&broker).expect("export"),
    );
    // Until the parent closes our stdin (or kills us).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .expect("stdin watcher");
    node.shutdown().await;
}
