//! Pipes across OS processes over QUIC: a streaming result, an upload, a half
//! sent on to a third process, backpressure, a killed producer, a dropped
//! receiver, a thousand pipes on one connection.

use std::time::Duration;

use futures_util::StreamExt;
use remora::{pipe, CallError, Credentials, Node};
use remora_integration_tests::{ChildNode, StreamerRef, SAFETY};
use tokio::time::timeout;

const TEST_NODE: &str = env!("CARGO_BIN_EXE_remora-test-node");

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Credentials::create_cluster(dir.path()).unwrap();
    dir
}

/// A client node in this process, connected to a test node process, and the
/// node's streamer.
async fn client(
    dir: &tempfile::TempDir,
    server: &ChildNode,
    peer_timeout: Duration,
) -> (Node, StreamerRef) {
    let client = Node::builder()
        .credentials(dir.path())
        .peer_timeout(peer_timeout)
        .build()
        .await
        .unwrap();
    client.connect(&server.addr).await.unwrap();
    let streamer = client.reference(server.id, server.streamer).unwrap();
    (client, streamer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_result_and_an_upload_cross_processes() {
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let (_client, remote) = client(&dir, &server, Duration::from_secs(6)).await;
    let items = remote.count(20_000, 16).await.unwrap();
    let got: Vec<u64> = timeout(SAFETY, items.map(Result::unwrap).collect())
        .await
        .unwrap();
    assert_eq!(got, (1..=20_000).collect::<Vec<_>>());
    let (tx, rx) = pipe::channel(8);
    tokio::spawn(async move {
        for i in 1..=5_000u64 {
            tx.send(i).await.unwrap();
        }
    });
    let sum = timeout(SAFETY, remote.sum(rx)).await.unwrap().unwrap();
    assert_eq!(sum, Ok(5_000 * 5_001 / 2));
}

/// The producer in another process is held back by a consumer that does not
/// read: its sends stop at the pipe's room plus the credit granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_bounds_a_producer_in_another_process() {
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let (_client, remote) = client(&dir, &server, Duration::from_secs(6)).await;
    const CAPACITY: u64 = 8;
    let mut items = remote.count(u64::MAX, CAPACITY).await.unwrap();
    assert_eq!(items.next().await.unwrap(), Ok(1));
    let bound = 2 * CAPACITY + 1;
    let deadline = tokio::time::Instant::now() + SAFETY;
    loop {
        let (sent, _) = remote.produced().await.unwrap();
        if sent + 1 >= bound {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck at {sent}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, _) = remote.produced().await.unwrap();
    assert!(sent <= bound, "{sent} sent past a credit of {bound}");
    // Dropping the receiver fails the producer's next send, its item back.
    drop(items);
    let deadline = tokio::time::Instant::now() + SAFETY;
    let (sent, closed) = loop {
        let (sent, closed) = remote.produced().await.unwrap();
        if let Some(item) = closed {
            break (sent, item);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the producer never learned"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(closed, sent + 1);
}

/// The producer's process killed: the consumer gets `NodeDown` within the peer
/// timeout, never a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_producer_process_is_node_down_not_an_end() {
    let dir = cluster();
    let mut server = ChildNode::spawn(TEST_NODE, dir.path());
    let (_client, remote) = client(&dir, &server, Duration::from_secs(1)).await;
    let mut items = remote.count(u64::MAX, 4).await.unwrap();
    assert_eq!(items.next().await.unwrap(), Ok(1));
    let id = server.id;
    server.kill();
    let mut last = None;
    while let Some(item) = timeout(SAFETY, items.next())
        .await
        .expect("within the peer timeout")
    {
        if let Err(err) = item {
            last = Some(err);
        }
    }
    assert!(
        matches!(&last, Some(CallError::NodeDown { node, .. }) if *node == id),
        "{last:?}"
    );
}

/// A receiving half sent on to a third process: that process pulls the items
/// from this one, the middle process only passes the half on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_sent_on_to_a_third_process() {
    let dir = cluster();
    let b = ChildNode::spawn(TEST_NODE, dir.path());
    let c = ChildNode::spawn(TEST_NODE, dir.path());
    let (client, on_b) = client(&dir, &b, Duration::from_secs(6)).await;
    client.connect(&c.addr).await.unwrap();
    let on_c: StreamerRef = client.reference(c.id, c.streamer).unwrap();
    let (tx, rx) = pipe::channel(4);
    tokio::spawn(async move {
        for i in 1..=2_000u64 {
            tx.send(i).await.unwrap();
        }
    });
    let sum = timeout(SAFETY, on_b.pass_on(rx, on_c))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sum, Ok(2_000 * 2_001 / 2));
    // The items left this node on a stream to C's connection, not B's.
    assert_eq!(client.stats().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipes_on_one_connection_across_processes() {
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let (client, remote) = client(&dir, &server, Duration::from_secs(6)).await;
    let mut pipes = Vec::new();
    for _ in 0..1000 {
        pipes.push(remote.count(3, 1).await.unwrap());
    }
    for items in &mut pipes {
        assert_eq!(timeout(SAFETY, items.next()).await.unwrap(), Some(Ok(1)));
    }
    assert_eq!(client.stats().pipe_streams, 1000);
    for items in &mut pipes {
        let rest: Vec<u64> = timeout(SAFETY, items.map(Result::unwrap).collect())
            .await
            .unwrap();
        assert_eq!(rest, [2, 3]);
    }
    assert_eq!(client.stats().pipe_streams, 0);
    assert_eq!(remote.count(2, 1).await.unwrap().count().await, 2);
}
