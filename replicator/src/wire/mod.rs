//! The replication protocol between agents, free of I/O: frames and the session state machines.

pub mod frame;
pub mod session;
