//! What peers can make a node hold, and what a node builds for its peers, stays
//! within the limits the nodes set.

use std::time::Duration;

use remora::remote::inproc;
use remora::Node;
use remora_integration_tests::*;
use tokio::time::Instant;

/// More proxies on one peer than one lease frame can list under the peer's frame
/// limit: renewals go out in several frames, and none of the leases lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_proxies_than_one_renewal_frame_lists_all_stay_alive() {
    const ACTORS: usize = 300;
    let lease = Duration::from_millis(400);
    // 4 KiB frames list about 118 object ids; 300 need three renewal frames.
    let server = Node::builder()
        .max_frame_size(4096)
        .lease(lease)
        .build()
        .await
        .unwrap();
    let client = Node::builder().lease(lease).build().await.unwrap();
    let _wire = inproc::connect_serializing(&client, &server).await.unwrap();
    let mut remotes = Vec::new();
    for _ in 0..ACTORS {
        // Only the client refers to each actor: a lapsed lease stops it.
        let local: CounterRef = server.spawn(Tally::default());
        remotes.push(reach(&client, &server, &local));
    }
    let all_granted = || server.stats().leases_granted == ACTORS;
    eventually(all_granted, "every proxy's lease granted").await;
    // Three leases later (renewed at half of one, a lapsed export is withdrawn
    // within 1.25): still all held, and every actor answers.
    tokio::time::sleep(lease * 3).await;
    assert_eq!(server.stats().leases_granted, ACTORS);
    for (n, remote) in remotes.iter().enumerate() {
        assert_eq!(remote.add(1).await, Ok(1), "actor {n}");
    }
    assert_eq!(server.stats().actors, ACTORS);
}

/// Waits (at most SAFETY, polling) until `done` holds.
async fn eventually(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + SAFETY;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
