//! Image validation (REFERENCE §5.5): a short-lived probe pod with the image, watched until its
//! pull succeeds or fails, then deleted.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

use super::errors::{is_not_found, k8s_error, registry_unavailable};
use crate::deploy::DeployError;

/// Image-validation patterns (REFERENCE §5.5), matched against the lower-cased waiting message.
const NOT_FOUND_PATTERNS: [&str; 3] = ["not found", "manifest unknown", "name unknown"];
const AUTH_PATTERNS: [&str; 4] = [
    "pull access denied",
    "authentication required",
    "unauthorized",
    "denied",
];

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

/// One image validation: create the probe pod, watch the pull, delete the pod.
pub(super) struct ImageProbe {
    pub(super) pods: Api<Pod>,
    pub(super) image: String,
    pub(super) poll_interval: Duration,
    pub(super) timeout: Duration,
}

impl ImageProbe {
    pub(super) async fn run(self, pod: Pod) -> Result<(), DeployError> {
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
