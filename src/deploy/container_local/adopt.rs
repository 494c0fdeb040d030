//! Shared state (NATS backend, docs/ha.md): finding the containers another replica of the control
//! plane started for a function, instead of starting more, and not treating them as leftovers.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{
    ContainerLocalProvider, LABEL_FUNCTION, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_REPLICA,
    MANAGER, Replica, Replicas, engine_error,
};
use crate::deploy::{DeployError, Provisioned};
use crate::function::FunctionSpec;
use crate::support::lock;

impl ContainerLocalProvider {
    /// The running, labelled containers of `spec`'s function in replica order, as a replica
    /// set this provider then scales and deprovisions as if it had started them.
    pub(super) async fn find_replicas(
        &self,
        spec: &FunctionSpec,
    ) -> Result<Provisioned, DeployError> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_INSTANCE}={}", self.config.instance),
                format!("{LABEL_FUNCTION}={}", spec.name),
            ],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(false)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DeployError::Unavailable(engine_error(&e)))?;
        let mut found: Vec<(usize, String)> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.as_ref()?;
                if labels.get(LABEL_MANAGED_BY).is_none_or(|m| m != MANAGER) {
                    return None;
                }
                let index = labels.get(LABEL_REPLICA)?.parse().ok()?;
                let name = c
                    .names
                    .as_ref()?
                    .first()?
                    .trim_start_matches('/')
                    .to_owned();
                Some((index, name))
            })
            .collect();
        found.sort();
        let mut members = Vec::with_capacity(found.len());
        for (_, name) in found {
            let base = self.base_url(&name).await?;
            let join = |p: &str| base.join(p).map_err(|e| DeployError::Failed(e.to_string()));
            members.push(Replica {
                container: name,
                invoke: join("invoke")?,
                health: join("health")?,
            });
        }
        let set = Arc::new(Replicas {
            spec: spec.clone(),
            members: RwLock::new(members),
            next: AtomicUsize::new(0),
        });
        lock(&self.functions).insert(spec.name.clone(), set.clone());
        Ok(self.provisioned(&spec.name, set))
    }
}
