//! Kubernetes client errors as `DeployError`s: nothing becomes a 500; an unreachable API server
//! is `Unavailable` (503), a refusal by the API `Failed` (502), a name collision `Conflict` (409).

use crate::deploy::DeployError;

pub(super) fn registry_unavailable(image: &str, detail: &str) -> DeployError {
    DeployError::ImageRegistryUnavailable(format!(
        "Unable to validate image in registry: {image} ({detail})"
    ))
}

/// Maps a client error: a refusal by the API server (a `Status`) is `Failed` with its message,
/// except 502/503/504 (the API server or its proxy is unavailable); anything that kept the
/// request from being answered (connection, TLS, timeout, credentials plugin) is `Unavailable`.
pub(super) fn k8s_error(e: kube::Error, action: &str) -> DeployError {
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

pub(super) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_not_found())
}

pub(super) fn conflict(function: &str, owner: &str, name: &str) -> DeployError {
    DeployError::Conflict(format!(
        "Function '{function}' conflicts with function '{owner}': both map to the Kubernetes \
         name '{name}'"
    ))
}
