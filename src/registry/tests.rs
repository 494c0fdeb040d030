use super::*;
use crate::config::Config;
use crate::deploy::DeploymentProvider;
use crate::deploy::fake::FakeBackend;

fn request(spec: serde_json::Value) -> FunctionSpecRequest {
    serde_json::from_value(spec).unwrap()
}

#[tokio::test]
async fn a_backend_that_cannot_provision_degrades_to_pool_only_with_an_endpoint() {
    let providers = Providers::new(
        vec![Arc::new(FakeBackend {
            provision_error: Some(DeployError::Unavailable(
                "replica never became ready".into(),
            )),
            ..FakeBackend::default()
        }) as Arc<dyn DeploymentProvider>],
        None,
    );
    let registry =
        FunctionRegistry::new(Config::default().defaults, None, Arc::default(), providers);
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
