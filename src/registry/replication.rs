//! Applying catalog changes made by other replicas (or seen again after this one made them):
//! adoption without provisioning, and removal without deprovisioning (docs/ha.md, guarantee 1).

use std::sync::{Arc, OnceLock};

use super::catalog::{self, ReadyRecord, Record};
use super::{Endpoint, FunctionRegistry, RegisteredFunction, RemoteChange, StoreShare};
use crate::function::ExecutionMode;
use crate::support::{lock, read, write};

impl FunctionRegistry {
    /// Applies one change from the catalog's watch, serialised with local operations on the
    /// same name. A change this replica already reflects (its own write, or an older revision)
    /// does nothing. Never provisions or deprovisions: the replica that served the request did.
    pub async fn apply_remote(&self, change: RemoteChange) {
        let name = match &change {
            RemoteChange::Put { name, .. } | RemoteChange::Delete { name, .. } => name.clone(),
        };
        let name_lock = self.name_lock(&name);
        let guard = name_lock.lock().await;
        match change {
            RemoteChange::Put {
                name,
                record,
                revision,
            } => self.apply_put(&name, &record, revision).await,
            RemoteChange::Delete { name, revision } => self.apply_delete(&name, revision).await,
        }
        drop(guard);
        self.release_name_lock(&name, name_lock);
    }

    async fn apply_put(&self, name: &str, record: &[u8], revision: u64) {
        if lock(&self.revisions)
            .get(name)
            .is_some_and(|known| *known >= revision)
        {
            return;
        }
        let ready = match catalog::decode(record) {
            // A registration still provisioning elsewhere: nothing to adopt yet.
            Ok(Record::Pending { .. }) => return,
            Ok(Record::Ready(ready)) => ready,
            Err(e) => {
                tracing::warn!(function = name, revision, error = %e, "ignoring an unreadable catalog record");
                return;
            }
        };
        let existing = self.get(name);
        let function = match self.adopt(name, *ready, existing.as_deref()).await {
            Ok(f) => Arc::new(f),
            Err(e) => {
                tracing::warn!(function = name, revision, error = %e, "cannot adopt a function from the catalog");
                return;
            }
        };
        if existing.is_none() {
            let listeners = read(&self.listeners).clone();
            for (i, listener) in listeners.iter().enumerate() {
                if let Err(message) = listener.on_register(&function) {
                    for done in listeners[..i].iter().rev() {
                        done.on_remove(name);
                    }
                    tracing::warn!(function = name, error = %message, "adopting a function failed");
                    return;
                }
            }
            tracing::info!(
                function = name,
                mode = %function.effective_mode,
                revision,
                "function adopted from the catalog"
            );
        }
        // An existing function is swapped for its refreshed registration (a scale made
        // elsewhere: container-local replicas are looked up again); its listeners keep running.
        write(&self.functions).insert(name.to_owned(), function);
        lock(&self.revisions).insert(name.to_owned(), revision);
    }

    async fn apply_delete(&self, name: &str, revision: u64) {
        let Some(function) = write(&self.functions).remove(name) else {
            lock(&self.revisions).remove(name);
            return;
        };
        for listener in read(&self.listeners).clone() {
            listener.on_remove(name);
        }
        lock(&self.revisions).remove(name);
        if let Some(provider) = function
            .deployment_backend
            .and_then(|id| self.providers.by_id(id))
        {
            provider.forget(name);
        }
        tracing::info!(
            function = name,
            revision,
            "function removed through another replica"
        );
    }

    /// Builds the registration a record describes, finding (not creating) its runtime.
    async fn adopt(
        &self,
        name: &str,
        ready: ReadyRecord,
        existing: Option<&RegisteredFunction>,
    ) -> Result<RegisteredFunction, String> {
        let ReadyRecord {
            mut request,
            requested_mode,
            effective_mode,
            deployment_backend,
            degradation_reason,
            endpoint_url,
        } = ready;
        let backend = deployment_backend
            .as_deref()
            .filter(|_| effective_mode == ExecutionMode::Deployment)
            .and_then(|id| {
                let found = self.providers.by_id(id).cloned();
                if found.is_none() {
                    tracing::warn!(function = name, backend = id, "the function's deployment backend is not configured on this replica; invocations go to its recorded endpoint");
                }
                found
            });
        if backend.is_some() {
            // A provisioned endpoint (e.g. `container-local://…`) is the backend's, not a
            // user-given URL to validate.
            request.endpoint_url = None;
        }
        let mut spec = request
            .resolve(&self.defaults)
            .map_err(|e| format!("the record does not resolve: {e:?}"))?;
        if spec.name != name {
            return Err(format!("the record names '{}'", spec.name));
        }
        let mut url = endpoint_url;
        let mut replica_set = None;
        if let Some(provider) = &backend {
            match provider.adopt(&spec).await {
                Ok(found) => {
                    url = Some(found.endpoint_url);
                    replica_set = found.replicas;
                }
                Err(e) => {
                    tracing::warn!(function = name, backend = provider.id(), error = %e, "adoption found no runtime; using the recorded endpoint")
                }
            }
        }
        spec.endpoint_url = url;
        let endpoint = Endpoint::take(&mut spec, replica_set);
        let metrics = OnceLock::new();
        if let Some(meters) = existing.and_then(|f| f.metrics.get()) {
            let _ = metrics.set(meters.clone());
        }
        Ok(RegisteredFunction {
            spec,
            requested_mode,
            effective_mode,
            deployment_backend: backend.as_ref().map(|b| b.id()),
            degradation_reason,
            endpoint,
            metrics,
            store_share: StoreShare::default(),
        })
    }
}
