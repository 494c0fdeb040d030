//! The function registry: registered functions behind a `RwLock`, and the register / remove /
//! set-replicas operations (REFERENCE §1.6–1.9) serialised per function name.
//!
//! Invariants: a function is visible (list, get, invoke) only once fully registered and provisioned,
//! and becomes invisible before its teardown starts; operations on one name never interleave.

mod catalog;
mod function;
mod replication;

pub use catalog::{CatalogError, FunctionCatalog, RemoteChange};
pub use function::{Endpoint, RegisteredFunction, StoreShare};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::config::HostRule;
use crate::deploy::{DeployError, DeploymentProvider, Providers};
use crate::function::{
    ExecutionMode, FunctionDefaults, FunctionSpec, FunctionSpecRequest, SpecError,
};
use crate::metrics::Metrics;
use crate::support::net_policy::NetPolicy;
use crate::support::{lock, read, write};

/// Something that follows the function lifecycle (queues, metrics, autoscaler state).
/// `on_register` runs before the function becomes visible; a failure rolls the registration back.
pub trait FunctionLifecycle: Send + Sync {
    fn on_register(&self, function: &Arc<RegisteredFunction>) -> Result<(), String>;
    fn on_remove(&self, name: &str);
}

/// Per-function series follow the function's registration.
impl FunctionLifecycle for Metrics {
    fn on_register(&self, function: &Arc<RegisteredFunction>) -> Result<(), String> {
        self.function_registered(function.name());
        Ok(())
    }

    fn on_remove(&self, name: &str) {
        self.function_removed(name);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("Request validation failed")]
    Invalid(Vec<String>),
    #[error("{0}")]
    BadRequest(String),
    #[error("Function '{0}' already exists")]
    AlreadyExists(String),
    #[error("Function not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Deploy(#[from] DeployError),
    /// The shared function catalog (NATS) cannot be reached now; retry later.
    #[error("{0}")]
    Unavailable(String),
}

pub struct FunctionRegistry {
    functions: RwLock<HashMap<String, Arc<RegisteredFunction>>>,
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    defaults: FunctionDefaults,
    pool_allowed_hosts: Option<Vec<HostRule>>,
    net_policy: Arc<NetPolicy>,
    providers: Providers,
    listeners: RwLock<Vec<Arc<dyn FunctionLifecycle>>>,
    /// The shared catalog (NATS backend); `None` with the memory backend.
    catalog: OnceLock<Arc<dyn FunctionCatalog>>,
    /// Catalog revision of each local function's record (the CAS token of updates and deletes,
    /// and how the watch tells changes already applied here).
    revisions: Mutex<HashMap<String, u64>>,
}

impl FunctionRegistry {
    pub fn new(
        defaults: FunctionDefaults,
        pool_allowed_hosts: Option<Vec<HostRule>>,
        net_policy: Arc<NetPolicy>,
        providers: Providers,
    ) -> Self {
        FunctionRegistry {
            functions: RwLock::default(),
            name_locks: Mutex::default(),
            defaults,
            pool_allowed_hosts,
            net_policy,
            providers,
            listeners: RwLock::default(),
            catalog: OnceLock::new(),
            revisions: Mutex::default(),
        }
    }

    /// Shares registrations through `catalog` from now on (called once, at build, by `lib.rs`).
    pub fn set_catalog(&self, catalog: Arc<dyn FunctionCatalog>) {
        if self.catalog.set(catalog).is_err() {
            tracing::warn!("a function catalog was already set; keeping the first");
        }
    }

    fn catalog(&self) -> Option<&Arc<dyn FunctionCatalog>> {
        self.catalog.get()
    }

    pub fn add_listener(&self, listener: Arc<dyn FunctionLifecycle>) {
        write(&self.listeners).push(listener);
    }

    /// The catalog revision of `name`'s record as this replica knows it (`None` with the memory
    /// backend). Revisions only grow, so every revision of a registration is below every revision
    /// of a later registration of the same name: while a function is being removed (inside its
    /// listeners' `on_remove`) this is the removed registration's last revision.
    pub fn revision(&self, name: &str) -> Option<u64> {
        lock(&self.revisions).get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<Arc<RegisteredFunction>> {
        read(&self.functions).get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<RegisteredFunction>> {
        let mut all: Vec<_> = read(&self.functions).values().cloned().collect();
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        all
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Registers a function (REFERENCE §1.6).
    pub async fn register(
        &self,
        request: FunctionSpecRequest,
    ) -> Result<Arc<RegisteredFunction>, RegistryError> {
        let spec = request.resolve(&self.defaults).map_err(|e| match e {
            SpecError::Invalid(details) => RegistryError::Invalid(details),
            SpecError::Resolution(message) => RegistryError::BadRequest(message),
        })?;
        let name = spec.name.clone();
        let lock = self.name_lock(&name);
        let guard = lock.lock().await;
        let result = self.register_locked(spec).await;
        drop(guard);
        self.release_name_lock(&name, lock);
        result
    }

    async fn register_locked(
        &self,
        spec: FunctionSpec,
    ) -> Result<Arc<RegisteredFunction>, RegistryError> {
        if read(&self.functions).contains_key(&spec.name) {
            return Err(RegistryError::AlreadyExists(spec.name));
        }
        // With a catalog, a DEPLOYMENT function claims its name before anything is provisioned,
        // so two replicas racing never both create backend objects.
        let claim = match self.catalog() {
            Some(catalog) if spec.execution_mode == ExecutionMode::Deployment => {
                if !catalog.is_available() {
                    return Err(catalog_unavailable());
                }
                Some(claim_name(catalog.as_ref(), &spec.name).await?)
            }
            Some(catalog) if !catalog.is_available() => return Err(catalog_unavailable()),
            _ => None,
        };
        let name = spec.name.clone();
        // The catalog revision this registration owns and must delete if it fails.
        let mut held = claim;
        let result = self.provision_and_insert(spec, &mut held).await;
        if result.is_err() {
            if let (Some(catalog), Some(rev)) = (self.catalog(), held) {
                if let Err(e) = catalog.delete(&name, rev).await {
                    tracing::warn!(function = name, error = %e, "dropping the catalog claim of a failed registration failed");
                }
            }
        }
        result
    }

    async fn provision_and_insert(
        &self,
        mut spec: FunctionSpec,
        held: &mut Option<u64>,
    ) -> Result<Arc<RegisteredFunction>, RegistryError> {
        let claim = *held;
        let requested_mode = spec.execution_mode;
        let mut effective_mode = requested_mode;
        let mut backend: Option<Arc<dyn DeploymentProvider>> = None;
        let mut replicas = None;
        let mut degradation_reason = None;
        if requested_mode == ExecutionMode::Deployment {
            match self.providers.select(&spec).await {
                Ok(provider) => {
                    provider.validate_image(&spec).await?;
                    match provider.provision(&spec).await {
                        Ok(provisioned) => {
                            spec.endpoint_url = Some(provisioned.endpoint_url);
                            replicas = provisioned.replicas;
                            backend = Some(provider);
                        }
                        // REFERENCE §1.6 step 5: a backend that cannot provision now (a replica
                        // that never became ready, an engine that went away) degrades to POOL when
                        // the spec gives an endpoint, as a missing backend does.
                        Err(DeployError::Unavailable(reason)) if spec.endpoint_url.is_some() => {
                            effective_mode = ExecutionMode::Pool;
                            degradation_reason = Some(reason);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(DeployError::Unavailable(reason)) if spec.endpoint_url.is_some() => {
                    effective_mode = ExecutionMode::Pool;
                    degradation_reason = Some(reason);
                }
                // DECISIONS 9: the refusal says how to configure a backend.
                Err(DeployError::Unavailable(reason)) if self.providers.all().is_empty() => {
                    return Err(DeployError::Unavailable(format!(
                        "{reason}. Set NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND=container-local or =k8s \
                         to run DEPLOYMENT functions, or give an endpointUrl to run it as POOL"
                    ))
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if effective_mode == ExecutionMode::Pool {
            if let Some(url) = spec.endpoint_url.as_deref() {
                self.check_pool_host(url)?;
            }
        }
        let endpoint = Endpoint::take(&mut spec, replicas);
        let function = Arc::new(RegisteredFunction {
            spec,
            requested_mode,
            effective_mode,
            deployment_backend: backend.as_ref().map(|b| b.id()),
            degradation_reason,
            endpoint,
            metrics: OnceLock::new(),
            store_share: StoreShare::default(),
        });
        let revision = match self.catalog() {
            None => None,
            Some(catalog) => {
                let record = catalog::encode(function.catalog_response(), None);
                let written = match claim {
                    Some(rev) => catalog.update(function.name(), record, rev).await,
                    None => catalog.create(function.name(), record).await,
                };
                match written {
                    Ok(rev) => {
                        *held = Some(rev);
                        Some(rev)
                    }
                    Err(e) => {
                        if let Some(provider) = &backend {
                            if let Err(e) = provider.deprovision(function.name()).await {
                                tracing::warn!(function = function.name(), error = %e, "rollback deprovision failed");
                            }
                        }
                        return Err(catalog_error(function.name(), e));
                    }
                }
            }
        };

        let listeners = read(&self.listeners).clone();
        for (i, listener) in listeners.iter().enumerate() {
            if let Err(message) = listener.on_register(&function) {
                for done in listeners[..i].iter().rev() {
                    done.on_remove(function.name());
                }
                if let Some(provider) = &backend {
                    if let Err(e) = provider.deprovision(function.name()).await {
                        tracing::warn!(function = function.name(), error = %e, "rollback deprovision failed");
                    }
                }
                return Err(DeployError::Unavailable(message).into());
            }
        }
        if let Some(rev) = revision {
            lock(&self.revisions).insert(function.name().to_owned(), rev);
        }
        write(&self.functions).insert(function.spec.name.clone(), function.clone());
        tracing::info!(
            function = function.name(),
            mode = %function.effective_mode,
            backend = function.deployment_backend.unwrap_or("-"),
            "function registered"
        );
        Ok(function)
    }

    /// The outbound policy on an IP-literal host (a name is checked once resolved, at dispatch),
    /// then `NANOFAAS_POOL_ALLOWED_HOSTS`.
    fn check_pool_host(&self, url: &str) -> Result<(), RegistryError> {
        let parsed = reqwest::Url::parse(url.trim()).ok();
        if let Some(Err(refused)) = parsed.as_ref().map(|u| self.net_policy.check_literal(u)) {
            return Err(RegistryError::Invalid(vec![format!(
                "endpointUrl: {refused}"
            )]));
        }
        let Some(rules) = &self.pool_allowed_hosts else {
            return Ok(());
        };
        let host = parsed
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        if rules.iter().any(|r| r.matches(&host)) {
            Ok(())
        } else {
            Err(RegistryError::Invalid(vec![format!(
                "endpointUrl: host '{host}' is not in NANOFAAS_POOL_ALLOWED_HOSTS"
            )]))
        }
    }

    /// Removes a function (REFERENCE §1.8). Returns the removed registration.
    pub async fn remove(&self, name: &str) -> Result<Arc<RegisteredFunction>, RegistryError> {
        let lock = self.name_lock(name);
        let guard = lock.lock().await;
        let result = self.remove_locked(name).await;
        drop(guard);
        self.release_name_lock(name, lock);
        result
    }

    async fn remove_locked(&self, name: &str) -> Result<Arc<RegisteredFunction>, RegistryError> {
        if let Some(catalog) = self.catalog() {
            // The record goes first: of replicas racing to delete, only the one whose delete
            // the catalog accepts tears the backend down (the others answer 404).
            if !read(&self.functions).contains_key(name) {
                return Err(RegistryError::NotFound(name.to_owned()));
            }
            if !catalog.is_available() {
                return Err(catalog_unavailable());
            }
            self.delete_record(catalog.as_ref(), name).await?;
        }
        let function = write(&self.functions)
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        let listeners = read(&self.listeners).clone();
        for listener in &listeners {
            listener.on_remove(name);
        }
        // Listeners read the removed registration's last revision (`revision`) while removing.
        lock(&self.revisions).remove(name);
        if let Some(provider) = function
            .deployment_backend
            .and_then(|id| self.providers.by_id(id))
        {
            if let Err(e) = provider.deprovision(name).await {
                // Put the function back so the operator can retry the delete.
                for listener in &listeners {
                    if let Err(msg) = listener.on_register(&function) {
                        tracing::warn!(function = name, error = %msg, "re-register after failed delete");
                    }
                }
                write(&self.functions).insert(name.to_owned(), function.clone());
                if let Some(catalog) = self.catalog() {
                    // The record was deleted first; put it back so every replica sees the
                    // function again and the delete can be retried anywhere.
                    let record = catalog::encode(function.catalog_response(), None);
                    match catalog.create(name, record).await {
                        Ok(rev) => {
                            lock(&self.revisions).insert(name.to_owned(), rev);
                        }
                        Err(e) => {
                            tracing::warn!(function = name, error = %e, "restoring the catalog record after a failed delete failed")
                        }
                    }
                }
                return Err(e.into());
            }
        }
        tracing::info!(function = name, "function removed");
        Ok(function)
    }

    /// Sets the replica count of a DEPLOYMENT function (REFERENCE §1.9).
    pub async fn set_replicas(&self, name: &str, replicas: u32) -> Result<u32, RegistryError> {
        let lock = self.name_lock(name);
        let guard = lock.lock().await;
        let result = async {
            let function = self
                .get(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            if function.effective_mode != ExecutionMode::Deployment {
                return Err(RegistryError::BadRequest(format!(
                    "Function '{name}' is not in DEPLOYMENT mode"
                )));
            }
            let id = function.deployment_backend.unwrap_or("none");
            let provider = self.providers.by_id(id).ok_or_else(|| {
                DeployError::Unavailable(format!(
                    "No managed deployment provider with id '{id}' found"
                ))
            })?;
            if let Some(catalog) = self.catalog() {
                if !catalog.is_available() {
                    return Err(catalog_unavailable());
                }
            }
            provider.set_replicas(name, replicas).await?;
            if let Some(catalog) = self.catalog() {
                // After the backend scaled, so replicas that re-adopt on this change find the
                // new runtime (container-local replicas).
                self.update_record(catalog.as_ref(), &function, Some(replicas))
                    .await?;
            }
            Ok(replicas)
        }
        .await;
        drop(guard);
        self.release_name_lock(name, lock);
        result
    }

    /// Deletes `name`'s record at the revision this replica knows, re-reading it once if it
    /// moved on (a replica change made elsewhere; the re-read revision is then the one known,
    /// so that it is the removed registration's last). Gone already: another replica deleted it.
    async fn delete_record(
        &self,
        catalog: &dyn FunctionCatalog,
        name: &str,
    ) -> Result<(), RegistryError> {
        let known = lock(&self.revisions).get(name).copied();
        let first = match known {
            Some(rev) => catalog.delete(name, rev).await,
            None => Err(CatalogError::Conflict),
        };
        match first {
            Ok(()) => {}
            Err(CatalogError::Conflict) => match catalog.get(name).await {
                Ok(Some((_, rev))) => {
                    catalog
                        .delete(name, rev)
                        .await
                        .map_err(|e| catalog_error(name, e))?;
                    lock(&self.revisions).insert(name.to_owned(), rev);
                }
                Ok(None) => return Err(RegistryError::NotFound(name.to_owned())),
                Err(e) => return Err(catalog_error(name, e)),
            },
            Err(e) => return Err(catalog_error(name, e)),
        }
        Ok(())
    }

    /// Rewrites `function`'s record (compare-and-set, re-read on a concurrent change).
    async fn update_record(
        &self,
        catalog: &dyn FunctionCatalog,
        function: &RegisteredFunction,
        replicas: Option<u32>,
    ) -> Result<(), RegistryError> {
        let name = function.name();
        let record = catalog::encode(function.catalog_response(), replicas);
        let mut expected = lock(&self.revisions).get(name).copied();
        for _ in 0..3 {
            let attempt = match expected {
                Some(rev) => catalog.update(name, record.clone(), rev).await,
                None => Err(CatalogError::Conflict),
            };
            match attempt {
                Ok(rev) => {
                    lock(&self.revisions).insert(name.to_owned(), rev);
                    return Ok(());
                }
                Err(CatalogError::Conflict) => match catalog.get(name).await {
                    Ok(Some((_, rev))) => expected = Some(rev),
                    Ok(None) => return Err(RegistryError::NotFound(name.to_owned())),
                    Err(e) => return Err(catalog_error(name, e)),
                },
                Err(e) => return Err(catalog_error(name, e)),
            }
        }
        Err(RegistryError::Unavailable(format!(
            "Function '{name}' keeps changing concurrently; retry"
        )))
    }

    fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.name_locks)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Drops the per-name lock once nobody else holds or waits for it, so the map stays bounded.
    fn release_name_lock(&self, name: &str, held: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = lock(&self.name_locks);
        // Our clone plus the map's: nobody else is waiting.
        if Arc::strong_count(&held) == 2 {
            locks.remove(name);
        }
    }
}

fn catalog_unavailable() -> RegistryError {
    RegistryError::Unavailable(
        "The function catalog (NATS) is unavailable; retry shortly".to_owned(),
    )
}

/// Claims `name` in the catalog before provisioning. A pending claim left by a replica that
/// died while provisioning (older than [`catalog::STALE_PENDING_CLAIM`]) is taken over with a
/// compare-and-set, so the name is not blocked forever; the backend objects that replica may
/// have started carry the same names and are replaced by this provisioning.
async fn claim_name(catalog: &dyn FunctionCatalog, name: &str) -> Result<u64, RegistryError> {
    match catalog.create(name, catalog::encode_pending()).await {
        Err(CatalogError::AlreadyExists) => {}
        other => return other.map_err(|e| catalog_error(name, e)),
    }
    let current = catalog
        .get(name)
        .await
        .map_err(|e| catalog_error(name, e))?;
    let Some((record, revision)) = current else {
        // Deleted in the meantime: claim it afresh.
        return catalog
            .create(name, catalog::encode_pending())
            .await
            .map_err(|e| catalog_error(name, e));
    };
    match catalog::decode(&record) {
        Ok(catalog::Record::Pending { claimed_at })
            if catalog::pending_claim_is_stale(
                claimed_at,
                chrono::Utc::now().timestamp_millis(),
            ) =>
        {
            tracing::warn!(function = name, "taking over a stale registration claim");
            catalog
                .update(name, catalog::encode_pending(), revision)
                .await
                .map_err(|e| match e {
                    CatalogError::Conflict => RegistryError::AlreadyExists(name.to_owned()),
                    e => catalog_error(name, e),
                })
        }
        _ => Err(RegistryError::AlreadyExists(name.to_owned())),
    }
}

fn catalog_error(name: &str, e: CatalogError) -> RegistryError {
    match e {
        CatalogError::AlreadyExists => RegistryError::AlreadyExists(name.to_owned()),
        CatalogError::Conflict => {
            RegistryError::Unavailable(format!("Function '{name}' changed concurrently; retry"))
        }
        CatalogError::Unavailable(reason) => {
            tracing::warn!(function = name, error = %reason, "function catalog unavailable");
            catalog_unavailable()
        }
    }
}

#[cfg(test)]
mod tests;
