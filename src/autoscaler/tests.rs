//! The autoscaler loop against the real registry, an in-memory deployment backend and an
//! in-memory queue, on tokio's paused clock (no real sleeps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::*;
use crate::config::Config;
use crate::deploy::fake::FakeBackend;
use crate::deploy::{DeploymentProvider, Providers};
use crate::function::FunctionSpecRequest;
use crate::metrics::Metrics;

const POLL: Duration = Duration::from_secs(5);

/// Queue loads set by the test; what the autoscaler pushed is recorded.
#[derive(Default)]
struct FakeQueue {
    loads: Mutex<HashMap<String, (usize, u32)>>,
    effective: Mutex<HashMap<String, u32>>,
    controller: Mutex<HashMap<String, (ConcurrencyControlMode, u32)>>,
}

impl FakeQueue {
    fn set_load(&self, name: &str, queued: usize, in_flight: u32) {
        self.loads
            .lock()
            .unwrap()
            .insert(name.to_owned(), (queued, in_flight));
    }
    fn effective(&self, name: &str) -> Option<u32> {
        self.effective.lock().unwrap().get(name).copied()
    }
    fn controller(&self, name: &str) -> Option<(ConcurrencyControlMode, u32)> {
        self.controller.lock().unwrap().get(name).copied()
    }
}

impl QueueControl for FakeQueue {
    fn load(&self, name: &str) -> (usize, u32) {
        self.loads
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or((0, 0))
    }
    fn set_effective_concurrency(&self, name: &str, value: u32) {
        self.effective
            .lock()
            .unwrap()
            .insert(name.to_owned(), value);
    }
    fn set_controller(&self, name: &str, mode: ConcurrencyControlMode, target: u32) {
        self.controller
            .lock()
            .unwrap()
            .insert(name.to_owned(), (mode, target));
    }
}

struct Harness {
    registry: Arc<FunctionRegistry>,
    backend: Arc<FakeBackend>,
    queue: Arc<FakeQueue>,
    metrics: Arc<Metrics>,
    scaler: Arc<Autoscaler>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_cooldowns(Duration::from_secs(30), Duration::from_secs(60))
    }

    fn with_cooldowns(up: Duration, down: Duration) -> Harness {
        let config = Config::default();
        let backend = Arc::new(FakeBackend::default());
        let providers = Providers::new(vec![backend.clone() as Arc<dyn DeploymentProvider>], None);
        let registry = Arc::new(FunctionRegistry::new(
            config.defaults.clone(),
            None,
            Arc::default(),
            providers,
        ));
        let queue = Arc::new(FakeQueue::default());
        let mut settings = config.scaling.clone();
        settings.poll_interval = POLL;
        settings.scale_up_cooldown = up;
        settings.scale_down_cooldown = down;
        let scaler = Arc::new(Autoscaler::new(registry.clone(), queue.clone(), &settings));
        let metrics = Arc::new(Metrics::new());
        registry.add_listener(metrics.clone());
        registry.add_listener(scaler.clone());
        Harness {
            registry,
            backend,
            queue,
            metrics,
            scaler,
        }
    }

    async fn register(&self, spec: Value) -> Arc<RegisteredFunction> {
        let request: FunctionSpecRequest = serde_json::from_value(spec).unwrap();
        self.registry.register(request).await.unwrap()
    }

    /// A DEPLOYMENT function with the given scalingConfig and concurrency 100.
    async fn deployment(&self, name: &str, scaling: Value) -> Arc<RegisteredFunction> {
        self.register(
            json!({"name": name, "image": "img", "concurrency": 100, "scalingConfig": scaling}),
        )
        .await
    }

    async fn tick(&self) -> HashMap<String, Result<Evaluation, String>> {
        self.scaler.evaluate_all().await.into_iter().collect()
    }

    async fn outcome(&self, name: &str) -> Result<Evaluation, String> {
        self.tick().await.remove(name).expect("function evaluated")
    }
}

fn queue_depth(target: &str, min: u32, max: u32) -> Value {
    json!({"minReplicas": min, "maxReplicas": max, "metrics": [{"type": "queue_depth", "target": target}]})
}

fn scaled_to(outcome: &Result<Evaluation, String>) -> Option<u32> {
    match outcome {
        Ok(Evaluation::Evaluated { scaled_to, .. }) => *scaled_to,
        other => panic!("not evaluated: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn queue_depth_15_over_target_5_with_one_replica_scales_to_3() {
    let h = Harness::new();
    h.deployment("f", queue_depth("5", 1, 10)).await;
    h.queue.set_load("f", 15, 0);
    let outcome = h.outcome("f").await;
    assert_eq!(
        outcome,
        Ok(Evaluation::Evaluated {
            ready: 1,
            max_ratio: 3.0,
            desired: 3,
            scaled_to: Some(3),
            effective_concurrency: 100
        })
    );
    assert_eq!(h.backend.calls(), vec![("f".to_owned(), 3)]);
    assert_eq!(h.queue.effective("f"), Some(100));
    assert_eq!(
        h.queue.controller("f"),
        Some((ConcurrencyControlMode::Fixed, 0))
    );
}

#[tokio::test(start_paused = true)]
async fn ratio_of_one_changes_nothing_and_max_clamps() {
    let h = Harness::new();
    h.deployment("steady", queue_depth("5", 1, 10)).await;
    h.backend.set("steady", 2);
    h.queue.set_load("steady", 5, 0);
    h.deployment("capped", queue_depth("1", 1, 4)).await;
    h.queue.set_load("capped", 50, 0);
    let out = h.tick().await;
    assert_eq!(scaled_to(&out["steady"]), None);
    assert_eq!(scaled_to(&out["capped"]), Some(4));
    assert_eq!(h.backend.calls(), vec![("capped".to_owned(), 4)]);
}

#[tokio::test(start_paused = true)]
async fn hpa_none_and_unmanaged_functions_are_ignored() {
    let h = Harness::new();
    h.deployment(
        "hpa",
        json!({"strategy": "HPA", "metrics": [{"type": "cpu", "target": "80"}]}),
    )
    .await;
    h.deployment("none", json!({"strategy": "NONE"})).await;
    h.register(
        json!({"name": "pool", "image": "img", "executionMode": "POOL",
                      "endpointUrl": "http://runtime:8080/invoke"}),
    )
    .await;
    h.register(json!({"name": "local", "image": "img", "executionMode": "LOCAL"}))
        .await;
    for name in ["hpa", "none", "pool", "local"] {
        h.queue.set_load(name, 1000, 1000);
    }
    let out = h.tick().await;
    for name in ["hpa", "none", "pool", "local"] {
        assert_eq!(out[name], Ok(Evaluation::Skipped), "{name}");
        assert_eq!(h.queue.effective(name), None, "{name}");
    }
    assert!(h.backend.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn scale_up_waits_for_its_cooldown() {
    let h = Harness::new();
    h.deployment("f", queue_depth("1", 1, 10)).await;
    h.queue.set_load("f", 2, 0);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(2));
    h.queue.set_load("f", 8, 0);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), None, "within 30 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        scaled_to(&h.outcome("f").await),
        Some(10),
        "8 × 2 clamped to 10"
    );
    // A scale-down is not held back by the recent scale-up.
    h.queue.set_load("f", 0, 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), Some(1));
}

#[tokio::test(start_paused = true)]
async fn scale_down_waits_for_its_cooldown() {
    let h = Harness::new();
    h.deployment("f", queue_depth("10", 1, 10)).await;
    h.backend.set("f", 8);
    h.queue.set_load("f", 5, 0);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(4), "0.5 × 8");
    h.queue.set_load("f", 1, 0);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), None, "within 60 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), Some(1));
}

#[tokio::test(start_paused = true)]
async fn cooldowns_come_from_the_configuration() {
    let h = Harness::with_cooldowns(Duration::from_secs(1), Duration::from_secs(1));
    h.deployment("f", queue_depth("1", 1, 10)).await;
    h.queue.set_load("f", 2, 0);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(2));
    h.queue.set_load("f", 4, 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), Some(8));
}

#[tokio::test(start_paused = true)]
async fn scale_to_zero_and_back_from_zero() {
    let h = Harness::new();
    h.deployment("f", queue_depth("2", 0, 10)).await;
    h.backend.set("f", 2);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(0));
    assert_eq!(h.backend.replicas("f"), 0);
    // From zero, a ratio of exactly 1 does not scale up…
    h.queue.set_load("f", 2, 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), None);
    // …4 over 2 does.
    h.queue.set_load("f", 4, 0);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(2));
}

#[tokio::test(start_paused = true)]
async fn blank_and_invalid_targets_read_as_50_and_the_largest_ratio_wins() {
    let h = Harness::new();
    h.deployment(
        "blank",
        json!({"maxReplicas": 10, "metrics": [{"type": "queue_depth", "target": " "}]}),
    )
    .await;
    h.deployment(
        "invalid",
        json!({"maxReplicas": 10, "metrics": [{"type": "queue_depth", "target": "lots"}]}),
    )
    .await;
    h.deployment(
        "null",
        json!({"maxReplicas": 10, "metrics": [{"type": "queue_depth"}]}),
    )
    .await;
    h.deployment(
        "multi",
        json!({"maxReplicas": 10, "metrics": [
            {"type": "queue_depth", "target": "10"},
            {"type": "in_flight", "target": "2"},
            {"type": "queue_depth", "target": "0"}
        ]}),
    )
    .await;
    for name in ["blank", "invalid", "null"] {
        h.queue.set_load(name, 100, 0);
    }
    h.queue.set_load("multi", 10, 6);
    let out = h.tick().await;
    for name in ["blank", "invalid", "null"] {
        assert_eq!(scaled_to(&out[name]), Some(2), "{name}: 100 / 50");
    }
    assert_eq!(scaled_to(&out["multi"]), Some(3), "max(10/10, 6/2)");
}

#[tokio::test(start_paused = true)]
async fn rps_is_the_dispatch_rate_since_the_previous_tick() {
    let h = Harness::new();
    let f = h
        .deployment(
            "f",
            json!({"maxReplicas": 10, "metrics": [{"type": "rps", "target": "1"}]}),
        )
        .await;
    let meters = f.meters(&h.metrics);
    meters.dispatch.inc_by(7);
    // First read: no rate yet.
    let first = h.outcome("f").await;
    assert!(matches!(first, Ok(Evaluation::Evaluated { max_ratio, .. }) if max_ratio == 0.0));
    meters.dispatch.inc_by(10);
    tokio::time::advance(Duration::from_secs(5)).await;
    match h.outcome("f").await {
        Ok(Evaluation::Evaluated {
            max_ratio,
            scaled_to,
            ..
        }) => {
            assert!((max_ratio - 2.0).abs() < 1e-9, "{max_ratio}");
            assert_eq!(scaled_to, Some(2));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_function_does_not_stop_the_others() {
    let h = Harness::new();
    h.deployment("unreachable", queue_depth("1", 1, 10)).await;
    h.deployment("refused", queue_depth("1", 1, 10)).await;
    h.deployment("good", queue_depth("1", 1, 10)).await;
    for name in ["unreachable", "refused", "good"] {
        h.queue.set_load(name, 3, 0);
    }
    h.backend
        .failing_reads
        .lock()
        .unwrap()
        .insert("unreachable".into());
    h.backend
        .failing_sets
        .lock()
        .unwrap()
        .insert("refused".into());
    let out = h.tick().await;
    assert!(
        out["unreachable"]
            .as_ref()
            .is_err_and(|e| e.contains("backend unreachable"))
    );
    assert!(
        out["refused"]
            .as_ref()
            .is_err_and(|e| e.contains("engine said no"))
    );
    assert_eq!(scaled_to(&out["good"]), Some(3));
    // The refused function still gets its concurrency for the replicas it has.
    assert_eq!(h.queue.effective("refused"), Some(100));
    // A failed scaling starts no cooldown: the next tick tries again.
    h.backend.failing_sets.lock().unwrap().clear();
    h.backend.failing_reads.lock().unwrap().clear();
    tokio::time::advance(Duration::from_secs(1)).await;
    let out = h.tick().await;
    assert_eq!(scaled_to(&out["refused"]), Some(3));
    assert_eq!(scaled_to(&out["unreachable"]), Some(3));
    assert_eq!(scaled_to(&out["good"]), None);
}

#[tokio::test(start_paused = true)]
async fn static_per_pod_sets_replicas_times_target_and_the_target_gauge() {
    let h = Harness::new();
    h.deployment(
        "f",
        json!({"maxReplicas": 10, "metrics": [{"type": "queue_depth", "target": "5"}],
               "concurrencyControl": {"mode": "STATIC_PER_POD", "targetInFlightPerPod": 4}}),
    )
    .await;
    h.backend.set("f", 3);
    h.queue.set_load("f", 5, 0);
    let out = h.outcome("f").await;
    assert_eq!(scaled_to(&out), None);
    assert_eq!(h.queue.effective("f"), Some(12));
    assert_eq!(
        h.queue.controller("f"),
        Some((ConcurrencyControlMode::StaticPerPod, 4))
    );
    // After a scale-up the new replica count is used.
    h.queue.set_load("f", 10, 0);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(6));
    assert_eq!(h.queue.effective("f"), Some(24));
}

#[tokio::test(start_paused = true)]
async fn adaptive_per_pod_lowers_the_target_when_hot_at_max_replicas() {
    let h = Harness::new();
    h.deployment(
        "f",
        json!({"maxReplicas": 4, "metrics": [{"type": "in_flight", "target": "10"}],
               "concurrencyControl": {"mode": "ADAPTIVE_PER_POD", "targetInFlightPerPod": 4}}),
    )
    .await;
    h.backend.set("f", 4);
    h.queue.set_load("f", 0, 40);
    let out = h.outcome("f").await;
    assert_eq!(scaled_to(&out), None);
    assert_eq!(h.queue.effective("f"), Some(12));
    assert_eq!(
        h.queue.controller("f"),
        Some((ConcurrencyControlMode::AdaptivePerPod, 3))
    );
    // The state is per function and kept between ticks: still 3 within the cooldown.
    tokio::time::advance(Duration::from_secs(10)).await;
    h.outcome("f").await.unwrap();
    assert_eq!(
        h.queue.controller("f"),
        Some((ConcurrencyControlMode::AdaptivePerPod, 3))
    );
}

#[tokio::test(start_paused = true)]
async fn removal_drops_cooldowns_state_and_target_load_gauges() {
    let h = Harness::new();
    h.deployment("f", queue_depth("1", 1, 10)).await;
    h.queue.set_load("f", 2, 0);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(2));
    assert!(h.scaler.has_state("f"));
    assert_eq!(h.scaler.target_load().get("f", "queue"), Some(1));
    h.registry.remove("f").await.unwrap();
    assert!(!h.scaler.has_state("f"));
    assert_eq!(h.scaler.target_load().get("f", "queue"), None);
    // Registered again: no scale-up cooldown carried over.
    h.deployment("f", queue_depth("1", 1, 10)).await;
    assert_eq!(scaled_to(&h.outcome("f").await), Some(2));
}

#[tokio::test(start_paused = true)]
async fn state_of_a_function_deleted_during_its_tick_is_not_kept() {
    let h = Harness::new();
    h.deployment("f", queue_depth("5", 1, 10)).await;
    let gate = Arc::new(Notify::new());
    *h.backend.gate.lock().unwrap() = Some(gate.clone());
    let scaler = h.scaler.clone();
    let tick = tokio::spawn(async move { scaler.tick().await });
    tokio::task::yield_now().await;
    *h.backend.gate.lock().unwrap() = None;
    h.registry.remove("f").await.unwrap();
    gate.notify_one();
    tick.await.unwrap();
    assert!(!h.scaler.has_state("f"));
}

#[tokio::test(start_paused = true)]
async fn target_load_gauges_exist_for_any_function_with_metrics() {
    let h = Harness::new();
    h.register(json!({"name": "pool", "image": "img", "executionMode": "POOL",
                      "endpointUrl": "http://runtime:8080/invoke",
                      "scalingConfig": {"strategy": "HPA",
                          "metrics": [{"type": "cpu", "target": "75"}, {"type": "rps", "target": "2.5"}]}}))
        .await;
    h.deployment("dep", queue_depth("5", 1, 10)).await;
    let mut w = MetricWriter::default();
    MetricsSection::render(&*h.scaler, &mut w);
    let out = w.finish();
    assert!(
        out.contains("gateway_service_target_load{function=\"pool\",scaling_type=\"cpu\"} 75.0\n")
    );
    assert!(
        out.contains("gateway_service_target_load{function=\"pool\",scaling_type=\"rps\"} 0.0\n")
    );
    assert!(
        out.contains("gateway_service_target_load{function=\"dep\",scaling_type=\"queue\"} 5.0\n")
    );
}

#[tokio::test(start_paused = true)]
async fn the_loop_ticks_after_each_interval_and_stops_when_cancelled() {
    let h = Harness::new();
    h.deployment("f", queue_depth("1", 1, 10)).await;
    h.queue.set_load("f", 2, 0);
    let task = h.scaler.clone().spawn();
    tokio::time::sleep(POLL - Duration::from_millis(1)).await;
    assert!(h.backend.calls().is_empty(), "no tick before one interval");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(h.backend.calls(), vec![("f".to_owned(), 2)]);
    h.queue.set_load("f", 8, 0);
    tokio::time::sleep(POLL).await;
    assert_eq!(h.backend.calls().len(), 1, "scale-up cooldown");
    task.join(Duration::from_secs(1)).await;
    h.queue.set_load("f", 0, 0);
    tokio::time::sleep(POLL * 20).await;
    assert_eq!(h.backend.calls().len(), 1, "stopped");
}

/// A leader gate the test flips; counts confirmations.
#[derive(Default)]
struct FakeGate {
    leader: std::sync::atomic::AtomicBool,
    confirms: std::sync::atomic::AtomicBool,
    asked: std::sync::atomic::AtomicU32,
}

impl LeaderGate for FakeGate {
    fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn confirm(&self) -> BoxFuture<'_, bool> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ok = self.confirms.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { ok })
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_confirmed_leader_scales() {
    use std::sync::atomic::Ordering::SeqCst;
    let h = Harness::new();
    let gate = Arc::new(FakeGate::default());
    h.scaler.set_leader_gate(gate.clone());
    h.deployment("f", queue_depth("5", 1, 10)).await;
    h.queue.set_load("f", 15, 0);

    // A follower's tick does nothing at all.
    h.scaler.tick().await;
    assert!(h.backend.calls().is_empty());
    assert_eq!(gate.asked.load(SeqCst), 0);

    // A leader whose lease check fails (taken over meanwhile) makes no scaling call.
    gate.leader.store(true, SeqCst);
    let outcome = h.outcome("f").await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(h.backend.calls().is_empty());
    assert_eq!(gate.asked.load(SeqCst), 1);

    // Confirmed: it scales.
    gate.confirms.store(true, SeqCst);
    assert_eq!(scaled_to(&h.outcome("f").await), Some(3));
    assert_eq!(h.backend.calls(), vec![("f".to_owned(), 3)]);
}
