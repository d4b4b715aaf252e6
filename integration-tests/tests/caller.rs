//! `remora::caller()`: a handler learns which node sent the message it handles, as
//! the transport authenticated it: the node's name in one process, its certificate's
//! Common Name over QUIC; and nobody for messages sent on its own node.

use remora::{Actor, Credentials, Node};
use remora_integration_tests::*;
use tokio::time::timeout;

/// What `remora::caller()` said: (identity, node id).
type Seen = Option<(String, String)>;

fn seen() -> Seen {
    remora::caller().map(|c| (c.identity().to_owned(), c.node().to_string()))
}

#[remora::remote]
pub trait Whoami {
    /// Who sent this call; with `pause`, asked after an await (the handler has gone
    /// from the caller's task to the actor's).
    async fn who(&mut self, pause: bool) -> Seen;
    /// Calls `who` on the actor's local peer (inline, on this handler's task), then
    /// asks again: (what the inner handler saw, what this one sees afterwards).
    async fn through(&mut self, pause: bool) -> (Seen, Seen);
    /// Records who sent this tell.
    #[oneway]
    async fn note(&mut self);
    /// What `note` recorded.
    async fn noted(&mut self) -> Vec<Seen>;
}

#[derive(Default)]
struct Probe {
    inner: Option<WhoamiRef>,
    notes: Vec<Seen>,
}

impl Actor for Probe {}

impl Whoami for Probe {
    async fn who(&mut self, pause: bool) -> Seen {
        if pause {
            tokio::task::yield_now().await;
        }
        seen()
    }
    async fn through(&mut self, pause: bool) -> (Seen, Seen) {
        let inner = match &self.inner {
            Some(inner) => inner.who(pause).await.expect("the local peer answers"),
            None => panic!("this probe has no local peer"),
        };
        (inner, seen())
    }
    async fn note(&mut self) {
        self.notes.push(seen());
    }
    async fn noted(&mut self) -> Vec<Seen> {
        self.notes.clone()
    }
}

fn from(node: &Node, identity: &str) -> Seen {
    Some((identity.to_owned(), node.id().to_string()))
}

/// A probe on `server` with a local peer, and `client`'s reference to it.
fn probe(client: &Node, server: &Node) -> WhoamiRef {
    let inner: WhoamiRef = server.spawn(Probe::default());
    let outer: WhoamiRef = server.spawn(Probe {
        inner: Some(inner),
        notes: Vec::new(),
    });
    reach(client, server, &outer)
}

async fn named(name: &str) -> Node {
    Node::builder().name(name).build().await.unwrap()
}

#[tokio::test]
async fn in_process_the_caller_is_the_calling_node_by_name() {
    let server = named("server").await;
    let client = named("alpha").await;
    let _wire = remora::remote::inproc::connect(&client, &server)
        .await
        .unwrap();
    let remote = probe(&client, &server);
    assert_eq!(remote.who(false).await, Ok(from(&client, "alpha")));
    assert_eq!(remote.who(true).await, Ok(from(&client, "alpha")));

    // The other way, on the same connection.
    let back: WhoamiRef = client.spawn(Probe::default());
    let back = reach(&server, &client, &back);
    assert_eq!(back.who(false).await, Ok(from(&server, "server")));
}

#[tokio::test]
async fn an_unnamed_node_calls_as_remora_node() {
    let server = node().await;
    let client = node().await;
    let _wire = remora::remote::inproc::connect_serializing(&client, &server)
        .await
        .unwrap();
    let remote = probe(&client, &server);
    assert_eq!(remote.who(false).await, Ok(from(&client, "remora-node")));
}

#[tokio::test]
async fn a_message_sent_on_the_node_has_no_caller() {
    let node = named("alpha").await;
    let local: WhoamiRef = node.spawn(Probe::default());
    assert_eq!(local.who(false).await, Ok(None));
    assert_eq!(local.who(true).await, Ok(None));
    local.note().await.unwrap();
    assert_eq!(local.noted().await, Ok(vec![None]));
    assert!(remora::caller().is_none(), "outside handlers nobody called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_call_inside_a_remote_handler_sees_no_caller_and_restores_the_outer_one() {
    let server = named("server").await;
    let client = named("alpha").await;
    let _wire = remora::remote::inproc::connect(&client, &server)
        .await
        .unwrap();
    let remote = probe(&client, &server);
    // The local peer is idle, so it runs inline on the remote handler's task; with
    // `pause` it goes on in its own task after the first poll.
    for pause in [false, true] {
        let (inner, outer) = remote.through(pause).await.unwrap();
        assert_eq!(inner, None, "pause = {pause}");
        assert_eq!(outer, from(&client, "alpha"), "pause = {pause}");
    }
    // And the remote caller did not leak into the local peer's later messages.
    assert_eq!(remote.who(false).await, Ok(from(&client, "alpha")));
}

#[tokio::test]
async fn a_tell_from_another_node_carries_its_caller() {
    let server = named("server").await;
    let client = named("alpha").await;
    let _wire = remora::remote::inproc::connect(&client, &server)
        .await
        .unwrap();
    let remote = probe(&client, &server);
    remote.note().await.unwrap();
    remote.note().await.unwrap();
    assert_eq!(
        remote.noted().await,
        Ok(vec![from(&client, "alpha"), from(&client, "alpha")])
    );
}

/// `client` connected over QUIC on loopback to `server`, which must listen.
async fn over_quic(client: &Node, server: &Node) -> WhoamiRef {
    let addr = server
        .listen_addr()
        .expect("the server listens")
        .to_string();
    let peer = timeout(SAFETY, client.connect(&addr))
        .await
        .expect("connects in time")
        .expect("the handshake succeeds");
    assert_eq!(peer, server.id());
    probe(client, server)
}

fn listening() -> remora::NodeBuilder {
    Node::builder().listen("127.0.0.1:0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_the_caller_is_the_certificate_common_name() {
    let server = listening().build().await.unwrap();
    let alpha = Credentials::ephemeral_named("alpha").unwrap();
    // The builder's name is not what counts over QUIC: the certificate's is.
    let client = Node::builder()
        .name("not-alpha")
        .with_credentials(alpha)
        .build()
        .await
        .unwrap();
    let remote = over_quic(&client, &server).await;
    assert_eq!(remote.who(false).await, Ok(from(&client, "alpha")));
    assert_eq!(remote.who(true).await, Ok(from(&client, "alpha")));
    remote.note().await.unwrap();
    assert_eq!(remote.noted().await, Ok(vec![from(&client, "alpha")]));
    let (inner, outer) = remote.through(false).await.unwrap();
    assert_eq!((inner, outer), (None, from(&client, "alpha")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_a_named_node_without_credentials_calls_by_its_name() {
    // Both get certificates under the process's ephemeral root, named after them.
    let server = listening().name("server").build().await.unwrap();
    let client = named("delta").await;
    let remote = over_quic(&client, &server).await;
    assert_eq!(remote.who(false).await, Ok(from(&client, "delta")));
    // The server's calls to the client (the accepting side) name the server.
    let back: WhoamiRef = client.spawn(Probe::default());
    let back = reach(&server, &client, &back);
    assert_eq!(back.who(false).await, Ok(from(&server, "server")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_with_certificates_issued_into_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    Credentials::create_cluster(&ca).unwrap();
    Credentials::issue_named_node(&ca, tmp.path().join("server"), "server").unwrap();
    Credentials::issue_named_node(&ca, tmp.path().join("alpha"), "alpha").unwrap();
    Credentials::issue_node(&ca, tmp.path().join("anonymous")).unwrap();

    let server = listening()
        .credentials(tmp.path().join("server"))
        .build()
        .await
        .unwrap();
    let with = |dir: &str| Node::builder().credentials(tmp.path().join(dir));
    // A certificate written to disk is used as issued, whatever the node is called.
    let alpha = with("alpha").name("ignored").build().await.unwrap();
    let anonymous = with("anonymous").build().await.unwrap();
    // From the directory holding ca.key, a certificate is issued for the node's name.
    let beta = Node::builder()
        .name("beta")
        .credentials(&ca)
        .build()
        .await
        .unwrap();

    let remote = over_quic(&alpha, &server).await;
    assert_eq!(remote.who(false).await, Ok(from(&alpha, "alpha")));
    let remote = over_quic(&anonymous, &server).await;
    assert_eq!(remote.who(false).await, Ok(from(&anonymous, "remora-node")));
    let remote = over_quic(&beta, &server).await;
    assert_eq!(remote.who(false).await, Ok(from(&beta, "beta")));
}
