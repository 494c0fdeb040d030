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
//!
//! Layout: `names` (derived object names), `manifests` (the pure object builders), `provider`
//! (the `DeploymentProvider` on the API), `image_probe` (§5.5), `errors` (client errors →
//! `DeployError`); `mock_api` and `tests` are test-only.

mod errors;
mod image_probe;
mod manifests;
mod names;
mod provider;

#[cfg(test)]
mod mock_api;
#[cfg(test)]
mod tests;

pub use image_probe::pull_outcome;
pub use manifests::{FUNCTION_PORT, Manifests, metric_spec};
pub use names::{label_value, resource_name, validation_pod_name};
pub use provider::{FIELD_MANAGER, KubernetesProvider};
