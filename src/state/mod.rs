//! Shared state backends; `nats` holds the JetStream building blocks the core's ports wrap.
pub mod nats;
