//! The one text-table renderer behind `check`'s result table and `diff`'s change table.
//!
//! Column widths come from the whole table (header included), cells are separated by two
//! spaces, the last column is never padded and trailing blanks are trimmed, so the output is
//! stable for tests and for humans piping it through `grep`. Callers say per column how it is
//! aligned and may paint a cell (ANSI colour) after padding, so colour never shifts a column.

/// How a column's cells are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Renders `rows` under `header`, one line each. `paint(row, column, padded)` may decorate a
/// padded body cell (the header is never painted); `row` indexes `rows`.
pub fn render<const N: usize>(
    header: [&str; N],
    align: [Align; N],
    rows: &[[String; N]],
    paint: impl Fn(usize, usize, &str) -> String,
) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    push_line(&mut out, &header.map(String::from), &widths, &align, |_, s| s.to_string());
    for (i, row) in rows.iter().enumerate() {
        push_line(&mut out, row, &widths, &align, |col, s| paint(i, col, s));
    }
    out
}

fn push_line<const N: usize>(
    out: &mut String,
    cells: &[String; N],
    widths: &[usize; N],
    align: &[Align; N],
    paint: impl Fn(usize, &str) -> String,
) {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
        let padded = match (align[i], i + 1 == N) {
            (Align::Right, _) => format!("{pad}{cell}"),
            (Align::Left, true) => cell.clone(),
            (Align::Left, false) => format!("{cell}{pad}"),
        };
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(&paint(i, &padded));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Shortens `s` to at most `max` characters, marking the cut with `…`.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_right_aligned_numbers_end_together_and_paint_keeps_widths() {
        let rows = [
            ["a".to_string(), "1.0".to_string(), "x".to_string()],
            ["long-name".into(), "123.4".into(), "-".into()],
        ];
        let t = render(
            ["NAME", "MS", "LAST"],
            [Align::Left, Align::Right, Align::Left],
            &rows,
            |_, _, s| s.to_string(),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME          MS  LAST");
        assert_eq!(lines[1], "a            1.0  x");
        assert_eq!(lines[2], "long-name  123.4  -");
        let painted = render(
            ["A", "B"],
            [Align::Left, Align::Left],
            &[["x".to_string(), "y".to_string()]],
            |_, c, s| {
                if c == 0 {
                    format!("<{s}>")
                } else {
                    s.to_string()
                }
            },
        );
        assert_eq!(painted.lines().nth(1), Some("<x>  y"));
    }

    #[test]
    fn shorten_marks_the_cut() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
