//! The `container-local` backend (REFERENCE §5.7): DEPLOYMENT functions run as containers on the
//! local Docker Engine (or Podman's compatible socket), driven through its HTTP API (bollard).
//!
//! Each function gets `minReplicas` containers named `nanofaas-[<instance>-]<name>-r<i>` and
//! labelled with this control plane's instance, so a restarted control plane finds and removes
//! what an earlier run left behind. A replica joins the invocation rotation only once its
//! `/health` answers 2xx; the dispatcher balances over ready replicas directly (no proxy hop).
//! Addressing: with `NANOFAAS_CONTAINER_LOCAL_NETWORK` the replicas join that network and are
//! reached by name on port 8080 (the control plane runs on that network too); without it, Docker
//! publishes port 8080 on `bind-host` at a port it picks.
//!
//! Invariants: every container this provider creates carries its labels and is removed on
//! delete, on scale-down, on a failed provision and at shutdown; a replica is out of rotation
//! before its container is stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkingConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use reqwest::Url;

use super::runtime_env::runtime_env;
use super::{BoxFuture, DeployError, DeployFuture, DeploymentProvider, Provisioned, ReplicaSet};
use crate::config::ContainerLocalConfig;
use crate::function::{ExecutionMode, FunctionSpec};
use crate::support::{lock, read, write};

pub const LABEL_MANAGED_BY: &str = "nanofaas.io/managed-by";
pub const LABEL_INSTANCE: &str = "nanofaas.io/instance";
pub const LABEL_FUNCTION: &str = "nanofaas.io/function";
pub const LABEL_REPLICA: &str = "nanofaas.io/replica";
const MANAGER: &str = "nanofaas-control-plane";
pub struct ContainerLocalProvider {
    docker: Docker,
    config: ContainerLocalConfig,
    http: reqwest::Client,
    functions: Mutex<HashMap<String, Arc<Replicas>>>,
    /// Control-plane replicas share the functions (NATS backend): containers of this instance
    /// may belong to another replica, so none is removed as a leftover at start and shutdown
    /// leaves them running (docs/ha.md).
    shared: bool,
}

/// One function's replicas, in index order; the dispatcher's view of where to send work.
#[derive(Debug)]
pub struct Replicas {
    /// The spec new replicas of this function are started from.
    spec: FunctionSpec,
    members: RwLock<Vec<Replica>>,
    next: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Replica {
    container: String,
    invoke: Url,
    health: Url,
}

impl ReplicaSet for Replicas {
    fn pick(&self) -> Option<Url> {
        let members = read(&self.members);
        if members.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        Some(members[i].invoke.clone())
    }
}

impl Replicas {
    fn len(&self) -> usize {
        read(&self.members).len()
    }
}

/// `nanofaas-<name>-r<i>` (lower-case, DNS-safe), with the instance when it is not `default`.
pub fn container_name(instance: &str, function: &str, index: usize) -> String {
    let safe = |s: &str| {
        let safe = super::dns_safe(s);
        if safe.is_empty() {
            "fn".to_owned()
        } else {
            safe
        }
    };
    if instance == "default" {
        format!("nanofaas-{}-r{index}", safe(function))
    } else {
        format!("nanofaas-{}-{}-r{index}", safe(instance), safe(function))
    }
}

fn engine_error(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl ContainerLocalProvider {
    pub fn new(config: ContainerLocalConfig) -> Result<Self, DeployError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| DeployError::Unavailable(format!("Docker engine unavailable: {e}")))?;
        // The probe's address is ours (the published port or the container's name), not the
        // user's, so the outbound policy does not apply; but the answer comes from user code,
        // which must not steer the probe elsewhere with a redirect: a 3xx is "not ready".
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| DeployError::Unavailable(e.to_string()))?;
        Ok(ContainerLocalProvider {
            docker,
            config,
            http,
            functions: Mutex::default(),
            shared: false,
        })
    }

    /// With shared state: adopts other replicas' containers, removes no leftovers, and leaves
    /// the functions running at shutdown.
    pub fn with_shared_state(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    fn labels(&self, function: &str, index: usize) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.config.instance.clone()),
            (LABEL_FUNCTION.to_owned(), function.to_owned()),
            (LABEL_REPLICA.to_owned(), index.to_string()),
        ])
    }

    async fn remove_container(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.docker.remove_container(name, Some(options)).await {
            if status_of(&e) != Some(404) {
                tracing::warn!(container = name, error = %engine_error(&e), "removing container failed");
            }
        }
    }

    /// Stops a replica gracefully (in-flight work may finish), then removes it.
    async fn retire(&self, name: &str) {
        let stop = StopContainerOptionsBuilder::new().t(5).build();
        let _ = self.docker.stop_container(name, Some(stop)).await;
        self.remove_container(name).await;
    }

    async fn start_replica(
        &self,
        spec: &FunctionSpec,
        index: usize,
    ) -> Result<Replica, DeployError> {
        let name = container_name(&self.config.instance, &spec.name, index);
        // A container of that name is a leftover of an earlier run of this instance.
        self.remove_container(&name).await;
        let env = runtime_env(spec, self.config.callback_url.as_deref())
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let (host_config, networking_config) = match &self.config.network {
            Some(network) => (
                HostConfig {
                    network_mode: Some(network.clone()),
                    ..Default::default()
                },
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(network.clone(), Default::default())])),
                }),
            ),
            None => (
                HostConfig {
                    port_bindings: Some(HashMap::from([(
                        "8080/tcp".to_owned(),
                        Some(vec![PortBinding {
                            host_ip: Some(self.config.bind_host.clone()),
                            host_port: Some(String::new()),
                        }]),
                    )])),
                    ..Default::default()
                },
                None,
            ),
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(env),
            labels: Some(self.labels(&spec.name, index)),
            exposed_ports: Some(vec!["8080/tcp".to_owned()]),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self.docker.create_container(Some(options), body).await;
        if let Err(e) = created {
            return Err(match status_of(&e) {
                Some(404) => DeployError::ImageNotFound(format!(
                    "Image not found in registry: {}",
                    spec.image
                )),
                _ => DeployError::Unavailable(format!(
                    "Failed to start container '{name}': {}",
                    engine_error(&e)
                )),
            });
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove_container(&name).await;
            return Err(DeployError::Unavailable(format!(
                "Failed to start container '{name}': {}",
                engine_error(&e)
            )));
        }
        let base = match self.base_url(&name).await {
            Ok(base) => base,
            Err(e) => {
                self.remove_container(&name).await;
                return Err(e);
            }
        };
        let replica = Replica {
            container: name.clone(),
            invoke: base
                .join("invoke")
                .map_err(|e| DeployError::Failed(e.to_string()))?,
            health: base
                .join("health")
                .map_err(|e| DeployError::Failed(e.to_string()))?,
        };
        if let Err(e) = self.wait_ready(&replica, &base).await {
            self.remove_container(&name).await;
            return Err(e);
        }
        tracing::info!(function = spec.name, container = name, url = %replica.invoke, "replica ready");
        Ok(replica)
    }

    /// `http://<name>:8080/` on the shared network, else the published port on `bind-host`.
    async fn base_url(&self, name: &str) -> Result<Url, DeployError> {
        let text = if self.config.network.is_some() {
            format!("http://{name}:8080/")
        } else {
            let inspect = self
                .docker
                .inspect_container(name, None)
                .await
                .map_err(|e| DeployError::Unavailable(engine_error(&e)))?;
            let port = inspect
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|p| p.get("8080/tcp").cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    DeployError::Unavailable(format!("Container '{name}' has no published port"))
                })?;
            let host = if self.config.bind_host.contains(':') {
                format!("[{}]", self.config.bind_host)
            } else {
                self.config.bind_host.clone()
            };
            format!("http://{host}:{port}/")
        };
        Url::parse(&text).map_err(|e| DeployError::Failed(e.to_string()))
    }

    async fn wait_ready(&self, replica: &Replica, base: &Url) -> Result<(), DeployError> {
        let deadline = tokio::time::Instant::now() + self.config.readiness_timeout;
        loop {
            if self.is_healthy(replica).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DeployError::Unavailable(format!(
                    "Timed out waiting for container endpoint to become ready: {base}"
                )));
            }
            tokio::time::sleep(self.config.readiness_poll_interval).await;
        }
    }

    async fn is_healthy(&self, replica: &Replica) -> bool {
        self.http
            .get(replica.health.clone())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn remove_all(&self, replicas: &[Replica]) {
        for r in replicas.iter().rev() {
            self.remove_container(&r.container).await;
        }
    }

    /// Containers of this instance (also stopped ones).
    async fn own_containers(&self) -> Result<Vec<String>, DeployError> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_INSTANCE}={}", self.config.instance)],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DeployError::Unavailable(engine_error(&e)))?;
        Ok(list
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_MANAGED_BY))
                    .is_some_and(|m| m == MANAGER)
            })
            .filter_map(|c| c.id)
            .collect())
    }
}

impl DeploymentProvider for ContainerLocalProvider {
    fn id(&self) -> &'static str {
        "container-local"
    }

    fn is_available(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { self.docker.ping().await.is_ok() })
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        spec.execution_mode == ExecutionMode::Deployment
            && spec.image_pull_secrets.as_ref().is_none_or(Vec::is_empty)
    }

    /// The image must exist in the engine (no registry pulls are made for it).
    fn validate_image<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            match self.docker.inspect_image(&spec.image).await {
                Ok(_) => Ok(()),
                Err(e) if status_of(&e) == Some(404) => Err(DeployError::ImageNotFound(format!(
                    "Image not found in registry: {}",
                    spec.image
                ))),
                Err(e) => Err(DeployError::ImageRegistryUnavailable(format!(
                    "Unable to validate image in registry: {} ({})",
                    spec.image,
                    engine_error(&e)
                ))),
            }
        })
    }

    fn provision<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(async move {
            if let Some(existing) = lock(&self.functions).get(&spec.name).cloned() {
                return Ok(self.provisioned(&spec.name, existing));
            }
            let count = usize::try_from(spec.initial_replicas()).unwrap_or(usize::MAX);
            let mut started = Vec::with_capacity(count);
            for index in 1..=count {
                match self.start_replica(spec, index).await {
                    Ok(r) => started.push(r),
                    Err(e) => {
                        self.remove_all(&started).await;
                        return Err(e);
                    }
                }
            }
            let set = Arc::new(Replicas {
                spec: spec.clone(),
                members: RwLock::new(started),
                next: AtomicUsize::new(0),
            });
            lock(&self.functions).insert(spec.name.clone(), set.clone());
            Ok(self.provisioned(&spec.name, set))
        })
    }

    fn deprovision<'a>(&'a self, name: &'a str) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            let Some(set) = lock(&self.functions).remove(name) else {
                return Ok(());
            };
            let members = std::mem::take(&mut *write(&set.members));
            self.remove_all(&members).await;
            Ok(())
        })
    }

    fn set_replicas<'a>(&'a self, name: &'a str, replicas: u32) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            let Some(set) = lock(&self.functions).get(name).cloned() else {
                return Ok(());
            };
            let target = replicas as usize;
            while set.len() > target {
                // Out of rotation first, then stopped: no new work goes to a dying replica.
                let Some(gone) = write(&set.members).pop() else {
                    break;
                };
                self.retire(&gone.container).await;
            }
            while set.len() < target {
                let replica = self.start_replica(&set.spec, set.len() + 1).await?;
                write(&set.members).push(replica);
            }
            Ok(())
        })
    }

    fn ready_replicas<'a>(&'a self, name: &'a str) -> DeployFuture<'a, u32> {
        Box::pin(async move {
            let Some(set) = lock(&self.functions).get(name).cloned() else {
                return Ok(0);
            };
            let members = read(&set.members).clone();
            let checks = members.iter().map(|r| self.is_healthy(r));
            let healthy = futures_util::future::join_all(checks).await;
            Ok(healthy.into_iter().filter(|h| *h).count() as u32)
        })
    }

    fn adopt<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(self.find_replicas(spec))
    }

    fn forget(&self, name: &str) {
        lock(&self.functions).remove(name);
    }

    fn start(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shared {
                // Another replica's containers are not leftovers; a deleted function's are
                // removed by the replica that served the delete.
                return;
            }
            match self.own_containers().await {
                Ok(leftovers) => {
                    if !leftovers.is_empty() {
                        tracing::info!(
                            count = leftovers.len(),
                            "removing containers of an earlier run"
                        );
                    }
                    for id in leftovers {
                        self.remove_container(&id).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list containers of an earlier run"),
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shared {
                // The functions outlive this replica: the others (and its successor) serve them.
                return;
            }
            let names: Vec<String> = lock(&self.functions).keys().cloned().collect();
            for name in names {
                let _ = self.deprovision(&name).await;
            }
        })
    }
}

impl ContainerLocalProvider {
    fn provisioned(&self, name: &str, set: Arc<Replicas>) -> Provisioned {
        let first = read(&set.members).first().map(|r| r.invoke.to_string());
        Provisioned {
            endpoint_url: first.unwrap_or_else(|| format!("container-local://{name}/invoke")),
            replicas: Some(set),
        }
    }
}

mod adopt;
#[cfg(test)]
mod tests;
