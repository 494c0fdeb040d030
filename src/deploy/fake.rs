//! An in-memory deployment backend for tests of the layers above `deploy`: replica counts in a
//! map, failures on demand.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{BoxFuture, DeployError, DeployFuture, DeploymentProvider, Provisioned};
use crate::function::FunctionSpec;

/// Replica counts in memory; `ready_replicas` / `set_replicas` can be told to fail.
#[derive(Default)]
pub(crate) struct FakeBackend {
    pub replicas: Mutex<HashMap<String, u32>>,
    pub set_calls: Mutex<Vec<(String, u32)>>,
    pub failing_reads: Mutex<HashSet<String>>,
    pub failing_sets: Mutex<HashSet<String>>,
    /// When set, `ready_replicas` waits for a notification first.
    pub gate: Mutex<Option<Arc<Notify>>>,
    /// When set, provisioning fails with this (a backend whose replicas never become ready).
    pub provision_error: Option<DeployError>,
    /// Every provision, deprovision and adopt, by function name, in order.
    pub lifecycle: Mutex<Vec<(&'static str, String)>>,
}

impl FakeBackend {
    pub fn replicas(&self, name: &str) -> u32 {
        self.replicas
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }
    pub fn set(&self, name: &str, n: u32) {
        self.replicas.lock().unwrap().insert(name.to_owned(), n);
    }
    pub fn calls(&self) -> Vec<(String, u32)> {
        self.set_calls.lock().unwrap().clone()
    }
    pub fn count(&self, what: &str) -> usize {
        self.lifecycle
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| *w == what)
            .count()
    }
    fn note(&self, what: &'static str, name: &str) {
        self.lifecycle.lock().unwrap().push((what, name.to_owned()));
    }
}

impl DeploymentProvider for FakeBackend {
    fn id(&self) -> &'static str {
        "fake"
    }
    fn is_available(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
    fn supports(&self, _spec: &FunctionSpec) -> bool {
        true
    }
    fn provision<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(async move {
            if let Some(e) = &self.provision_error {
                return Err(e.clone());
            }
            self.note("provision", &spec.name);
            let min = spec.initial_replicas();
            self.set(&spec.name, min as u32);
            Ok(Provisioned {
                endpoint_url: format!("http://fake/{}", spec.name),
                replicas: None,
            })
        })
    }
    fn deprovision<'a>(&'a self, name: &'a str) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            self.note("deprovision", name);
            self.replicas.lock().unwrap().remove(name);
            Ok(())
        })
    }
    fn adopt<'a>(&'a self, spec: &'a FunctionSpec) -> DeployFuture<'a, Provisioned> {
        Box::pin(async move {
            self.note("adopt", &spec.name);
            Ok(Provisioned {
                endpoint_url: format!("http://fake/{}", spec.name),
                replicas: None,
            })
        })
    }
    fn set_replicas<'a>(&'a self, name: &'a str, replicas: u32) -> DeployFuture<'a, ()> {
        Box::pin(async move {
            self.set_calls
                .lock()
                .unwrap()
                .push((name.to_owned(), replicas));
            if self.failing_sets.lock().unwrap().contains(name) {
                return Err(DeployError::Failed("engine said no".into()));
            }
            self.set(name, replicas);
            Ok(())
        })
    }
    fn ready_replicas<'a>(&'a self, name: &'a str) -> DeployFuture<'a, u32> {
        Box::pin(async move {
            let gate = self.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.notified().await;
            }
            if self.failing_reads.lock().unwrap().contains(name) {
                return Err(DeployError::Unavailable("backend unreachable".into()));
            }
            Ok(self.replicas(name))
        })
    }
}
