//! The identifiers every event carries.
//!
//! Logical ids are stable across hosts: a process's id comes from the fork event that created it
//! and a thread's id from its creation order within its process, so a backup running the same
//! program assigns the same ids to the same processes and threads.

/// Global sequence number: one total order over every event of every thread and process. The
/// first event is 1; 0 means "none" (nothing held, nothing released).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "host", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
#[repr(transparent)]
pub struct Seq(pub u64);

/// Logical process id. The first process of a program is 1; children take the ids their fork
/// events recorded.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "host", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
#[repr(transparent)]
pub struct LogicalPid(pub u32);

/// Logical thread id within a process. The main thread is 0; the n-th `pthread_create` of the
/// process starts thread n.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "host", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
#[repr(transparent)]
pub struct LogicalTid(pub u32);

/// The logical pid of the process `tandem` launches.
pub const FIRST_PID: LogicalPid = LogicalPid(1);
/// The logical tid of a process's main thread.
pub const MAIN_TID: LogicalTid = LogicalTid(0);
/// The logical pid of the agent's own events: what it hands the program on its standard input.
pub const AGENT_PID: LogicalPid = LogicalPid(0);

impl Seq {
    /// No event: what a member holds before its first one.
    pub const ZERO: Seq = Seq(0);
    /// The number of a program's first event.
    pub const FIRST: Seq = Seq(1);

    /// The seq after this one.
    pub const fn next(self) -> Seq {
        Seq(self.0 + 1)
    }

    /// The seq `n` events after this one, if there is one.
    pub const fn checked_add(self, n: u64) -> Option<Seq> {
        match self.0.checked_add(n) {
            Some(s) => Some(Seq(s)),
            None => None,
        }
    }

    /// How many events after `earlier` this one is; 0 if it is not after it.
    pub const fn saturating_since(self, earlier: Seq) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The seq `n` events later (the end of a batch of `n` from here).
impl core::ops::Add<u64> for Seq {
    type Output = Seq;

    fn add(self, n: u64) -> Seq {
        Seq(self.0 + n)
    }
}

impl core::ops::AddAssign<u64> for Seq {
    fn add_assign(&mut self, n: u64) {
        self.0 += n;
    }
}

/// The seq `n` events earlier.
impl core::ops::Sub<u64> for Seq {
    type Output = Seq;

    fn sub(self, n: u64) -> Seq {
        Seq(self.0 - n)
    }
}

/// How many events lie between two seqs: `later - earlier`.
impl core::ops::Sub<Seq> for Seq {
    type Output = u64;

    fn sub(self, earlier: Seq) -> u64 {
        self.0 - earlier.0
    }
}

impl core::fmt::Display for Seq {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

impl core::fmt::Display for LogicalPid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

impl core::fmt::Display for LogicalTid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

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

    #[test]
    fn seq_arithmetic() {
        assert_eq!(Seq::FIRST.next(), Seq(2));
        assert_eq!(Seq(5) + 3, Seq(8));
        assert_eq!(Seq(8) - Seq(5), 3);
        assert_eq!(Seq(8) - 1, Seq(7));
        assert_eq!(Seq(5).saturating_since(Seq(8)), 0);
        assert_eq!(Seq(u64::MAX).checked_add(1), None);
        assert_eq!(Seq(42).to_string(), "42");
        assert_eq!(core::mem::size_of::<Seq>(), 8);
    }
}
