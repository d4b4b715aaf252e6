//! Plain-text tables: rows under a header, each column as wide as its widest cell.

/// Rows under a header, each column as wide as its widest cell (the last one
/// unpadded), one line each.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let rows: Vec<&[String]> = rows.iter().map(|row| row.as_slice()).collect();
    table_of(&header, &rows)
}

/// [`table`] for columns chosen at run time: every row as long as `header`.
pub fn table_of(header: &[&str], rows: &[&[String]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
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
