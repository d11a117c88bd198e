//! tandem's coordinator: says which member of each replica group is primary, in which epoch and
//! of which incarnation, and keeps that on a Raft cluster (one member by default).

#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod http;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod raft;
pub mod server;
pub mod store;
