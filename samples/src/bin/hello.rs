//! `hello`: the classic RMI hello, across processes. A registry, a server that
//! binds `hello`, and a client that looks it up and calls it.
//!
//! One command runs all three as processes of one local cluster:
//!
//! ```text
//! cargo run --release -p remora-samples --bin hello
//! ```
//!
//! Or by hand, in three terminals, sharing a cluster root (`remora cert init DIR`):
//!
//! ```text
//! REMORA_CREDENTIALS=DIR hello registry                       # prints READY <addr>
//! REMORA_CREDENTIALS=DIR hello server --registry <addr>       # binds `hello`
//! REMORA_CREDENTIALS=DIR hello client --registry <addr> world # Hello, world! (from ...)
//! ```
//!
//! `registry` and `server` run until Ctrl-C or SIGTERM, then shut down cleanly.

use remora::{Actor, Node};
use remora_registry::{MemoryStore, Registry, RegistryServer};
use remora_samples::args::{exit_code, required};
use remora_testing::{announce, node_builder, serve_until_signal, LocalCluster};

/// What the server offers.
#[remora::remote]
pub trait Hello {
    /// A greeting for `name`, saying which node made it.
    async fn say_hello(&mut self, name: String) -> String;
}

struct Greeter {
    node: String,
}

impl Actor for Greeter {}

impl Hello for Greeter {
    async fn say_hello(&mut self, name: String) -> String {
        format!("Hello, {name}! (from node {})", self.node)
    }
}

type Failure = Box<dyn std::error::Error>;

async fn listening(name: &str) -> Result<Node, Failure> {
    Ok(node_builder()
        .name(name)
        .listen("127.0.0.1:0")
        .build()
        .await?)
}

async fn registry() -> Result<(), Failure> {
    let node = listening("registry").await?;
    RegistryServer::serve(&node, MemoryStore::new())?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

async fn server(registry_addr: &str) -> Result<(), Failure> {
    let node = listening("hello-server").await?;
    let registry = Registry::connect(&node, registry_addr).await?;
    let greeter: HelloRef = node.spawn(Greeter {
        node: node.id().to_string(),
    });
    registry.rebind("hello", &greeter).await?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

async fn client(registry_addr: &str, name: &str) -> Result<String, Failure> {
    let node = node_builder().name("hello-client").build().await?;
    let registry = Registry::connect(&node, registry_addr).await?;
    let hello: HelloRef = registry.lookup("hello").await?;
    let greeting = hello.say_hello(name.to_owned()).await?;
    node.shutdown().await;
    Ok(greeting)
}

/// All three as processes of a local cluster; the client runs here.
async fn everything() -> Result<(), Failure> {
    let me = std::env::current_exe()?;
    let mut cluster = LocalCluster::new()?;
    let registry_addr = cluster.start(&me, ["registry"])?.addr.clone();
    println!("registry process listening on {registry_addr}");
    let server_addr = cluster
        .start(&me, ["server", "--registry", &registry_addr])?
        .addr
        .clone();
    println!("server process listening on {server_addr}, bound as `hello`");
    std::env::set_var(remora_testing::CREDENTIALS_ENV, cluster.credentials());
    let greeting = client(&registry_addr, "world").await?;
    println!("client looked up `hello` and called it: {greeting}");
    cluster.terminate();
    println!("stopped the registry and server processes");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let registry_arg = || required(&args, "--registry", "ADDR").map_err(Failure::from);
    let result = match args.first().map(String::as_str) {
        None => everything().await,
        Some("registry") => registry().await,
        Some("server") => match registry_arg() {
            Ok(addr) => server(&addr).await,
            Err(e) => Err(e),
        },
        Some("client") => match registry_arg() {
            Ok(addr) => {
                let name = args.get(3).map_or("world", String::as_str);
                client(&addr, name).await.map(|greeting| println!("{greeting}"))
            }
            Err(e) => Err(e),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}: use `registry`, `server --registry ADDR`, `client --registry ADDR [NAME]`, or nothing"
        )
        .into()),
    };
    exit_code("hello", result)
}
