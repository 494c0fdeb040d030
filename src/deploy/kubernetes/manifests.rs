//! The objects of a function (REFERENCE §5.6) as pure builders: no I/O, so they are checked and
//! schema-validated without a cluster.

use std::collections::BTreeMap;

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

use super::names::{label_value, resource_name, validation_pod_name};
use crate::config::KubernetesConfig;
use crate::deploy::runtime_env::runtime_env;
use crate::function::limits::FALLBACK_METRIC_TARGET;
use crate::function::{FunctionSpec, ScalingMetric, ScalingStrategy};

/// The port function containers serve `/invoke` and `/health` on, and the Service's port.
pub const FUNCTION_PORT: i32 = 8080;

fn clamp_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
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
                replicas: Some(clamp_i32(spec.initial_replicas())),
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
        let scaling = spec.scaling.resolved()?;
        if scaling.strategy != ScalingStrategy::Hpa {
            return None;
        }
        let metrics: Vec<MetricSpec> = scaling
            .metrics
            .iter()
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
                min_replicas: Some(clamp_i32(scaling.min_replicas).max(1)),
                max_replicas: clamp_i32(scaling.max_replicas).max(1),
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
        .unwrap_or(FALLBACK_METRIC_TARGET);
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
