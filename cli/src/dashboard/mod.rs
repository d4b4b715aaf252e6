//! `remora dashboard`: the cluster in a web page. A node of the cluster (the
//! same credentials as `remora inspect`) surveys the registry and every node it
//! knows, through their inspectors, every `--interval-ms`; a web server on
//! `--listen` (loopback by default) pushes each survey to the open pages as
//! server-sent events. See `survey` for which nodes it shows, `view` for what,
//! and `web` for the routes.

mod survey;
mod view;
mod web;

use std::sync::Arc;
use std::time::Duration;

use remora_registry::RemoteStore;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct Args {
    /// The registry node's address, such as 127.0.0.1:7000 (or several,
    /// comma-separated: registry processes sharing one store).
    #[arg(long, value_name = "ADDR")]
    registry: String,
    /// Where to serve the page (HTTP). Anyone who can reach it sees the whole
    /// cluster: keep it on loopback, or behind an authenticating proxy.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Milliseconds between surveys (200 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(200..=60_000))]
    interval_ms: u64,
    /// How long each node (and the registry) gets to answer a survey, in
    /// milliseconds; a node that misses it shows as unreachable.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    deadline_ms: u64,
    #[command(flatten)]
    credentials: crate::Credentials,
}

pub async fn run(args: Args) -> Result<(), String> {
    let node = args
        .credentials
        .builder()
        .name("remora-dashboard")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let store = RemoteStore::connect(&node, &args.registry)
        .await
        .map_err(|e| format!("{e}{}", args.credentials.hint()))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;

    let deadline = Duration::from_millis(args.deadline_ms);
    let mut surveyor = survey::Surveyor::new(node.clone(), args.registry.clone(), store, deadline);
    let first = surveyor.survey().await;
    let (latest, pages) = watch::channel(Arc::new(json(&first)));
    let interval = Duration::from_millis(args.interval_ms);
    let surveys = tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let snapshot = surveyor.survey().await;
            if latest.send(Arc::new(json(&snapshot))).is_err() {
                return;
            }
        }
    });

    // Ending the surveys drops the sender, which ends every page's event
    // stream: a graceful shutdown waits for those, and would wait forever.
    let end_surveys = surveys.abort_handle();
    let shutdown = async move {
        stopped().await;
        end_surveys.abort();
    };

    // The line scripts (and the browser test) wait for.
    println!("dashboard listening on http://{local}/");
    let served = axum::serve(listener, web::router(pages))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("serving the dashboard failed: {e}"));
    node.shutdown().await;
    served
}

fn json(snapshot: &view::Snapshot) -> String {
    serde_json::to_string(snapshot).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot write the survey as JSON: {e}") }).to_string()
    })
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
