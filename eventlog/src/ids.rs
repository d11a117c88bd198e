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

/// A replica group's epoch: it grows by one at every change of primary, and frames, acks and
/// leases of an older epoch are refused. 0: not yet part of a group.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[cfg_attr(feature = "host", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
#[repr(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    pub const NONE: Epoch = Epoch(0);
    /// The epoch of a group's first primary.
    pub const FIRST: Epoch = Epoch(1);

    /// The epoch after this one.
    pub const fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl core::fmt::Display for Epoch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Names an incarnation of a replica group: one history of its events. All-zero means "none yet"
/// (a state dir that never joined a group). Written as 32 hex digits wherever it leaves a
/// process (logs, the coordinator's API, state files).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct IncarnationToken(pub [u8; 16]);

/// The one name the rest of the system uses for a group's incarnation.
pub type Incarnation = IncarnationToken;

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

/// Text that is not 32 hex digits, where an incarnation token was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadToken(pub String);

impl core::fmt::Display for BadToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?} is not an incarnation token (32 hex digits)", self.0)
    }
}

impl core::str::FromStr for IncarnationToken {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Self, BadToken> {
        let bad = || BadToken(s.to_string());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(IncarnationToken(out))
    }
}

#[cfg(feature = "host")]
impl serde::Serialize for IncarnationToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "host")]
impl<'de> serde::Deserialize<'de> for IncarnationToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_from_its_text() {
        let t = IncarnationToken([0xab; 16]);
        assert_eq!(t.to_string().parse::<IncarnationToken>(), Ok(t));
        assert!("abc".parse::<IncarnationToken>().is_err());
        assert!("zz".repeat(16).parse::<IncarnationToken>().is_err());
        assert_eq!(Epoch::FIRST.next(), Epoch(2));
    }
}
