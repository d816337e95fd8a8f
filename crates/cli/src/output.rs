//! Output for people (aligned tables) and for scripts (the API's JSON, or YAML).

use std::io::Write;

use serde_json::Value;

/// A failure to write output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The value could not be rendered as YAML.
    #[error("cannot render the response as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// The value could not be rendered as JSON.
    #[error("cannot render the response as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Standard output could not be written, for example because the reading pipe closed.
    #[error("cannot write to standard output: {0}")]
    Write(#[from] std::io::Error),
}

/// The `-o` option of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table for people.
    #[default]
    Table,
    /// The API's JSON response, pretty-printed.
    Json,
    /// YAML (`mayfly get` prints the configuration-file form).
    Yaml,
}

/// Writes `text` to standard output, adding a final newline when it lacks one.
pub fn print_text(text: &str) -> Result<(), OutputError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// Writes a JSON value pretty-printed.
pub fn print_json(value: &Value) -> Result<(), OutputError> {
    print_text(&serde_json::to_string_pretty(value)?)
}

/// Writes a value as YAML.
pub fn print_yaml(value: &impl serde::Serialize) -> Result<(), OutputError> {
    print_text(&serde_yaml_ng::to_string(value)?)
}

/// Writes `value` as JSON or YAML when `format` is one of them, and returns whether it did, so
/// the caller only has to render the table case.
pub fn print_structured(format: OutputFormat, value: &Value) -> Result<bool, OutputError> {
    match format {
        OutputFormat::Json => print_json(value).map(|()| true),
        OutputFormat::Yaml => print_yaml(value).map(|()| true),
        OutputFormat::Table => Ok(false),
    }
}

/// A table with a header row. Columns are separated by two spaces and padded to the widest
/// cell. Cells are cleaned of control characters, because they carry server data that may
/// come from callers (audit reasons, names), and a raw escape sequence could rewrite the
/// operator's terminal.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row. Missing cells render empty and extra cells are dropped.
    pub fn push(&mut self, row: Vec<String>) {
        let mut row: Vec<String> = row.iter().map(|cell| clean_text(cell)).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|header| header.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }

        let mut text = String::new();
        let header_row: Vec<String> = self
            .headers
            .iter()
            .map(|header| header.to_string())
            .collect();
        for row in std::iter::once(&header_row).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let padding = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', padding));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Replaces control characters (escape sequences, line breaks, tabs) with `?`, so that text from
/// the server prints on one line and cannot drive the terminal.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Like [`clean_text`] but keeps line breaks, for multi-line messages such as a TOML parser's
/// error with its excerpt of the file.
pub fn clean_multiline_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

/// Returns a field of a JSON object as display text: strings as they are, other values as JSON,
/// and `-` when the field is missing or null.
pub fn field_text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// Formats an RFC 3339 timestamp field to whole seconds in UTC (`2026-12-04T21:14:03Z`). A value
/// that does not parse is shown as it is, and a missing one as `-`.
pub fn time_text(value: &Value, key: &str) -> String {
    let Some(text) = value.get(key).and_then(Value::as_str) else {
        return "-".to_string();
    };
    match text.parse::<jiff::Timestamp>() {
        Ok(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => text.to_string(),
    }
}

/// Returns the array under `key`, or an empty slice when it is missing or not an array.
pub fn array_field<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["NAME", "TARGET"]);
        table.push(vec![
            "payments-api".to_string(),
            "https://payments:443".to_string(),
        ]);
        table.push(vec!["a".to_string(), "b".to_string()]);
        let expected =
            "NAME          TARGET\npayments-api  https://payments:443\na             b\n";
        assert_eq!(table.render(), expected);
    }

    #[test]
    fn table_pads_short_rows() {
        let mut table = Table::new(&["A", "B", "C"]);
        table.push(vec!["x".to_string()]);
        assert_eq!(table.render(), "A  B  C\nx\n");
    }

    #[test]
    fn terminal_escape_in_cell_is_neutralized() {
        let mut table = Table::new(&["REASON"]);
        table.push(vec!["bad\u{1b}[2J\nline".to_string()]);
        let rendered = table.render();
        assert!(!rendered.contains('\u{1b}'), "{rendered:?}");
        assert_eq!(rendered.lines().count(), 2, "{rendered:?}");
    }

    #[test]
    fn time_text_drops_fraction() {
        let value = json!({"at": "2026-12-04T21:14:03.123456Z", "bad": "yesterday", "none": null});
        assert_eq!(time_text(&value, "at"), "2026-12-04T21:14:03Z");
        assert_eq!(time_text(&value, "bad"), "yesterday");
        assert_eq!(time_text(&value, "none"), "-");
        assert_eq!(time_text(&value, "missing"), "-");
    }

    #[test]
    fn field_text_renders_non_strings() {
        let value = json!({"name": "a", "port": 443, "enabled": false, "gone": null});
        assert_eq!(field_text(&value, "name"), "a");
        assert_eq!(field_text(&value, "port"), "443");
        assert_eq!(field_text(&value, "enabled"), "false");
        assert_eq!(field_text(&value, "gone"), "-");
    }
}
