//! One trace across nodes (the `otel` feature): a call leaves with the W3C
//! trace context of its caller's current span ([`outgoing`]), and the callee
//! runs the handler in a `remora.call` span whose parent is that context
//! ([`call_span`]), so a chain A → B → C over three nodes is one trace in
//! whatever OpenTelemetry backend `tracing-opentelemetry` exports to.
//!
//! Without the feature a call's context carries no trace (nothing is written
//! for it on the wire) and no span is made: this module is then one inlined
//! constant.

use crate::wire::CallContext;

/// The context a call leaves with, before its budget is filled in: under
/// `otel`, the trace context of the caller's current span (if it is in a
/// trace); otherwise nothing.
#[inline]
pub(crate) fn outgoing() -> CallContext {
    CallContext {
        budget: None,
        #[cfg(feature = "otel")]
        trace: otel::current(),
        #[cfg(not(feature = "otel"))]
        trace: None,
    }
}

#[cfg(feature = "otel")]
pub(crate) use otel::call_span;

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::id::NodeId;
    use crate::wire::TraceContext;

    /// The trace context of the current span, if it belongs to a valid trace.
    pub(super) fn current() -> Option<TraceContext> {
        let span = tracing::Span::current();
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        span_context.is_valid().then(|| TraceContext {
            trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
            flags: span_context.trace_flags().to_u8(),
        })
    }

    /// The span a call from `caller` (its id `call` on that connection) runs
    /// its handler in: `remora.call`, a child of the caller's span when the call
    /// carried one (`trace`). `method` and `outcome` are recorded later (the
    /// method's name once its arguments are read, the outcome once it answered).
    pub(crate) fn call_span(
        trace: Option<TraceContext>,
        interface: &'static str,
        caller: NodeId,
        call: u64,
    ) -> tracing::Span {
        let span = tracing::info_span!(
            "remora.call",
            interface,
            method = tracing::field::Empty,
            caller = %caller,
            call,
            outcome = tracing::field::Empty,
        );
        if let Some(trace) = trace.filter(|_| !span.is_disabled()) {
            let parent = SpanContext::new(
                TraceId::from_bytes(trace.trace_id.to_be_bytes()),
                SpanId::from_bytes(trace.span_id.to_be_bytes()),
                TraceFlags::new(trace.flags),
                true,
                TraceState::default(),
            );
            if parent.is_valid() {
                // Err only without an OpenTelemetry layer: then there is no
                // trace to join, and the span stands alone.
                let context = opentelemetry::Context::new().with_remote_span_context(parent);
                let _ = span.set_parent(context);
            }
        }
        span
    }
}
