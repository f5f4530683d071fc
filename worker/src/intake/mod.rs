//! Intake: what makes the worker reconcile a gateway.
//!
//! - [`consumer`]: the work addressed to this host, from its durable JetStream consumer, and
//!   the dispatch's deliveries; carries out what the policy decides (ack, retry later, give
//!   up, terminate).
//! - [`dispatch`]: each command once per fleet, addressed to the hosts it concerns.
//! - [`policy`]: the pure retry policy (outcome × attempts → decision).
//! - [`resync`]: drift repair, from the engine's event stream and a periodic full resync.

pub mod consumer;
pub mod dispatch;
pub mod policy;
pub mod resync;
