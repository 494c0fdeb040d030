//! `KubernetesProvider`: the `DeploymentProvider` on the Kubernetes API: server-side apply,
//! delete, the scale subresource, ready replicas, name ownership and the image probe.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::{conflict, is_not_found, k8s_error, registry_unavailable};
use super::image_probe::ImageProbe;
use super::manifests::Manifests;
use super::names::{nano_suffix, resource_name};
use crate::config::KubernetesConfig;
use crate::deploy::{BoxFuture, DeployError, DeployFuture, DeploymentProvider, Provisioned};
use crate::function::{ExecutionMode, FunctionSpec};
use crate::support::lock;

/// The server-side-apply field manager of every object this provider writes.
pub const FIELD_MANAGER: &str = "nanofaas-control-plane";
/// How long reading the cluster configuration (kubeconfig / in-cluster files) may take at start-up.
const CONFIG_INFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of one API call once connected (a black-holed API server must not hang requests).
const API_READ_TIMEOUT: Duration = Duration::from_secs(30);
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KubernetesProvider {
    client: kube::Client,
    manifests: Manifests,
    validate_images: bool,
    /// How often the image-validation pod is polled (REFERENCE §5.5: 500 ms).
    validation_poll_interval: Duration,
    /// How long an image pull may take before validation gives up (REFERENCE §5.5: 20 s).
    validation_timeout: Duration,
    /// Resource name → the function that owns it (collision check, DECISIONS 3).
    pub(super) owners: Mutex<HashMap<String, String>>,
}

impl KubernetesProvider {
    /// A provider on `client` (tests pass a client over a mock service).
    pub fn new(client: kube::Client, config: &KubernetesConfig, validate_images: bool) -> Self {
        KubernetesProvider {
            client,
            manifests: Manifests::from_config(config),
            validate_images,
            validation_poll_interval: Duration::from_millis(500),
            validation_timeout: Duration::from_secs(20),
            owners: Mutex::default(),
        }
    }

    /// Tests poll the image-validation pod faster and give up sooner.
    #[cfg(test)]
    pub(super) fn with_validation_timing(
        mut self,
        poll_interval: Duration,
        timeout: Duration,
    ) -> Self {
        self.validation_poll_interval = poll_interval;
        self.validation_timeout = timeout;
        self
    }

    /// A provider on the cluster the environment points at: the kubeconfig (`KUBECONFIG` or
    /// `~/.kube/config`), else the in-cluster service account. Reading the configuration is given
    /// [`CONFIG_INFER_TIMEOUT`]; nothing is sent to the API here. Must run inside a Tokio runtime.
    pub fn connect(config: &KubernetesConfig, validate_images: bool) -> Result<Self, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the Kubernetes client must be built inside a Tokio runtime".to_owned());
        }
        // `Config::infer` is async but only reads files; run it on a helper thread with its own
        // runtime so a synchronous start-up can wait for it with a deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kube-config".to_owned())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(kube::Config::infer())
                            .map_err(|e| crate::support::error_chain(&e))
                    });
                let _ = tx.send(result);
            })
            .map_err(|e| format!("cannot start the Kubernetes configuration reader: {e}"))?;
        let mut kube_config = match rx.recv_timeout(CONFIG_INFER_TIMEOUT) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(format!(
                    "no Kubernetes cluster configuration found. Set KUBECONFIG (or provide \
                     ~/.kube/config), or run the control plane in a pod with a service account \
                     (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and \
                     /var/run/secrets/kubernetes.io/serviceaccount/token); {e}"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "reading the Kubernetes configuration took longer than {}s",
                    CONFIG_INFER_TIMEOUT.as_secs()
                ));
            }
        };
        kube_config.connect_timeout = Some(API_CONNECT_TIMEOUT);
        kube_config.read_timeout = Some(API_READ_TIMEOUT);
        kube_config.reset_reader_on_write = true;
        let cluster = kube_config.cluster_url.to_string();
        let client = kube::Client::try_from(kube_config)
            .map_err(|e| format!("cannot build a Kubernetes client for {cluster}: {e}"))?;
        tracing::info!(
            cluster,
            namespace = Manifests::from_config(config).namespace,
            "Kubernetes deployment backend configured"
        );
        Ok(Self::new(client, config, validate_images))
    }

    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.manifests.namespace)
    }

    /// Create-or-update by server-side apply.
    async fn apply<K>(&self, object: &K) -> Result<(), DeployError>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api::<K>()
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map(drop)
            .map_err(|e| k8s_error(e, &format!("apply {} {name}", K::kind(&Default::default()))))
    }

    /// Deletes an object; one that is already gone is fine.
    async fn delete<K>(&self, name: &str) -> Result<(), DeployError>
    where
        K: kube::Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self
            .api::<K>()
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(k8s_error(
                e,
                &format!("delete {} {name}", K::kind(&Default::default())),
            )),
        }
    }

    /// HPA, Service, Deployment; all are attempted, the first failure is reported.
    async fn delete_objects(&self, name: &str) -> Result<(), DeployError> {
        let hpa = self.delete::<HorizontalPodAutoscaler>(name).await;
        let service = self.delete::<Service>(name).await;
        let deployment = self.delete::<Deployment>(name).await;
        hpa.and(service).and(deployment)
    }

    /// Refuses a function whose resource name another registered function owns.
    fn check_owner(&self, function: &str) -> Result<(), DeployError> {
        let name = resource_name(function);
        match lock(&self.owners).get(&name) {
            Some(owner) if owner != function => Err(conflict(function, owner, &name)),
            _ => Ok(()),
        }
    }

    /// Takes the resource name for `function`; `true` when it was not taken before.
    fn claim(&self, function: &str) -> Result<bool, DeployError> {
        let name = resource_name(function);
        let mut owners = lock(&self.owners);
        match owners.get(&name) {
            Some(owner) if owner == function => Ok(false),
            Some(owner) => Err(conflict(function, owner, &name)),
            None => {
                owners.insert(name, function.to_owned());
                Ok(true)
            }
        }
    }

    fn release(&self, function: &str) {
        let name = resource_name(function);
        let mut owners = lock(&self.owners);
        if owners.get(&name).is_some_and(|owner| owner == function) {
            owners.remove(&name);
        }
    }

    /// Applies Deployment, Service and HPA (or deletes a stale HPA). On failure, says whether
    /// anything was written before it (the Deployment comes first).
    async fn apply_all(&self, spec: &FunctionSpec) -> Result<(), (DeployError, bool)> {
        self.apply(&self.manifests.deployment(spec))
            .await
            .map_err(|e| (e, false))?;
        let rest = async {
            self.apply(&self.manifests.service(spec)).await?;
            match self.manifests.hpa(spec) {
                Some(hpa) => self.apply(&hpa).await,
                // A re-provision without HPA strategy removes the HPA of an earlier one.
                None => {
                    self.delete::<HorizontalPodAutoscaler>(&resource_name(&spec.name))
                        .await
                }
            }
        };
        rest.await.map_err(|e| (e, true))
    }

    /// Runs the probe pod in its own task, so it is deleted even if the caller is dropped.
    async fn probe_image(&self, spec: &FunctionSpec) -> Result<(), DeployError> {
        let pod = self.manifests.validation_pod(spec, &nano_suffix());
        let probe = ImageProbe {
            pods: self.api(),
            image: spec.image.clone(),
            poll_interval: self.validation_poll_interval,
            timeout: self.validation_timeout,
        };
        let image = spec.image.clone();
        tokio::spawn(async move { probe.run(pod).await })
            .await
            .unwrap_or_else(|_| {
                Err(registry_unavailable(
                    &image,
                    "Interrupted while validating image",
                ))
            })
    }
}

impl DeploymentProvider for KubernetesProvider {
    fn id(&self) -> &'static str {
        "k8s"
    }

    fn is_available(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        spec.execution_mode == ExecutionMode::Deployment
    }

    fn validate_image<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            // A name collision is answered before any pod is started.
            self.check_owner(&spec.name)?;
            if !self.validate_images {
                return Ok(());
            }
            self.probe_image(spec).await
        })
    }

    fn provision<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(async move {
            let newly_claimed = self.claim(&spec.name)?;
            match self.apply_all(spec).await {
                Ok(()) => Ok(Provisioned {
                    endpoint_url: self.manifests.endpoint_url(&spec.name),
                    replicas: None,
                }),
                Err((e, wrote)) => {
                    if newly_claimed {
                        // Leave nothing of a registration that did not happen. When nothing was
                        // written (typically: the API is unreachable) there is nothing to undo.
                        if wrote {
                            let name = resource_name(&spec.name);
                            if let Err(cleanup) = self.delete_objects(&name).await {
                                tracing::warn!(function = spec.name, error = %cleanup, "cleaning up a failed provision failed");
                            }
                        }
                        self.release(&spec.name);
                    }
                    Err(e)
                }
            }
        })
    }

    fn deprovision<'a>(&'a self, name: &'a str) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            self.delete_objects(&resource_name(name)).await?;
            self.release(name);
            Ok(())
        })
    }

    fn set_replicas<'a>(&'a self, name: &'a str, replicas: u32) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            let object = resource_name(name);
            let replicas = replicas.min(i32::MAX as u32);
            let patch = serde_json::json!({ "spec": { "replicas": replicas } });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            self.api::<Deployment>()
                .patch_scale(&object, &params, &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(|e| k8s_error(e, &format!("scale Deployment {object}")))
        })
    }

    /// Another replica applied the objects: the endpoint is the Service's, derived from the name.
    fn adopt<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(async move {
            // Owned by this function here too, so a colliding name is still refused locally.
            self.claim(&spec.name)?;
            Ok(Provisioned {
                endpoint_url: self.manifests.endpoint_url(&spec.name),
                replicas: None,
            })
        })
    }

    fn forget(&self, name: &str) {
        self.release(name);
    }

    fn ready_replicas<'a>(&'a self, name: &'a str) -> DeployFuture<'a, u32> {
        Box::pin(async move {
            let object = resource_name(name);
            match self.api::<Deployment>().get_opt(&object).await {
                Ok(deployment) => Ok(deployment
                    .and_then(|d| d.status)
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    .max(0) as u32),
                Err(e) => Err(k8s_error(e, &format!("read Deployment {object}"))),
            }
        })
    }

    /// Says early (in the log) whether the API server answers; never blocks start-up for long.
    fn start(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let probe = self.client.apiserver_version();
            match tokio::time::timeout(Duration::from_secs(5), probe).await {
                Ok(Ok(info)) => tracing::info!(
                    version = info.git_version,
                    namespace = self.manifests.namespace,
                    "Kubernetes API reachable"
                ),
                Ok(Err(e)) => tracing::warn!(
                    error = %crate::support::error_chain(&e),
                    "Kubernetes API not reachable; DEPLOYMENT registrations fail with 503 until it is"
                ),
                Err(_) => tracing::warn!(
                    "Kubernetes API did not answer within 5s; DEPLOYMENT registrations fail with \
                     503 until it does"
                ),
            }
        })
    }
}
