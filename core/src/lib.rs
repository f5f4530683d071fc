//! krane-core: krane's model, and nothing else: no I/O, no NATS, no Docker, no wire types. A
//! gateway's life in these types: a caller's intent is a [`command`] (a [`spec`] to run, or a
//! delete); workers report what they see of each replica as an [`event`]; the [`record`] is the
//! projection of both that reads are answered from.
//!
//! - [`spec`]: `GatewaySpec` and its validation (errors name the request field).
//! - [`names`]: stream, subject, bucket, KV key and container names in one place.
//! - [`command`]: what callers ask for (`Command::Create`, `Command::Delete`).
//! - [`event`]: what workers observe of one replica (`InstanceObserved`).
//! - [`record`]: the projection (`GatewayRecord`), a pure, order-insensitive fold of commands
//!   and events, and what callers see of it (`InstanceView`, `InstanceStatus`).
//! - [`placement`]: which live host runs which replica (pure).
//! - [`rollout`]: update policies, the spec an update returns to, and the judgement of an
//!   update in progress (pure).
//! - [`routing`]: which hosts a command concerns (pure).
//! - [`images`]: the image policy (`--allowed-images`): which images krane runs at all.
//! - [`codec`]: the one JSON encoding of everything stored.

pub mod codec;
pub mod command;
pub mod event;
pub mod images;
pub mod names;
pub mod placement;
pub mod record;
pub mod rollout;
pub mod routing;
pub mod spec;

pub use command::Command;
pub use event::{InstanceObserved, ObservedState};
pub use names::GatewayKey;
pub use record::{GatewayRecord, InstanceStatus, InstanceView};
pub use spec::{FieldError, GatewaySpec};
