//! Plain-text tables: rows under a header, each column as wide as its widest cell.

/// Rows under a header, each column as wide as its widest cell (the last one
/// unpadded), one line each.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
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
        out.push_str(&line(row.each_ref().map(String::as_str)));
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
