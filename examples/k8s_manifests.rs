//! Writes the Kubernetes objects the `k8s` deployment backend generates for a few sample
//! functions (Deployment, Service, HPA when the strategy is HPA, and the image-validation probe
//! Pod) as JSON files into the directory given as the only argument.
//! `scripts/validate-k8s.sh` schema-validates them together with `deploy/k8s/`.
//!
//! Usage: `cargo run --example k8s_manifests -- <output directory>`

use nanofaas_control_plane::config::{Config, KubernetesConfig};
use nanofaas_control_plane::deploy::kubernetes::{Manifests, resource_name};
use nanofaas_control_plane::function::FunctionSpecRequest;

/// Samples that together use every field the backend can set.
const SAMPLES: [&str; 3] = [
    // Every container field, and the HPA with each metric type (plus one it skips).
    r#"{"name":"Word_Count.v2","image":"ghcr.io/acme/word-count:1.2","command":["/app","--serve"],
        "env":{"LOG_LEVEL":"debug","WARM":"false"},"resources":{"cpu":"250m","memory":"128Mi"},
        "timeoutMs":5000,"runtimeMode":"STDIO","runtimeCommand":"python handler.py",
        "imagePullSecrets":[" regcred ",""],
        "scalingConfig":{"strategy":"HPA","minReplicas":0,"maxReplicas":8,"metrics":[
          {"type":"cpu","target":"70"},{"type":"memory","target":"80"},
          {"type":"queue_depth","target":"5"},{"type":"in_flight","target":"x"},
          {"type":"rps","target":"100"},{"type":"prometheus","target":"3"},
          {"type":"unknown","target":"1"}]}}"#,
    // The defaults: INTERNAL scaling, one replica, no command, resources or pull secrets.
    r#"{"name":"echo","image":"nanofaas/example-runtime:local"}"#,
    // Scaled to zero, no HPA.
    r#"{"name":"idle","image":"nanofaas/example-runtime:local",
        "scalingConfig":{"strategy":"NONE","minReplicas":0,"maxReplicas":1}}"#,
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: k8s_manifests <output directory>")?;
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let config = Config::default();
    let manifests = Manifests::from_config(&KubernetesConfig {
        callback_service_port: 8080,
        namespace: Some("nanofaas".to_owned()),
        ..config.k8s.clone()
    });
    let mut written = 0;
    for sample in SAMPLES {
        let spec = serde_json::from_str::<FunctionSpecRequest>(sample)?
            .resolve(&config.defaults)
            .map_err(|e| format!("sample spec is invalid: {e:?}"))?;
        let mut objects = vec![
            (
                "deployment",
                serde_json::to_vec_pretty(&manifests.deployment(&spec))?,
            ),
            (
                "service",
                serde_json::to_vec_pretty(&manifests.service(&spec))?,
            ),
            (
                "pod",
                serde_json::to_vec_pretty(&manifests.validation_pod(&spec, "0abc123xyz"))?,
            ),
        ];
        if let Some(hpa) = manifests.hpa(&spec) {
            objects.push(("hpa", serde_json::to_vec_pretty(&hpa)?));
        }
        for (kind, json) in objects {
            let path = dir.join(format!("{}-{kind}.json", resource_name(&spec.name)));
            std::fs::write(&path, json)?;
            written += 1;
        }
    }
    println!("wrote {written} manifests to {}", dir.display());
    Ok(())
}
