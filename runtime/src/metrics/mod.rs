//! The Prometheus endpoint ([`NodeBuilder::metrics`]): a node's counters in
//! Prometheus's text format (version 0.0.4) at `http://ADDR/metrics`.
//!
//! Each node has its own prometheus-client `Registry` holding one collector
//! that reads the node's counters when scraped (`families.rs`), from the
//! sources the [`Inspector`](crate::inspect::Inspector) reads: nothing is
//! counted for the endpoint and no call does any work for it. No global
//! recorder: several nodes of one process each serve their own figures.
//!
//! The server is hyper's HTTP/1 connection driver under a small accept loop,
//! bounded for an address that anyone who reaches it may call: it answers
//! `GET /metrics` only (404 elsewhere, 405 for other methods) and never reads
//! a request body; it serves at most [`MAX_CONNECTIONS`] connections at once
//! (so at most that many scrapes render at once; further clients wait in the
//! listen backlog), gives a client [`HEADER_TIMEOUT`] to send its request
//! head and keeps a connection at most [`CONNECTION_LIFETIME`]. The answer's
//! size is set by the node's interfaces, methods, kinds of actors and peers,
//! not by what a client sends. Bind it to loopback or a private network
//! (SECURITY.md).
//!
//! [`NodeBuilder::metrics`]: crate::NodeBuilder::metrics

mod families;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::node::Node;

/// Connections served at once; more wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 8;
/// How long a client has to send its request head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection is kept, whatever it does (a scraper reconnects).
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// A node's running endpoint: stops accepting when dropped (with its node, or
/// at [`Node::shutdown`]); connections already open end within
/// [`CONNECTION_LIFETIME`], answering empty once the node is gone.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    accept: tokio::task::AbortHandle,
}

impl Endpoint {
    /// The address it serves on (the port chosen, for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds `addr` and serves `node`'s figures there.
pub(crate) async fn serve(node: &Node, addr: SocketAddr) -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families::NodeCollector::new(node.downgrade())));
    let accept = tokio::spawn(accept(listener, Arc::new(registry)));
    tracing::debug!(%addr, "metrics endpoint listening");
    Ok(Endpoint {
        addr,
        accept: accept.abort_handle(),
    })
}

async fn accept(listener: TcpListener, registry: Arc<Registry>) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = room.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!(%err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&registry, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(err)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                tracing::debug!(%err, "metrics endpoint: connection failed");
            }
        });
    }
}

/// `GET /metrics`: the figures; anything else: 404 or 405.
fn answer(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: this endpoint serves GET /metrics only\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET /metrics\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let mut body = String::new();
    if let Err(err) = prometheus_text::encode(&mut body, registry) {
        tracing::warn!(%err, "metrics endpoint: encoding failed");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
