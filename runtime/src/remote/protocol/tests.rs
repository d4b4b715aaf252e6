//! Two connection cores driven against each other, frame by frame, with a virtual
//! clock: no sockets, no tasks, no sleeping.

use std::time::Duration;

use crate::id::NodeId;
use tokio::time::Instant;

use super::*;
use crate::remote::once::{Admit, OnceTable};
use crate::wire::codec::{encode, FrameReader};

/// Waiters, watchers and monitor tasks are plain numbers here.
struct Tokens;
impl Sinks for Tokens {
    type Call = u32;
    type Watch = u32;
    type Task = u32;
    type Serve = u32;
}

type TestCore = Core<Tokens>;

const TARGET: ObjectId = ObjectId::from_u128(0x7a);

/// A caller core (node 1) and a callee core (node 2), past their handshake.
fn pair() -> (TestCore, TestCore) {
    pair_of(1, 2)
}

fn pair_of(a: u128, b: u128) -> (TestCore, TestCore) {
    pair_with(a, b, Limits::DEFAULT_WINDOW)
}

/// A pair where each side lets the other have `window` calls outstanding per object.
fn pair_with(a: u128, b: u128, window: u32) -> (TestCore, TestCore) {
    let limits = Limits {
        window,
        ..Limits::default()
    };
    let mut left = Session::new(NodeId::from_u128(a), 10, None, &limits);
    let mut right = Session::new(NodeId::from_u128(b), 20, None, &limits);
    let (hello_left, hello_right) = (left.hello(), right.hello());
    right.receive(hello_left).expect("hello");
    left.receive(hello_right).expect("hello");
    (
        Core::new(left, Limits::default(), false),
        Core::new(right, Limits::default(), false),
    )
}

/// A frame the other core reads: what arrived, in a form a test can match.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A call to run: (call id, method, args, once id, one way).
    Call(u64, u64, Vec<u8>, u64, bool),
    Monitor(u64, ObjectId),
    Exit(ObjectId),
    Nothing,
}

/// Moves every queued frame of `from` into `to`, and says what `to` was handed.
fn pump(from: &mut TestCore, to: &mut TestCore) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Some(transmit) = from.poll_transmit() {
        let Transmit::Frame(_, bytes) = transmit else {
            panic!("these cores carry encoded frames only");
        };
        let mut reader = FrameReader::new(Limits::default());
        reader.extend(&bytes).expect("one whole frame");
        let frame = reader.next_frame().expect("decodes").expect("a frame");
        seen.push(match to.handle_frame(frame).expect("no violation") {
            Incoming::Call { call, one_way } => {
                Seen::Call(call.id, call.method, call.args.to_vec(), call.once, one_way)
            }
            Incoming::Monitor { watch, object } => Seen::Monitor(watch, object),
            Incoming::Exit { object, .. } => Seen::Exit(object),
            Incoming::Nothing => Seen::Nothing,
            other => panic!("unexpected {other:?}"),
        });
    }
    seen
}

fn ask(core: &mut TestCore, now: Instant, waiter: u32, timeout: Duration) -> u64 {
    ask_once(core, now, waiter, timeout, 0)
}

fn ask_once(core: &mut TestCore, now: Instant, waiter: u32, timeout: Duration, once: u64) -> u64 {
    let call = OutCall {
        target: TARGET,
        interface: 3,
        method: 4,
        args: Args::Encoded(b"args"),
        tags: CallTags {
            chain: 0,
            once,
            context: CallContext::default(),
        },
        budget_until: None,
    };
    let (id, transmit) = core.call(now, call, Some((waiter, timeout))).expect("sent");
    core.transmits.push_back(transmit);
    id
}

/// Queues a frame the core handed back, as the driver would write it.
fn queue(core: &mut TestCore, transmit: Option<Transmit>) {
    core.transmits.extend(transmit);
}

/// Every event `core` has, as (waiter, outcome) for answers.
fn answers(core: &mut TestCore) -> Vec<(u32, Result<Vec<u8>, CallError>)> {
    let mut out = Vec::new();
    while let Some(event) = core.poll_event() {
        match event {
            Event::Answered { waiter, outcome } => out.push((
                waiter,
                outcome.map(|answer| match answer {
                    Answer::Bytes(bytes) => bytes.to_vec(),
                    Answer::Value(_) => panic!("no values here"),
                }),
            )),
            _ => panic!("only answers expected"),
        }
    }
    out
}

/// The one item of `items`.
fn only<T: std::fmt::Debug>(mut items: Vec<T>) -> T {
    assert_eq!(items.len(), 1, "exactly one: {items:?}");
    items.remove(0)
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_call_is_answered_with_its_reply() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    let id = ask(&mut a, now, 7, SECOND);
    assert_eq!(
        pump(&mut a, &mut b),
        [Seen::Call(id, 4, b"args".to_vec(), 0, false)]
    );
    assert_eq!(a.in_flight(), 1);
    let frame = b.reply(Lane::Reply(1), id, Ok(b"42".to_vec().into()));
    queue(&mut b, frame);
    assert_eq!(pump(&mut b, &mut a), [Seen::Nothing]);
    assert_eq!(answers(&mut a), [(7, Ok(b"42".to_vec()))]);
    assert_eq!(a.in_flight(), 0);
    assert_eq!(
        a.poll_timeout(),
        None,
        "an answered call has no deadline left"
    );
}

#[test]
fn an_error_reply_reaches_its_caller_and_a_tell_waits_for_nothing() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    let tell = OutCall {
        target: TARGET,
        interface: 3,
        method: 5,
        args: Args::Encoded(b"t"),
        tags: CallTags::default(),
        budget_until: None,
    };
    let (told, frame) = a.call(now, tell, None).expect("sent");
    queue(&mut a, Some(frame));
    let asked = ask(&mut a, now, 1, SECOND);
    assert_eq!(
        pump(&mut a, &mut b),
        [
            Seen::Call(told, 5, b"t".to_vec(), 0, true),
            Seen::Call(asked, 4, b"args".to_vec(), 0, false)
        ],
        "a tell and an ask to one object go out in order"
    );
    assert_eq!(a.in_flight(), 1, "the tell waits for no reply");
    let frame = b.reply(Lane::Reply(1), asked, Err(CallError::NoSuchObject));
    queue(&mut b, frame);
    pump(&mut b, &mut a);
    assert_eq!(answers(&mut a), [(1, Err(CallError::NoSuchObject))]);
}

#[test]
fn a_duplicate_call_runs_once() {
    let (mut a, mut b) = pair();
    let id = ask(&mut a, Instant::now(), 1, SECOND);
    let Some(Transmit::Frame(lane, bytes)) = a.poll_transmit() else {
        panic!("the call's frame");
    };
    // The same frame twice (a transport that delivered it again).
    a.transmits.push_back(Transmit::Frame(lane, bytes.clone()));
    a.transmits.push_back(Transmit::Frame(lane, bytes));
    assert_eq!(
        pump(&mut a, &mut b),
        [Seen::Call(id, 4, b"args".to_vec(), 0, false), Seen::Nothing]
    );
}

#[test]
fn a_call_past_its_deadline_times_out_and_its_late_reply_is_dropped() {
    let (mut a, mut b) = pair();
    let t0 = Instant::now();
    let slow = ask(&mut a, t0, 1, Duration::from_millis(100));
    let patient = ask(&mut a, t0, 2, SECOND);
    pump(&mut a, &mut b);
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(100)));
    a.handle_timeout(t0 + Duration::from_millis(99));
    assert!(answers(&mut a).is_empty(), "not yet");
    a.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(
        answers(&mut a),
        [(
            1,
            Err(CallError::Timeout {
                after: Duration::from_millis(100),
                may_have_executed: true
            })
        )]
    );
    assert_eq!(
        a.poll_timeout(),
        Some(t0 + SECOND),
        "the other call's deadline"
    );
    let frame = b.reply(Lane::Reply(1), slow, Ok(vec![1].into()));
    queue(&mut b, frame);
    let frame = b.reply(Lane::Reply(1), patient, Ok(vec![2].into()));
    queue(&mut b, frame);
    pump(&mut b, &mut a);
    assert_eq!(
        answers(&mut a),
        [(2, Ok(vec![2]))],
        "the late reply is dropped"
    );
}

#[test]
fn the_next_deadline_is_a_waiting_calls_and_answered_ones_do_not_pile_up() {
    let (mut a, _b) = pair();
    let t0 = Instant::now();
    // 200 asks whose deadlines come in another order than the asks.
    let asks: Vec<(u64, Instant)> = (0..200u32)
        .map(|i| {
            let timeout = Duration::from_millis(1 + u64::from(i * 7919 % 1000));
            (ask(&mut a, t0, i, timeout), t0 + timeout)
        })
        .collect();
    // Nine in ten answered, in a third order (the earliest, ask 0's, among them).
    let mut order: Vec<usize> = (0..asks.len()).collect();
    order.sort_by_key(|&k| k * 104_729 % asks.len());
    let mut waiting: Vec<bool> = vec![true; asks.len()];
    for k in order.into_iter().filter(|k| k % 10 != 3) {
        assert!(a.answered(asks[k].0).is_some(), "call {k} was waiting");
        waiting[k] = false;
        let earliest = (0..asks.len())
            .filter(|&j| waiting[j])
            .map(|j| asks[j].1)
            .min();
        assert_eq!(a.poll_timeout(), earliest, "after answering call {k}");
        assert!(
            a.deadlines.len() <= 2 * a.waiting.len() + 64,
            "{} deadlines kept for {} waiting calls",
            a.deadlines.len(),
            a.waiting.len()
        );
    }
    assert!(a.answered(asks[0].0).is_none(), "answered once only");
    // The twenty left time out, each once; nothing is kept after them.
    a.handle_timeout(t0 + SECOND);
    let mut timed_out: Vec<u32> = answers(&mut a)
        .into_iter()
        .map(|(waiter, outcome)| {
            assert!(
                matches!(outcome, Err(CallError::Timeout { .. })),
                "{outcome:?}"
            );
            waiter
        })
        .collect();
    timed_out.sort_unstable();
    assert_eq!(timed_out, (3..200).step_by(10).collect::<Vec<u32>>());
    assert_eq!(a.poll_timeout(), None);
    assert!(a.deadlines.is_empty());
}

#[test]
fn no_deadline_is_a_deadline_that_never_comes() {
    let (mut a, _b) = pair();
    let t0 = Instant::now();
    ask(&mut a, t0, 1, Duration::MAX);
    a.handle_timeout(t0 + Duration::from_secs(3600 * 24 * 365));
    assert!(answers(&mut a).is_empty());
}

#[test]
fn a_lost_connection_fails_every_call_in_flight_and_sends_nothing_more() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    ask(&mut a, now, 1, SECOND);
    ask(&mut a, now, 2, SECOND);
    pump(&mut a, &mut b);
    let watch = a.monitor(TARGET, 9).expect("sent");
    pump(&mut a, &mut b);
    a.close();
    let lost = CallError::NodeDown {
        node: NodeId::from_u128(2),
        label: NodeLabel::default(),
        may_have_executed: true,
    };
    let mut failed = Vec::new();
    let mut down = Vec::new();
    while let Some(event) = a.poll_event() {
        match event {
            Event::Answered { waiter, outcome } => failed.push((waiter, outcome.err())),
            Event::Down { watcher, reason } => down.push((watcher, reason)),
            Event::Cancel(_) => panic!("A watches nothing of B's peer"),
            Event::Credit => panic!("nobody waited for credit"),
            Event::Cancelled(_) | Event::CancelIgnored { .. } => panic!("A serves no call"),
        }
    }
    failed.sort_by_key(|(waiter, _)| *waiter);
    assert_eq!(failed, [(1, Some(lost.clone())), (2, Some(lost))]);
    assert_eq!(down, [(9, None)], "monitor {watch} learns of the loss");
    assert_eq!(a.poll_timeout(), None);
    let again = OutCall {
        target: TARGET,
        interface: 3,
        method: 4,
        args: Args::Encoded(b""),
        tags: CallTags::default(),
        budget_until: None,
    };
    assert_eq!(
        a.call(now, again, Some((3, SECOND))).map(|(id, _)| id),
        Err(CallError::NodeDown {
            node: NodeId::from_u128(2),
            label: NodeLabel::default(),
            may_have_executed: false
        }),
        "a call after the loss was never sent"
    );
    assert!(a.poll_transmit().is_none());
}

#[test]
fn a_restarted_peer_fails_every_call_in_flight_as_restarted_and_resolves_monitors() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    ask(&mut a, now, 1, SECOND);
    pump(&mut a, &mut b);
    a.monitor(TARGET, 9).expect("sent");
    pump(&mut a, &mut b);
    b.watched(1, 100);
    // The peer watched one of ours too: cancelled with the connection.
    a.watched(4, 200);
    a.close_restarted();
    let node = NodeId::from_u128(2);
    let mut seen = Vec::new();
    while let Some(event) = a.poll_event() {
        seen.push(match event {
            Event::Answered { waiter, outcome } => format!("{waiter}: {:?}", outcome.err()),
            Event::Down { watcher, reason } => format!("{watcher}: {reason:?}"),
            Event::Cancel(task) => format!("cancel {task}"),
            Event::Credit => "credit".into(),
            Event::Cancelled(serve) => format!("cancelled {serve}"),
            Event::CancelIgnored { call } => format!("cancel of {call} ignored"),
        });
    }
    seen.sort();
    let failed = CallError::NodeRestarted {
        node,
        label: NodeLabel::default(),
        may_have_executed: true,
    };
    assert_eq!(
        seen,
        [
            format!("1: {:?}", Some(failed)),
            format!("9: {:?}", Some(StopReason::NodeRestarted { node })),
            "cancel 200".to_owned(),
        ]
    );
    assert!(a.is_closed());
    assert!(a.poll_transmit().is_none());
}

#[test]
fn a_monitor_reports_the_stop_reason_and_a_reused_watch_id_cancels_the_old_task() {
    let (mut a, mut b) = pair();
    let watch = a.monitor(TARGET, 5).expect("sent");
    assert_eq!(pump(&mut a, &mut b), [Seen::Monitor(watch, TARGET)]);
    b.watched(watch, 100);
    // The peer reuses the watch id (a misbehaving member): the first task goes.
    b.watched(watch, 101);
    assert!(matches!(b.poll_event(), Some(Event::Cancel(100))));
    b.down(watch, StopReason::Normal);
    pump(&mut b, &mut a);
    assert!(matches!(
        a.poll_event(),
        Some(Event::Down {
            watcher: 5,
            reason: Some(StopReason::Normal)
        })
    ));
    // The peer no longer watches: its connection closing cancels nothing.
    b.close();
    assert!(b.poll_event().is_none());
}

#[test]
fn a_demonitor_cancels_the_peers_task() {
    let (mut a, mut b) = pair();
    let watch = a.monitor(TARGET, 5).expect("sent");
    pump(&mut a, &mut b);
    b.watched(watch, 100);
    a.demonitor(watch);
    pump(&mut a, &mut b);
    assert!(matches!(b.poll_event(), Some(Event::Cancel(100))));
    assert!(
        a.poll_event().is_none(),
        "a cancelled monitor reports nothing"
    );
}

#[test]
fn pings_are_answered() {
    let (mut a, mut b) = pair();
    a.send(Lane::Control, &Frame::Ping(42)).expect("sent");
    pump(&mut a, &mut b);
    let Some(Transmit::Frame(Lane::Control, bytes)) = b.poll_transmit() else {
        panic!("a pong on the control lane");
    };
    let mut reader = FrameReader::new(Limits::default());
    reader.extend(&bytes).expect("whole");
    assert_eq!(reader.next_frame(), Ok(Some(Frame::Pong(42))));
}

#[test]
fn an_argument_over_the_frame_limit_fails_that_call_only() {
    let (mut a, mut b) = pair();
    let small = Limits {
        max_frame: 64,
        ..Limits::default()
    };
    a.limits = small;
    let big = vec![0u8; 100];
    let call = OutCall {
        target: TARGET,
        interface: 3,
        method: 4,
        args: Args::Encoded(&big),
        tags: CallTags::default(),
        budget_until: None,
    };
    assert!(matches!(
        a.call(Instant::now(), call, Some((1, SECOND))),
        Err(CallError::TooLarge { max: 64, .. })
    ));
    assert_eq!(a.in_flight(), 0, "nothing waits for a call never sent");
    let id = ask(&mut a, Instant::now(), 2, SECOND);
    assert_eq!(
        pump(&mut a, &mut b),
        [Seen::Call(id, 4, b"args".to_vec(), 0, false)]
    );
}

/// The callee's side of an exactly-once call: the node's reply memory admits the
/// delivery; the first one "runs" the method (counted), a retry is answered
/// from memory. Returns how many times the method ran in all.
fn serve_once(b: &mut TestCore, table: &OnceTable, now: Instant, seen: Vec<Seen>, runs: &mut u32) {
    for call in seen {
        let Seen::Call(id, _, _, once, false) = call else {
            panic!("an exactly-once ask, got {call:?}");
        };
        let key = (NodeId::from_u128(1), once);
        let replies = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = replies.clone();
        let answer = Box::new(move |outcome| sink.lock().push(outcome));
        if let Admit::Run(answer) = table.admit(now, key, answer) {
            *runs += 1;
            let outcome = Ok(runs.to_le_bytes().to_vec().into());
            table.complete(now, key, &outcome);
            answer(outcome);
        }
        for outcome in replies.lock().drain(..) {
            let frame = b.reply(Lane::Reply(1), id, outcome);
            queue(b, frame);
        }
    }
}

#[test]
fn an_exactly_once_call_lost_with_its_connection_is_retried_and_runs_once() {
    let table = OnceTable::new(Duration::from_secs(300));
    let mut runs = 0;
    let t0 = Instant::now();
    let mut retry = Retry::new(NodeId::from_u128(2), t0, SECOND, SECOND);
    let once = 77;

    // Attempt 1: it runs on B, but the connection is lost before the reply is read.
    let (mut a1, mut b1) = pair();
    let left = retry.attempt(t0).expect("time left");
    ask_once(&mut a1, t0, 1, left, once);
    retry.sent();
    let seen = pump(&mut a1, &mut b1);
    serve_once(&mut b1, &table, t0, seen, &mut runs);
    b1.close();
    a1.close();
    let (waiter, outcome) = only(answers(&mut a1));
    assert_eq!(waiter, 1);
    let at = match retry.next(t0, outcome) {
        Next::RetryAt(at) => at,
        Next::Done(done) => panic!("a lost connection is retried, got {done:?}"),
    };
    assert_eq!(at, t0 + Duration::from_millis(10));

    // Attempt 2, over a new connection: answered from B's memory, not run again.
    let (mut a2, mut b2) = pair_of(1, 2);
    let left = retry.attempt(at).expect("time left");
    ask_once(&mut a2, at, 2, left, once);
    let seen = pump(&mut a2, &mut b2);
    serve_once(&mut b2, &table, at, seen, &mut runs);
    pump(&mut b2, &mut a2);
    let (waiter, outcome) = only(answers(&mut a2));
    assert_eq!(waiter, 2);
    assert_eq!(
        retry.next(at, outcome),
        Next::Done(Ok(1u32.to_le_bytes().to_vec())),
        "the first run's reply"
    );
    assert_eq!(runs, 1, "the method ran once");
}

#[test]
fn an_exactly_once_call_gives_up_at_its_deadline_saying_whether_it_was_sent() {
    let t0 = Instant::now();
    let mut retry = Retry::new(NodeId::from_u128(2), t0, Duration::from_millis(25), SECOND);
    let lost = || CallError::ConnectFailed {
        node: None,
        label: NodeLabel::new(None, Some("x")),
        reason: "refused".into(),
    };
    let mut now = t0;
    let mut pauses = Vec::new();
    loop {
        if let Err(err) = retry.attempt(now) {
            assert_eq!(
                err,
                CallError::Timeout {
                    after: Duration::from_millis(25),
                    may_have_executed: false
                },
                "never connected: it never left this node"
            );
            break;
        }
        match retry.next::<()>(now, Err(lost())) {
            Next::RetryAt(at) => {
                pauses.push(at - now);
                now = at;
            }
            Next::Done(done) => panic!("retried until the deadline, got {done:?}"),
        }
    }
    assert_eq!(
        pauses,
        [
            Duration::from_millis(10),
            Duration::from_millis(15), // cut short by the deadline
        ]
    );
    let mut sent = Retry::new(NodeId::from_u128(2), t0, Duration::from_millis(5), SECOND);
    sent.sent();
    assert_eq!(
        sent.attempt(t0 + Duration::from_millis(5)),
        Err(CallError::Timeout {
            after: Duration::from_millis(5),
            may_have_executed: true
        })
    );
    assert_eq!(
        sent.next::<()>(t0, Err(CallError::ActorStopped)),
        Next::Done(Err(CallError::ActorStopped)),
        "only a lost connection is retried"
    );
}

#[test]
fn frames_fit_the_smaller_limit_and_a_peer_cannot_announce_one_below_the_floor() {
    let core_with_peer_announcing = |announced: usize| {
        let mut me = Session::new(NodeId::from_u128(1), 10, None, &Limits::default());
        let announced = Limits {
            max_frame: announced,
            ..Limits::default()
        };
        let mut peer = Session::new(NodeId::from_u128(2), 20, None, &announced);
        me.receive(peer.hello()).expect("hello");
        peer.receive(me.hello()).expect("hello");
        TestCore::new(me, Limits::default(), false)
            .send_limits()
            .max_frame
    };
    assert_eq!(
        core_with_peer_announcing(64 << 10),
        64 << 10,
        "theirs is smaller"
    );
    assert_eq!(
        core_with_peer_announcing(64 << 20),
        Limits::DEFAULT_MAX_FRAME,
        "ours is"
    );
    assert_eq!(
        core_with_peer_announcing(0),
        Limits::MIN_MAX_FRAME,
        "a lie is floored"
    );
}

/// A tell to `target`, its frame queued as the driver would write it.
fn tell_to(core: &mut TestCore, now: Instant, target: ObjectId) -> Result<u64, CallError> {
    let call = OutCall {
        target,
        interface: 3,
        method: 5,
        args: Args::Encoded(b"t"),
        tags: CallTags::default(),
        budget_until: None,
    };
    let (id, transmit) = core.call(now, call, None)?;
    core.transmits.push_back(transmit);
    Ok(id)
}

/// Whether `core` has an `Event::Credit` (and nothing else).
fn credit_came_back(core: &mut TestCore) -> bool {
    let mut credit = false;
    while let Some(event) = core.poll_event() {
        match event {
            Event::Credit => credit = true,
            Event::Answered { .. } => {}
            _ => panic!("only answers and credit expected"),
        }
    }
    credit
}

#[test]
fn asks_past_the_peers_window_wait_for_an_answer_to_free_credit() {
    let (mut a, mut b) = pair_with(1, 2, 2);
    let now = Instant::now();
    assert_eq!(a.window(), 2, "B's window, from its Hello");
    let first = ask(&mut a, now, 1, SECOND);
    ask(&mut a, now, 2, SECOND);
    assert_eq!(a.acquire(TARGET), None, "two outstanding: no credit");
    assert!(
        a.acquire(ObjectId::from_u128(0x7b)).is_some(),
        "credit is per target"
    );
    pump(&mut a, &mut b);
    let frame = b.reply(Lane::Reply(1), first, Ok(vec![1].into()));
    queue(&mut b, frame);
    pump(&mut b, &mut a);
    assert!(credit_came_back(&mut a), "the starved caller is woken");
    assert!(
        a.acquire(TARGET).is_some(),
        "the answer gave its credit back"
    );
    assert_eq!(a.acquire(TARGET), None);
}

#[test]
fn tells_hold_credit_until_the_peer_gives_it_back() {
    let (mut a, mut b) = pair_with(1, 2, 3);
    let now = Instant::now();
    for _ in 0..3 {
        tell_to(&mut a, now, TARGET).expect("credit");
    }
    assert_eq!(
        tell_to(&mut a, now, TARGET),
        Err(CallError::MailboxFull { capacity: 3 }),
        "a fourth tell finds no room"
    );
    assert_eq!(pump(&mut a, &mut b).len(), 3);
    assert_eq!(a.in_flight(), 0, "tells wait for no reply");
    // B took two of them into the mailbox: it owes their credit, sent in one frame.
    b.owe(TARGET);
    b.owe(TARGET);
    b.flush_credit();
    assert_eq!(pump(&mut b, &mut a), [Seen::Nothing]);
    assert!(credit_came_back(&mut a));
    tell_to(&mut a, now, TARGET).expect("room for one");
    tell_to(&mut a, now, TARGET).expect("and another");
    assert!(
        tell_to(&mut a, now, TARGET).is_err(),
        "the third is still out"
    );
    b.flush_credit();
    assert!(b.poll_transmit().is_none(), "nothing owed, nothing sent");
}

#[test]
fn credit_the_peer_makes_up_changes_nothing() {
    let (mut a, mut b) = pair_with(1, 2, 1);
    let now = Instant::now();
    tell_to(&mut a, now, TARGET).expect("credit");
    assert_eq!(a.acquire(TARGET), None);
    pump(&mut a, &mut b);
    // B gives back more than was sent, and credit for objects A never called.
    for _ in 0..5 {
        b.owe(TARGET);
    }
    for n in 0..100 {
        b.owe(ObjectId::from_u128(n));
    }
    b.flush_credit();
    pump(&mut b, &mut a);
    assert!(credit_came_back(&mut a));
    assert!(a.acquire(TARGET).is_some());
    assert_eq!(a.acquire(TARGET), None, "still one at most");
    assert_eq!(a.flows.len(), 1, "no state for made-up targets");
}

#[test]
fn a_timed_out_ask_gives_its_credit_back_and_a_lost_connection_wakes_the_starved() {
    let (mut a, _b) = pair_with(1, 2, 1);
    let t0 = Instant::now();
    ask(&mut a, t0, 1, Duration::from_millis(10));
    assert_eq!(a.acquire(TARGET), None);
    a.handle_timeout(t0 + Duration::from_millis(10));
    assert!(credit_came_back(&mut a));
    assert!(a.acquire(TARGET).is_some());
    assert_eq!(a.acquire(TARGET), None);
    a.close();
    assert!(
        credit_came_back(&mut a),
        "waiters learn the connection is gone"
    );
}

#[test]
fn busy_targets_get_lanes_of_their_own_up_to_the_limit_and_idle_ones_move() {
    let (mut a, mut b) = pair();
    let target = |n: usize| ObjectId::from_u128(0x1000 + n as u128);
    let mut lanes = Vec::new();
    for n in 0..MAX_LANES {
        lanes.push(a.acquire(target(n)).expect("credit"));
    }
    let expected: Vec<u16> = (0..MAX_LANES as u16).collect();
    assert_eq!(lanes, expected, "each busy target on a lane of its own");
    assert_eq!(a.lanes(), MAX_LANES);
    let shared = a.acquire(target(MAX_LANES)).expect("credit");
    assert_eq!(a.lanes(), MAX_LANES, "no more lanes than the limit");
    assert_eq!(
        a.acquire(target(0)),
        Some(0),
        "a busy target keeps its lane"
    );
    // Target 3's calls are all answered: it leaves lane 3, the quietest now.
    a.unacquire(target(3));
    let fresh = ObjectId::from_u128(0x9999);
    assert_eq!(a.acquire(fresh), Some(3));
    assert_ne!(shared, 3);
    // A hundred thousand targets called one after another use one lane.
    let (mut c, _) = pair_of(3, 4);
    for n in 0..100_000 {
        let lane = c.acquire(target(n)).expect("credit");
        assert_eq!(lane, 0);
        c.unacquire(target(n));
    }
    assert_eq!(c.lanes(), 1);
    assert!(c.flows.is_empty());
    drop(b.poll_transmit());
}

#[test]
fn credit_for_many_objects_is_split_into_frames_within_the_limit() {
    let small = Limits {
        max_frame: Limits::MIN_MAX_FRAME,
        ..Limits::default()
    };
    let mut me = Session::new(NodeId::from_u128(1), 10, None, &small);
    let mut peer = Session::new(NodeId::from_u128(2), 20, None, &small);
    me.receive(peer.hello()).expect("hello");
    peer.receive(me.hello()).expect("hello");
    let mut b = TestCore::new(me, small, false);
    for n in 0..1000 {
        b.owe(ObjectId::from_u128(u128::MAX - n));
    }
    b.flush_credit();
    let mut frames = 0;
    let mut granted = 0;
    while let Some(Transmit::Frame(lane, bytes)) = b.poll_transmit() {
        assert_eq!(lane, Lane::Control);
        assert!(bytes.len() <= Limits::MIN_MAX_FRAME + 4, "{}", bytes.len());
        let mut reader = FrameReader::new(small);
        reader.extend(&bytes).expect("one whole frame");
        let Some(Frame::Credit { grants }) = reader.next_frame().expect("decodes") else {
            panic!("a credit frame");
        };
        granted += grants.len();
        frames += 1;
    }
    assert_eq!(granted, 1000);
    assert!(frames > 1, "split: {frames}");
}

#[test]
fn an_error_after_an_attempt_that_left_says_the_call_may_have_run() {
    let t0 = Instant::now();
    let peer = NodeId::from_u128(2);
    let lost = CallError::NodeDown {
        node: peer,
        label: NodeLabel::default(),
        may_have_executed: true,
    };
    let restarted = CallError::NodeRestarted {
        node: peer,
        label: NodeLabel::default(),
        may_have_executed: false,
    };
    // Never sent: the restart is reported as it is (the call did not run).
    let mut unsent = Retry::new(peer, t0, SECOND, SECOND);
    let never = CallError::ConnectFailed {
        node: Some(peer),
        label: NodeLabel::default(),
        reason: "refused".into(),
    };
    assert!(matches!(
        unsent.next::<()>(t0, Err(never)),
        Next::RetryAt(_)
    ));
    assert_eq!(
        unsent.next::<()>(t0, Err(restarted.clone())),
        Next::Done(Err(restarted.clone()))
    );
    // Sent, lost in flight, then the node restarted: it may have run.
    let mut sent = Retry::new(peer, t0, SECOND, SECOND);
    assert!(matches!(
        sent.next::<()>(t0, Err(lost.clone())),
        Next::RetryAt(_)
    ));
    let Next::Done(Err(err)) = sent.next::<()>(t0, Err(restarted)) else {
        panic!("a restart ends the call");
    };
    assert_eq!(
        err,
        CallError::NodeRestarted {
            node: peer,
            label: NodeLabel::default(),
            may_have_executed: true
        }
    );
    assert!(err.may_have_executed());
    assert!(err.to_string().contains("may have run"), "{err}");
    // Any other error of a later attempt that would say "did not run" is the
    // loss of the earlier attempt instead; errors that already say so stay.
    for later in [
        CallError::NoSuchObject,
        CallError::TooLarge { len: 9, max: 1 },
        CallError::Timeout {
            after: SECOND,
            may_have_executed: false,
        },
    ] {
        let Next::Done(Err(err)) = sent.next::<()>(t0, Err(later.clone())) else {
            panic!("ends the call");
        };
        assert!(err.may_have_executed(), "{later:?} became {err:?}");
    }
    let panicked = CallError::Panicked {
        message: "boom".into(),
    };
    assert_eq!(
        sent.next::<()>(t0, Err(panicked.clone())),
        Next::Done(Err(panicked))
    );
}

#[test]
fn an_exactly_once_call_gives_up_once_its_node_has_been_unreachable_for_the_give_up_time() {
    let t0 = Instant::now();
    let peer = NodeId::from_u128(2);
    let give_up = Duration::from_millis(100);
    let mut retry = Retry::new(peer, t0, Duration::from_secs(30), give_up);
    let lost = CallError::NodeDown {
        node: peer,
        label: NodeLabel::new(Some("branch"), None),
        may_have_executed: true,
    };
    let unreachable = || CallError::ConnectFailed {
        node: Some(peer),
        label: NodeLabel::new(None, Some("x")),
        reason: "no answer".into(),
    };
    assert!(matches!(retry.next::<()>(t0, Err(lost)), Next::RetryAt(_)));
    let mut now = t0 + Duration::from_millis(10);
    let mut dials = 0;
    let outcome = loop {
        dials += 1;
        match retry.next::<()>(now, Err(unreachable())) {
            Next::RetryAt(at) => now = at + Duration::from_millis(30), // a dial takes a while
            Next::Done(outcome) => break outcome,
        }
        assert!(dials < 100, "gives up");
    };
    assert_eq!(
        outcome,
        Err(CallError::NodeDown {
            node: peer,
            // The name from the lost connection, the address from the dials.
            label: NodeLabel::new(Some("branch"), Some("x")),
            may_have_executed: true
        }),
        "the first attempt left: it may have run"
    );
    assert!(now - (t0 + Duration::from_millis(10)) >= give_up);
    assert!(
        now < t0 + Duration::from_secs(1),
        "long before the deadline"
    );
}

#[test]
fn a_batch_of_frames_is_one_write_in_order_and_a_closed_core_sends_none() {
    let (mut a, mut b) = pair();
    let items: [&[u8]; 3] = [b"1", b"22", b"333"];
    let mut frames = Vec::new();
    for item in items {
        encode(
            &Frame::PipeItem { stream: 4, item },
            &mut frames,
            &Limits::default(),
        )
        .unwrap();
    }
    a.send_encoded(Lane::Pipe(4), frames).expect("queued");
    let Some(Transmit::Frame(Lane::Pipe(4), bytes)) = a.poll_transmit() else {
        panic!("one write on the pipe's lane");
    };
    assert!(a.poll_transmit().is_none(), "one write for the batch");
    let mut reader = FrameReader::new(Limits::default());
    reader.extend(&bytes).expect("whole frames");
    for expected in items {
        let frame = reader.next_frame().expect("decodes").expect("a frame");
        let Ok(Incoming::Pipe(Frame::PipeItem { stream: 4, item })) = b.handle_frame(frame) else {
            panic!("a pipe item");
        };
        assert_eq!(item, expected);
    }
    assert!(reader.next_frame().expect("decodes").is_none());

    a.send_encoded(Lane::Pipe(4), Vec::new())
        .expect("nothing to send is no error");
    assert!(a.poll_transmit().is_none());
    a.close();
    let mut late = Vec::new();
    let frame = Frame::PipeItem {
        stream: 4,
        item: b"x",
    };
    encode(&frame, &mut late, &Limits::default()).unwrap();
    assert!(matches!(
        a.send_encoded(Lane::Pipe(4), late),
        Err(CallError::NodeDown { .. })
    ));
    assert!(a.poll_transmit().is_none());
}

/// Every cancellation event `core` has: `Ok(serve)` for a call told it was
/// given up, `Err(call)` for a `Cancel` ignored.
fn cancellations(core: &mut TestCore) -> Vec<Result<u32, u64>> {
    let mut out = Vec::new();
    while let Some(event) = core.poll_event() {
        match event {
            Event::Cancelled(serve) => out.push(Ok(serve)),
            Event::CancelIgnored { call } => out.push(Err(call)),
            _ => panic!("only cancellations expected"),
        }
    }
    out
}

/// The lane and frame of every transmit `core` has queued.
fn frames(core: &mut TestCore) -> Vec<(Lane, Frame<'static>)> {
    let mut out = Vec::new();
    while let Some(transmit) = core.poll_transmit() {
        let Transmit::Frame(lane, bytes) = transmit else {
            panic!("encoded frames only");
        };
        let frame =
            crate::wire::codec::decode_frame(&bytes[4..], &Limits::default()).expect("decodes");
        let frame = match frame {
            Frame::Cancel { call } => Frame::Cancel { call },
            Frame::Call(call) => Frame::Call(Call { args: b"", ..call }),
            other => panic!("unexpected {other:?}"),
        };
        out.push((lane, frame));
    }
    out
}

#[test]
fn a_cancel_reaches_the_call_it_names_once_and_nothing_else() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    let first = ask(&mut a, now, 1, SECOND);
    let second = ask(&mut a, now, 2, SECOND);
    pump(&mut a, &mut b);
    // The callee's driver registers the asks it serves.
    b.serving(first, 100);
    b.serving(second, 200);
    a.abandon(first);
    pump(&mut a, &mut b);
    assert_eq!(cancellations(&mut b), [Ok(100)], "only the call it names");
    assert_eq!(b.serving_count(), 1);
    // Again (a replay), a call never made, and one answered already: ignored.
    a.send(Lane::Call(0), &Frame::Cancel { call: first })
        .unwrap();
    a.send(Lane::Call(0), &Frame::Cancel { call: 999 }).unwrap();
    assert_eq!(b.served(second), Some(200), "answered");
    a.send(Lane::Call(0), &Frame::Cancel { call: second })
        .unwrap();
    pump(&mut a, &mut b);
    assert_eq!(cancellations(&mut b), [Err(first), Err(999), Err(second)]);
    assert!(!b.is_closed(), "a stray Cancel costs the peer nothing");
}

#[test]
fn a_cancel_cannot_reach_another_connections_call() {
    // B serves call `id` of A; C, connected to B on another connection, names
    // the same id (ids are per connection): B's core for C has no such call.
    let (mut a, mut b_for_a) = pair_of(1, 2);
    let (mut c, mut b_for_c) = pair_of(3, 2);
    let id = ask(&mut a, Instant::now(), 1, SECOND);
    pump(&mut a, &mut b_for_a);
    b_for_a.serving(id, 100);
    c.send(Lane::Call(0), &Frame::Cancel { call: id }).unwrap();
    pump(&mut c, &mut b_for_c);
    assert_eq!(cancellations(&mut b_for_c), [Err(id)]);
    assert_eq!(cancellations(&mut b_for_a), [], "A's call is untouched");
    assert_eq!(b_for_a.serving_count(), 1);
}

#[test]
fn a_call_given_up_drops_its_waiter_returns_its_credit_and_follows_with_a_cancel() {
    let (mut a, _b) = pair_with(1, 2, 1);
    let id = ask(&mut a, Instant::now(), 1, SECOND);
    assert_eq!(a.acquire(TARGET), None, "the window of one is in use");
    a.abandon(id);
    assert_eq!(a.in_flight(), 0);
    assert_eq!(a.poll_timeout(), None, "no deadline left");
    let sent = frames(&mut a);
    let lane = match &sent[0] {
        (Lane::Call(lane), Frame::Call(call)) if call.id == id => *lane,
        other => panic!("the call first: {other:?}"),
    };
    assert_eq!(
        sent[1..],
        [(Lane::Call(lane), Frame::Cancel { call: id })],
        "on the call's own lane, after it"
    );
    while let Some(event) = a.poll_event() {
        assert!(
            matches!(event, Event::Credit),
            "nobody is answered, credit comes back"
        );
    }
    assert!(a.acquire(TARGET).is_some(), "its credit came back");
    // Abandoning it again (or an unknown call) sends nothing.
    a.abandon(id);
    assert!(frames(&mut a).is_empty());
}

#[test]
fn a_call_that_times_out_is_cancelled_at_the_peer() {
    let (mut a, mut b) = pair();
    let t0 = Instant::now();
    let id = ask(&mut a, t0, 1, Duration::from_millis(200));
    pump(&mut a, &mut b);
    b.serving(id, 100);
    a.handle_timeout(t0 + Duration::from_millis(200));
    assert!(matches!(
        answers(&mut a)[..],
        [(1, Err(CallError::Timeout { .. }))]
    ));
    pump(&mut a, &mut b);
    assert_eq!(cancellations(&mut b), [Ok(100)]);
}

#[test]
fn a_call_carries_the_budget_left_when_it_is_framed() {
    let (mut a, _b) = pair();
    let t0 = Instant::now();
    let call = |budget_until| OutCall {
        target: TARGET,
        interface: 3,
        method: 4,
        args: Args::Encoded(b"args"),
        tags: CallTags::default(),
        budget_until,
    };
    let later = t0 + Duration::from_millis(30);
    for (until, budget) in [
        (Some(t0 + Duration::from_millis(200)), Some(170_000)),
        (Some(t0), Some(0)),
        (None, None),
    ] {
        let transmit = frame_call(&a.send_limits(), false, 7, 0, call(until), false, later);
        a.transmits.extend(transmit.ok());
        let sent = frames(&mut a);
        let [(_, Frame::Call(sent))] = &sent[..] else {
            panic!("one call: {sent:?}");
        };
        assert_eq!(sent.context.budget, budget, "{until:?}");
    }
}
