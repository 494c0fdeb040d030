//! The one writer of `/actuator/prometheus`: Prometheus text format 0.0.4 as Micrometer's scrape
//! endpoint writes it (REFERENCE §7). Every part of the control plane hands it typed rows; no
//! other module formats a metric line.
//!
//! What scrapers and the Java parity tests read, kept exactly: counter families are named
//! `<name>_total` in HELP, TYPE and samples, with integer values; integer gauges print as
//! integers, float gauges and summaries as Java prints a double (`1.0`, `0.25`, `+Inf`); label
//! values are escaped (`\\`, `\"`, `\n`); summaries put `quantile` after their own labels; there
//! is no `# EOF`.

use std::fmt::Write as _;

use super::timer::{QUANTILES, TimerSnapshot};

/// The label pairs of one series, in the order they are printed.
pub type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// A sample value and how the text format prints it.
pub trait SampleValue: Copy {
    fn write_to(self, out: &mut String);
}

impl SampleValue for u64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for i64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for f64 {
    fn write_to(self, out: &mut String) {
        if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else if self.is_nan() {
            out.push_str("NaN");
        } else if self.fract() == 0.0 && self.abs() < 1e15 {
            let _ = write!(out, "{self:.1}");
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// Builds one scrape body, family by family.
#[derive(Debug, Default)]
pub struct MetricWriter {
    out: String,
}

impl MetricWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        MetricWriter {
            out: String::with_capacity(bytes),
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// A counter family `name` (ending in `_total`); `help` is printed as given. A family
    /// without series is left out, as the scrape has always done.
    pub fn counter<'a, const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels<'a, N>, u64)>,
    ) {
        let mut rows = rows.into_iter().peekable();
        if rows.peek().is_some() {
            self.family(name, help, "counter", rows);
        }
    }

    /// A gauge family: its HELP/TYPE lines, then one sample per row.
    pub fn gauge<'a, const N: usize, V: SampleValue>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels<'a, N>, V)>,
    ) {
        self.family(name, help, "gauge", rows);
    }

    /// A Micrometer timer: the `name` summary (quantiles, `_count`, `_sum` of each series), then
    /// the `name_max` gauge. A timer without series is not written at all.
    pub fn summary<const N: usize>(&mut self, name: &str, rows: &[(Labels<'_, N>, TimerSnapshot)]) {
        if rows.is_empty() {
            return;
        }
        self.header(name, "", "", "summary");
        for (labels, t) in rows {
            for ((_, quantile), value) in QUANTILES.iter().zip(t.quantiles) {
                self.sample(name, "", labels, Some(("quantile", quantile)), value);
            }
            self.sample(name, "_count", labels, None, t.count);
            self.sample(name, "_sum", labels, None, t.sum_seconds);
        }
        self.header(name, "_max", "", "gauge");
        for (labels, t) in rows {
            self.sample(name, "_max", labels, None, t.max_seconds);
        }
    }

    fn family<'a, const N: usize, V: SampleValue>(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        rows: impl IntoIterator<Item = (Labels<'a, N>, V)>,
    ) {
        self.header(name, "", help, kind);
        for (labels, value) in rows {
            self.sample(name, "", &labels, None, value);
        }
    }

    fn header(&mut self, name: &str, suffix: &str, help: &str, kind: &str) {
        let _ = write!(
            self.out,
            "# HELP {name}{suffix} {help}\n# TYPE {name}{suffix} {kind}\n"
        );
    }

    /// `name{labels,extra} value`; no braces when there is no label.
    fn sample<const N: usize>(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &Labels<'_, N>,
        extra: Option<(&str, &str)>,
        value: impl SampleValue,
    ) {
        let out = &mut self.out;
        out.push_str(name);
        out.push_str(suffix);
        let mut pairs = labels.iter().copied().chain(extra).peekable();
        if pairs.peek().is_some() {
            out.push('{');
            for (i, (key, value)) in pairs.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(key);
                out.push_str("=\"");
                push_escaped(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        value.write_to(out);
        out.push('\n');
    }
}

fn push_escaped(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}
