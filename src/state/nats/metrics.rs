//! Prometheus series of the NATS backend (issue 9, guarantee 9), written only when
//! `NANOFAAS_STATE_BACKEND=nats` (the memory backend's scrape is unchanged): the connection
//! state, its losses and reconnects, and whether this replica holds the autoscaler lease.

use std::sync::Arc;

use super::backend::NatsBackend;
use super::leader::NatsLeader;
use crate::metrics::{MetricWriter, MetricsSection};

pub struct NatsMetrics {
    pub backend: Arc<NatsBackend>,
    pub leader: Arc<NatsLeader>,
}

impl MetricsSection for NatsMetrics {
    fn render(&self, w: &mut MetricWriter) {
        let connected = if self.backend.is_up() { 1.0 } else { 0.0 };
        w.gauge(
            "nanofaas_nats_connected",
            "1 while connected to NATS",
            [([], connected)],
        );
        let (reconnects, disconnects) = self.backend.connection_counts();
        w.counter(
            "nanofaas_nats_reconnects_total",
            "connections to NATS re-established after a loss",
            [([], reconnects)],
        );
        w.counter(
            "nanofaas_nats_disconnects_total",
            "connections to NATS lost",
            [([], disconnects)],
        );
        let leader = if self.leader.leadership().token().is_some() {
            1.0
        } else {
            0.0
        };
        w.gauge(
            "nanofaas_autoscaler_leader",
            "1 while this replica holds the autoscaler lease",
            [([], leader)],
        );
    }
}
