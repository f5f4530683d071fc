//! Intake: what makes the worker reconcile a gateway.
//!
//! - [`consumer`]: commands from this host's durable JetStream consumer; carries out what the
//!   policy decides (ack, retry later, give up, terminate).
//! - [`policy`]: the pure retry policy (outcome × attempts → decision).
//! - [`resync`]: drift repair, from the engine's event stream and a periodic full resync.

pub mod consumer;
pub mod policy;
pub mod resync;
