//! One trace across nodes (the `otel` feature): a chain A → B → C, where A is a
//! span of the client's own and B's handler calls C, is one trace of three
//! spans, one per node, each the parent of the next; over a link that moves
//! values, over one that encodes every frame, and over QUIC on loopback (the
//! trace context on the wire). Spans go to the OpenTelemetry SDK's in-memory exporter through
//! `tracing-opentelemetry`.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use remora::remote::inproc;
use remora::{Actor, Node};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[remora::remote]
pub trait Hop {
    /// Calls `next` (if any) and returns how many hops the chain had from here.
    async fn hop(&mut self, next: Option<HopRef>) -> u32;
}

struct Station;

impl Actor for Station {}

impl Hop for Station {
    async fn hop(&mut self, next: Option<HopRef>) -> u32 {
        match next {
            Some(next) => next.hop(None).await.map_or(0, |n| n + 1),
            None => 1,
        }
    }
}

/// The exporter every span of this test binary goes to (one global
/// subscriber: nodes' tasks run on the runtime's worker threads).
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("remora-otel-test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        exporter
    })
}

/// The finished spans of trace `trace`, waiting (bounded) until there are `n`.
async fn spans_of(trace: TraceId, n: usize) -> Vec<SpanData> {
    for _ in 0..500 {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .expect("in memory")
            .into_iter()
            .filter(|span| span.span_context.trace_id() == trace)
            .collect();
        if spans.len() >= n {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("trace {trace} never had {n} spans");
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// How the three nodes of a chain reach each other.
#[derive(Clone, Copy, PartialEq)]
enum Link {
    Values,
    Encoded,
    Quic,
}

async fn a_chain_of_three_nodes_is_one_trace(how: Link) {
    exporter();
    let build = |name: &'static str| async move {
        let builder = Node::builder().name(name);
        let builder = match how {
            Link::Quic => builder.listen("127.0.0.1:0"),
            _ => builder,
        };
        builder.build().await.unwrap()
    };
    let (a, b, c) = (build("a").await, build("b").await, build("c").await);
    let mut wires = Vec::new();
    for (x, y) in [(&a, &b), (&b, &c), (&a, &c)] {
        match how {
            Link::Values => wires.push(inproc::connect(x, y).await.unwrap()),
            Link::Encoded => wires.push(inproc::connect_serializing(x, y).await.unwrap()),
            Link::Quic => {
                x.connect(y.listen_addr().unwrap().to_string())
                    .await
                    .unwrap();
            }
        }
    }
    let on_b: HopRef = b.spawn(Station);
    let on_c: HopRef = c.spawn(Station);
    let to_b: HopRef = a.reference(b.id(), b.export(&on_b).unwrap()).unwrap();
    let to_c: HopRef = a.reference(c.id(), c.export(&on_c).unwrap()).unwrap();

    let root = tracing::info_span!("a.request");
    let hops = to_b.hop(Some(to_c)).instrument(root.clone()).await;
    assert_eq!(hops, Ok(2));
    let trace = {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        root.context().span().span_context().trace_id()
    };
    drop(root);

    let spans = spans_of(trace, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let [root] = named("a.request")[..] else {
        panic!("one root: {spans:#?}")
    };
    let calls = named("remora.call");
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let caller_of = |span: &SpanData| attribute(span, "caller").map(|v| v.as_str().into_owned());
    let at_b = calls
        .iter()
        .find(|s| caller_of(s) == Some(a.id().to_string()))
        .expect("B's span: called by A");
    let at_c = calls
        .iter()
        .find(|s| caller_of(s) == Some(b.id().to_string()))
        .expect("C's span: called by B");
    assert_eq!(root.parent_span_id, SpanId::INVALID, "A's span is the root");
    assert_eq!(at_b.parent_span_id, root.span_context.span_id());
    assert_eq!(at_c.parent_span_id, at_b.span_context.span_id());
    for span in [at_b, at_c] {
        assert_eq!(
            attribute(span, "method"),
            Some(Value::from("Hop.hop")),
            "{span:#?}"
        );
        assert_eq!(
            attribute(span, "interface"),
            Some(Value::from("Hop")),
            "{span:#?}"
        );
        assert_eq!(
            attribute(span, "outcome"),
            Some(Value::from("ok")),
            "{span:#?}"
        );
        assert!(attribute(span, "call").is_some(), "{span:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_nodes_is_one_trace_with_values_moved() {
    a_chain_of_three_nodes_is_one_trace(Link::Values).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_nodes_is_one_trace_over_encoded_frames() {
    a_chain_of_three_nodes_is_one_trace(Link::Encoded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_nodes_is_one_trace_over_quic() {
    a_chain_of_three_nodes_is_one_trace(Link::Quic).await;
}

/// A call made outside any span starts a trace of its own at the callee: its
/// span has no parent, and the call works as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_any_span_starts_its_own_trace() {
    exporter();
    let a = Node::builder().build().await.unwrap();
    let b = Node::builder().build().await.unwrap();
    let _wire = inproc::connect_serializing(&a, &b).await.unwrap();
    let on_b: HopRef = b.spawn(Station);
    let to_b: HopRef = a.reference(b.id(), b.export(&on_b).unwrap()).unwrap();
    assert_eq!(to_b.hop(None).await, Ok(1));
    let caller = a.id().to_string();
    for _ in 0..500 {
        let found = exporter()
            .get_finished_spans()
            .expect("in memory")
            .into_iter()
            .find(|s| {
                s.name == "remora.call"
                    && attribute(s, "caller").map(|v| v.as_str().into_owned())
                        == Some(caller.clone())
            });
        if let Some(span) = found {
            assert_eq!(span.parent_span_id, SpanId::INVALID, "{span:#?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no span for the call");
}
