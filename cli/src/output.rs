//! How a run's outcome is shown: one JSON object (`--json`) or a human
//! summary.

use crate::EXIT_RUN_FAILED;
use serde::Serialize;
use std::process::ExitCode;
use warden_core::Usage;
use warden_host::RunOutcome;
use warden_host::capability::logging::LogLine;

#[derive(Serialize)]
struct JsonError<'a> {
    kind: &'a str,
    message: &'a str,
    retryable: bool,
}

#[derive(Serialize)]
struct JsonOutcome<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JsonError<'a>>,
    usage: &'a Usage,
    logs: &'a [LogLine],
}

/// The `--json` document for an outcome. Output that is JSON text is
/// embedded as JSON; anything else as a string.
pub(crate) fn json(outcome: &RunOutcome) -> String {
    let doc = JsonOutcome {
        status: if outcome.result.is_ok() {
            "ok"
        } else {
            "failed"
        },
        output: outcome.result.as_ref().ok().map(|text| {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        }),
        error: outcome.result.as_ref().err().map(|f| JsonError {
            kind: f.kind.as_str(),
            message: &f.message,
            retryable: f.kind.retryable(),
        }),
        usage: &outcome.usage,
        logs: &outcome.logs,
    };
    serde_json::to_string(&doc).expect("outcome serializes")
}

/// The output, pretty-printed when it is JSON.
pub(crate) fn pretty_output(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => pretty_json(&v),
        Err(_) => safe(text).into_owned(),
    }
}

/// Pretty JSON for a terminal: control characters escaped (still JSON).
pub(crate) fn pretty_json(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    warden_core::escape_json_controls(&text).into_owned()
}

/// Outside text (a guest's message, a peer's name) for a terminal: every
/// control character escaped.
pub(crate) fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    warden_core::escape_controls(text)
}

/// One line of usage for humans.
pub(crate) fn usage_line(u: &Usage) -> String {
    let mut parts = vec![format!("{:.1} ms", u.wall_time_ms)];
    if let Some(fuel) = u.fuel_used {
        parts.push(format!("fuel {}", si(fuel)));
    }
    parts.push(format!("mem {}", bytes(u.peak_memory_bytes)));
    if u.llm_calls > 0 {
        let mut llm = format!(
            "llm {} call{}, {} tokens",
            u.llm_calls,
            if u.llm_calls == 1 { "" } else { "s" },
            u.total_tokens()
        );
        if u.cost_usd > 0.0 {
            llm.push_str(&format!(", ${:.6}", u.cost_usd));
        }
        parts.push(llm);
    }
    if u.http_requests > 0 {
        parts.push(format!(
            "http {} req, {}",
            u.http_requests,
            bytes(u.http_response_bytes)
        ));
    }
    if u.disk_bytes > 0 {
        parts.push(format!("disk {}", bytes(u.disk_bytes)));
    }
    if u.host_calls > 0 {
        parts.push(format!("host calls {}", si(u.host_calls)));
    }
    parts.join(" · ")
}

fn si(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// A time (Unix ms) as RFC 3339 to the second, UTC; `-` for none (0).
pub(crate) fn when(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in ms as people read it: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub(crate) fn took(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

pub(crate) fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", n as f64 / 1_073_741_824.0),
    }
}

/// Prints an outcome (JSON or human) and returns the exit code: 0 only
/// when the run succeeded.
pub(crate) fn print_outcome(outcome: &RunOutcome, as_json: bool) -> ExitCode {
    if as_json {
        println!("{}", json(outcome));
    } else {
        match &outcome.result {
            Ok(text) => {
                println!("{}", pretty_output(text));
                eprintln!("ok · {}", usage_line(&outcome.usage));
            }
            Err(f) => {
                eprintln!("run failed ({}): {}", f.kind, safe(&f.message));
                eprintln!("usage: {}", usage_line(&outcome.usage));
            }
        }
    }
    if outcome.result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUN_FAILED)
    }
}

/// A table for the terminal: a header row, then one row per item, each
/// column as wide as its widest cell (two spaces between columns).
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named by `header`; one whose name starts with `>` holds
    /// numbers and is aligned right (the `>` is not shown).
    pub(crate) fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (text shown as it is: pass it through [`safe`] first
    /// where a user chose it).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, without trailing spaces.
    pub(crate) fn render(&self) -> String {
        let header: Vec<String> = self
            .header
            .iter()
            .map(|h| h.trim_start_matches('>').to_string())
            .collect();
        let width = |i: usize| {
            std::iter::once(&header)
                .chain(&self.rows)
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..header.len()).map(width).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    line.push_str("  ");
                }
                if self.header.get(i).is_some_and(|h| h.starts_with('>')) {
                    line.push_str(&format!("{cell:>w$}"));
                } else {
                    line.push_str(&format!("{cell:<w$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut t = Table::new(&["AGENT", ">SIZE", "NOTE"]);
        t.row(vec![
            "greeter@dev-1765000000-0a1b2c3d".into(),
            "12 KiB".into(),
            "".into(),
        ]);
        t.row(vec!["é".into(), "3 B".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "AGENT                              SIZE  NOTE\n\
             greeter@dev-1765000000-0a1b2c3d  12 KiB\n\
             é                                   3 B  x\n"
        );
    }
}
