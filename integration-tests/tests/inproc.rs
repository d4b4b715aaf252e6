//! Multi-node scenarios over the in-process transport, each run both ways it
//! connects nodes (see [`Link`]): values moved between the nodes as they are, and
//! every call encoded, framed and decoded exactly as between processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora::remote::inproc;
use remora::{Actor, CallError, Interface, Node, StopReason};
use remora_integration_tests::*;
use tokio::time::timeout;

/// How a test's nodes are connected: every scenario below runs over both (see
/// [`both_links!`]), except the few about what only one of them does.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// `inproc::connect`: a value holding no references moves to the other node as
    /// it is; anything holding one is encoded.
    Moved,
    /// `inproc::connect_serializing`: every call and reply is encoded and framed.
    Serializing,
}

impl Link {
    async fn connect(self, a: &Node, b: &Node) -> inproc::Wire {
        match self {
            Link::Moved => inproc::connect(a, b).await,
            Link::Serializing => inproc::connect_serializing(a, b).await,
        }
        .expect("in-process connection")
    }
}

/// One `#[tokio::test]` per (case, link): modules `moved` and `serializing`, each
/// calling `case(Link::..)`.
macro_rules! both_links {
    ($($case:ident),* $(,)?) => {
        mod moved {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Link::Moved).await
                }
            )*
        }
        mod serializing {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Link::Serializing).await
                }
            )*
        }
    };
}

both_links!(
    a_call_runs_on_the_other_node_and_its_reply_comes_back,
    tells_and_asks_from_one_sender_arrive_in_order,
    a_panic_on_the_server_is_the_callers_panicked_error,
    a_reference_passed_as_an_argument_arrives_as_a_working_proxy,
    a_reference_to_a_third_node_lets_the_receiver_call_that_node_directly,
    a_cut_connection_fails_calls_in_flight_with_node_down,
    an_object_never_exported_is_no_such_object,
    a_reference_of_the_wrong_interface_is_an_interface_mismatch,
    a_remote_call_past_its_deadline_times_out,
    a_method_the_server_does_not_have_is_unknown_method,
    a_malformed_frame_is_skipped_and_the_connection_keeps_working,
    a_reference_to_another_nodes_actor_names_that_node,
);

/// A server node exporting a counter, and a client node holding a proxy to it.
async fn pair(link: Link) -> (Node, Node, inproc::Wire, CounterRef, CounterRef) {
    let server = node().await;
    let client = node().await;
    let wire = link.connect(&client, &server).await;
    let counter: CounterRef = server.spawn(Tally::default());
    let object = server.export(&counter).unwrap();
    let remote: CounterRef = client.reference(server.id(), object).unwrap();
    (server, client, wire, counter, remote)
}

async fn a_call_runs_on_the_other_node_and_its_reply_comes_back(link: Link) {
    let (_server, _client, _wire, local, remote) = pair(link).await;
    assert!(!Interface::core(&remote).is_local());
    assert_eq!(remote.add(2).await, Ok(2));
    assert_eq!(remote.add(3).await, Ok(5));
    assert_eq!(local.total().await, Ok(5), "the state lives on the server");
}

async fn tells_and_asks_from_one_sender_arrive_in_order(link: Link) {
    let (_server, _client, _wire, _local, remote) = pair(link).await;
    for n in 0..500 {
        if n % 7 == 0 {
            remote.add(n).await.unwrap();
        } else {
            remote.bump(n).await.unwrap();
        }
    }
    assert_eq!(remote.seen().await.unwrap(), (0..500).collect::<Vec<_>>());
    remote.bump(1).receipt().await.unwrap();
    assert_eq!(remote.total().await, Ok((0..500).sum::<u64>() + 1));
}

async fn a_panic_on_the_server_is_the_callers_panicked_error(link: Link) {
    let (server, _client, _wire, local, remote) = pair(link).await;
    let stopped = server.monitor(&local);
    let err = remote.crash("remote boom".into()).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Panicked {
            message: "remote boom".into()
        }
    );
    assert!(err.may_have_executed());
    let reason = timeout(SAFETY, stopped).await.unwrap();
    assert!(matches!(reason, StopReason::Panicked { .. }), "{reason:?}");
    assert_eq!(remote.total().await, Err(CallError::ActorStopped));
}

async fn a_reference_passed_as_an_argument_arrives_as_a_working_proxy(link: Link) {
    let (server, client, _wire, _local, _remote) = pair(link).await;
    // A broker on the server; a counter on the client, passed to the broker by reference.
    let broker: BrokerRef = server.spawn(Keeper::default());
    let broker_id = server.export(&broker).unwrap();
    let broker: BrokerRef = client.reference(server.id(), broker_id).unwrap();
    let mine: CounterRef = client.spawn(Tally::default());
    assert_eq!(broker.hold(mine.clone()).await, Ok(true));
    // The broker calls back into the client's counter through its proxy.
    assert_eq!(broker.add_through(40).await, Ok(40));
    assert_eq!(
        mine.total().await,
        Ok(40),
        "the call ran on the client's actor"
    );
    // The reference comes back in a reply as the client's own local reference.
    let back = broker.give().await.unwrap().unwrap();
    assert!(Interface::core(&back).is_local());
    assert_eq!(back, mine);
    // Nested in a Vec of Options.
    let many = vec![Some(mine.clone()), None, Some(mine.clone())];
    assert_eq!(broker.hold_many(many).await, Ok(2));
}

async fn a_reference_to_a_third_node_lets_the_receiver_call_that_node_directly(link: Link) {
    let a = node().await;
    let b = node().await;
    let c = node().await;
    let _ab = link.connect(&a, &b).await;
    let _ac = link.connect(&a, &c).await;
    let _bc = link.connect(&b, &c).await;
    // C hosts a counter; B knows it; A asks B's broker to hand it over.
    let counter: CounterRef = c.spawn(Tally::default());
    let counter_on_b: CounterRef = reach(&b, &c, &counter);
    let broker: BrokerRef = b.spawn(Keeper::default());
    assert_eq!(broker.hold(counter_on_b).await, Ok(true));
    let broker_on_a: BrokerRef = reach(&a, &b, &broker);
    let counter_on_a = broker_on_a.give().await.unwrap().unwrap();
    assert_eq!(counter_on_a.add(9).await, Ok(9));
    assert_eq!(counter.total().await, Ok(9));
    let route = format!("{:?}", Interface::core(&counter_on_a));
    assert!(
        route.contains(&c.id().to_string()),
        "A talks to C directly: {route}"
    );
}

/// Bytes whose clones share one buffer, as any type holding an `Arc<Mutex<_>>`
/// does. It serializes as its bytes and deserializes into a buffer of its own, so
/// an encoded copy is independent of the original; a moved one is not.
#[derive(Clone, Debug)]
pub struct Page(Arc<Mutex<Vec<u8>>>);

impl Page {
    fn new(bytes: Vec<u8>) -> Page {
        Page(Arc::new(Mutex::new(bytes)))
    }

    fn read(&self) -> Vec<u8> {
        self.0.lock().expect("no writer panicked").clone()
    }

    /// Overwrites the first byte with 99 and returns what the page then holds.
    fn scribble(&self) -> Vec<u8> {
        let mut bytes = self.0.lock().expect("no writer panicked");
        bytes[0] = 99;
        bytes.clone()
    }
}

impl serde::Serialize for Page {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.read().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Page {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Page::new)
    }
}

/// Writes on pages: the ones it is given, and one it keeps.
#[remora::remote]
pub trait Scribe {
    /// Scribbles on `page` and returns what it then holds.
    async fn scribble(&mut self, page: Page) -> Vec<u8>;
    /// The page it keeps (a clone, sharing its buffer).
    async fn kept(&mut self) -> Page;
    /// Scribbles on the page it keeps and returns what it then holds.
    async fn scribble_kept(&mut self) -> Vec<u8>;
}

struct Writer {
    kept: Page,
}
impl Actor for Writer {}
impl Scribe for Writer {
    async fn scribble(&mut self, page: Page) -> Vec<u8> {
        page.scribble()
    }
    async fn kept(&mut self) -> Page {
        self.kept.clone()
    }
    async fn scribble_kept(&mut self) -> Vec<u8> {
        self.kept.scribble()
    }
}

/// A client's proxy to a `Writer` keeping `[0, 0, 0]` on a server, over `link`
/// (the nodes and the wire come along, to keep them alive).
async fn scribe(link: Link) -> (ScribeRef, (Node, Node, inproc::Wire)) {
    let (server, client) = (node().await, node().await);
    let wire = link.connect(&client, &server).await;
    let writer: ScribeRef = server.spawn(Writer {
        kept: Page::new(vec![0, 0, 0]),
    });
    (reach(&client, &server, &writer), (server, client, wire))
}

/// Encoded, as between processes, an argument and a reply are copies: the callee
/// scribbling on the page it was given leaves the caller's page (held across the
/// call) as it was, and a page that came back in a reply changes with nothing the
/// callee does to its own afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_copies() {
    let (remote, _nodes) = scribe(Link::Serializing).await;
    let mine = Page::new(vec![1, 2, 3]);
    assert_eq!(remote.scribble(mine.clone()).await, Ok(vec![99, 2, 3]));
    assert_eq!(mine.read(), vec![1, 2, 3], "the caller's page is its own");
    let theirs = remote.kept().await.unwrap();
    assert_eq!(remote.scribble_kept().await, Ok(vec![99, 0, 0]));
    assert_eq!(theirs.read(), vec![0, 0, 0], "the reply was a copy");
}

/// Moved, a value is the very one the caller sent: a type whose clones share state
/// shares it with the other node, both ways. That is the trade `inproc::connect`
/// documents (no encoding, no copy); `connect_serializing` rules it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_value_still_shares_what_its_clones_share() {
    let (remote, _nodes) = scribe(Link::Moved).await;
    let mine = Page::new(vec![1, 2, 3]);
    assert_eq!(remote.scribble(mine.clone()).await, Ok(vec![99, 2, 3]));
    assert_eq!(
        mine.read(),
        vec![99, 2, 3],
        "the callee wrote on the caller's buffer"
    );
    let theirs = remote.kept().await.unwrap();
    assert_eq!(remote.scribble_kept().await, Ok(vec![99, 0, 0]));
    assert_eq!(
        theirs.read(),
        vec![99, 0, 0],
        "the reply shares the callee's buffer"
    );
}

async fn a_cut_connection_fails_calls_in_flight_with_node_down(link: Link) {
    let (server, client, wire, _local, remote) = pair(link).await;
    // A second actor on the server, to learn when the server has read the slow call.
    let probe: CounterRef = server.spawn(Tally::default());
    let probe: CounterRef = reach(&client, &server, &probe);
    // A remote call sends its frame on the first poll.
    let mut slow = Box::pin(remote.nap(5_000));
    assert!(poll_once(&mut slow).await.is_pending());
    // Frames are read in order: once the probe answers, the slow call is running.
    assert_eq!(probe.add(1).await, Ok(1));
    let gone = client.monitor(&remote);
    wire.cut();
    let err = timeout(SAFETY, slow).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            CallError::NodeDown {
                may_have_executed: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        timeout(SAFETY, gone).await.unwrap(),
        StopReason::NodeDown { .. }
    ));
    let after = remote.add(1).await.unwrap_err();
    assert!(
        matches!(
            after,
            CallError::NodeDown {
                may_have_executed: false,
                ..
            }
        ),
        "{after:?}"
    );
    assert!(client.is_stopped(&remote));
}

async fn an_object_never_exported_is_no_such_object(link: Link) {
    let (server, client, _wire, _local, _remote) = pair(link).await;
    let forged: CounterRef = client.reference(server.id(), uuid_like()).unwrap();
    assert_eq!(forged.add(1).await, Err(CallError::NoSuchObject));
}

fn uuid_like() -> remora::wire::ObjectId {
    remora::wire::ObjectId::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0)
}

async fn a_reference_of_the_wrong_interface_is_an_interface_mismatch(link: Link) {
    let (server, client, _wire, _local, _remote) = pair(link).await;
    let broker: BrokerRef = server.spawn(Keeper::default());
    let broker_id = server.export(&broker).unwrap();
    // The client believes the object is a Counter.
    let wrong: CounterRef = client.reference(server.id(), broker_id).unwrap();
    let err = wrong.add(1).await.unwrap_err();
    assert!(
        matches!(&err, CallError::InterfaceMismatch { found, .. } if found == "Broker"),
        "{err:?}"
    );
}

/// A server, and a client accepting frames of 64 KiB, on a serializing link (every
/// call framed, as between processes); a counter on the server, and its proxy.
async fn small_frames() -> (Node, Node, inproc::Wire, CounterRef, CounterRef) {
    let server = node().await;
    let client = Node::builder()
        .max_frame_size(64 * 1024)
        .build()
        .await
        .unwrap();
    let wire = inproc::connect_serializing(&client, &server).await.unwrap();
    let counter: CounterRef = server.spawn(Tally::default());
    let remote: CounterRef = reach(&client, &server, &counter);
    (server, client, wire, counter, remote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_argument_is_refused_and_the_connection_keeps_working() {
    let (_server, _client, _wire, _counter, remote) = small_frames().await;
    let err = remote.echo_bytes(vec![7; 100 * 1024]).await.unwrap_err();
    assert!(
        matches!(err, CallError::TooLarge { max: 65536, .. }),
        "{err:?}"
    );
    assert!(!err.may_have_executed());
    assert_eq!(remote.add(1).await, Ok(1), "the connection still works");
}

/// A reply over the caller's frame limit: the call ran, and the error says so
/// (retrying it is not safe); the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_frame_limit_is_reply_failed_and_the_call_ran() {
    let (_server, _client, _wire, counter, remote) = small_frames().await;
    // 10 000 values of up to 9 bytes each: a reply of about 80 KiB.
    for n in 0..10_000u64 {
        remote.bump((1 << 33) + n).await.unwrap();
    }
    let err = remote.seen().await.unwrap_err();
    assert!(matches!(err, CallError::ReplyFailed { .. }), "{err:?}");
    assert!(err.may_have_executed(), "it ran");
    assert!(err.to_string().contains("the call ran"), "{err}");
    assert_eq!(counter.seen().await.map(|seen| seen.len()), Ok(10_000));
    assert_eq!(
        remote.add(0).await.map(|_| ()),
        Ok(()),
        "the connection still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_values_move_unencoded_and_references_are_still_marshalled() {
    let server = node().await;
    let client = Node::builder()
        .max_frame_size(64 * 1024)
        .build()
        .await
        .unwrap();
    let _wire = inproc::connect(&client, &server).await.unwrap();
    let counter: CounterRef = server.spawn(Tally::default());
    let remote: CounterRef = reach(&client, &server, &counter);
    // Moved, not framed: the frame limit does not apply, and the bytes come back intact.
    let big = vec![7u8; 100 * 1024];
    assert_eq!(remote.echo_bytes(big.clone()).await, Ok(big));
    // A value holding a reference takes the marshalling path (exported, imported).
    let broker: BrokerRef = server.spawn(Keeper::default());
    let broker: BrokerRef = reach(&client, &server, &broker);
    let mine: CounterRef = client.spawn(Tally::default());
    assert_eq!(broker.hold(mine.clone()).await, Ok(true));
    assert_eq!(broker.add_through(4).await, Ok(4));
    assert_eq!(mine.total().await, Ok(4));
}

async fn a_remote_call_past_its_deadline_times_out(link: Link) {
    let (_server, _client, _wire, _local, remote) = pair(link).await;
    let err = remote
        .with_timeout(Duration::from_millis(50))
        .nap(2_000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Timeout {
                may_have_executed: true,
                ..
            }
        ),
        "{err:?}"
    );
}

async fn a_method_the_server_does_not_have_is_unknown_method(link: Link) {
    let (server, client, _wire, counter, _remote) = pair(link).await;
    let newer: CounterV2Ref = client
        .reference(server.id(), server.export(&counter).unwrap())
        .unwrap();
    assert_eq!(newer.add(2).await, Ok(2), "shared methods still work");
    let err = newer.reset_all().await.unwrap_err();
    assert_eq!(
        err,
        CallError::UnknownMethod {
            interface: "Counter".into(),
            method: remora::stable_id("Counter.reset_all"),
        }
    );
    assert_eq!(counter.total().await, Ok(2), "nothing ran");
}

async fn a_malformed_frame_is_skipped_and_the_connection_keeps_working(link: Link) {
    let (server, _client, wire, _local, remote) = pair(link).await;
    assert_eq!(remote.add(1).await, Ok(1));
    // A well-delimited frame whose body is not a frame (0xc1 is never valid).
    assert!(wire.inject(&server, vec![0, 0, 0, 3, 0xc1, 0xc1, 0xc1]));
    // A frame that decodes but breaks the protocol's shape: an unknown variant.
    assert!(wire.inject(&server, vec![0, 0, 0, 2, 0x81, 0x63]));
    assert_eq!(
        remote.add(1).await,
        Ok(2),
        "the server skipped them and serves on"
    );
}

async fn a_reference_to_another_nodes_actor_names_that_node(link: Link) {
    // Three nodes of one process; code on `a` holds a reference to an actor of `b`
    // (it spawned it there) and sends it to `c`: `c` must get a proxy to `b`.
    let (a, b, c) = (node().await, node().await, node().await);
    let _wires = (link.connect(&a, &c).await, link.connect(&b, &c).await);
    let counter: CounterRef = b.spawn(Tally::default());
    let wire = a.wire_ref(&counter);
    assert_eq!(wire.node, b.id(), "exported by the node the actor lives on");
    assert_eq!(wire.incarnation, b.incarnation());
    let broker: BrokerRef = c.spawn(Keeper::default());
    let broker = reach(&a, &c, &broker);
    assert_eq!(broker.hold(counter.clone()).await, Ok(true));
    assert_eq!(broker.add_through(4).await, Ok(4));
    assert_eq!(counter.total().await, Ok(4), "c called b's actor");
}
