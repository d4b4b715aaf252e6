//! A node process for a `LocalCluster`: serves a greeter, announces it, and shuts
//! down on SIGTERM.
//!
//! ```text
//! remora-testing-greeter NAME
//! ```
//!
//! It prints `READY <addr> <greeter's object id>`, and `stopped by a signal` once it
//! has shut down after SIGTERM or Ctrl-C.

mod interface;

use interface::{Greeter, GreeterRef};
use remora::Actor;

/// The greeter: signs with its node's name.
struct Host {
    name: String,
}

impl Actor for Host {}

impl Greeter for Host {
    async fn greet(&mut self, name: String) -> String {
        format!("hello {name}, from {}", self.name)
    }

    async fn meet(&mut self, other: GreeterRef) -> Result<String, String> {
        other
            .greet(self.name.clone())
            .await
            .map_err(|e| e.to_string())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .ok_or("usage: remora-testing-greeter NAME")?;
    let node = remora_testing::node_builder()
        .name(&name)
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let greeter: GreeterRef = node.spawn(Host { name });
    remora_testing::announce_with(&node, [node.export(&greeter)?]);
    remora_testing::serve_until_signal(&node).await;
    println!("stopped by a signal");
    Ok(())
}
