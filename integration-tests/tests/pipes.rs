//! Pipes between nodes, over both transports: streaming results, uploads,
//! subscribers, halves sent on to a third node, backpressure, honest ends.

use std::time::Duration;

use futures_util::StreamExt;
use remora::pipe::{self, SendError};
use remora::{CallError, Node};
use remora_integration_tests::{
    both_transports, three_nodes, until, Pair, StreamerRef, Tap, Transport, SAFETY,
};
use tokio::time::timeout;

async fn pair(transport: Transport) -> (Pair, StreamerRef) {
    let pair = Pair::new(transport).await;
    let local: StreamerRef = pair.server.spawn(Tap::default());
    let remote = remora_integration_tests::reach(&pair.client, &pair.server, &local);
    (pair, remote)
}

async fn a_streaming_result_is_consumed_to_its_end(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let items = remote.count(1000, 8).await.unwrap();
    let got: Vec<u64> = timeout(SAFETY, items.map(Result::unwrap).collect())
        .await
        .unwrap();
    assert_eq!(got, (1..=1000).collect::<Vec<_>>(), "in order, each once");
    let words: Vec<String> = remote
        .words()
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(words, ["pipes", "carry", "strings"]);
}

async fn an_upload_is_summed_on_the_other_node(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let (tx, rx) = pipe::channel(4);
    let producer = tokio::spawn(async move {
        for i in 1..=500u64 {
            tx.send(i).await.unwrap();
        }
    });
    let sum = timeout(SAFETY, remote.sum(rx)).await.unwrap().unwrap();
    assert_eq!(sum, Ok(500 * 501 / 2));
    producer.await.unwrap();
}

async fn a_subscriber_gets_every_item_then_the_end(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let (tx, mut rx) = pipe::channel(3);
    let fed = tokio::spawn({
        let remote = remote.clone();
        async move { remote.feed(tx, 200).await }
    });
    let mut got = Vec::new();
    while let Some(item) = timeout(SAFETY, rx.next()).await.unwrap() {
        got.push(item.unwrap());
    }
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
    assert_eq!(fed.await.unwrap(), Ok(200));
}

/// A slow consumer bounds its producer: what the producer has sent never passes
/// the pipe's room on its node plus the credit the consumer granted.
async fn a_slow_consumer_holds_back_a_fast_producer(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    const CAPACITY: u64 = 4;
    let mut items = remote.count(1_000_000, CAPACITY).await.unwrap();
    // One item taken: the stream is open and credit granted.
    assert_eq!(items.next().await.unwrap(), Ok(1));
    let bound = 2 * CAPACITY + 1;
    let deadline = tokio::time::Instant::now() + SAFETY;
    let sent = loop {
        let (sent, _) = remote.produced().await.unwrap();
        if sent + 1 >= bound {
            break sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the producer is stuck at {sent}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Given time, it goes no further.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (still, _) = remote.produced().await.unwrap();
    assert!(
        still <= bound,
        "{still} items sent past a credit of {bound} (had {sent})"
    );
    // Consuming makes room, a batch at a time.
    for expected in 2..=40 {
        assert_eq!(items.next().await.unwrap(), Ok(expected));
    }
    let (later, _) = remote.produced().await.unwrap();
    assert!(later > still && later <= 40 + bound, "{later}");
}

/// Dropping the receiver makes the producer's `send` fail with its item back.
async fn a_dropped_receiver_fails_the_producer_with_its_item(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let mut items = remote.count(1_000_000, 2).await.unwrap();
    assert_eq!(items.next().await.unwrap(), Ok(1));
    drop(items);
    let deadline = tokio::time::Instant::now() + SAFETY;
    let closed = loop {
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
    assert_eq!(
        closed.1,
        closed.0 + 1,
        "the item that failed is the next one"
    );
}

/// A receiving half sent on to a third node: the data flows from the producer
/// to that node.
async fn a_receiver_sent_on_to_a_third_node_is_summed_there(transport: Transport) {
    let ([a, b, c], _wires) = three_nodes(transport).await;
    let on_b: StreamerRef = b.spawn(Tap::default());
    let on_c: StreamerRef = c.spawn(Tap::default());
    let b_from_a = remora_integration_tests::reach(&a, &b, &on_b);
    let c_from_a = remora_integration_tests::reach(&a, &c, &on_c);
    // A uploads to B, which passes the receiver on to C.
    let (tx, rx) = pipe::channel(4);
    tokio::spawn(async move {
        for i in 1..=300u64 {
            tx.send(i).await.unwrap();
        }
    });
    let sum = timeout(SAFETY, b_from_a.pass_on(rx, c_from_a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sum, Ok(300 * 301 / 2));
    // B never held a stream: the items went from A to C.
    assert_eq!(b.stats().pipe_streams, 0);
}

/// A thousand pipes open at once on one connection, each consumed.
async fn a_thousand_pipes_at_once(transport: Transport) {
    let (pair, remote) = pair(transport).await;
    let mut pipes = Vec::new();
    for _ in 0..1000 {
        pipes.push(remote.count(3, 1).await.unwrap());
    }
    // Every stream is open once each has been polled.
    let mut firsts = Vec::new();
    for items in &mut pipes {
        firsts.push(items.next().await.unwrap().unwrap());
    }
    assert!(firsts.iter().all(|&f| f == 1));
    assert!(
        pair.client.stats().pipe_streams >= 1000,
        "{}",
        pair.client.stats().pipe_streams
    );
    for items in &mut pipes {
        let rest: Vec<u64> = items.map(Result::unwrap).collect().await;
        assert_eq!(rest, [2, 3]);
    }
    until("every stream is closed", || {
        pair.client.stats().pipe_streams == 0 && pair.server.stats().pipe_streams == 0
    })
    .await;
}

/// A peer may hold [`pipe::MAX_STREAMS`] streams open to a node on one
/// connection: the receiver of one more hears `Overloaded` (it does not hang),
/// the open ones keep flowing, and a stream given back makes room for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_streams_past_the_bound_are_refused_alone() {
    let (pair, remote) = pair(Transport::InProcess).await;
    let mut open = Vec::new();
    for _ in 0..pipe::MAX_STREAMS {
        let mut quiet = remote.hold(1).await.unwrap();
        assert!(remora_integration_tests::poll_once(&mut quiet.next())
            .await
            .is_pending());
        open.push(quiet);
    }
    until("the server holds every stream", || {
        pair.server.stats().pipe_streams == pipe::MAX_STREAMS
    })
    .await;

    let mut refused = remote.count(3, 1).await.unwrap();
    let err = timeout(SAFETY, refused.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Overloaded {
            cap: pipe::MAX_STREAMS
        }
    );
    assert_eq!(refused.next().await, None);
    assert_eq!(pair.server.stats().pipe_streams, pipe::MAX_STREAMS);

    // One stream given back: the next pipe flows, and calls still run.
    drop(open.pop());
    until("a stream is given back", || {
        pair.server.stats().pipe_streams == pipe::MAX_STREAMS - 1
    })
    .await;
    let items: Vec<u64> = remote
        .count(3, 1)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3]);
    drop(open);
    until("every stream is closed", || {
        pair.server.stats().pipe_streams == 0
    })
    .await;
}

/// The connection lost under a pipe: the consumer gets `NodeDown`, never a
/// clean end.
async fn a_lost_connection_is_an_error_not_an_end(transport: Transport) {
    let (pair, remote) = pair(transport).await;
    let mut items = remote.count(1_000_000, 4).await.unwrap();
    assert_eq!(items.next().await.unwrap(), Ok(1));
    match &pair.wire {
        Some(wire) => wire.cut(),
        None => pair.server.shutdown().await,
    }
    let mut last = None;
    while let Some(item) = timeout(SAFETY, items.next()).await.unwrap() {
        if let Err(err) = item {
            last = Some(err);
        }
    }
    assert!(
        matches!(last, Some(CallError::NodeDown { node, .. }) if node == pair.server.id()),
        "{last:?}"
    );
}

/// A pipe nobody reads holds up nothing: beside it another pipe flows to its
/// end and calls are answered (each pipe stream has a stream of its own, and
/// credit keeps the stalled one's items at its producer).
async fn a_stalled_pipe_holds_up_no_other_pipe_and_no_call(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let mut stalled = remote.count(u64::MAX, 4).await.unwrap();
    assert_eq!(stalled.next().await.unwrap(), Ok(1));
    let flowing: Vec<u64> = timeout(
        SAFETY,
        remote
            .count(5_000, 8)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(flowing, (1..=5_000).collect::<Vec<_>>());
    for _ in 0..100 {
        timeout(SAFETY, remote.produced()).await.unwrap().unwrap();
    }
    // The stalled one is still there, in order, where it stopped.
    assert_eq!(stalled.next().await.unwrap(), Ok(2));
}

/// A remote sending half learns when its pipe's receiver goes.
async fn a_remote_sender_hears_its_receiver_go(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let (tx, rx) = pipe::channel::<u64>(2);
    // The server keeps feeding a subscriber that stops reading and goes.
    let fed = tokio::spawn({
        let remote = remote.clone();
        async move { remote.feed(tx, u64::MAX).await }
    });
    let mut rx = rx;
    assert_eq!(rx.next().await, Some(Ok(1)));
    drop(rx);
    let sent = timeout(SAFETY, fed).await.unwrap().unwrap().unwrap();
    assert!(
        sent < 10,
        "the feeder stopped once the receiver went ({sent} sent)"
    );
}

both_transports!(
    a_stalled_pipe_holds_up_no_other_pipe_and_no_call,
    a_remote_sender_hears_its_receiver_go,
    a_streaming_result_is_consumed_to_its_end,
    an_upload_is_summed_on_the_other_node,
    a_subscriber_gets_every_item_then_the_end,
    a_slow_consumer_holds_back_a_fast_producer,
    a_dropped_receiver_fails_the_producer_with_its_item,
    a_receiver_sent_on_to_a_third_node_is_summed_there,
    a_thousand_pipes_at_once,
    a_lost_connection_is_an_error_not_an_end,
    large_items_flow_within_the_byte_budget,
);

/// Between nodes of one process that encode every call, the same holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_work_when_every_call_is_encoded() {
    let server = Node::builder().build().await.unwrap();
    let client = Node::builder().build().await.unwrap();
    let _wire = remora::remote::inproc::connect_serializing(&client, &server)
        .await
        .unwrap();
    let local: StreamerRef = server.spawn(Tap::default());
    let remote = remora_integration_tests::reach(&client, &server, &local);
    let got: Vec<u64> = remote
        .count(50, 2)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
}

/// Locally a pipe is a bounded channel: `try_send` refuses when full, a clean
/// end is `None`, a dropped receiver gives the item back.
#[tokio::test]
async fn a_local_pipe_is_a_bounded_channel() {
    let (tx, mut rx) = pipe::channel::<u32>(2);
    tx.try_send(1).unwrap();
    tx.send(2).await.unwrap();
    assert!(matches!(tx.try_send(3), Err(pipe::TrySendError::Full(3))));
    assert_eq!(rx.recv().await, Some(Ok(1)));
    let tx2 = tx.clone();
    drop(tx);
    tx2.send(3).await.unwrap();
    drop(tx2);
    assert_eq!(rx.recv().await, Some(Ok(2)));
    assert_eq!(rx.recv().await, Some(Ok(3)));
    assert_eq!(rx.recv().await, None);
    let (tx, rx) = pipe::channel::<u32>(1);
    let waiting = tokio::spawn({
        let tx = tx.clone();
        async move { tx.closed().await }
    });
    drop(rx);
    timeout(SAFETY, waiting).await.unwrap().unwrap();
    assert!(tx.is_closed());
    assert!(matches!(tx.send(9).await, Err(SendError::Closed(9))));
}

/// Frames a peer makes up about pipes cost only the pipe they name: an item
/// past the credit granted, an item that does not decode as the pipe's type,
/// a stream to no pipe end. The consumer hears why; the node, its other pipes
/// and its calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_pipe_frames_cost_only_their_pipe() {
    use remora::wire::codec::{encode, Limits};
    use remora::wire::{Frame, ObjectId};
    let pair = Pair::new(Transport::InProcess).await;
    let wire = pair.wire.as_ref().unwrap();
    let local: StreamerRef = pair.server.spawn(Tap::default());
    let remote = remora_integration_tests::reach(&pair.client, &pair.server, &local);
    let frame = |frame: Frame<'_>| {
        let mut out = Vec::new();
        encode(&frame, &mut out, &Limits::default()).unwrap();
        out
    };
    // The client's first stream id: even from the node with the smaller id.
    let first = u64::from(pair.client.id() > pair.server.id());
    let mut quiet = remote.hold(2).await.unwrap();
    assert!(remora_integration_tests::poll_once(&mut quiet.next())
        .await
        .is_pending());
    until("the stream is open", || {
        pair.client.stats().pipe_streams == 1
    })
    .await;

    // Two items within the credit of 2, then one past it.
    let item = |value: u64| {
        let mut bytes = Vec::new();
        remora::wire::codec::encode_value(&value, &mut bytes).unwrap();
        bytes
    };
    // In one write, so that the node reads all three before the consumer
    // takes one (and grants credit back).
    let mut three = Vec::new();
    for value in [7, 8, 9] {
        let bytes = item(value);
        three.extend(frame(Frame::PipeItem {
            stream: first,
            item: &bytes,
        }));
    }
    assert!(wire.inject(&pair.client, three));
    assert_eq!(quiet.next().await.unwrap(), Ok(7));
    assert_eq!(quiet.next().await.unwrap(), Ok(8));
    let err = quiet.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("past the credit"), "{err}");
    assert_eq!(quiet.next().await, None, "the failed stream ends");

    // An item that does not decode as u64.
    let mut wrong = remote.hold(2).await.unwrap();
    assert!(remora_integration_tests::poll_once(&mut wrong.next())
        .await
        .is_pending());
    until("the second stream is open", || {
        pair.client.stats().pipe_streams == 1
    })
    .await;
    let mut text = Vec::new();
    remora::wire::codec::encode_value(&"not a number", &mut text).unwrap();
    assert!(wire.inject(
        &pair.client,
        frame(Frame::PipeItem {
            stream: first + 2,
            item: &text
        })
    ));
    let err = wrong.next().await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::Marshalling { .. }), "{err:?}");
    assert_eq!(wrong.next().await, None);

    // A stream to no pipe end, and an item for no stream: nothing breaks.
    assert!(wire.inject(
        &pair.server,
        frame(Frame::PipeOpen {
            stream: first + 200,
            pipe: ObjectId::random(),
            credit: 5,
            bytes: 1 << 20,
        })
    ));
    assert!(wire.inject(
        &pair.server,
        frame(Frame::PipeItem {
            stream: 12345,
            item: &text
        })
    ));
    assert!(wire.inject(
        &pair.server,
        frame(Frame::PipeCredit {
            stream: 999,
            items: u32::MAX,
            bytes: u64::MAX,
        })
    ));

    // The node, its calls and its other pipes go on.
    let got: Vec<u64> = remote
        .count(20, 3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    assert_eq!(pair.server.stats().pipe_streams, 0);
}

/// Items bigger than the capacity suggests: the receiving half's byte budget
/// (4 MiB) holds the producer back, and a well-behaved one keeps to it (a
/// producer that did not would have its stream failed past the credit).
async fn large_items_flow_within_the_byte_budget(transport: Transport) {
    let (_pair, remote) = pair(transport).await;
    let mut blobs = remote.blobs(40, 512 * 1024, 1000).await.unwrap();
    let mut got = 0u64;
    while let Some(blob) = timeout(SAFETY, blobs.next()).await.unwrap() {
        let blob = blob.unwrap();
        assert_eq!(blob.len(), 512 * 1024);
        assert!(blob.iter().all(|&b| b == got as u8), "blob {got} in order");
        got += 1;
        if got % 8 == 0 {
            tokio::task::yield_now().await; // a consumer slower than the wire
        }
    }
    assert_eq!(got, 40);
}

/// A producer that ignores the byte budget: the items within it arrive, the
/// one past it fails the stream (and only it), whatever the item credit said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_past_the_byte_budget_fail_their_stream() {
    use remora::wire::codec::{encode, encode_value, Limits};
    use remora::wire::Frame;
    let pair = Pair::new(Transport::InProcess).await;
    let wire = pair.wire.as_ref().unwrap();
    let local: StreamerRef = pair.server.spawn(Tap::default());
    let remote = remora_integration_tests::reach(&pair.client, &pair.server, &local);
    let first = u64::from(pair.client.id() > pair.server.id());
    // Credit for 1 000 items; 4 MiB of bytes.
    let mut quiet = remote.hold(1000).await.unwrap();
    assert!(remora_integration_tests::poll_once(&mut quiet.next())
        .await
        .is_pending());
    until("the stream is open", || {
        pair.client.stats().pipe_streams == 1
    })
    .await;
    // Five items of 1 MiB in one write (a u64 and padding, which decoding
    // ignores): the first four fit (the fourth while a byte of credit was
    // left), the fifth is past the budget.
    let mut five = Vec::new();
    for value in 0..5u64 {
        let mut item = Vec::new();
        encode_value(&value, &mut item).unwrap();
        item.resize(1 << 20, 0);
        encode(
            &Frame::PipeItem {
                stream: first,
                item: &item,
            },
            &mut five,
            &Limits::default(),
        )
        .unwrap();
    }
    assert!(wire.inject(&pair.client, five));
    for value in 0..4u64 {
        assert_eq!(quiet.next().await.unwrap(), Ok(value));
    }
    let err = quiet.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("past the credit"), "{err}");
    assert_eq!(quiet.next().await, None, "the failed stream ends");
    // The node and its calls go on.
    assert_eq!(remote.produced().await, Ok((0, None)));
}

/// Decodes of [`Counted`] so far.
static DECODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An item that counts its decodes.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct Counted(u64);

impl<'de> serde::Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DECODED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        <u64 as serde::Deserialize>::deserialize(deserializer).map(Counted)
    }
}

#[remora::remote]
pub trait Source {
    async fn items(&mut self, n: u64) -> pipe::Receiver<Counted>;
}

struct Numbers;

impl remora::Actor for Numbers {}

impl Source for Numbers {
    async fn items(&mut self, n: u64) -> pipe::Receiver<Counted> {
        let (tx, rx) = pipe::channel(8);
        tokio::spawn(async move {
            for i in 0..n {
                let _ = tx.send(Counted(i)).await;
            }
        });
        rx
    }
}

/// Between nodes of one process items move as they are, as call values do;
/// a link that encodes every call encodes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_move_unencoded_between_nodes_of_one_process() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = Node::builder().build().await.unwrap();
    let client = Node::builder().build().await.unwrap();
    let _wire = remora::remote::inproc::connect(&client, &server)
        .await
        .unwrap();
    let local: SourceRef = server.spawn(Numbers);
    let remote = remora_integration_tests::reach(&client, &server, &local);
    let before = DECODED.load(SeqCst);
    let got: Vec<Counted> = remote
        .items(100)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, (0..100).map(Counted).collect::<Vec<_>>());
    assert_eq!(DECODED.load(SeqCst), before, "no item was decoded");

    let other = Node::builder().build().await.unwrap();
    let _encoding = remora::remote::inproc::connect_serializing(&other, &server)
        .await
        .unwrap();
    let remote = remora_integration_tests::reach(&other, &server, &local);
    let got: Vec<Counted> = remote
        .items(100)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got.len(), 100);
    assert_eq!(DECODED.load(SeqCst), before + 100, "each item decoded once");
}
