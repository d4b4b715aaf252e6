//! `remora cert`: a cluster root and node certificates, as files.

use std::path::PathBuf;

use remora::Credentials;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a cluster root in DIR: `ca.pem` (give to every node) and `ca.key`
    /// (keep secret: it admits nodes to the cluster).
    Init {
        /// Where to write the root; created if missing.
        dir: PathBuf,
        /// Replace a root already in DIR (every node certificate it signed stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate signed by the root in DIR: `node.pem`, `node.key` and
    /// a copy of `ca.pem`, in OUT (default DIR/NAME). A node started with
    /// `credentials(OUT)` authenticates as NAME.
    Node {
        /// The directory holding the root (`ca.pem`, `ca.key`).
        dir: PathBuf,
        /// The node's name: its identity to registries' allow lists.
        #[arg(long)]
        name: String,
        /// Where to write the certificate (default DIR/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Init { dir, force } => {
            if dir.join("ca.key").exists() && !force {
                return Err(format!(
                    "{} already holds a cluster root; pass --force to replace it \
                     (certificates it signed stop working)",
                    dir.display()
                ));
            }
            Credentials::create_cluster(&dir).map_err(|e| e.to_string())?;
            println!("cluster root written to {}", dir.display());
            println!("  ca.pem: give it to every node (it trusts what the root signed)");
            println!("  ca.key: keep it secret (it admits nodes to the cluster)");
            Ok(())
        }
        Command::Node { dir, name, out } => {
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
                return Err(format!(
                    "{name:?} is not a usable node name (empty, '/' or control characters)"
                ));
            }
            if !dir.join("ca.key").exists() {
                return Err(format!(
                    "{} has no ca.key: create a cluster root first with `remora cert init {}`",
                    dir.display(),
                    dir.display()
                ));
            }
            let out = out.unwrap_or_else(|| dir.join(&name));
            Credentials::issue_named_node(&dir, &out, &name).map_err(|e| e.to_string())?;
            println!("node certificate for {name:?} written to {}", out.display());
            println!(
                "  start the node with Node::builder().credentials({:?}), or --credentials {}",
                out.display().to_string(),
                out.display()
            );
            Ok(())
        }
    }
}
