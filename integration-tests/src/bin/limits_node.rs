//! The node under test of the limits tests (`tests/limits.rs`), in a process of
//! its own: listens on loopback with the cluster credentials of a directory and
//! the limits its arguments set, serves the actors of
//! `remora_integration_tests::limits`, prints
//! `READY <listen addr> <node id> <counter> <big counter> <hopper> <hatch> <dialer>`
//! (object ids), and runs until its standard input closes (the test dropped
//! it) or it is killed. Its counters are read through its inspector.
//!
//! ```text
//! remora-limits-node --credentials DIR [--max-frame-size BYTES] [--call-window N]
//!     [--peer-timeout-ms N] [--hopper-bytes BYTES (default 1 MiB)]
//!     [--retry-above N --max-in-flight N --max-per-address N]
//! ```

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use remora::remote::HandshakeLimits;
use remora::{Mailbox, Node, SpawnOptions};
use remora_integration_tests::limits::{
    Bin, DialerRef, HatchRef, Hatchway, HopperRef, Switchboard,
};
use remora_integration_tests::{CounterRef, Tally};
use tokio::sync::{mpsc, Semaphore};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut credentials = None;
    let mut builder = Node::builder().name("limits-node").listen("127.0.0.1:0");
    let mut handshakes = HandshakeLimits::default();
    let mut hopper_bytes = 1 << 20;
    while let Some(arg) = args.next() {
        let mut number = || -> usize {
            args.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--credentials" => credentials = args.next(),
            "--max-frame-size" => builder = builder.max_frame_size(number()),
            "--call-window" => builder = builder.call_window(number() as u32),
            "--peer-timeout-ms" => {
                builder = builder.peer_timeout(Duration::from_millis(number() as u64))
            }
            "--hopper-bytes" => hopper_bytes = number(),
            "--retry-above" => handshakes = handshakes.retry_above(number()),
            "--max-in-flight" => handshakes = handshakes.max_in_flight(number()),
            "--max-per-address" => handshakes = handshakes.max_per_address(number()),
            other => panic!("unknown argument {other}"),
        }
    }
    let credentials = credentials.expect("--credentials DIR");
    let node = builder
        .credentials(credentials)
        .handshake_limits(handshakes)
        .build()
        .await
        .expect("node starts");
    let counter: CounterRef = node.spawn(Tally::default());
    let big: CounterRef = node.spawn(Tally {
        total: 0,
        seen: vec![u64::MAX; 100_000],
    });
    let (got, finished) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let mailbox = Mailbox::bounded(1024).max_bytes(hopper_bytes);
    let bin: HopperRef = node.spawn_with(
        Bin {
            got,
            permits: permits.clone(),
        },
        SpawnOptions::default().mailbox(mailbox),
    );
    let hatch: HatchRef = node.spawn(Hatchway {
        bin: bin.clone(),
        got: finished,
        permits,
    });
    let dialer: DialerRef = node.spawn(Switchboard);
    let objects = [
        node.export(&counter).expect("export"),
        node.export(&big).expect("export"),
        node.export(&bin).expect("export"),
        node.export(&hatch).expect("export"),
        node.export(&dialer).expect("export"),
    ];
    let objects: Vec<String> = objects.iter().map(ToString::to_string).collect();
    println!(
        "READY {} {} {}",
        node.listen_addr().expect("listening"),
        node.id(),
        objects.join(" ")
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
