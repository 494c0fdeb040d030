//! The internal autoscaler (REFERENCE §5.3), on when `NANOFAAS_AUTOSCALER_ENABLED=true`.
//!
//! Every `nanofaas.scaling.poll-interval-ms` (first run one interval after start) each managed
//! function with strategy INTERNAL is looked at: ready replicas come from its deployment backend,
//! load from its queue (`queue_depth` = queued, `in_flight` = slots held) and its dispatch counter
//! (`rps` = dispatches per second since the previous tick). [`policy`] decides; the loop scales
//! through [`FunctionRegistry::set_replicas`] (serialised with register/delete) and pushes the effective
//! concurrency and controller gauges into the queue. Functions are handled concurrently; a
//! failure on one is logged and changes nothing for the others.
//!
//! Invariants: per-function state (cooldowns, adaptive controller, rps sample) exists only for
//! registered functions: it is dropped on delete and never written back for a function that was
//! deleted (or replaced) while its tick ran. A cooldown starts only once the scaling succeeded.
//! Also owns the `gateway_service_target_load` gauges ([`target_load`]).

pub mod policy;
pub mod target_load;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::AutoscalerConfig;
use crate::deploy::BoxFuture;
use crate::function::{ConcurrencyControlMode, ScalingStrategy};
use crate::metrics::{MetricWriter, MetricsSection};
use crate::queue::QueueManager;
use crate::registry::{FunctionLifecycle, FunctionRegistry, RegisteredFunction, RegistryError};
use crate::support::lock;
use policy::{AdaptiveState, Bounds, Cooldowns, LoadSignal, MetricKind, PolicyConfig, Scale};
use target_load::TargetLoadGauges;

/// What the autoscaler reads from and pushes into a function's queue.
pub trait QueueControl: Send + Sync {
    /// (queued, in flight).
    fn load(&self, name: &str) -> (usize, u32);
    fn set_effective_concurrency(&self, name: &str, value: u32);
    fn set_controller(&self, name: &str, mode: ConcurrencyControlMode, target: u32);
}

impl QueueControl for QueueManager {
    fn load(&self, name: &str) -> (usize, u32) {
        QueueManager::load(self, name)
    }
    fn set_effective_concurrency(&self, name: &str, value: u32) {
        QueueManager::set_effective_concurrency(self, name, value);
    }
    fn set_controller(&self, name: &str, mode: ConcurrencyControlMode, target: u32) {
        QueueManager::set_controller(self, name, mode, target);
    }
}

/// With shared state (several control-plane replicas), scaling happens on one replica at a
/// time: the elected leader (docs/ha.md, guarantee 8). The loop ticks only while `is_leader`, and
/// each scaling call is preceded by `confirm`, which checks the lease against the shared store
/// (a replica that lost the lease without noticing makes no call).
pub trait LeaderGate: Send + Sync {
    fn is_leader(&self) -> bool;
    fn confirm(&self) -> BoxFuture<'_, bool>;
}

/// Everything the autoscaler remembers about one function between ticks.
#[derive(Debug, Clone, Copy, Default)]
struct FunctionState {
    cooldowns: Cooldowns,
    adaptive: Option<AdaptiveState>,
    /// (when, `function_dispatch_total`) at the previous tick.
    rps_sample: Option<(Instant, u64)>,
}

/// What one tick decided for one function (logged at debug level).
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// Not managed, or strategy HPA / NONE.
    Skipped,
    Evaluated {
        ready: u32,
        max_ratio: f64,
        desired: u32,
        /// The replica count set this tick, if any.
        scaled_to: Option<u32>,
        effective_concurrency: u32,
    },
}

pub struct Autoscaler {
    registry: Arc<FunctionRegistry>,
    queue: Arc<dyn QueueControl>,
    policy: PolicyConfig,
    poll_interval: Duration,
    state: Mutex<HashMap<String, FunctionState>>,
    target_load: TargetLoadGauges,
    /// `None` = a single control plane: always acts.
    leader: OnceLock<Arc<dyn LeaderGate>>,
}

impl Autoscaler {
    pub fn new(
        registry: Arc<FunctionRegistry>,
        queue: Arc<dyn QueueControl>,
        settings: &AutoscalerConfig,
    ) -> Self {
        Autoscaler {
            registry,
            queue,
            policy: PolicyConfig {
                scale_up_cooldown: settings.scale_up_cooldown,
                scale_down_cooldown: settings.scale_down_cooldown,
            },
            poll_interval: settings.poll_interval,
            state: Mutex::default(),
            target_load: TargetLoadGauges::default(),
            leader: OnceLock::new(),
        }
    }

    /// Acts only while `gate` says this replica leads (set once, at build, with shared state).
    pub fn set_leader_gate(&self, gate: Arc<dyn LeaderGate>) {
        if self.leader.set(gate).is_err() {
            tracing::warn!("a leader gate was already set; keeping the first");
        }
    }

    pub fn target_load(&self) -> &TargetLoadGauges {
        &self.target_load
    }

    /// Starts the loop on the current runtime.
    pub fn spawn(self: Arc<Self>) -> AutoscalerTask {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(self.run(stop.clone()));
        AutoscalerTask { stop, handle }
    }

    /// Ticks every poll interval, the first one interval from now, until `stop` is cancelled.
    /// A tick that has started runs to its end (a scaling step is never cut in half).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let period = self.poll_interval;
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(
            poll_ms = period.as_millis() as u64,
            "internal autoscaler started"
        );
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = interval.tick() => self.tick().await,
            }
        }
    }

    /// One pass over every registered function; each decision is logged.
    async fn tick(&self) {
        if let Some(gate) = self.leader.get() {
            if !gate.is_leader() {
                // A follower keeps no history: when it becomes leader, rates and cooldowns
                // start afresh instead of from samples taken long ago.
                lock(&self.state).clear();
                return;
            }
        }
        for (function, result) in self.evaluate_all().await {
            match result {
                Ok(evaluation) => tracing::debug!(function, ?evaluation, "autoscaler"),
                Err(error) => {
                    tracing::warn!(function, error, "autoscaler: function skipped this tick")
                }
            }
        }
    }

    /// Evaluates every registered function, concurrently.
    pub(crate) async fn evaluate_all(&self) -> Vec<(String, Result<Evaluation, String>)> {
        let functions = self.registry.list();
        let runs = functions.into_iter().map(|f| async move {
            let name = f.name().to_owned();
            (name, self.evaluate(f).await)
        });
        futures_util::future::join_all(runs).await
    }

    /// Reads, decides and acts for one function.
    async fn evaluate(&self, function: Arc<RegisteredFunction>) -> Result<Evaluation, String> {
        let spec = &function.spec;
        let Some(scaling) = spec.scaling.resolved() else {
            return Ok(Evaluation::Skipped);
        };
        if !function.is_managed() || scaling.strategy != ScalingStrategy::Internal {
            return Ok(Evaluation::Skipped);
        }
        let name = function.name();
        let backend = function.deployment_backend.unwrap_or_default();
        let provider = self
            .registry
            .providers()
            .by_id(backend)
            .ok_or_else(|| format!("no deployment provider '{backend}'"))?;
        let ready = provider
            .ready_replicas(name)
            .await
            .map_err(|e| format!("reading ready replicas: {e}"))?;

        let now = Instant::now();
        let previous = lock(&self.state).get(name).copied().unwrap_or_default();
        let (queued, in_flight) = self.queue.load(name);
        let dispatched = function.metrics.get().map_or(0, |m| m.dispatch.get());
        let rps = match previous.rps_sample {
            Some((at, count)) => {
                let seconds = now.saturating_duration_since(at).as_secs_f64();
                if seconds > 0.0 {
                    dispatched.saturating_sub(count) as f64 / seconds
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let readings = scaling.metrics.iter().flatten().map(|m| {
            let value = match MetricKind::parse(m.kind.as_deref()) {
                MetricKind::QueueDepth => queued as f64,
                MetricKind::InFlight => f64::from(in_flight),
                MetricKind::Rps => rps,
                MetricKind::Unknown => {
                    tracing::warn!(function = name, kind = ?m.kind, "unknown scaling metric reads as 0");
                    0.0
                }
            };
            (value, m.target.as_deref())
        });
        let max_ratio = policy::max_ratio(readings);
        let bounds = Bounds::of(scaling);
        let decision = policy::decide_replicas(
            &self.policy,
            ready,
            bounds,
            max_ratio,
            previous.cooldowns,
            now,
        );

        let mut next = FunctionState {
            cooldowns: previous.cooldowns,
            adaptive: previous.adaptive,
            rps_sample: Some((now, dispatched)),
        };
        let mut replicas = decision.current;
        let mut scaled_to = None;
        let mut failure = None;
        if let Some(action) = decision.action {
            let target = action.replicas();
            let direction = match action {
                Scale::Up(_) => "up",
                Scale::Down(_) => "down",
            };
            if let Some(gate) = self.leader.get() {
                if !gate.confirm().await {
                    return Err("not the leader any more: no scaling".to_owned());
                }
            }
            match self.registry.set_replicas(name, target).await {
                Ok(_) => {
                    tracing::info!(
                        function = name,
                        from = decision.current,
                        to = target,
                        max_ratio,
                        "autoscaler scaled {direction}"
                    );
                    next.cooldowns = decision.cooldowns;
                    replicas = target;
                    scaled_to = Some(target);
                }
                Err(RegistryError::NotFound(_)) => return Ok(Evaluation::Skipped),
                Err(e) => failure = Some(format!("scaling {direction} to {target}: {e}")),
            }
        }

        let concurrency = policy::decide_concurrency(
            &scaling.concurrency_control,
            spec.concurrency,
            replicas,
            &LoadSignal::of(&decision, bounds),
            previous.adaptive,
            now,
        );
        next.adaptive = concurrency.adaptive;
        self.queue
            .set_effective_concurrency(name, concurrency.effective);
        self.queue
            .set_controller(name, concurrency.mode, concurrency.target);

        // Keep the state only while this very registration is still the registered one: a
        // function deleted (or deleted and registered again) meanwhile starts afresh.
        {
            let mut state = lock(&self.state);
            if self
                .registry
                .get(name)
                .is_some_and(|f| Arc::ptr_eq(&f, &function))
            {
                state.insert(name.to_owned(), next);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(Evaluation::Evaluated {
                ready,
                max_ratio,
                desired: decision.desired,
                scaled_to,
                effective_concurrency: concurrency.effective,
            }),
        }
    }

    #[cfg(test)]
    fn has_state(&self, name: &str) -> bool {
        lock(&self.state).contains_key(name)
    }
}

impl FunctionLifecycle for Autoscaler {
    fn on_register(&self, function: &Arc<RegisteredFunction>) -> Result<(), String> {
        lock(&self.state).remove(function.name());
        self.target_load
            .register(function.name(), function.spec.scaling.metrics());
        Ok(())
    }

    fn on_remove(&self, name: &str) {
        lock(&self.state).remove(name);
        self.target_load.remove(name);
    }
}

impl MetricsSection for Autoscaler {
    fn render(&self, w: &mut MetricWriter) {
        self.target_load.render(w);
    }
}

/// The running loop: cancel, then join.
pub struct AutoscalerTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl AutoscalerTask {
    /// Asks the loop to stop after the tick in progress, if any.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Stops the loop, waiting at most `limit` for a tick in progress.
    pub async fn join(mut self, limit: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(limit, &mut self.handle).await.is_err() {
            tracing::warn!("autoscaler tick did not finish in time; aborted");
            self.handle.abort();
        }
    }
}

#[cfg(test)]
mod tests;
