//! Function specifications, the lowest domain layer (it depends only on `support`): the
//! registration request as read from JSON (`request`), its validation and defaults resolution
//! (`resolve`) into a `FunctionSpec` with nothing optional that has a default (`spec`), the one
//! home of every bound and default (`limits`), and the FunctionResponse shape (`response`).

pub mod limits;
mod request;
mod resolve;
mod response;
mod spec;

#[cfg(test)]
mod tests;

pub use limits::FunctionDefaults;
pub use request::{ConcurrencyControlRequest, FunctionSpecRequest, ScalingConfigRequest};
pub use resolve::{SpecError, check_endpoint_url, name_is_valid};
pub use response::FunctionResponse;
pub use spec::{
    ConcurrencyControl, ConcurrencyControlMode, ExecutionMode, FunctionSpec, PerPodControl,
    ResourceSpec, RuntimeMode, Scaling, ScalingConfig, ScalingMetric, ScalingStrategy,
};
