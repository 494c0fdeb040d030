use std::time::Duration;

use super::timer::{BUCKETS, bucket_of, bucket_value};
use super::*;

#[test]
fn buckets_are_monotonic_and_close() {
    let mut last = 0;
    for v in [
        0u64, 1, 15, 16, 17, 31, 32, 100, 1000, 12_345, 1_000_000, 60_000_000,
    ] {
        let b = bucket_of(v);
        assert!(b >= last, "{v}");
        last = b;
        let rep = bucket_value(b);
        let err = (rep - v as f64).abs() / (v.max(1) as f64);
        assert!(err <= 0.07 || v < 16, "{v} -> {rep}");
    }
    assert!(bucket_of(u64::MAX) < BUCKETS);
}

#[test]
fn timer_reports_count_sum_quantiles_and_max() {
    let t = Timer::default();
    for ms in 1..=100u64 {
        t.record(Duration::from_millis(ms));
    }
    let s = t.snapshot();
    assert_eq!(s.count, 100);
    assert!((s.sum_seconds - 5.05).abs() < 1e-9);
    assert!((s.quantiles[0] - 0.050).abs() < 0.004, "{s:?}");
    assert!((s.quantiles[2] - 0.099).abs() < 0.007, "{s:?}");
    assert!((s.max_seconds - 0.100).abs() < 1e-9);
}

#[test]
fn the_writer_prints_the_prometheus_text_of_each_kind() {
    let mut w = MetricWriter::default();
    w.counter("c_total", "Things.", [([("function", "a\"b\\c\nd")], 3)]);
    w.counter(
        "empty_total",
        "Never written.",
        Vec::<(Labels<1>, u64)>::new(),
    );
    w.gauge("i", "Ints.", [([], -2i64)]);
    w.gauge(
        "f",
        "",
        [
            ([("k", "x"), ("m", "y")], 1.0),
            ([("k", "z"), ("m", "y")], 0.25),
            ([("k", "w"), ("m", "y")], f64::INFINITY),
        ],
    );
    let t = TimerSnapshot {
        count: 2,
        sum_seconds: 0.5,
        quantiles: [0.1, 0.2, 3.0],
        max_seconds: 0.4,
    };
    w.summary("s_seconds", &[([("function", "a")], t)]);
    w.summary("u_seconds", &[([], t)]);
    w.summary::<1>("none_seconds", &[]);
    assert_eq!(
        w.finish(),
        "# HELP c_total Things.\n# TYPE c_total counter\n\
         c_total{function=\"a\\\"b\\\\c\\nd\"} 3\n\
         # HELP i Ints.\n# TYPE i gauge\ni -2\n\
         # HELP f \n# TYPE f gauge\n\
         f{k=\"x\",m=\"y\"} 1.0\nf{k=\"z\",m=\"y\"} 0.25\nf{k=\"w\",m=\"y\"} +Inf\n\
         # HELP s_seconds \n# TYPE s_seconds summary\n\
         s_seconds{function=\"a\",quantile=\"0.5\"} 0.1\n\
         s_seconds{function=\"a\",quantile=\"0.95\"} 0.2\n\
         s_seconds{function=\"a\",quantile=\"0.99\"} 3.0\n\
         s_seconds_count{function=\"a\"} 2\ns_seconds_sum{function=\"a\"} 0.5\n\
         # HELP s_seconds_max \n# TYPE s_seconds_max gauge\n\
         s_seconds_max{function=\"a\"} 0.4\n\
         # HELP u_seconds \n# TYPE u_seconds summary\n\
         u_seconds{quantile=\"0.5\"} 0.1\nu_seconds{quantile=\"0.95\"} 0.2\n\
         u_seconds{quantile=\"0.99\"} 3.0\nu_seconds_count 2\nu_seconds_sum 0.5\n\
         # HELP u_seconds_max \n# TYPE u_seconds_max gauge\nu_seconds_max 0.4\n"
    );
}

#[test]
fn deleted_functions_lose_their_series_and_get_detached_meters() {
    let metrics = Metrics::new();
    metrics.function_meters("f").dispatch.inc();
    metrics.sync_queue("f").admitted.inc();
    let _untouched = metrics.sync_queue("g");
    let text = metrics.render();
    assert!(
        text.contains("function_dispatch_total{function=\"f\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("sync_queue_admitted_total{function=\"f\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("sync_queue_rejected_total"), "{text}");
    assert!(!text.contains("function=\"g\""), "{text}");

    metrics.function_removed("f");
    // A late event of the deleted function changes nothing visible.
    metrics.function_meters("f").dispatch.inc();
    metrics.sync_queue("f").admitted.inc();
    let text = metrics.render();
    assert!(!text.contains("function=\"f\""), "{text}");
    assert!(!text.contains("function_dispatch_total"), "{text}");
}
