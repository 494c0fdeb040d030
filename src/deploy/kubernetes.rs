//! The `k8s` backend (REFERENCE §5.6): every DEPLOYMENT function runs as a Deployment
//! `fn-<name>` behind a ClusterIP Service of the same name, plus an `autoscaling/v2` HPA when its
//! scaling strategy is HPA, all in one namespace. The dispatcher calls the Service
//! (`http://fn-<name>.<namespace>.svc.cluster.local:8080/invoke`); Kubernetes balances.
//!
//! Objects are written with server-side apply (field manager `nanofaas-control-plane`, forced),
//! so registering creates them and re-registering the same function updates them in place.
//! Image validation (§5.5, `NANOFAAS_IMAGE_VALIDATOR_ENABLED`) starts a short-lived probe pod
//! with the image and reads how its pull went.
//!
//! Invariants: object names are DNS-1123 labels derived from the function name, and two
//! registered functions never share one (the second is refused with 409); label values are valid
//! label values; a failed provision removes what it applied; the probe pod is deleted whatever
//! happens (even when the registering request goes away); no Kubernetes failure becomes a 500:
//! an unreachable API server is `Unavailable` (503), a refusal by the API is `Failed` (502).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, LocalObjectReference, Pod, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::container_local::runtime_env;
use super::{BoxFuture, DeployError, DeploymentProvider, Provisioned};
use crate::config::KubernetesConfig;
use crate::registry::spec::{ExecutionMode, FunctionSpec, ScalingMetric, ScalingStrategy};
use crate::support::lock;

/// The server-side-apply field manager of every object this provider writes.
pub const FIELD_MANAGER: &str = "nanofaas-control-plane";
/// The port function containers serve `/invoke` and `/health` on, and the Service's port.
pub const FUNCTION_PORT: i32 = 8080;
/// How long reading the cluster configuration (kubeconfig / in-cluster files) may take at start-up.
const CONFIG_INFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of one API call once connected (a black-holed API server must not hang requests).
const API_READ_TIMEOUT: Duration = Duration::from_secs(30);
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Image-validation patterns (REFERENCE §5.5), matched against the lower-cased waiting message.
const NOT_FOUND_PATTERNS: [&str; 3] = ["not found", "manifest unknown", "name unknown"];
const AUTH_PATTERNS: [&str; 4] = [
    "pull access denied",
    "authentication required",
    "unauthorized",
    "denied",
];

/// `fn-<name>`: lower-cased, characters outside `[a-z0-9-]` turned into `-`, at most 63
/// characters, no leading or trailing `-` (a DNS-1123 label, so also a valid Service name).
pub fn resource_name(function: &str) -> String {
    let mapped: String = function
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // ASCII only from here, so byte slicing is on character boundaries.
    let body = mapped[..mapped.len().min(63 - "fn-".len())].trim_matches('-');
    if body.is_empty() {
        "fn".to_owned()
    } else {
        format!("fn-{body}")
    }
}

/// The `function` label value: the name itself when it is a valid label value, else the name
/// with invalid characters turned into `-` and the ends trimmed to alphanumerics. Two functions
/// with the same label value also have the same resource name, so labels stay unique.
pub fn label_value(function: &str) -> String {
    let mapped: String = function
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped[..mapped.len().min(63)]
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// `imgval-<normalised name>-<suffix>` (REFERENCE §5.5): lower-cased, `[^a-z0-9-]` → `-`, runs of
/// `-` collapsed, trimmed, the name part shortened so the whole stays within 63 characters.
pub fn validation_pod_name(function: &str, suffix: &str) -> String {
    let normalised = super::dns_safe(function);
    let room = 63usize.saturating_sub("imgval-".len() + 1 + suffix.len());
    let normalised = normalised[..normalised.len().min(room)].trim_end_matches('-');
    if normalised.is_empty() {
        format!("imgval-{suffix}")
    } else {
        format!("imgval-{normalised}-{suffix}")
    }
}

/// The current time in nanoseconds, base 36 (the probe pod's unique suffix).
fn nano_suffix() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i64::from(i32::MAX)) as i32
}

/// Builds the objects of a function (REFERENCE §5.6). Pure: no I/O, so manifests can be checked
/// (and schema-validated) without a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifests {
    pub namespace: String,
    /// `CALLBACK_URL` of function containers.
    pub callback_url: String,
    pub image_pull_policy: String,
}

impl Manifests {
    pub fn from_config(config: &KubernetesConfig) -> Self {
        Manifests {
            namespace: config.effective_namespace().to_owned(),
            callback_url: config.effective_callback_url(),
            image_pull_policy: config.image_pull_policy.clone(),
        }
    }

    /// Where the dispatcher sends the function's invocations.
    pub fn endpoint_url(&self, function: &str) -> String {
        format!(
            "http://{}.{}.svc.cluster.local:{FUNCTION_PORT}/invoke",
            resource_name(function),
            self.namespace
        )
    }

    fn labels(function: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_owned(), "nanofaas".to_owned()),
            ("function".to_owned(), label_value(function)),
        ])
    }

    fn selector(function: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("function".to_owned(), label_value(function))])
    }

    fn prometheus_annotations() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("prometheus.io/scrape".to_owned(), "true".to_owned()),
            ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
            ("prometheus.io/port".to_owned(), FUNCTION_PORT.to_string()),
        ])
    }

    fn metadata(&self, function: &str, annotated: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(resource_name(function)),
            namespace: Some(self.namespace.clone()),
            labels: Some(Self::labels(function)),
            annotations: annotated.then(Self::prometheus_annotations),
            ..Default::default()
        }
    }

    /// Trimmed, non-blank `imagePullSecrets`; `None` when there are none.
    fn pull_secrets(spec: &FunctionSpec) -> Option<Vec<LocalObjectReference>> {
        let secrets: Vec<LocalObjectReference> = spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| LocalObjectReference { name: s.to_owned() })
            .collect();
        (!secrets.is_empty()).then_some(secrets)
    }

    /// Requests = limits = the spec's cpu/memory; `None` when neither is given.
    fn resources(spec: &FunctionSpec) -> Option<ResourceRequirements> {
        let r = spec.resources.as_ref()?;
        let quantities: BTreeMap<String, Quantity> = [("cpu", &r.cpu), ("memory", &r.memory)]
            .into_iter()
            .filter_map(|(k, v)| {
                let v = v.as_deref()?.trim();
                (!v.is_empty()).then(|| (k.to_owned(), Quantity(v.to_owned())))
            })
            .collect();
        (!quantities.is_empty()).then(|| ResourceRequirements {
            limits: Some(quantities.clone()),
            requests: Some(quantities),
            ..Default::default()
        })
    }

    /// `scalingConfig.minReplicas` when set (0 allowed), else 1.
    fn replicas(spec: &FunctionSpec) -> i32 {
        clamp_i32(
            spec.scaling_config
                .as_ref()
                .and_then(|s| s.min_replicas)
                .unwrap_or(1),
        )
    }

    pub fn deployment(&self, spec: &FunctionSpec) -> Deployment {
        let env = runtime_env(spec, Some(&self.callback_url))
            .into_iter()
            .map(|(name, value)| EnvVar {
                name,
                value: Some(value),
                ..Default::default()
            })
            .collect();
        let container = Container {
            name: "function".to_owned(),
            image: Some(spec.image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            command: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(env),
            resources: Self::resources(spec),
            ports: Some(vec![ContainerPort {
                container_port: FUNCTION_PORT,
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/health".to_owned()),
                    port: IntOrString::Int(FUNCTION_PORT),
                    ..Default::default()
                }),
                initial_delay_seconds: Some(2),
                period_seconds: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        Deployment {
            metadata: self.metadata(&spec.name, false),
            spec: DeploymentSpec {
                replicas: Some(Self::replicas(spec)),
                selector: LabelSelector {
                    match_labels: Some(Self::selector(&spec.name)),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(Self::labels(&spec.name)),
                        annotations: Some(Self::prometheus_annotations()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        image_pull_secrets: Self::pull_secrets(spec),
                        restart_policy: Some("Always".to_owned()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    pub fn service(&self, spec: &FunctionSpec) -> Service {
        Service {
            metadata: self.metadata(&spec.name, true),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(Self::selector(&spec.name)),
                ports: Some(vec![ServicePort {
                    port: FUNCTION_PORT,
                    target_port: Some(IntOrString::Int(FUNCTION_PORT)),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The HPA, only for strategy HPA. `minReplicas` is at least 1: the API refuses 0 unless the
    /// HPAScaleToZero feature gate is on.
    pub fn hpa(&self, spec: &FunctionSpec) -> Option<HorizontalPodAutoscaler> {
        let scaling = spec.scaling_config.as_ref()?;
        if scaling.strategy != Some(ScalingStrategy::Hpa) {
            return None;
        }
        let metrics: Vec<MetricSpec> = scaling
            .metrics
            .iter()
            .flatten()
            .flatten()
            .filter_map(|m| metric_spec(&spec.name, m))
            .collect();
        Some(HorizontalPodAutoscaler {
            metadata: self.metadata(&spec.name, false),
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".to_owned()),
                    kind: "Deployment".to_owned(),
                    name: resource_name(&spec.name),
                },
                min_replicas: Some(clamp_i32(scaling.min_replicas.unwrap_or(1)).max(1)),
                max_replicas: clamp_i32(scaling.max_replicas.unwrap_or(10)).max(1),
                metrics: (!metrics.is_empty()).then_some(metrics),
                behavior: None,
            },
            status: None,
        })
    }

    /// The image-validation probe pod (REFERENCE §5.5).
    pub fn validation_pod(&self, spec: &FunctionSpec, suffix: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(validation_pod_name(&spec.name, suffix)),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app".to_owned(), "nanofaas".to_owned()),
                    (
                        "nanofaas.io/purpose".to_owned(),
                        "image-validation".to_owned(),
                    ),
                    ("nanofaas.io/function".to_owned(), label_value(&spec.name)),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "validate".to_owned(),
                    image: Some(spec.image.clone()),
                    image_pull_policy: Some("Always".to_owned()),
                    ..Default::default()
                }],
                image_pull_secrets: Self::pull_secrets(spec),
                restart_policy: Some("Never".to_owned()),
                termination_grace_period_seconds: Some(0),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// One scaling metric as an HPA metric (REFERENCE §5.6): `cpu`/`memory` → Resource utilization,
/// `queue_depth`/`in_flight`/`rps` → External `nanofaas_<type>`, `prometheus` → External
/// `nanofaas_custom_<function>`; other types are skipped; a target that is no integer → 50.
pub fn metric_spec(function: &str, metric: &ScalingMetric) -> Option<MetricSpec> {
    let target = metric
        .target
        .as_deref()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .unwrap_or(50);
    let external = |name: String| MetricSpec {
        type_: "External".to_owned(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name,
                selector: Some(LabelSelector {
                    match_labels: Some(Manifests::selector(function)),
                    ..Default::default()
                }),
            },
            target: MetricTarget {
                type_: "Value".to_owned(),
                value: Some(Quantity(target.to_string())),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    match metric.kind.as_deref()? {
        kind @ ("cpu" | "memory") => Some(MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: kind.to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(target),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }),
        kind @ ("queue_depth" | "in_flight" | "rps") => Some(external(format!("nanofaas_{kind}"))),
        "prometheus" => Some(external(format!("nanofaas_custom_{function}"))),
        _ => None,
    }
}

/// What a probe pod's status says about the image pull (REFERENCE §5.5); `None` = not known yet.
pub fn pull_outcome(pod: &Pod, image: &str) -> Option<Result<(), DeployError>> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Running" | "Succeeded")) {
        return Some(Ok(()));
    }
    for container in status.container_statuses.iter().flatten() {
        let Some(state) = &container.state else {
            continue;
        };
        if state.running.is_some() || state.terminated.is_some() {
            return Some(Ok(()));
        }
        let Some(waiting) = &state.waiting else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting.message.as_deref().unwrap_or_default();
        let lower = message.to_ascii_lowercase();
        if reason == "InvalidImageName" || NOT_FOUND_PATTERNS.iter().any(|p| lower.contains(p)) {
            return Some(Err(DeployError::ImageNotFound(format!(
                "Image not found in registry: {image}"
            ))));
        }
        if AUTH_PATTERNS.iter().any(|p| lower.contains(p)) {
            return Some(Err(DeployError::ImagePullAuthRequired(format!(
                "Image pull authentication failed for: {image}"
            ))));
        }
        if matches!(reason, "ErrImagePull" | "ImagePullBackOff") {
            return Some(Err(registry_unavailable(
                image,
                &format!("{reason}: {message}"),
            )));
        }
    }
    None
}

fn registry_unavailable(image: &str, detail: &str) -> DeployError {
    DeployError::ImageRegistryUnavailable(format!(
        "Unable to validate image in registry: {image} ({detail})"
    ))
}

/// Maps a client error: a refusal by the API server (a `Status`) is `Failed` with its message,
/// except 502/503/504 (the API server or its proxy is unavailable); anything that kept the
/// request from being answered (connection, TLS, timeout, credentials plugin) is `Unavailable`.
fn k8s_error(e: kube::Error, action: &str) -> DeployError {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.trim().is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            if matches!(status.code, 502..=504) {
                DeployError::Unavailable(format!(
                    "Kubernetes API unavailable: {message} (HTTP {})",
                    status.code
                ))
            } else {
                DeployError::Failed(format!(
                    "Kubernetes API refused to {action}: {message} (HTTP {})",
                    status.code
                ))
            }
        }
        kube::Error::SerdeError(e) => DeployError::Failed(format!(
            "Unexpected Kubernetes API response to {action}: {e}"
        )),
        other => DeployError::Unavailable(format!(
            "Kubernetes API unavailable: {}",
            crate::support::error_chain(&other)
        )),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_not_found())
}

pub struct KubernetesProvider {
    client: kube::Client,
    manifests: Manifests,
    validate_images: bool,
    /// How often the image-validation pod is polled (REFERENCE §5.5: 500 ms).
    pub validation_poll_interval: Duration,
    /// How long an image pull may take before validation gives up (REFERENCE §5.5: 20 s).
    pub validation_timeout: Duration,
    /// Resource name → the function that owns it (collision check, DECISIONS 3).
    owners: Mutex<HashMap<String, String>>,
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

fn conflict(function: &str, owner: &str, name: &str) -> DeployError {
    DeployError::Conflict(format!(
        "Function '{function}' conflicts with function '{owner}': both map to the Kubernetes \
         name '{name}'"
    ))
}

/// One image validation: create the probe pod, watch the pull, delete the pod.
struct ImageProbe {
    pods: Api<Pod>,
    image: String,
    poll_interval: Duration,
    timeout: Duration,
}

impl ImageProbe {
    async fn run(self, pod: Pod) -> Result<(), DeployError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = self.pods.create(&PostParams::default(), &pod).await {
            return Err(
                match k8s_error(e, &format!("create image-validation Pod {name}")) {
                    DeployError::Unavailable(m) => registry_unavailable(&self.image, &m),
                    other => other,
                },
            );
        }
        let outcome = self.watch(&name).await;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        if let Err(e) = self.pods.delete(&name, &now).await {
            if !is_not_found(&e) {
                tracing::warn!(pod = name, error = %crate::support::error_chain(&e), "deleting the image-validation pod failed");
            }
        }
        outcome
    }

    async fn watch(&self, name: &str) -> Result<(), DeployError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.pods.get(name).await {
                Ok(pod) => {
                    if let Some(outcome) = pull_outcome(&pod, &self.image) {
                        return outcome;
                    }
                }
                Err(e) => {
                    let e = k8s_error(e, &format!("read image-validation Pod {name}"));
                    return Err(registry_unavailable(&self.image, &e.to_string()));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(registry_unavailable(
                    &self.image,
                    "Timed out waiting for image pull",
                ));
            }
            tokio::time::sleep(self.poll_interval).await;
        }
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

    fn validate_image<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            // A name collision is answered before any pod is started.
            self.check_owner(&spec.name)?;
            if !self.validate_images {
                return Ok(());
            }
            self.probe_image(spec).await
        })
    }

    fn provision<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Provisioned, DeployError>> {
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

    fn deprovision<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            self.delete_objects(&resource_name(name)).await?;
            self.release(name);
            Ok(())
        })
    }

    fn set_replicas<'a>(
        &'a self,
        name: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), DeployError>> {
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

    fn ready_replicas<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<u32, DeployError>> {
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

#[cfg(test)]
mod tests {
    //! Manifest tests are pure; provider tests run against a scripted mock API server (the
    //! kube-rs testing pattern: a `Client` over a `tower_test::mock::pair`) that asserts each
    //! request's method, path, query, content type and body, and fails on any request it did
    //! not expect or any expected request that never came.

    use std::sync::Arc;

    use axum::http::{Method, Request, Response, header};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock;

    use super::*;
    use crate::api::error::ApiError;
    use crate::config::Config;
    use crate::registry::spec::FunctionSpecRequest;

    const NS: &str = "nanofaas";
    const APPLY_QUERY: &str = "force=true&fieldManager=nanofaas-control-plane";
    const APPLY_TYPE: &str = "application/apply-patch+yaml";
    const MERGE_TYPE: &str = "application/merge-patch+json";

    fn k8s_config() -> KubernetesConfig {
        KubernetesConfig {
            namespace: Some(NS.to_owned()),
            pod_namespace: None,
            callback_url: String::new(),
            image_pull_policy: "IfNotPresent".to_owned(),
        }
    }

    fn spec(json: &str) -> FunctionSpec {
        let request: FunctionSpecRequest = serde_json::from_str(json).unwrap();
        request.resolve(&Config::default().defaults).unwrap()
    }

    fn echo() -> FunctionSpec {
        spec(r#"{"name":"echo","image":"ghcr.io/acme/echo:1"}"#)
    }

    fn hpa_spec() -> FunctionSpec {
        spec(
            r#"{"name":"echo","image":"ghcr.io/acme/echo:1","scalingConfig":{"strategy":"HPA",
                "minReplicas":2,"maxReplicas":5,"metrics":[{"type":"cpu","target":"70"},
                {"type":"rps","target":"x"},{"type":"bogus","target":"1"}]}}"#,
        )
    }

    fn manifests() -> Manifests {
        Manifests::from_config(&k8s_config())
    }

    // ---- pure parts --------------------------------------------------------------------

    #[test]
    fn resource_names_and_labels_are_valid_kubernetes_names() {
        // 63 characters, the longest valid function name.
        let long = format!("a{}", "b".repeat(62));
        // Cut at 60 characters it would end in `-`.
        let cut_at_dash = format!("a{}-Cc", "b".repeat(58));
        let ends_in_dot = format!("a{}.", "b".repeat(61));
        let cases: [(&str, String, String); 8] = [
            ("echo", "fn-echo".into(), "echo".into()),
            ("My_Func.v2", "fn-my-func-v2".into(), "My_Func.v2".into()),
            ("a-", "fn-a".into(), "a".into()),
            ("a_.", "fn-a".into(), "a".into()),
            ("x--y", "fn-x--y".into(), "x--y".into()),
            (&long, format!("fn-{}", &long[..60]), long.clone()),
            (
                &cut_at_dash,
                format!("fn-a{}", "b".repeat(58)),
                cut_at_dash.clone(),
            ),
            (
                &ends_in_dot,
                format!("fn-a{}", "b".repeat(59)),
                format!("a{}", "b".repeat(61)),
            ),
        ];
        for (function, name, label) in cases {
            let got = resource_name(function);
            assert_eq!(got, name, "{function}");
            assert!(got.len() <= 63, "{got}");
            assert!(
                got.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !got.ends_with('-'),
                "{got}"
            );
            let got = label_value(function);
            assert_eq!(got, label, "{function}");
            assert!(got.len() <= 63, "{got}");
        }
    }

    #[test]
    fn validation_pod_names_are_normalised_and_short() {
        assert_eq!(
            validation_pod_name("My__Func.v2", "abc123"),
            "imgval-my-func-v2-abc123"
        );
        let long = validation_pod_name(&format!("f{}", "x".repeat(62)), "lmnopqrstuvw");
        assert!(
            long.len() <= 63 && long.ends_with("-lmnopqrstuvw"),
            "{long}"
        );
        let suffix = nano_suffix();
        assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && suffix.len() >= 10);
    }

    #[test]
    fn deployment_manifest_is_the_reference_shape() {
        let spec = spec(
            r#"{"name":"Echo_v2","image":"ghcr.io/acme/echo:1","command":["/bin/echo","hi"],
                "env":{"WARM":"false","CALLBACK_URL":"http://evil","B":"2","A":"1"},
                "resources":{"cpu":"250m","memory":"64Mi"},"timeoutMs":1500,
                "runtimeMode":"STDIO","runtimeCommand":"python app.py",
                "scalingConfig":{"strategy":"NONE","minReplicas":0,"maxReplicas":3},
                "imagePullSecrets":[" regcred ",""," ","other"]}"#,
        );
        let labels = json!({"app": "nanofaas", "function": "Echo_v2"});
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "fn-echo-v2", "namespace": NS, "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"function": "Echo_v2"}},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/path": "/metrics",
                            "prometheus.io/port": "8080"
                        }
                    },
                    "spec": {
                        "containers": [{
                            "name": "function",
                            "image": "ghcr.io/acme/echo:1",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/echo", "hi"],
                            "env": [
                                {"name": "FUNCTION_NAME", "value": "Echo_v2"},
                                {"name": "WARM", "value": "true"},
                                {"name": "TIMEOUT_MS", "value": "1500"},
                                {"name": "EXECUTION_MODE", "value": "STDIO"},
                                {"name": "WATCHDOG_CMD", "value": "python app.py"},
                                {"name": "CALLBACK_URL", "value":
                                    "http://control-plane.nanofaas.svc.cluster.local:8080/v1/internal/executions"},
                                {"name": "A", "value": "1"},
                                {"name": "B", "value": "2"}
                            ],
                            "resources": {
                                "limits": {"cpu": "250m", "memory": "64Mi"},
                                "requests": {"cpu": "250m", "memory": "64Mi"}
                            },
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/health", "port": 8080},
                                "initialDelaySeconds": 2,
                                "periodSeconds": 5
                            }
                        }],
                        "imagePullSecrets": [{"name": "regcred"}, {"name": "other"}],
                        "restartPolicy": "Always"
                    }
                }
            }
        });
        let got = serde_json::to_value(manifests().deployment(&spec)).unwrap();
        assert_eq!(got, expected, "{got:#}");
        assert_eq!(
            manifests().endpoint_url(&spec.name),
            "http://fn-echo-v2.nanofaas.svc.cluster.local:8080/invoke"
        );
    }

    #[test]
    fn deployment_defaults_and_configured_values() {
        // No scaling config (only possible for a spec built by hand): 1 replica. No command,
        // resources or pull secrets: the fields are absent.
        let mut plain = echo();
        plain.scaling_config = None;
        let config = KubernetesConfig {
            namespace: None,
            pod_namespace: Some("team-a".to_owned()),
            callback_url: String::new(),
            image_pull_policy: "Always".to_owned(),
        };
        let d = serde_json::to_value(Manifests::from_config(&config).deployment(&plain)).unwrap();
        assert_eq!(d["metadata"]["namespace"], "team-a");
        assert_eq!(d["spec"]["replicas"], 1);
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["imagePullPolicy"], "Always");
        assert_eq!(container.get("command"), None);
        assert_eq!(container.get("resources"), None);
        assert_eq!(d["spec"]["template"]["spec"].get("imagePullSecrets"), None);
        assert_eq!(
            container["env"][4],
            json!({"name": "CALLBACK_URL", "value":
                "http://control-plane.team-a.svc.cluster.local:8080/v1/internal/executions"})
        );
        // Resolved DEPLOYMENT defaults (minReplicas 1); an explicit callback URL wins; only cpu.
        let config = KubernetesConfig {
            callback_url: "http://cp.example:8080/v1/internal/executions".to_owned(),
            ..k8s_config()
        };
        let only_cpu = spec(r#"{"name":"echo","image":"i","resources":{"cpu":"1"}}"#);
        let d =
            serde_json::to_value(Manifests::from_config(&config).deployment(&only_cpu)).unwrap();
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            container["resources"],
            json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}})
        );
        assert_eq!(
            container["env"][4]["value"],
            "http://cp.example:8080/v1/internal/executions"
        );
    }

    #[test]
    fn service_manifest_is_the_reference_shape() {
        let got = serde_json::to_value(manifests().service(&echo())).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "fn-echo",
                    "namespace": NS,
                    "labels": {"app": "nanofaas", "function": "echo"},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/path": "/metrics",
                        "prometheus.io/port": "8080"
                    }
                },
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"function": "echo"},
                    "ports": [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]
                }
            })
        );
    }

    fn expected_hpa() -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "fn-echo",
                "namespace": NS,
                "labels": {"app": "nanofaas", "function": "echo"}
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fn-echo"},
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70}}},
                    {"type": "External", "external": {
                        "metric": {"name": "nanofaas_rps",
                            "selector": {"matchLabels": {"function": "echo"}}},
                        "target": {"type": "Value", "value": "50"}}}
                ]
            }
        })
    }

    #[test]
    fn hpa_only_for_the_hpa_strategy() {
        let got = serde_json::to_value(manifests().hpa(&hpa_spec()).unwrap()).unwrap();
        assert_eq!(got, expected_hpa(), "{got:#}");
        for strategy in ["INTERNAL", "NONE"] {
            let s = spec(&format!(
                r#"{{"name":"echo","image":"i","scalingConfig":{{"strategy":"{strategy}"}}}}"#
            ));
            assert!(manifests().hpa(&s).is_none(), "{strategy}");
        }
        // minReplicas 0 is kept for the Deployment but the HPA needs at least 1.
        let zero = spec(
            r#"{"name":"echo","image":"i","scalingConfig":{"strategy":"HPA","minReplicas":0}}"#,
        );
        let hpa = manifests().hpa(&zero).unwrap();
        assert_eq!(hpa.spec.min_replicas, Some(1));
        assert_eq!(hpa.spec.max_replicas, 10);
        assert_eq!(manifests().deployment(&zero).spec.replicas, Some(0));
    }

    #[test]
    fn metrics_translate_as_the_reference_says() {
        let external = |name: &str, value: &str| {
            json!({"type": "External", "external": {
                "metric": {"name": name, "selector": {"matchLabels": {"function": "fx"}}},
                "target": {"type": "Value", "value": value}}})
        };
        let resource = |name: &str, value: i32| {
            json!({"type": "Resource", "resource": {"name": name,
                "target": {"type": "Utilization", "averageUtilization": value}}})
        };
        let cases: Vec<(Option<&str>, Option<&str>, Option<Value>)> = vec![
            (Some("cpu"), Some("80"), Some(resource("cpu", 80))),
            (Some("memory"), Some(" 65 "), Some(resource("memory", 65))),
            (Some("cpu"), Some("7.5"), Some(resource("cpu", 50))),
            (
                Some("queue_depth"),
                Some("5"),
                Some(external("nanofaas_queue_depth", "5")),
            ),
            (
                Some("in_flight"),
                None,
                Some(external("nanofaas_in_flight", "50")),
            ),
            (
                Some("rps"),
                Some("100"),
                Some(external("nanofaas_rps", "100")),
            ),
            (
                Some("prometheus"),
                Some("3"),
                Some(external("nanofaas_custom_fx", "3")),
            ),
            (Some("gpu"), Some("1"), None),
            (None, Some("1"), None),
        ];
        for (kind, target, expected) in cases {
            let metric = ScalingMetric {
                kind: kind.map(str::to_owned),
                target: target.map(str::to_owned),
                query: None,
            };
            let got = metric_spec("fx", &metric).map(|m| serde_json::to_value(m).unwrap());
            assert_eq!(got, expected, "{kind:?} {target:?}");
        }
    }

    fn pod_status(status: Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: &str) -> Value {
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "validate", "image": "img", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}]})
    }

    #[test]
    fn pull_outcomes_follow_the_reference() {
        let not_found = || {
            Some(Err(DeployError::ImageNotFound(
                "Image not found in registry: img".into(),
            )))
        };
        let auth = || {
            Some(Err(DeployError::ImagePullAuthRequired(
                "Image pull authentication failed for: img".into(),
            )))
        };
        let cases: Vec<(Value, Option<Result<(), DeployError>>)> = vec![
            (json!({}), None),
            (json!({"phase": "Pending"}), None),
            (waiting("ContainerCreating", ""), None),
            (json!({"phase": "Running"}), Some(Ok(()))),
            (json!({"phase": "Succeeded"}), Some(Ok(()))),
            (
                json!({"phase": "Pending", "containerStatuses": [{"name": "validate",
                    "image": "img", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1}}}]}),
                Some(Ok(())),
            ),
            (
                waiting(
                    "ErrImagePull",
                    "failed to resolve reference \"img\": img: not found",
                ),
                not_found(),
            ),
            (
                waiting("ErrImagePull", "manifest unknown: manifest unknown"),
                not_found(),
            ),
            (
                waiting("ImagePullBackOff", "NAME UNKNOWN: repository"),
                not_found(),
            ),
            (
                waiting("InvalidImageName", "couldn't parse image reference"),
                not_found(),
            ),
            (
                waiting(
                    "ErrImagePull",
                    "pull access denied, repository does not exist",
                ),
                auth(),
            ),
            (waiting("ErrImagePull", "401 Unauthorized"), auth()),
            (
                waiting("ImagePullBackOff", "Back-off pulling image \"img\""),
                Some(Err(DeployError::ImageRegistryUnavailable(
                    "Unable to validate image in registry: img (ImagePullBackOff: Back-off \
                     pulling image \"img\")"
                        .into(),
                ))),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(
                pull_outcome(&pod_status(status.clone()), "img"),
                expected,
                "{status}"
            );
        }
        let no_status: Pod =
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}))
                .unwrap();
        assert_eq!(pull_outcome(&no_status, "img"), None);
    }

    // ---- the scripted mock API server --------------------------------------------------

    type Handle = mock::Handle<Request<Body>, Response<Body>>;
    type Check = Box<dyn Fn(&Value) + Send + Sync>;

    /// Scripts are written in parts (provision, rollback, ...).
    trait Joined {
        fn joined(self) -> Vec<Exchange>;
    }

    impl<const N: usize> Joined for [Vec<Exchange>; N] {
        fn joined(self) -> Vec<Exchange> {
            self.into_iter().flatten().collect()
        }
    }

    enum Reply {
        /// This status and JSON body.
        Json(u16, Value),
        /// 200 with the request body, as the API server answers an apply or a create.
        Echo,
        /// The connection fails: no HTTP answer at all.
        Transport(&'static str),
    }

    struct Exchange {
        method: Method,
        path: String,
        /// `path` is a prefix (for generated names).
        prefix: bool,
        query: Option<&'static str>,
        content_type: Option<&'static str>,
        check: Option<Check>,
        reply: Reply,
        /// Answer any number (≥ 1) of such requests.
        repeated: bool,
    }

    fn expect(method: Method, path: impl Into<String>) -> Exchange {
        Exchange {
            method,
            path: path.into(),
            prefix: false,
            query: None,
            content_type: None,
            check: None,
            reply: Reply::Json(200, json!({})),
            repeated: false,
        }
    }

    impl Exchange {
        fn prefix(mut self) -> Self {
            self.prefix = true;
            self
        }
        fn body(mut self, check: impl Fn(&Value) + Send + Sync + 'static) -> Self {
            self.check = Some(Box::new(check));
            self
        }
        fn reply(mut self, reply: Reply) -> Self {
            self.reply = reply;
            self
        }
        fn repeated(mut self) -> Self {
            self.repeated = true;
            self
        }
        fn matches(&self, request: &Request<Body>) -> bool {
            let path = request.uri().path();
            request.method() == self.method
                && if self.prefix {
                    path.starts_with(&self.path)
                } else {
                    path == self.path
                }
        }
    }

    fn deployment_path(name: &str) -> String {
        format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
    }
    fn service_path(name: &str) -> String {
        format!("/api/v1/namespaces/{NS}/services/{name}")
    }
    fn hpa_path(name: &str) -> String {
        format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}")
    }
    const PODS: &str = "/api/v1/namespaces/nanofaas/pods";

    /// A server-side apply of the object at `path`; the API answers with the object.
    fn apply(path: String) -> Exchange {
        let mut e = expect(Method::PATCH, path).reply(Reply::Echo);
        e.query = Some(APPLY_QUERY);
        e.content_type = Some(APPLY_TYPE);
        e
    }

    /// A delete of the object at `path` (background propagation), answered with `code`.
    fn delete(path: String, code: u16) -> Exchange {
        expect(Method::DELETE, path)
            .body(|b| assert_eq!(b["propagationPolicy"], "Background", "{b}"))
            .reply(status(code))
    }

    fn status(code: u16) -> Reply {
        match code {
            200 => Reply::Json(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            404 => Reply::Json(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "not found", "reason": "NotFound", "code": 404}),
            ),
            code => Reply::Json(
                code,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": format!("the API says no ({code})"), "reason": "InternalError",
                    "code": code}),
            ),
        }
    }

    async fn answer(
        exchange: &Exchange,
        index: usize,
        request: Request<Body>,
        respond: mock::SendResponse<Response<Body>>,
    ) {
        let what = format!("exchange {index} ({} {})", exchange.method, exchange.path);
        assert_eq!(
            request.method(),
            exchange.method,
            "{what}: {}",
            request.uri()
        );
        assert!(
            exchange.matches(&request),
            "{what}: got {} {}",
            request.method(),
            request.uri()
        );
        if let Some(query) = exchange.query {
            // Compared as a set of parameters (kube writes a leading `&`).
            let pairs = |q: &str| {
                let mut p: Vec<String> = q
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                p.sort();
                p
            };
            assert_eq!(
                pairs(request.uri().query().unwrap_or_default()),
                pairs(query),
                "{what}"
            );
        }
        if let Some(content_type) = exchange.content_type {
            assert_eq!(
                request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some(content_type),
                "{what}"
            );
        }
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        if let Some(check) = &exchange.check {
            check(&body);
        }
        let json_response = |code: u16, body: &Value| {
            Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap()
        };
        match &exchange.reply {
            Reply::Json(code, value) => respond.send_response(json_response(*code, value)),
            Reply::Echo => respond.send_response(json_response(200, &body)),
            Reply::Transport(message) => respond.send_error(std::io::Error::other(*message)),
        }
    }

    async fn serve(mut handle: Handle, script: Vec<Exchange>) {
        let mut pending = None;
        let mut closed = false;
        for (index, exchange) in script.iter().enumerate() {
            let mut answered = 0;
            loop {
                let next = match pending.take() {
                    Some(p) => Some(p),
                    None if closed => None,
                    None => handle.next_request().await,
                };
                let Some((request, respond)) = next else {
                    closed = true;
                    assert!(
                        exchange.repeated && answered > 0,
                        "exchange {index}: expected {} {}, but no request came",
                        exchange.method,
                        exchange.path
                    );
                    break;
                };
                if answered > 0 && !exchange.matches(&request) {
                    pending = Some((request, respond));
                    break;
                }
                answer(exchange, index, request, respond).await;
                answered += 1;
                if !exchange.repeated {
                    break;
                }
            }
        }
        let extra = match pending {
            Some(p) => Some(p),
            None if closed => None,
            None => handle.next_request().await,
        };
        if let Some((request, _)) = extra {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }

    fn provider(script: Vec<Exchange>) -> (KubernetesProvider, tokio::task::JoinHandle<()>) {
        provider_with(script, false)
    }

    fn provider_with(
        script: Vec<Exchange>,
        validate_images: bool,
    ) -> (KubernetesProvider, tokio::task::JoinHandle<()>) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, NS);
        let mut provider = KubernetesProvider::new(client, &k8s_config(), validate_images);
        provider.validation_poll_interval = Duration::from_millis(2);
        provider.validation_timeout = Duration::from_millis(60);
        (provider, tokio::spawn(serve(handle, script)))
    }

    /// Drops the provider (closing the mock connection) and waits for the script's verdict.
    async fn finish(provider: KubernetesProvider, server: tokio::task::JoinHandle<()>) {
        drop(provider);
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the mock API server did not finish"),
        }
    }

    fn recorder() -> (
        Arc<Mutex<Vec<Value>>>,
        impl Fn(&Value) + Send + Clone + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |b: &Value| lock(&sink).push(b.clone()))
    }

    // ---- provider against the mock API -------------------------------------------------

    #[tokio::test]
    async fn register_applies_deployment_and_service_and_drops_a_stale_hpa() {
        let spec = echo();
        let expected_deployment = serde_json::to_value(manifests().deployment(&spec)).unwrap();
        let expected_service = serde_json::to_value(manifests().service(&spec)).unwrap();
        let (p, server) = provider(vec![
            apply(deployment_path("fn-echo")).body(move |b| assert_eq!(b, &expected_deployment)),
            apply(service_path("fn-echo")).body(move |b| assert_eq!(b, &expected_service)),
            delete(hpa_path("fn-echo"), 404),
        ]);
        let provisioned = p.provision(&spec).await;
        finish(p, server).await;
        let provisioned = provisioned.unwrap();
        assert_eq!(
            provisioned.endpoint_url,
            "http://fn-echo.nanofaas.svc.cluster.local:8080/invoke"
        );
        assert!(provisioned.replicas.is_none());
    }

    #[tokio::test]
    async fn register_with_hpa_strategy_applies_the_hpa() {
        let (p, server) = provider(vec![
            apply(deployment_path("fn-echo")).body(|b| assert_eq!(b["spec"]["replicas"], 2, "{b}")),
            apply(service_path("fn-echo")),
            apply(hpa_path("fn-echo")).body(|b| assert_eq!(b, &expected_hpa())),
        ]);
        let provisioned = p.provision(&hpa_spec()).await;
        finish(p, server).await;
        provisioned.unwrap();
    }

    #[tokio::test]
    async fn re_register_applies_the_same_objects_again() {
        let (deployments, record_deployment) = recorder();
        let (services, record_service) = recorder();
        let once = || {
            vec![
                apply(deployment_path("fn-echo")).body(record_deployment.clone()),
                apply(service_path("fn-echo")).body(record_service.clone()),
                delete(hpa_path("fn-echo"), 404),
            ]
        };
        let (p, server) = provider([once(), once()].joined());
        let first = p.provision(&echo()).await.map(|p| p.endpoint_url);
        let second = p.provision(&echo()).await.map(|p| p.endpoint_url);
        finish(p, server).await;
        assert_eq!(first.unwrap(), second.unwrap());
        let deployments = lock(&deployments);
        let services = lock(&services);
        assert_eq!(deployments.len(), 2);
        assert_eq!(deployments[0], deployments[1]);
        assert_eq!(services[0], services[1]);
    }

    #[tokio::test]
    async fn re_register_without_hpa_strategy_deletes_the_stale_hpa() {
        let (p, server) = provider(vec![
            apply(deployment_path("fn-echo")),
            apply(service_path("fn-echo")),
            apply(hpa_path("fn-echo")),
            apply(deployment_path("fn-echo")),
            apply(service_path("fn-echo")),
            delete(hpa_path("fn-echo"), 200),
        ]);
        let with_hpa = p.provision(&hpa_spec()).await;
        let without = p.provision(&echo()).await;
        finish(p, server).await;
        with_hpa.unwrap();
        without.unwrap();
    }

    #[tokio::test]
    async fn scale_patches_the_scale_subresource() {
        let mut scale = expect(
            Method::PATCH,
            format!("{}/scale", deployment_path("fn-echo")),
        )
        .body(|b| assert_eq!(b, &json!({"spec": {"replicas": 3}})))
        .reply(Reply::Json(
            200,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "fn-echo", "namespace": NS},
                    "spec": {"replicas": 3}, "status": {"replicas": 1}}),
        ));
        scale.content_type = Some(MERGE_TYPE);
        scale.query = Some("fieldManager=nanofaas-control-plane");
        let (p, server) = provider(vec![scale]);
        let result = p.set_replicas("echo", 3).await;
        finish(p, server).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn ready_replicas_come_from_the_deployment_status() {
        let object = serde_json::to_value(manifests().deployment(&echo())).unwrap();
        let with_status = |status: Value| {
            let mut d = object.clone();
            d["status"] = status;
            Reply::Json(200, d)
        };
        let cases = [
            (with_status(json!({"replicas": 3, "readyReplicas": 2})), 2),
            (with_status(json!({"replicas": 1})), 0),
            (Reply::Json(200, object.clone()), 0),
            (status(404), 0),
        ];
        for (reply, expected) in cases {
            let get = expect(Method::GET, deployment_path("fn-echo"))
                .body(|b| assert_eq!(b, &Value::Null))
                .reply(reply);
            let (p, server) = provider(vec![get]);
            let ready = p.ready_replicas("echo").await;
            finish(p, server).await;
            assert_eq!(ready.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn delete_removes_hpa_service_and_deployment_and_tolerates_404() {
        let (p, server) = provider(vec![
            delete(hpa_path("fn-echo"), 404),
            delete(service_path("fn-echo"), 200),
            delete(deployment_path("fn-echo"), 200),
            // Deleting again: everything is already gone.
            delete(hpa_path("fn-echo"), 404),
            delete(service_path("fn-echo"), 404),
            delete(deployment_path("fn-echo"), 404),
        ]);
        let first = p.deprovision("echo").await;
        let second = p.deprovision("echo").await;
        finish(p, server).await;
        first.unwrap();
        second.unwrap();
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Provision,
        Scale,
        Ready,
        Deprovision,
    }

    async fn run(op: Op, p: &KubernetesProvider) -> Result<(), DeployError> {
        match op {
            Op::Provision => p.provision(&echo()).await.map(drop),
            Op::Scale => p.set_replicas("echo", 2).await,
            Op::Ready => p.ready_replicas("echo").await.map(drop),
            Op::Deprovision => p.deprovision("echo").await,
        }
    }

    #[tokio::test]
    async fn api_failures_are_failed_and_transport_errors_unavailable() {
        let refused = Reply::Transport("connection refused");
        let rollback = |code| {
            vec![
                delete(hpa_path("fn-echo"), code),
                delete(service_path("fn-echo"), code),
                delete(deployment_path("fn-echo"), code),
            ]
        };
        let cases: Vec<(Op, Vec<Exchange>, u16, &str)> = vec![
            (
                Op::Provision,
                vec![apply(deployment_path("fn-echo")).reply(status(500))],
                502,
                "Kubernetes API refused to apply Deployment fn-echo: the API says no (500) (HTTP 500)",
            ),
            (
                Op::Provision,
                vec![
                    apply(deployment_path("fn-echo")).reply(Reply::Transport("connection refused")),
                ],
                503,
                "Kubernetes API unavailable: ",
            ),
            (
                Op::Provision,
                [
                    vec![
                        apply(deployment_path("fn-echo")),
                        apply(service_path("fn-echo")).reply(status(422)),
                    ],
                    rollback(200),
                ]
                .joined(),
                502,
                "refused to apply Service fn-echo: the API says no (422)",
            ),
            (
                // The API goes away after the Deployment was written: it is still cleaned up
                // (best effort; here the deletes get through).
                Op::Provision,
                [
                    vec![
                        apply(deployment_path("fn-echo")),
                        apply(service_path("fn-echo")).reply(Reply::Transport("broken pipe")),
                    ],
                    rollback(404),
                ]
                .joined(),
                503,
                "Kubernetes API unavailable: ",
            ),
            (
                Op::Provision,
                [
                    vec![
                        apply(deployment_path("fn-echo")),
                        apply(service_path("fn-echo")),
                        delete(hpa_path("fn-echo"), 403),
                    ],
                    rollback(200),
                ]
                .joined(),
                502,
                "refused to delete HorizontalPodAutoscaler fn-echo: the API says no (403)",
            ),
            (
                Op::Provision,
                vec![apply(deployment_path("fn-echo")).reply(status(503))],
                503,
                "Kubernetes API unavailable: the API says no (503)",
            ),
            (
                Op::Scale,
                vec![
                    expect(
                        Method::PATCH,
                        format!("{}/scale", deployment_path("fn-echo")),
                    )
                    .reply(status(403)),
                ],
                502,
                "refused to scale Deployment fn-echo: the API says no (403)",
            ),
            (
                Op::Ready,
                vec![expect(Method::GET, deployment_path("fn-echo")).reply(refused)],
                503,
                "Kubernetes API unavailable: ",
            ),
            (
                Op::Ready,
                vec![expect(Method::GET, deployment_path("fn-echo")).reply(status(500))],
                502,
                "refused to read Deployment fn-echo",
            ),
            (
                // Every object is still attempted; the first failure is reported.
                Op::Deprovision,
                vec![
                    delete(hpa_path("fn-echo"), 500),
                    delete(service_path("fn-echo"), 200),
                    delete(deployment_path("fn-echo"), 200),
                ],
                502,
                "refused to delete HorizontalPodAutoscaler fn-echo",
            ),
        ];
        for (op, script, http_status, message) in cases {
            let (p, server) = provider(script);
            let result = run(op, &p).await;
            let owners_left = lock(&p.owners).len();
            finish(p, server).await;
            let error = result.expect_err(&format!("{op:?} should fail"));
            match (&error, http_status) {
                (DeployError::Failed(_), 502) | (DeployError::Unavailable(_), 503) => {}
                _ => panic!("{op:?}: unexpected {error:?}"),
            }
            assert!(error.to_string().contains(message), "{op:?}: {error}");
            assert_eq!(ApiError::from(error).status().as_u16(), http_status);
            // A failed registration leaves no claim on the name behind.
            assert_eq!(owners_left, 0, "{op:?}");
        }
    }

    #[tokio::test]
    async fn transport_errors_name_the_cause() {
        let (p, server) = provider(vec![
            expect(Method::GET, deployment_path("fn-echo"))
                .reply(Reply::Transport("connection refused")),
        ]);
        let error = p.ready_replicas("echo").await.unwrap_err();
        finish(p, server).await;
        let text = error.to_string();
        assert!(
            text.starts_with("Kubernetes API unavailable: ") && text.contains("connection refused"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn colliding_names_are_rejected_with_409() {
        let a_dot_b = spec(r#"{"name":"a.b","image":"i"}"#);
        let a_under_b = spec(r#"{"name":"A_b","image":"i"}"#);
        let provision = |name: &'static str| {
            vec![
                apply(deployment_path(name)),
                apply(service_path(name)),
                delete(hpa_path(name), 404),
            ]
        };
        let (p, server) = provider(
            [
                provision("fn-a-b"),
                vec![
                    delete(hpa_path("fn-a-b"), 404),
                    delete(service_path("fn-a-b"), 200),
                    delete(deployment_path("fn-a-b"), 200),
                ],
                provision("fn-a-b"),
            ]
            .joined(),
        );
        p.provision(&a_dot_b).await.unwrap();
        // No request reaches the API for the second name, not even an image probe.
        let validate = p.validate_image(&a_under_b).await;
        let provision_again = p.provision(&a_under_b).await.map(drop);
        // The owner may re-provision; once it is deleted, the other name is free.
        p.deprovision("a.b").await.unwrap();
        let after_delete = p.provision(&a_under_b).await.map(drop);
        finish(p, server).await;
        let expected = DeployError::Conflict(
            "Function 'A_b' conflicts with function 'a.b': both map to the Kubernetes name \
             'fn-a-b'"
                .to_owned(),
        );
        assert_eq!(validate, Err(expected.clone()));
        assert_eq!(provision_again, Err(expected.clone()));
        assert_eq!(ApiError::from(expected).status().as_u16(), 409);
        after_delete.unwrap();
    }

    #[tokio::test]
    async fn supports_deployment_mode_and_is_always_available() {
        let (p, server) = provider(vec![]);
        assert_eq!(p.id(), "k8s");
        assert!(p.is_available().await);
        assert!(p.supports(&echo()));
        let pool =
            spec(r#"{"name":"p","image":"i","executionMode":"POOL","endpointUrl":"http://x"}"#);
        assert!(!p.supports(&pool));
        // Image validation is off unless enabled: no probe pod.
        assert_eq!(p.validate_image(&echo()).await, Ok(()));
        finish(p, server).await;
    }

    fn probe_pod(status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "imgval-echo-x",
            "namespace": NS}, "status": status})
    }

    fn create_probe() -> Exchange {
        expect(Method::POST, PODS)
            .body(|b| {
                let name = b["metadata"]["name"].as_str().unwrap();
                assert!(
                    name.starts_with("imgval-echo-") && name.len() <= 63,
                    "{name}"
                );
                assert_eq!(
                    b["metadata"]["labels"],
                    json!({"app": "nanofaas", "nanofaas.io/purpose": "image-validation",
                        "nanofaas.io/function": "echo"})
                );
                assert_eq!(
                    b["spec"],
                    json!({
                        "containers": [{"name": "validate", "image": "ghcr.io/acme/echo:1",
                            "imagePullPolicy": "Always"}],
                        "imagePullSecrets": [{"name": "regcred"}],
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 0
                    })
                );
            })
            .reply(Reply::Echo)
    }

    fn poll_probe(status: Value) -> Exchange {
        expect(Method::GET, format!("{PODS}/imgval-echo-"))
            .prefix()
            .reply(Reply::Json(200, probe_pod(status)))
    }

    fn delete_probe(code: u16) -> Exchange {
        expect(Method::DELETE, format!("{PODS}/imgval-echo-"))
            .prefix()
            .body(|b| assert_eq!(b["gracePeriodSeconds"], 0, "{b}"))
            .reply(status(code))
    }

    #[tokio::test]
    async fn image_validation_outcomes() {
        let image = "ghcr.io/acme/echo:1";
        let unavailable = |detail: &str| {
            DeployError::ImageRegistryUnavailable(format!(
                "Unable to validate image in registry: {image} ({detail})"
            ))
        };
        let cases: Vec<(&str, Vec<Exchange>, Result<(), DeployError>)> = vec![
            (
                "not found",
                vec![
                    create_probe(),
                    poll_probe(waiting("ErrImagePull", "manifest unknown")),
                    delete_probe(200),
                ],
                Err(DeployError::ImageNotFound(format!(
                    "Image not found in registry: {image}"
                ))),
            ),
            (
                "invalid name",
                vec![
                    create_probe(),
                    poll_probe(waiting("InvalidImageName", "bad reference")),
                    delete_probe(200),
                ],
                Err(DeployError::ImageNotFound(format!(
                    "Image not found in registry: {image}"
                ))),
            ),
            (
                "auth required",
                vec![
                    create_probe(),
                    poll_probe(waiting("ErrImagePull", "pull access denied for echo")),
                    delete_probe(200),
                ],
                Err(DeployError::ImagePullAuthRequired(format!(
                    "Image pull authentication failed for: {image}"
                ))),
            ),
            (
                "pull backoff",
                vec![
                    create_probe(),
                    poll_probe(waiting("ContainerCreating", "")),
                    poll_probe(waiting("ImagePullBackOff", "Back-off pulling image")),
                    delete_probe(404),
                ],
                Err(unavailable("ImagePullBackOff: Back-off pulling image")),
            ),
            (
                "ready",
                vec![
                    create_probe(),
                    poll_probe(json!({"phase": "Pending"})),
                    poll_probe(json!({"phase": "Running"})),
                    delete_probe(200),
                ],
                Ok(()),
            ),
            (
                "timeout",
                vec![
                    create_probe(),
                    poll_probe(waiting("ContainerCreating", "")).repeated(),
                    delete_probe(200),
                ],
                Err(unavailable("Timed out waiting for image pull")),
            ),
            (
                "probe pod refused",
                vec![create_probe().reply(status(403))],
                Err(DeployError::Failed(
                    "Kubernetes API refused to create image-validation Pod".to_owned(),
                )),
            ),
        ];
        let spec = spec(
            r#"{"name":"echo","image":"ghcr.io/acme/echo:1","imagePullSecrets":[" regcred ",""]}"#,
        );
        for (case, script, expected) in cases {
            let (p, server) = provider_with(script, true);
            let result = p.validate_image(&spec).await;
            finish(p, server).await;
            match (&result, &expected) {
                (Err(DeployError::Failed(got)), Err(DeployError::Failed(prefix))) => {
                    assert!(got.starts_with(prefix), "{case}: {got}");
                }
                _ => assert_eq!(result, expected, "{case}"),
            }
        }
    }

    #[tokio::test]
    async fn image_validation_without_api_is_registry_unavailable() {
        let (p, server) = provider_with(
            vec![create_probe().reply(Reply::Transport("connection refused"))],
            true,
        );
        let error = p
            .validate_image(&spec(
                r#"{"name":"echo","image":"ghcr.io/acme/echo:1","imagePullSecrets":["regcred"]}"#,
            ))
            .await
            .unwrap_err();
        finish(p, server).await;
        let text = error.to_string();
        assert!(
            matches!(error, DeployError::ImageRegistryUnavailable(_))
                && text.starts_with(
                    "Unable to validate image in registry: ghcr.io/acme/echo:1 (Kubernetes API \
                     unavailable: "
                )
                && text.contains("connection refused"),
            "{text}"
        );
        assert_eq!(ApiError::from(error).status().as_u16(), 503);
    }
}
