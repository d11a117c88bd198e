//! What can go wrong in the `tandem` command, each with the exit status it maps to.

use eventlog::logfile::LogError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program cannot be run under the shim (static, Go, setuid, 32-bit...).
    #[error("{program}: {why}")]
    Refused { program: PathBuf, why: String },
    #[error("{0}: command not found (searched PATH)")]
    NotFound(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Log { path: PathBuf, source: LogError },
    #[error("{0}")]
    Setup(String),
    #[error("certificates: {0}")]
    Certs(#[from] crate::certs::CertError),
    #[error("network: {0}")]
    Net(#[from] crate::net::NetError),
    #[error("coordinator: {0}")]
    Coordinator(#[from] coordinator::server::ServeError),
    /// The agent is primary no more; its program was stopped.
    #[error("{0}; its program was stopped")]
    Fenced(String),
    /// The coordinator refused what was asked (its reason).
    #[error("the coordinator refused: {0}")]
    Declined(String),
    /// A promoted backup's program could not take the primary's place.
    #[error("going live failed: {0}; the program was stopped (free the address, or promote another backup)")]
    GoLive(String),
    /// A backup's state was set aside (its log holds another epoch's history): the agent starts
    /// again, catching up from the first event.
    #[error("{0}")]
    StartOver(String),
    /// A switchover named another primary: this agent's program was stopped, and the agent
    /// rejoins as a backup.
    #[error("{0}")]
    HandedOver(String),
}

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// Exit status for this failure, following the shell's conventions: 127 not found, 126
    /// cannot be executed (here: cannot be executed under tandem), 125 tandem itself failed, 1 a
    /// bad log.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound(_) => 127,
            Error::Refused { .. } => 126,
            Error::Log { .. } | Error::Declined(_) => 1,
            Error::Io { .. }
            | Error::Setup(_)
            | Error::Certs(_)
            | Error::Net(_)
            | Error::Coordinator(_)
            | Error::Fenced(_)
            | Error::GoLive(_)
            | Error::StartOver(_)
            | Error::HandedOver(_) => 125,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
