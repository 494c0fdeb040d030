//! A registered function: its resolved spec, how it runs, where its invocations go, and the
//! per-function state that travels with the registration (meters, store share).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::deploy::ReplicaSet;
use crate::function::{ExecutionMode, FunctionResponse, FunctionSpec};
use crate::metrics::{FunctionMetrics, Metrics};
use crate::support::net_policy::redact_userinfo;

/// A registered function: its resolved spec with the effective endpoint written in, and how it runs.
#[derive(Debug)]
pub struct RegisteredFunction {
    pub spec: FunctionSpec,
    pub requested_mode: ExecutionMode,
    pub effective_mode: ExecutionMode,
    pub deployment_backend: Option<&'static str>,
    pub degradation_reason: Option<String>,
    /// Where POOL / DEPLOYMENT invocations go; `None` when no endpoint is known.
    pub endpoint: Option<Endpoint>,
    /// Per-function metric handles, created on first use (REFERENCE §7.1).
    pub metrics: OnceLock<Arc<FunctionMetrics>>,
    /// What this registration's in-flight executions hold in the execution store.
    pub store_share: StoreShare,
}

/// A function's in-flight records and their bytes in the execution store, kept by the store
/// (under its lock; atomics only so the registration can be shared) so that one function cannot
/// fill the store for every other (issue 10, defect 9). Kept here rather than in a map of the
/// store: the record already points at its function, so no lookup is added to the invoke path.
#[derive(Debug, Default)]
pub struct StoreShare {
    records: AtomicUsize,
    bytes: AtomicUsize,
}

impl StoreShare {
    /// (records, bytes) in flight.
    pub fn get(&self) -> (usize, usize) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Only the execution store calls these, under its lock, so plain loads and stores suffice.
    pub fn add(&self, bytes: usize) {
        let (r, b) = self.get();
        self.records.store(r + 1, Ordering::Relaxed);
        self.bytes.store(b + bytes, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        let (r, b) = self.get();
        self.records.store(r.saturating_sub(1), Ordering::Relaxed);
        self.bytes.store(b.saturating_sub(bytes), Ordering::Relaxed);
    }
}

impl RegisteredFunction {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn response(&self) -> FunctionResponse<'_> {
        let s = &self.spec;
        FunctionResponse {
            name: &s.name,
            image: &s.image,
            command: &s.command,
            env: &s.env,
            resources: s.resources.as_ref(),
            timeout_ms: s.timeout_ms,
            concurrency: s.concurrency,
            queue_size: s.queue_size,
            max_retries: s.max_retries,
            endpoint_url: s.endpoint_url.as_deref(),
            requested_execution_mode: self.requested_mode,
            effective_execution_mode: self.effective_mode,
            deployment_backend: self.deployment_backend,
            degradation_reason: self.degradation_reason.as_deref(),
            runtime_mode: s.runtime_mode,
            runtime_command: s.runtime_command.as_deref(),
            scaling_config: s.scaling.to_request(),
            image_pull_secrets: s.image_pull_secrets.as_deref(),
        }
    }

    /// The response as the shared catalog records it: like [`Self::response`], but with the
    /// endpoint's credentials, which the shown (masked) `endpointUrl` no longer has, so that a
    /// replica adopting the record calls the runtime the way this one does.
    pub fn catalog_response(&self) -> FunctionResponse<'_> {
        let mut response = self.response();
        if let Some(Endpoint::Fixed(url)) = &self.endpoint {
            if !url.username().is_empty() || url.password().is_some() {
                response.endpoint_url = Some(url.as_str());
            }
        }
        response
    }

    /// The function's meters, created on first use and cached on the registration.
    pub fn meters(&self, metrics: &Metrics) -> &FunctionMetrics {
        self.metrics
            .get_or_init(|| metrics.function_meters(self.name()))
    }

    /// Managed = runs on a deployment backend the control plane drives.
    pub fn is_managed(&self) -> bool {
        self.effective_mode == ExecutionMode::Deployment && self.deployment_backend.is_some()
    }
}

/// The target of a function's invocations.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// One URL (POOL, or a backend that balances behind a service).
    Fixed(reqwest::Url),
    /// Replicas the control plane balances over itself.
    Replicas(Arc<dyn ReplicaSet>),
}

impl Endpoint {
    /// Where `spec`'s invocations go: the backend's replicas, else its `endpointUrl`. From here on
    /// only the dispatcher's copy holds the URL's credentials; the spec's (shown, maybe logged)
    /// is masked.
    pub fn take(
        spec: &mut FunctionSpec,
        replicas: Option<Arc<dyn ReplicaSet>>,
    ) -> Option<Endpoint> {
        let endpoint = match replicas {
            Some(set) => Some(Endpoint::Replicas(set)),
            None => spec
                .endpoint_url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u.trim()).ok())
                .map(Endpoint::Fixed),
        };
        if let Some(masked) = spec.endpoint_url.as_deref().and_then(redact_userinfo) {
            spec.endpoint_url = Some(masked);
        }
        endpoint
    }
}
