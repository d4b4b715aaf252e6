//! `remora registry`: a standalone registry node.

use std::time::Duration;

use remora_registry::{EtcdOptions, EtcdStore, MemoryStore, RegistryServer};

#[derive(clap::Args)]
pub struct Args {
    /// The address to listen on (QUIC), such as 127.0.0.1:7000.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Keep the names in etcd at this URL (repeat for a cluster) instead of memory.
    #[arg(long, value_name = "URL")]
    etcd: Vec<String>,
    /// The key prefix for the names in etcd.
    #[arg(long, default_value = "/remora/", requires = "etcd")]
    etcd_prefix: String,
    /// Only nodes with these certificate names may bind, rebind, unbind, join or
    /// leave (comma-separated, or repeated); others may only read. Default: any node
    /// of the cluster may write.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    allow_writes: Vec<String>,
    /// The longest lease granted, in seconds: a dead node's names are gone this long
    /// after its last renewal at the latest.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    max_lease: u64,
    #[command(flatten)]
    credentials: crate::Credentials,
}

pub async fn run(args: Args) -> Result<(), String> {
    let node = args
        .credentials
        .builder()
        .name("registry")
        .listen(&args.listen)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let mut server = if args.etcd.is_empty() {
        RegistryServer::new(MemoryStore::new())
    } else {
        let options = EtcdOptions::new(args.etcd.clone()).with_prefix(&args.etcd_prefix);
        let store = EtcdStore::connect_with(options)
            .await
            .map_err(|e| e.to_string())?;
        RegistryServer::new(store)
    };
    server = server.max_lease(Duration::from_secs(args.max_lease.max(1)));
    if !args.allow_writes.is_empty() {
        server = server.allow_writes_from(args.allow_writes.clone());
    }
    server.start(&node).map_err(|e| e.to_string())?;
    let addr = node
        .listen_addr()
        .ok_or("the registry node is not listening")?;
    let backend = if args.etcd.is_empty() {
        "memory".to_owned()
    } else {
        format!("etcd {} under {}", args.etcd.join(","), args.etcd_prefix)
    };
    // Ctrl-C or SIGTERM: stop cleanly (actors stopped, connections closed), exit 0.
    // Both handlers are in place before the line that says the registry is up: a
    // supervisor may stop it the moment it reads that line.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    println!(
        "registry listening on {addr} (node {}, store: {backend})",
        node.id()
    );
    if args.credentials.credentials.is_none() {
        println!("  no --credentials: only nodes of this process can reach it");
    }
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    node.shutdown().await;
    Ok(())
}
