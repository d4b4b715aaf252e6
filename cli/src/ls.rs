//! `remora ls`: the names bound in a registry.

use remora_registry::Registry;

#[derive(clap::Args)]
pub struct Args {
    /// The registry node's address, such as 127.0.0.1:7000 (or several, comma-separated:
    /// registry processes sharing one store).
    addr: String,
    /// Only names that start with this.
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    credentials: crate::Credentials,
}

pub async fn run(args: Args) -> Result<(), String> {
    let node = args
        .credentials
        .builder()
        .name("remora-ls")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let registry = Registry::connect(&node, &args.addr)
        .await
        .map_err(|e| format!("{e}{}", args.credentials.hint()))?;
    let entries = registry
        .list(&args.prefix)
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.interface.clone(),
                e.node().to_string(),
                e.target.addr.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::table::table(["NAME", "INTERFACE", "NODE", "ADDRESS"], &rows)
    );
    node.shutdown().await;
    Ok(())
}
