//! tandem's event log: the record every intercepted call becomes, the shared-memory rings that
//! carry records out of the program, and the log files they end up in.

// Shared memory is the one place that needs raw pointers and system calls.
#![deny(unsafe_code)]

pub mod call;
pub mod digest;
pub mod env;
pub mod fdkind;
pub mod ids;
#[cfg(feature = "host")]
pub mod logfile;
#[cfg(feature = "host")]
pub mod merge;
#[cfg(feature = "host")]
pub mod pack;
pub mod record;
#[allow(unsafe_code)]
pub mod ring;

pub use call::{Call, Family};
pub use fdkind::FdKind;
pub use ids::{Epoch, Incarnation, IncarnationToken, LogicalPid, LogicalTid, Seq};
pub use record::{Event, EventHeader};
