use super::*;
use crate::config::Config;
use crate::deploy::{BoxFuture, DeploymentProvider, Provisioned};

/// A backend whose replicas never become ready.
struct NeverReady;

impl DeploymentProvider for NeverReady {
    fn id(&self) -> &'static str {
        "never-ready"
    }
    fn is_available(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
    fn supports(&self, _spec: &FunctionSpec) -> bool {
        true
    }
    fn provision<'a>(
        &'a self,
        _spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Provisioned, DeployError>> {
        Box::pin(async {
            Err(DeployError::Unavailable(
                "replica never became ready".into(),
            ))
        })
    }
    fn deprovision<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async { Ok(()) })
    }
    fn set_replicas<'a>(
        &'a self,
        _name: &'a str,
        _replicas: u32,
    ) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async { Ok(()) })
    }
    fn ready_replicas<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<u32, DeployError>> {
        Box::pin(async { Ok(0) })
    }
}

fn request(spec: serde_json::Value) -> FunctionSpecRequest {
    serde_json::from_value(spec).unwrap()
}

#[tokio::test]
async fn a_backend_that_cannot_provision_degrades_to_pool_only_with_an_endpoint() {
    let providers = Providers::new(
        vec![Arc::new(NeverReady) as Arc<dyn DeploymentProvider>],
        None,
    );
    let registry = FunctionRegistry::new(Config::default().defaults, None, providers);
    let f = registry
        .register(request(serde_json::json!({
            "name": "f", "image": "i", "endpointUrl": "http://127.0.0.1:9/invoke"
        })))
        .await
        .unwrap();
    assert_eq!(f.effective_mode, ExecutionMode::Pool);
    assert_eq!(f.deployment_backend, None);
    assert_eq!(
        f.degradation_reason.as_deref(),
        Some("replica never became ready")
    );
    let refused = registry
        .register(request(serde_json::json!({"name": "g", "image": "i"})))
        .await;
    assert!(
        matches!(
            refused,
            Err(RegistryError::Deploy(DeployError::Unavailable(_)))
        ),
        "{refused:?}"
    );
    assert!(registry.get("g").is_none());
}
