//! The Prometheus endpoint (`NodeBuilder::metrics`), scraped over HTTP and
//! parsed as Prometheus text, with calls made over both transports: the call
//! counters grow by exactly the calls made, by outcome; the mailbox gauge shows
//! a busy actor's queue; the connection gauges and per-peer figures are right;
//! only `GET /metrics` is served.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_parse::{LineInfo, Scrape, Value};
use remora::{Actor, Mailbox, Node, Restart, SpawnOptions};
use remora_integration_tests::*;
use tokio::sync::Notify;
use tokio::time::timeout;

/// One HTTP/1.1 request to the endpoint: the status code and the body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let answer = tokio::task::spawn_blocking(move || {
        let mut http = std::net::TcpStream::connect(addr).expect("the endpoint accepts");
        http.set_read_timeout(Some(SAFETY)).unwrap();
        http.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).expect("a whole answer");
        answer
    })
    .await
    .unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The node's metrics, parsed; every line must be one the parser understands.
async fn scrape(node: &Node) -> Metrics {
    let addr = node.metrics_addr().expect("the node serves metrics");
    let (status, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    for line in body.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not Prometheus text: {line:?}"
        );
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    Metrics { scrape, body }
}

struct Metrics {
    scrape: Scrape,
    body: String,
}

impl Metrics {
    /// The value of the one sample of `name` carrying `labels` (and maybe
    /// others); None if there is none.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        let mut found = self.scrape.samples.iter().filter(|s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        });
        let sample = found.next()?;
        assert!(
            found.next().is_none(),
            "{name}{labels:?} names several samples"
        );
        Some(&sample.value)
    }

    /// A counter's or gauge's value (0 for a series not exposed yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels) {
            None => 0.0,
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            Some(other) => panic!("{name}{labels:?} is {other:?}"),
        }
    }

    /// `remora_calls_total` of `Counter.method` with `outcome`.
    fn calls(&self, method: &str, outcome: &str) -> f64 {
        self.value(
            "remora_calls_total",
            &[
                ("interface", "Counter"),
                ("method", method),
                ("outcome", outcome),
            ],
        )
    }

    /// The `+Inf` bucket (the count) of `Counter.method`'s latency histogram.
    fn timed(&self, method: &str) -> f64 {
        let labels = [("interface", "Counter"), ("method", method)];
        match self.find("remora_call_duration_seconds", &labels) {
            Some(Value::Histogram(buckets)) => {
                let last = buckets.last().expect("buckets");
                assert!(last.less_than.is_infinite(), "{buckets:?}");
                // Cumulative: never less than the bucket below.
                for pair in buckets.windows(2) {
                    assert!(pair[0].count <= pair[1].count, "{buckets:?}");
                }
                last.count
            }
            other => panic!("no histogram for Counter.{method}: {other:?}"),
        }
    }
}

async fn the_call_counters_grow_by_exactly_the_calls_made(transport: Transport) {
    let pair = Pair::with_each(
        transport,
        Node::builder().name("server").metrics("127.0.0.1:0"),
        Node::builder().name("client"),
    )
    .await;
    let (server, client) = (&pair.server, &pair.client);
    let restart = Restart {
        max: 3,
        within: std::time::Duration::from_secs(60),
    };
    let counter: CounterRef = server.spawn_with(
        Tally::default(),
        SpawnOptions::new().restart(restart, Tally::default),
    );
    let before = scrape(server).await;
    assert_eq!(before.calls("add", "ok"), 0.0, "{}", before.body);

    const N: u64 = 7;
    let remote = reach(client, server, &counter);
    for n in 1..=N {
        remote.add(n).await.unwrap();
    }
    assert!(matches!(
        remote.crash("on purpose".into()).await,
        Err(remora::CallError::Panicked { .. })
    ));
    // A newer build's method the server lacks.
    let newer: CounterV2Ref = client
        .reference(server.id(), server.export(&counter).unwrap())
        .unwrap();
    assert!(matches!(
        newer.reset_all().await,
        Err(remora::CallError::UnknownMethod { .. })
    ));

    let after = scrape(server).await;
    let grew =
        |method: &str, outcome: &str| after.calls(method, outcome) - before.calls(method, outcome);
    assert_eq!(grew("add", "ok"), N as f64, "{}", after.body);
    assert_eq!(grew("add", "Panicked"), 0.0);
    assert_eq!(after.timed("add") - before.timed("add"), N as f64);
    assert_eq!((grew("crash", "ok"), grew("crash", "Panicked")), (0.0, 1.0));
    assert_eq!(grew("?", "UnknownMethod"), 1.0);
    assert_eq!(grew("total", "ok"), 0.0);
    // Every error kind is a series from the start, so that `increase()` sees
    // the first error of a kind.
    assert_eq!(after.calls("total", "Timeout"), 0.0);
    assert!(after
        .body
        .contains(r#"remora_calls_total{interface="Counter",method="total",outcome="Timeout"} 0"#));
}

/// Holds its caller's call until released; tells queue behind it meanwhile.
#[remora::remote]
pub trait Gate {
    async fn hold(&mut self) -> u64;
    #[oneway]
    async fn knock(&mut self);
}

struct Door {
    held: Arc<AtomicBool>,
    release: Arc<Notify>,
    knocks: u64,
}

impl Actor for Door {}

impl Gate for Door {
    async fn hold(&mut self) -> u64 {
        self.held.store(true, Ordering::SeqCst);
        // Bounded: a test that forgets to release still ends.
        let _ = timeout(SAFETY, self.release.notified()).await;
        self.knocks
    }
    async fn knock(&mut self) {
        self.knocks += 1;
    }
}

async fn the_mailbox_gauge_shows_a_busy_actors_queue(transport: Transport) {
    let pair = Pair::with_each(
        transport,
        Node::builder().metrics("127.0.0.1:0"),
        Node::builder(),
    )
    .await;
    let (server, client) = (&pair.server, &pair.client);
    let (held, release) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
    let door = Door {
        held: held.clone(),
        release: release.clone(),
        knocks: 0,
    };
    let gate: GateRef = server.spawn_with(door, SpawnOptions::new().mailbox(Mailbox::bounded(16)));
    let _idle: GateRef = server.spawn(Door {
        held: Arc::default(),
        release: Arc::default(),
        knocks: 0,
    });
    let remote = reach(client, server, &gate);
    let holding = tokio::spawn({
        let remote = remote.clone();
        async move { remote.hold().await }
    });
    until("the gate holds its call", || held.load(Ordering::SeqCst)).await;
    const KNOCKS: f64 = 5.0;
    for _ in 0..5 {
        remote.knock().await.unwrap();
    }
    // The knocks are on their way from the client: scrape until they are all
    // queued (bounded by SAFETY), then check the other figures of that scrape.
    let gates = |m: &Metrics, name: &str| m.value(name, &[("interface", "Gate")]);
    let deadline = tokio::time::Instant::now() + SAFETY;
    let metrics = loop {
        let metrics = scrape(server).await;
        let queued = gates(&metrics, "remora_mailbox_messages");
        assert!(queued <= KNOCKS, "{}", metrics.body);
        if queued == KNOCKS {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the knocks never queued: {}",
            metrics.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(gates(&metrics, "remora_mailbox_messages_max"), KNOCKS);
    assert_eq!(gates(&metrics, "remora_actors"), 2.0, "{}", metrics.body);
    assert_eq!(gates(&metrics, "remora_actors_busy"), 1.0);
    let door_type = metrics
        .scrape
        .samples
        .iter()
        .find(|s| s.metric == "remora_actors" && s.labels.get("interface") == Some("Gate"))
        .and_then(|s| s.labels.get("type"))
        .expect("a type label");
    assert!(door_type.ends_with("Door"), "{door_type}");

    release.notify_one();
    assert_eq!(timeout(SAFETY, holding).await.unwrap().unwrap(), Ok(0));
    release.notify_one();
    assert_eq!(remote.hold().await, Ok(5));
    let drained = scrape(server).await;
    assert_eq!(gates(&drained, "remora_mailbox_messages"), 0.0);
}

async fn the_connection_figures_name_the_peer(transport: Transport) {
    let pair = Pair::with_each(
        transport,
        Node::builder().name("server").metrics("127.0.0.1:0"),
        Node::builder().name("client").metrics("127.0.0.1:0"),
    )
    .await;
    let (server, client) = (&pair.server, &pair.client);
    let counter: CounterRef = server.spawn(Tally::default());
    let broker: BrokerRef = server.spawn(Keeper {
        held: Some(counter.clone()),
    });
    // The counter's reference travels to the client: the client holds a
    // lease on it, which the server has granted.
    let remote = reach(client, server, &broker)
        .give()
        .await
        .unwrap()
        .unwrap();
    remote.add(1).await.unwrap();
    let leases = |m: &Metrics| {
        (
            m.value("remora_leases_granted", &[]),
            m.value("remora_leases_held", &[]),
        )
    };
    let (granted, held) = leases(&scrape(server).await);
    assert!(granted >= 1.0 && held == 0.0, "server: {granted} {held}");
    let (granted, held) = leases(&scrape(client).await);
    assert!(granted == 0.0 && held >= 1.0, "client: {granted} {held}");

    let (this, other) = match transport {
        Transport::Quic => ("quic", "in-process"),
        Transport::InProcess => ("in-process", "quic"),
    };
    for (node, peer, name) in [(server, client, "client"), (client, server, "server")] {
        let metrics = scrape(node).await;
        let conns = |t: &str| metrics.value("remora_connections", &[("transport", t)]);
        assert_eq!((conns(this), conns(other)), (1.0, 0.0), "{}", metrics.body);
        let id = peer.id().to_string();
        let peer_labels = [("peer", id.as_str()), ("peer_name", name)];
        assert_eq!(metrics.value("remora_calls_pending", &peer_labels), 0.0);
        let sent = metrics.find("remora_bytes_sent_total", &peer_labels);
        let received = metrics.find("remora_bytes_received_total", &peer_labels);
        match transport {
            Transport::Quic => {
                for bytes in [sent, received] {
                    assert!(
                        matches!(bytes, Some(Value::Counter(n)) if *n > 0.0),
                        "{bytes:?}: {}",
                        metrics.body
                    );
                }
                assert!(metrics.find("remora_rtt_seconds", &peer_labels).is_some());
            }
            // No wire, no bytes.
            Transport::InProcess => assert_eq!((sent, received), (None, None)),
        }
        let node_id = node.id().to_string();
        assert_eq!(
            metrics.value(
                "remora_node_info",
                &[
                    ("id", node_id.as_str()),
                    ("version", env!("CARGO_PKG_VERSION"))
                ]
            ),
            1.0,
            "each node serves its own figures: {}",
            metrics.body
        );
    }
}

both_transports!(
    the_call_counters_grow_by_exactly_the_calls_made,
    the_mailbox_gauge_shows_a_busy_actors_queue,
    the_connection_figures_name_the_peer,
);

#[tokio::test]
async fn only_get_metrics_is_served() {
    let node = Node::builder()
        .metrics("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let addr = node.metrics_addr().unwrap();
    assert_ne!(addr.port(), 0, "the port chosen is the one given back");
    assert_eq!(request(addr, "GET", "/metrics").await.0, 200);
    for path in ["/", "/metrics/", "/metricsx", "/debug"] {
        let (status, body) = request(addr, "GET", path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(request(addr, "POST", "/metrics").await.0, 405);
    assert_eq!(request(addr, "DELETE", "/metrics").await.0, 405);

    node.shutdown().await;
    assert_eq!(node.metrics_addr(), None);
    let plain = Node::builder().build().await.unwrap();
    assert_eq!(plain.metrics_addr(), None);
}

#[tokio::test]
async fn at_most_eight_connections_are_served_at_once() {
    let node = Node::builder()
        .metrics("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let addr = node.metrics_addr().unwrap();
    let result = tokio::task::spawn_blocking(move || {
        // Eight clients that connect and say nothing hold every place.
        let mut silent: Vec<std::net::TcpStream> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // The ninth is accepted by the kernel (the listen backlog) but not
        // served: its request gets no answer while the eight stay. (Without
        // the bound it is answered in a few milliseconds; with it, not before
        // the silent clients' 5 s header timeout, far past this wait.)
        let mut ninth = std::net::TcpStream::connect(addr).unwrap();
        ninth
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        ninth
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut first = [0u8; 1];
        let early = ninth.read(&mut first);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
            "the ninth connection was served while eight were held: {early:?}"
        );
        // One of the eight leaves: the ninth is served.
        drop(silent.pop());
        ninth.set_read_timeout(Some(SAFETY)).unwrap();
        let mut answer = String::new();
        ninth.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(result.starts_with("HTTP/1.1 200"), "{result}");
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_let_go() {
    let node = Node::builder()
        .metrics("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let addr = node.metrics_addr().unwrap();
    let end = tokio::task::spawn_blocking(move || {
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        // The header timeout is 5 s: closed well within SAFETY (10 s), where
        // the 30 s limit of a connection's life would not have closed it yet.
        silent.set_read_timeout(Some(SAFETY)).unwrap();
        let mut byte = [0u8; 1];
        silent.read(&mut byte)
    })
    .await
    .unwrap();
    assert!(
        matches!(&end, Ok(0))
            || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the endpoint kept a silent client: {end:?}"
    );
}

#[tokio::test]
async fn label_values_from_names_are_escaped() {
    let name = "we\"ird\\name\nwith } and ,";
    let node = Node::builder()
        .name(name)
        .metrics("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let metrics = scrape(&node).await;
    let info: Vec<&str> = metrics
        .body
        .lines()
        .filter(|l| l.starts_with("remora_node_info{"))
        .collect();
    assert_eq!(
        info.len(),
        1,
        "one line, the newline escaped: {}",
        metrics.body
    );
    assert!(
        info[0].contains(r#"name="we\"ird\\name\nwith } and ,""#),
        "{}",
        info[0]
    );
}

#[tokio::test]
async fn a_busy_address_fails_the_build() {
    let node = Node::builder()
        .metrics("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let taken = node.metrics_addr().unwrap().to_string();
    let err = Node::builder()
        .metrics(taken.clone())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, remora::NodeError::Bind { addr, .. } if *addr == taken),
        "{err}"
    );
}
