//! The registry's [`FunctionCatalog`] on the `P_functions` KV bucket, and the watch that keeps
//! this replica's registry in step with it (docs/ha.md, guarantee 1).
//!
//! Until start-up opened the bucket, and whenever the connection is lost, every write answers
//! `Unavailable` at once (registration gets 503 with `Retry-After`), while reads of the local
//! registry (invocations of known functions) go on.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backend::NatsBackend;
use super::kv_functions::{FunctionEvent, FunctionStore, FunctionStoreError};
use crate::deploy::BoxFuture;
use crate::registry::{CatalogError, FunctionCatalog, FunctionRegistry, RemoteChange};

pub struct NatsCatalog {
    backend: Arc<NatsBackend>,
    store: OnceLock<FunctionStore>,
}

impl NatsCatalog {
    pub fn new(backend: Arc<NatsBackend>) -> NatsCatalog {
        NatsCatalog {
            backend,
            store: OnceLock::new(),
        }
    }

    /// Opens the bucket, applies every stored function to `registry` (adoption, no
    /// provisioning), then follows the bucket's changes in a task until `stop`. Called by
    /// start-up once connected, before readiness.
    pub async fn start(
        &self,
        registry: Arc<FunctionRegistry>,
        stop: CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>> {
        let conn = self
            .backend
            .connection()
            .ok_or_else(|| anyhow::anyhow!("NATS is not connected"))?;
        let store = FunctionStore::open(conn, self.backend.placement()).await?;
        let (snapshot, mut watch) = store.watch(stop).await?;
        let count = snapshot.entries.len();
        for entry in snapshot.entries {
            registry
                .apply_remote(RemoteChange::Put {
                    name: entry.name,
                    record: entry.value,
                    revision: entry.revision,
                })
                .await;
        }
        tracing::info!(
            functions = count,
            revision = snapshot.revision,
            "function registry loaded from NATS"
        );
        let _ = self.store.set(store);
        Ok(tokio::spawn(async move {
            while let Some(event) = watch.next().await {
                let change = match event {
                    FunctionEvent::Put {
                        name,
                        value,
                        revision,
                    } => RemoteChange::Put {
                        name,
                        record: value,
                        revision,
                    },
                    FunctionEvent::Delete { name, revision } => {
                        RemoteChange::Delete { name, revision }
                    }
                };
                registry.apply_remote(change).await;
            }
        }))
    }

    fn store(&self) -> Result<&FunctionStore, CatalogError> {
        match self.store.get() {
            Some(store) if self.backend.is_up() => Ok(store),
            _ => Err(CatalogError::Unavailable(
                "NATS is not connected".to_owned(),
            )),
        }
    }
}

fn catalog_error(e: FunctionStoreError) -> CatalogError {
    match e {
        FunctionStoreError::AlreadyExists(_) => CatalogError::AlreadyExists,
        FunctionStoreError::Conflict(_) => CatalogError::Conflict,
        FunctionStoreError::Unavailable(reason) => CatalogError::Unavailable(reason),
    }
}

impl FunctionCatalog for NatsCatalog {
    fn is_available(&self) -> bool {
        self.store().is_ok()
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        record: Bytes,
    ) -> BoxFuture<'a, Result<u64, CatalogError>> {
        Box::pin(async move {
            self.store()?
                .create(name, record)
                .await
                .map_err(catalog_error)
        })
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        record: Bytes,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, CatalogError>> {
        Box::pin(async move {
            self.store()?
                .update(name, record, expected)
                .await
                .map_err(catalog_error)
        })
    }

    fn delete<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        Box::pin(async move {
            self.store()?
                .delete(name, expected)
                .await
                .map_err(catalog_error)
        })
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Bytes, u64)>, CatalogError>> {
        Box::pin(async move {
            Ok(self
                .store()?
                .get(name)
                .await
                .map_err(catalog_error)?
                .map(|e| (e.value, e.revision)))
        })
    }
}
