//! The model every krane binary shares. A command travels
//! API → [`command`] on the commands stream → worker → Docker → [`event`] on the events stream →
//! [`record`] in the KV bucket, which is a projection of both streams.
//!
//! - [`spec`]: `GatewaySpec`, the validated form of a `krane.v1.GatewayRequest`.
//! - [`names`]: stream, subject, bucket, KV key and container names in one place.
//! - [`command`]: what callers ask for (`Command::Create`, `Command::Delete`).
//! - [`event`]: what workers observe (`InstanceObserved`).
//! - [`record`]: the projection (`GatewayRecord`), pure and order-insensitive so it can be rebuilt.
//! - [`log`]: the JetStream streams and KV bucket that hold all of the above.
//! - [`telemetry`], [`otlp`], [`metrics`]: logs, trace export and context propagation, and the
//!   Prometheus registry and `/metrics` listener of both binaries.

pub mod command;
pub mod event;
pub mod hosts;
pub mod log;
pub mod metrics;
pub mod names;
pub mod otlp;
pub mod placement;
pub mod record;
pub mod shutdown;
pub mod spec;
pub mod telemetry;

pub use command::Command;
pub use event::{InstanceObserved, ObservedState};
pub use names::GatewayKey;
pub use record::{GatewayRecord, InstanceView};
pub use spec::{FieldError, GatewaySpec};
