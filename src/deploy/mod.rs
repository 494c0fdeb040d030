//! Managed deployment backends (DEPLOYMENT mode): the provider trait the registry talks to, and
//! provider selection (REFERENCE §2.4). Backends themselves (Kubernetes, local containers) live in
//! submodules and are chosen at start-up from `NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND`.

pub mod container_local;
#[cfg(test)]
pub(crate) mod fake;
pub mod kubernetes;
pub mod runtime_env;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::DeploymentBackend;
use crate::function::FunctionSpec;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend operation returns.
pub type DeployFuture<'a, T> = BoxFuture<'a, Result<T, DeployError>>;

/// `text` as a DNS-label-safe word: lower-case, every character outside `[a-z0-9]` becomes `-`,
/// runs of `-` collapse and leading/trailing `-` go (may be empty).
pub fn dns_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches('-').to_owned()
}

/// Replicas a provider balances invocations over itself (container-local), so the dispatcher
/// calls a replica directly instead of going through a proxy.
pub trait ReplicaSet: Send + Sync + std::fmt::Debug {
    /// The next ready replica's invoke URL, round-robin; `None` when none is ready.
    fn pick(&self) -> Option<reqwest::Url>;
}

/// Where a provisioned function is invoked.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The URL shown as `endpointUrl`.
    pub endpoint_url: String,
    /// Set when the provider balances over its replicas itself.
    pub replicas: Option<Arc<dyn ReplicaSet>>,
}

/// Failures of a deployment backend, each mapped to one HTTP status at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// No usable backend, or the backend cannot be reached: the function may degrade to POOL
    /// (registration) or the request is answered 503.
    #[error("{0}")]
    Unavailable(String),
    /// The backend refused or failed the operation.
    #[error("{0}")]
    Failed(String),
    /// Image validation (REFERENCE §5.5): 422 IMAGE_NOT_FOUND.
    #[error("{0}")]
    ImageNotFound(String),
    /// Image validation: 424 IMAGE_PULL_AUTH_REQUIRED.
    #[error("{0}")]
    ImagePullAuthRequired(String),
    /// Image validation: 503 IMAGE_REGISTRY_UNAVAILABLE.
    #[error("{0}")]
    ImageRegistryUnavailable(String),
    /// The function would share the backend's resources with another function (e.g. both
    /// names derive the same Kubernetes name): 409.
    #[error("{0}")]
    Conflict(String),
}

/// A backend that runs DEPLOYMENT functions. Every method may do I/O and is awaited off the
/// registry's locks.
pub trait DeploymentProvider: Send + Sync + 'static {
    /// `k8s` or `container-local`.
    fn id(&self) -> &'static str;
    fn is_available(&self) -> BoxFuture<'_, bool>;
    fn supports(&self, spec: &FunctionSpec) -> bool;
    /// Checks that the image can be run (REFERENCE §5.5); the default accepts everything.
    fn validate_image<'a>(&'a self, _spec: &'a FunctionSpec) -> DeployFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Creates or updates the function's runtime; says where invocations are sent.
    fn provision<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned>;
    fn deprovision<'a>(&'a self, name: &'a str) -> DeployFuture<'a, ()>;
    fn set_replicas<'a>(&'a self, name: &'a str, replicas: u32) -> DeployFuture<'a, ()>;
    fn ready_replicas<'a>(&'a self, name: &'a str) -> DeployFuture<'a, u32>;
    /// Takes over a function another replica provisioned (shared state, docs/ha.md): finds its
    /// runtime and says where invocations go, creating nothing. Called again when another
    /// replica scaled it. The default: the backend cannot find runtimes (the recorded endpoint
    /// is used).
    fn adopt<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(async move {
            Err(DeployError::Unavailable(format!(
                "backend '{}' cannot adopt function '{}'",
                self.id(),
                spec.name
            )))
        })
    }
    /// Forgets a function another replica deprovisioned, touching nothing on the backend.
    fn forget(&self, _name: &str) {}
    /// Runs once before the control plane serves (e.g. removes orphans of an earlier run).
    fn start(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Runs once on graceful shutdown.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The configured providers and the selection rule of REFERENCE §2.4.
#[derive(Clone, Default)]
pub struct Providers {
    providers: Vec<Arc<dyn DeploymentProvider>>,
    default_backend: Option<DeploymentBackend>,
}

impl Providers {
    pub fn new(
        providers: Vec<Arc<dyn DeploymentProvider>>,
        default_backend: Option<DeploymentBackend>,
    ) -> Self {
        Providers {
            providers,
            default_backend,
        }
    }

    pub fn all(&self) -> &[Arc<dyn DeploymentProvider>] {
        &self.providers
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<dyn DeploymentProvider>> {
        self.providers.iter().find(|p| p.id() == id)
    }

    /// Picks the provider for a new DEPLOYMENT function.
    pub async fn select(
        &self,
        spec: &FunctionSpec,
    ) -> Result<Arc<dyn DeploymentProvider>, DeployError> {
        if let Some(backend) = self.default_backend {
            let id = backend.id();
            let provider = self.by_id(id).ok_or_else(|| {
                DeployError::Unavailable(format!(
                    "No managed deployment provider with id '{id}' found"
                ))
            })?;
            if !provider.is_available().await {
                return Err(DeployError::Unavailable(format!(
                    "Provider '{id}' is not available"
                )));
            }
            if !provider.supports(spec) {
                return Err(DeployError::Unavailable(format!(
                    "Provider '{id}' does not support function '{}'",
                    spec.name
                )));
            }
            return Ok(provider.clone());
        }
        let mut candidates = Vec::new();
        for p in &self.providers {
            if p.supports(spec) && p.is_available().await {
                candidates.push(p.clone());
            }
        }
        match candidates.len() {
            0 => Err(DeployError::Unavailable(format!(
                "No managed deployment provider available for function '{}'",
                spec.name
            ))),
            1 => Ok(candidates.remove(0)),
            _ => {
                let mut ids: Vec<&str> = candidates.iter().map(|p| p.id()).collect();
                ids.sort_unstable();
                Err(DeployError::Unavailable(format!(
                    "Ambiguous managed deployment provider selection for function '{}': [{}]",
                    spec.name,
                    ids.join(", ")
                )))
            }
        }
    }
}
