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
    print!("{}", table(["NAME", "INTERFACE", "NODE", "ADDRESS"], &rows));
    node.shutdown().await;
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: [&str; 4], rows: &[[String; 4]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = [[
            "a-long-name".to_owned(),
            "Counter".to_owned(),
            "n".to_owned(),
            "-".to_owned(),
        ]];
        assert_eq!(
            super::table(["NAME", "INTERFACE", "NODE", "ADDRESS"], &rows),
            "NAME         INTERFACE  NODE  ADDRESS\na-long-name  Counter    n     -\n"
        );
    }
}
