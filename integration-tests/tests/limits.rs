//! What peers can make a node hold, and what a node builds for its peers, stays
//! within the limits the nodes set.

use std::sync::Arc;
use std::time::Duration;

use remora::remote::inproc;
use remora::{Actor, CallError, Interface, Mailbox, Node, SpawnOptions};
use remora_integration_tests::*;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

#[remora::remote]
pub trait Gate {
    /// Reports `n` as entered, waits for a permit, then returns `n`.
    async fn pass(&mut self, n: u64) -> u64;
}

struct Turnstile {
    entered: mpsc::UnboundedSender<u64>,
    permits: Arc<Semaphore>,
}

impl Actor for Turnstile {}

impl Gate for Turnstile {
    async fn pass(&mut self, n: u64) -> u64 {
        let _ = self.entered.send(n);
        self.permits.acquire().await.expect("open").forget();
        n
    }
}

/// A remote ask refused by a mailbox over its cap is answered `Overloaded` (it
/// did not run), not `ActorStopped`; the calls before it run.
async fn a_capped_mailbox_refuses_a_remote_ask_as_overloaded(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let actor = Turnstile {
        entered: entered_tx,
        permits: permits.clone(),
    };
    let opts = SpawnOptions::default().mailbox(Mailbox::unbounded_with_cap(1));
    let local: GateRef = pair.server.spawn_with(actor, opts);
    let remote: GateRef = reach(&pair.client, &pair.server, &local);
    // One call runs (and waits), the next fills the mailbox's one place.
    let running = tokio::spawn({
        let remote = remote.clone();
        async move { remote.pass(1).await }
    });
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(1));
    let queued = tokio::spawn({
        let remote = remote.clone();
        async move { remote.pass(2).await }
    });
    until("the second call queued", || {
        Interface::core(&local).mailbox_depth() == 1
    })
    .await;
    let err = timeout(SAFETY, remote.pass(3)).await.unwrap().unwrap_err();
    assert_eq!(err, CallError::Overloaded { cap: 1 });
    assert!(!err.may_have_executed());
    permits.add_permits(2);
    assert_eq!(timeout(SAFETY, running).await.unwrap().unwrap(), Ok(1));
    assert_eq!(timeout(SAFETY, queued).await.unwrap().unwrap(), Ok(2));
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(2));
    assert!(entered.try_recv().is_err(), "the refused call did not run");
}

both_transports!(a_capped_mailbox_refuses_a_remote_ask_as_overloaded);

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
    until("every proxy's lease granted", || {
        server.stats().leases_granted == ACTORS
    })
    .await;
    // Three leases later (renewed at half of one, a lapsed export is withdrawn
    // within 1.25): still all held, and every actor answers.
    tokio::time::sleep(lease * 3).await;
    assert_eq!(server.stats().leases_granted, ACTORS);
    for (n, remote) in remotes.iter().enumerate() {
        assert_eq!(remote.add(1).await, Ok(1), "actor {n}");
    }
    assert_eq!(server.stats().actors, ACTORS);
}

/// A member that completes TLS but never sends its `Hello` is dropped after the
/// peer timeout (its own keep-alive pings would keep it forever otherwise), and
/// the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_says_hello_is_dropped_after_the_peer_timeout() {
    let dir = tempfile::tempdir().unwrap();
    remora::Credentials::create_cluster(dir.path()).unwrap();
    let server = Node::builder()
        .credentials(dir.path())
        .listen("127.0.0.1:0")
        .peer_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let addr = server.listen_addr().unwrap();
    let silent = remora_integration_tests::raw::RawPeer::connect(dir.path(), "silent", addr).await;
    let closed = timeout(SAFETY, silent.conn.closed())
        .await
        .expect("the node closed the silent member's connection");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.reason.as_ref() == b"no Hello in time"),
        "{closed:?}"
    );
    assert_eq!(server.stats().connections, 0);
    // A member that does say Hello is served.
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .unwrap();
    assert_eq!(client.connect(addr.to_string()).await, Ok(server.id()));
}
