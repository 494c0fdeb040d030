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

/// A catalog in memory with the semantics of the NATS one (create-only, CAS on revisions) and a
/// log of changes that a test replays into other registries as their watch would.
#[derive(Default)]
struct MemCatalog {
    records: std::sync::Mutex<HashMap<String, (bytes::Bytes, u64)>>,
    revision: std::sync::atomic::AtomicU64,
    log: std::sync::Mutex<Vec<RemoteChange>>,
    down: std::sync::atomic::AtomicBool,
}

impl MemCatalog {
    fn next(&self) -> u64 {
        self.revision
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }
    async fn replay_into(&self, registry: &FunctionRegistry) {
        let changes = self.log.lock().unwrap().clone();
        for change in changes {
            registry.apply_remote(change).await;
        }
    }
}

impl FunctionCatalog for MemCatalog {
    fn is_available(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn create<'a>(
        &'a self,
        name: &'a str,
        record: bytes::Bytes,
    ) -> crate::deploy::BoxFuture<'a, Result<u64, CatalogError>> {
        Box::pin(async move {
            let mut records = self.records.lock().unwrap();
            if records.contains_key(name) {
                return Err(CatalogError::AlreadyExists);
            }
            let revision = self.next();
            records.insert(name.to_owned(), (record.clone(), revision));
            self.log.lock().unwrap().push(RemoteChange::Put {
                name: name.to_owned(),
                record,
                revision,
            });
            Ok(revision)
        })
    }
    fn update<'a>(
        &'a self,
        name: &'a str,
        record: bytes::Bytes,
        expected: u64,
    ) -> crate::deploy::BoxFuture<'a, Result<u64, CatalogError>> {
        Box::pin(async move {
            let mut records = self.records.lock().unwrap();
            match records.get(name) {
                Some((_, rev)) if *rev == expected => {}
                _ => return Err(CatalogError::Conflict),
            }
            let revision = self.next();
            records.insert(name.to_owned(), (record.clone(), revision));
            self.log.lock().unwrap().push(RemoteChange::Put {
                name: name.to_owned(),
                record,
                revision,
            });
            Ok(revision)
        })
    }
    fn delete<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
    ) -> crate::deploy::BoxFuture<'a, Result<(), CatalogError>> {
        Box::pin(async move {
            let mut records = self.records.lock().unwrap();
            match records.get(name) {
                Some((_, rev)) if *rev == expected => {}
                _ => return Err(CatalogError::Conflict),
            }
            records.remove(name);
            let revision = self.next();
            self.log.lock().unwrap().push(RemoteChange::Delete {
                name: name.to_owned(),
                revision,
            });
            Ok(())
        })
    }
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::deploy::BoxFuture<'a, Result<Option<(bytes::Bytes, u64)>, CatalogError>> {
        Box::pin(async move { Ok(self.records.lock().unwrap().get(name).cloned()) })
    }
}

/// Two replicas sharing one catalog and one (fake) cluster.
fn replicas(
    backend: &Arc<FakeBackend>,
    catalog: &Arc<MemCatalog>,
    n: usize,
) -> Vec<FunctionRegistry> {
    (0..n)
        .map(|_| {
            let providers =
                Providers::new(vec![backend.clone() as Arc<dyn DeploymentProvider>], None);
            let registry =
                FunctionRegistry::new(Config::default().defaults, None, Arc::default(), providers);
            registry.set_catalog(catalog.clone());
            registry
        })
        .collect()
}

#[tokio::test]
async fn with_a_catalog_deployment_functions_are_provisioned_and_deprovisioned_once() {
    let backend = Arc::new(FakeBackend::default());
    let catalog = Arc::new(MemCatalog::default());
    let r = replicas(&backend, &catalog, 3);
    let spec = serde_json::json!({"name": "d", "image": "i",
        "scalingConfig": {"strategy": "INTERNAL", "minReplicas": 1, "maxReplicas": 5}});

    r[0].register(request(spec.clone())).await.unwrap();
    assert_eq!(backend.count("provision"), 1);
    // A replica that has not seen the change yet is refused by the catalog, before provisioning.
    let late = r[2].register(request(spec.clone())).await;
    assert!(
        matches!(late, Err(RegistryError::AlreadyExists(_))),
        "{late:?}"
    );
    assert_eq!(backend.count("provision"), 1);

    // The watch: adopted, not provisioned; the same registration everywhere.
    catalog.replay_into(&r[1]).await;
    catalog.replay_into(&r[2]).await;
    let adopted = r[1].get("d").expect("adopted");
    assert_eq!(adopted.deployment_backend, Some("fake"));
    assert_eq!(adopted.spec, r[0].get("d").unwrap().spec);
    assert_eq!(backend.count("provision"), 1);
    assert_eq!(backend.count("adopt"), 2);
    // Replaying again changes nothing (revisions already reflected).
    catalog.replay_into(&r[1]).await;
    assert_eq!(backend.count("adopt"), 2);

    // Scaled through replica 1: the others re-adopt on the record's change.
    r[1].set_replicas("d", 3).await.unwrap();
    assert_eq!(backend.replicas("d"), 3);
    catalog.replay_into(&r[0]).await;
    assert_eq!(backend.count("adopt"), 3);

    // Deleted through replica 2: deprovisioned once; gone everywhere after the watch.
    r[2].remove("d").await.unwrap();
    assert_eq!(backend.count("deprovision"), 1);
    catalog.replay_into(&r[0]).await;
    catalog.replay_into(&r[1]).await;
    assert!(r[0].get("d").is_none() && r[1].get("d").is_none());
    assert_eq!(backend.count("deprovision"), 1);
    assert!(matches!(
        r[0].remove("d").await,
        Err(RegistryError::NotFound(_))
    ));
}

#[tokio::test]
async fn with_the_catalog_down_writes_are_unavailable_and_nothing_changes() {
    let backend = Arc::new(FakeBackend::default());
    let catalog = Arc::new(MemCatalog::default());
    let r = replicas(&backend, &catalog, 1);
    r[0].register(request(serde_json::json!({"name": "p", "image": "i",
        "executionMode": "POOL", "endpointUrl": "http://127.0.0.1:9/x"})))
        .await
        .unwrap();
    catalog
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = r[0]
        .register(request(serde_json::json!({"name": "d", "image": "i"})))
        .await;
    assert!(
        matches!(refused, Err(RegistryError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(matches!(
        r[0].remove("p").await,
        Err(RegistryError::Unavailable(_))
    ));
    assert!(
        r[0].get("p").is_some(),
        "a refused delete keeps the function"
    );
    assert_eq!(backend.count("provision"), 0);
}

/// A pending claim left by a replica that died while provisioning blocks the name only until it
/// is stale; a fresh one (a registration still provisioning elsewhere) keeps answering 409.
#[tokio::test]
async fn a_stale_pending_claim_is_taken_over_and_a_fresh_one_is_not() {
    let backend = Arc::new(FakeBackend::default());
    let catalog = Arc::new(MemCatalog::default());
    let r = replicas(&backend, &catalog, 1);
    let spec = |name: &str| serde_json::json!({"name": name, "image": "i"});
    let now = chrono::Utc::now().timestamp_millis();
    let stale_ms = now - catalog::STALE_PENDING_CLAIM.as_millis() as i64 - 1_000;
    for (name, claimed_at) in [("stale", stale_ms), ("fresh", now)] {
        let record = serde_json::json!({"v": 1, "pending": true, "claimedAt": claimed_at});
        catalog
            .create(name, bytes::Bytes::from(record.to_string()))
            .await
            .unwrap();
    }
    // A claim from before claim times were recorded counts as stale.
    catalog
        .create(
            "untimed",
            bytes::Bytes::from_static(br#"{"v":1,"pending":true}"#),
        )
        .await
        .unwrap();

    r[0].register(request(spec("stale"))).await.unwrap();
    r[0].register(request(spec("untimed"))).await.unwrap();
    assert_eq!(backend.count("provision"), 2);
    let fresh = r[0].register(request(spec("fresh"))).await;
    assert!(
        matches!(fresh, Err(RegistryError::AlreadyExists(_))),
        "{fresh:?}"
    );
    assert_eq!(backend.count("provision"), 2);
    // The taken-over record is the new registration's.
    let (record, _) = catalog.get("stale").await.unwrap().unwrap();
    assert!(matches!(
        catalog::decode(&record),
        Ok(catalog::Record::Ready(_))
    ));
}
