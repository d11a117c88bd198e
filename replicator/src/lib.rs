//! The tandem agent: launches programs under the shim, drains their events, keeps logs.

#![forbid(unsafe_code)]

pub mod args;
pub mod backup;
pub mod binaries;
pub mod capture;
pub mod certs;
pub mod control;
pub mod describe;
pub mod elfcheck;
pub mod error;
pub mod groups;
pub mod launch;
pub mod lease;
pub mod lifetime;
pub mod metrics;
pub mod net;
pub mod notes;
pub mod outside;
pub mod primary;
pub mod progress;
pub mod recorder;
pub mod replayer;
pub mod retention;
pub mod runway;
pub mod show;
pub mod statedir;
pub mod status;
pub mod stdin;
pub mod steer;
pub mod store;
pub mod survey;
pub mod switchover;
pub mod view;
pub mod wire;
