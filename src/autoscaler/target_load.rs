//! `gateway_service_target_load{function, scaling_type}` (REFERENCE §5.3, §7.4): one gauge per
//! scaling metric of a function whose type maps (`queue_depth`→`queue`, `in_flight`→`capacity`,
//! `rps`→`rps`, `cpu`→`cpu`), valued at the integer parse of its target (0 when the target is not
//! an integer). Created on registration for any function with scalingConfig metrics, whatever its
//! execution mode or strategy; removed on delete.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::function::ScalingMetric;
use crate::metrics::MetricWriter;
use crate::support::lock;

pub const METRIC: &str = "gateway_service_target_load";

/// The `scaling_type` label of a metric type, if it has one.
pub fn scaling_type(kind: &str) -> Option<&'static str> {
    match kind {
        "queue_depth" => Some("queue"),
        "in_flight" => Some("capacity"),
        "rps" => Some("rps"),
        "cpu" => Some("cpu"),
        _ => None,
    }
}

/// A target as Java's `Integer.parseInt` reads it (no whitespace, no fraction), else 0.
pub fn integer_target(target: Option<&str>) -> i32 {
    target.and_then(|t| t.parse::<i32>().ok()).unwrap_or(0)
}

/// The gauges of every function, keyed by function then scaling type.
#[derive(Debug, Default)]
pub struct TargetLoadGauges {
    functions: Mutex<HashMap<String, BTreeMap<&'static str, i32>>>,
}

impl TargetLoadGauges {
    /// Replaces the gauges of `function` with those of its scaling `metrics`. Null metrics,
    /// metrics without a type and types that do not map are skipped; a later metric of the same
    /// type wins.
    pub fn register(&self, function: &str, metrics: &[Option<ScalingMetric>]) {
        let mut gauges = BTreeMap::new();
        for m in metrics.iter().flatten() {
            if let Some(kind) = m.kind.as_deref().and_then(scaling_type) {
                gauges.insert(kind, integer_target(m.target.as_deref()));
            }
        }
        let mut all = lock(&self.functions);
        if gauges.is_empty() {
            all.remove(function);
        } else {
            all.insert(function.to_owned(), gauges);
        }
    }

    pub fn remove(&self, function: &str) {
        lock(&self.functions).remove(function);
    }

    /// The value of one gauge, if it exists.
    #[cfg(test)]
    pub fn get(&self, function: &str, scaling_type: &str) -> Option<i32> {
        lock(&self.functions)
            .get(function)
            .and_then(|g| g.get(scaling_type).copied())
    }

    /// Every gauge (nothing when there is none), sorted by function then scaling type.
    pub fn render(&self, w: &mut MetricWriter) {
        let all = lock(&self.functions);
        if all.is_empty() {
            return;
        }
        let mut functions: Vec<_> = all.iter().collect();
        functions.sort_unstable_by_key(|(name, _)| name.as_str());
        let series = functions.into_iter().flat_map(|(function, gauges)| {
            gauges.iter().map(move |(kind, value)| {
                let labels = [("function", function.as_str()), ("scaling_type", *kind)];
                (labels, f64::from(*value))
            })
        });
        w.gauge(METRIC, "", series);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(g: &TargetLoadGauges) -> String {
        let mut w = MetricWriter::default();
        g.render(&mut w);
        w.finish()
    }

    /// The metrics of a `scalingConfig` JSON.
    fn scaling(json: &str) -> Vec<Option<ScalingMetric>> {
        let config: crate::function::ScalingConfigRequest = serde_json::from_str(json).unwrap();
        config.metrics.unwrap_or_default()
    }

    #[test]
    fn queue_rps_and_capacity_gauges_and_their_removal() {
        let g = TargetLoadGauges::default();
        g.register(
            "echo",
            &scaling(
                r#"{"metrics":[{"type":"queue_depth","target":"5"},{"type":"rps","target":"100"},
                    {"type":"in_flight","target":"3"}]}"#,
            ),
        );
        assert_eq!(g.get("echo", "queue"), Some(5));
        assert_eq!(g.get("echo", "rps"), Some(100));
        assert_eq!(g.get("echo", "capacity"), Some(3));
        let out = rendered(&g);
        assert_eq!(
            out,
            "# HELP gateway_service_target_load \n# TYPE gateway_service_target_load gauge\n\
             gateway_service_target_load{function=\"echo\",scaling_type=\"capacity\"} 3.0\n\
             gateway_service_target_load{function=\"echo\",scaling_type=\"queue\"} 5.0\n\
             gateway_service_target_load{function=\"echo\",scaling_type=\"rps\"} 100.0\n"
        );
        g.remove("echo");
        assert_eq!(g.get("echo", "queue"), None);
        let out = rendered(&g);
        assert_eq!(out, "");
    }

    #[test]
    fn non_integer_targets_are_zero_and_cpu_maps() {
        let g = TargetLoadGauges::default();
        g.register(
            "f",
            &scaling(
                r#"{"metrics":[{"type":"cpu","target":"80"},{"type":"queue_depth","target":"5.5"},
                    {"type":"rps","target":" 7"},{"type":"in_flight"}]}"#,
            ),
        );
        assert_eq!(g.get("f", "cpu"), Some(80));
        assert_eq!(g.get("f", "queue"), Some(0));
        assert_eq!(g.get("f", "rps"), Some(0));
        assert_eq!(g.get("f", "capacity"), Some(0));
        assert_eq!(integer_target(Some("-3")), -3);
        assert_eq!(integer_target(Some("99999999999")), 0);
    }

    #[test]
    fn invalid_inputs_are_ignored() {
        let g = TargetLoadGauges::default();
        g.register("none", &[]);
        g.register("empty", &scaling(r#"{"metrics":[]}"#));
        g.register(
            "odd",
            &scaling(
                r#"{"metrics":[null,{"target":"5"},{"type":"memory","target":"5"},
                    {"type":"prometheus","target":"5"}]}"#,
            ),
        );
        let out = rendered(&g);
        assert_eq!(out, "");
        // Re-registration replaces the previous gauges.
        g.register(
            "f",
            &scaling(r#"{"metrics":[{"type":"rps","target":"1"}]}"#),
        );
        g.register(
            "f",
            &scaling(r#"{"metrics":[{"type":"cpu","target":"2"}]}"#),
        );
        assert_eq!(g.get("f", "rps"), None);
        assert_eq!(g.get("f", "cpu"), Some(2));
    }
}
