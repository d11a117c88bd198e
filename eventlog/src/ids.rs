//! The identifiers every event carries.
//!
//! Logical ids are stable across hosts: a process's id comes from the fork event that created it
//! and a thread's id from its creation order within its process, so a backup running the same
//! program assigns the same ids to the same processes and threads.

/// Global sequence number: one total order over every event of every thread and process.
pub type Seq = u64;
/// Logical process id. The first process of a program is 1; children take the ids their fork
/// events recorded.
pub type LogicalPid = u32;
/// Logical thread id within a process. The main thread is 0; the n-th `pthread_create` of the
/// process starts thread n.
pub type LogicalTid = u32;

/// The logical pid of the process `tandem` launches.
pub const FIRST_PID: LogicalPid = 1;
/// The logical tid of a process's main thread.
pub const MAIN_TID: LogicalTid = 0;

/// Names an incarnation of a replica group. All-zero means "none yet" (a placeholder until the
/// coordinator hands out real tokens).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct IncarnationToken(pub [u8; 16]);

impl IncarnationToken {
    pub const NONE: Self = Self([0; 16]);

    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

impl core::fmt::Display for IncarnationToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Random bytes from the kernel.
#[cfg(feature = "host")]
pub fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut out)?;
    Ok(out)
}

#[cfg(feature = "host")]
impl IncarnationToken {
    /// A new incarnation's token.
    pub fn random() -> std::io::Result<Self> {
        random().map(IncarnationToken)
    }
}
