//! What a file descriptor is, as far as replication cares. The shim classifies every descriptor it
//! sees; each event stores the kind of its descriptor, because a backup treats kinds differently:
//! local state is re-executed, everything else is handed back from the record.

/// The kind of a descriptor. Stored in the low four bits of an event's flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u8)]
pub enum FdKind {
    /// Not classified yet (inherited, or created by a call the shim does not see).
    Unknown = 0,
    /// Regular file or directory.
    File = 1,
    /// Character device without input of its own (`/dev/null`, `/dev/zero`).
    Device = 2,
    /// `/dev/urandom`, `/dev/random`.
    Random = 3,
    /// Files under `/proc` and `/sys`: their contents change under the program.
    Pseudo = 4,
    Tty = 5,
    /// A pipe to or from outside the program (one it was started with), or a FIFO.
    Pipe = 6,
    /// Socket that `listen` was called on.
    Listener = 7,
    /// Any other socket.
    Socket = 8,
    /// One end of a `socketpair`.
    SocketPair = 9,
    Eventfd = 10,
    Epoll = 11,
    /// tandem's own descriptor (the shared-memory region).
    Shim = 12,
    /// Anything else (timerfd, signalfd, inotify, ...).
    Other = 13,
    /// A pipe whose ends are both in the program (made by `pipe`, by a shell's pipeline, by
    /// `popen`): local state, whose bytes a backup moves for real. Some of its reads and writes
    /// are the C library's own (a `popen` stream's, stdio's), which the shim cannot see.
    InnerPipe = 14,
}

impl FdKind {
    pub const MASK: u16 = 0x0f;

    pub const fn from_bits(bits: u16) -> FdKind {
        match bits & Self::MASK {
            1 => FdKind::File,
            2 => FdKind::Device,
            3 => FdKind::Random,
            4 => FdKind::Pseudo,
            5 => FdKind::Tty,
            6 => FdKind::Pipe,
            7 => FdKind::Listener,
            8 => FdKind::Socket,
            9 => FdKind::SocketPair,
            10 => FdKind::Eventfd,
            11 => FdKind::Epoll,
            12 => FdKind::Shim,
            13 => FdKind::Other,
            14 => FdKind::InnerPipe,
            _ => FdKind::Unknown,
        }
    }

    /// Local state: a backup executes calls on these for real, in sequence order, and compares
    /// results. Everything else is input or output of the outside world (or of the program's own
    /// channels, which a backup replays from the record as well).
    pub const fn is_local_state(self) -> bool {
        matches!(self, FdKind::File | FdKind::Device | FdKind::Epoll | FdKind::InnerPipe)
    }

    /// Writes on these reach the outside world (clients, terminals, other programs): on a
    /// primary in sync mode they wait for the backups (output commit).
    pub const fn is_outward(self) -> bool {
        matches!(self, FdKind::Tty | FdKind::Pipe | FdKind::Socket | FdKind::SocketPair)
    }

    /// A regular file or directory, by its path: under `/proc` and `/sys` its contents change
    /// under the program (input); anywhere else it is local state.
    pub fn of_file(path: &[u8]) -> FdKind {
        if path.starts_with(b"/proc/") || path.starts_with(b"/sys/") {
            FdKind::Pseudo
        } else {
            FdKind::File
        }
    }

    /// A character device, by its major and minor numbers: the random devices, terminals
    /// (virtual consoles, `/dev/tty`, `/dev/console`, `/dev/ptmx`, pseudo-terminals), or a device
    /// with no input of its own.
    pub const fn of_char_device(major: u32, minor: u32) -> FdKind {
        match (major, minor) {
            (1, 8) | (1, 9) => FdKind::Random,
            (4, _) | (5, 0..=2) | (136..=143, _) => FdKind::Tty,
            _ => FdKind::Device,
        }
    }

    /// A descriptor with no inode of its own, by the name `/proc/self/fd` gives it.
    pub fn of_anon_inode(name: &[u8]) -> FdKind {
        match name {
            b"anon_inode:[eventpoll]" => FdKind::Epoll,
            b"anon_inode:[eventfd]" => FdKind::Eventfd,
            _ => FdKind::Other,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            FdKind::Unknown => "unknown",
            FdKind::File => "file",
            FdKind::Device => "device",
            FdKind::Random => "random",
            FdKind::Pseudo => "pseudo",
            FdKind::Tty => "tty",
            FdKind::Pipe => "pipe",
            FdKind::Listener => "listener",
            FdKind::Socket => "socket",
            FdKind::SocketPair => "socketpair",
            FdKind::Eventfd => "eventfd",
            FdKind::Epoll => "epoll",
            FdKind::Shim => "shim",
            FdKind::Other => "other",
            FdKind::InnerPipe => "inner pipe",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_paths_devices_and_inode_names() {
        assert_eq!(FdKind::of_file(b"/proc/self/stat"), FdKind::Pseudo);
        assert_eq!(FdKind::of_file(b"/sys/kernel/mm"), FdKind::Pseudo);
        assert_eq!(FdKind::of_file(b"/procfile"), FdKind::File);
        assert_eq!(FdKind::of_file(b"data/proc/x"), FdKind::File);
        assert_eq!(FdKind::of_char_device(1, 9), FdKind::Random);
        assert_eq!(FdKind::of_char_device(1, 8), FdKind::Random);
        assert_eq!(FdKind::of_char_device(1, 3), FdKind::Device);
        assert_eq!(FdKind::of_char_device(136, 4), FdKind::Tty);
        assert_eq!(FdKind::of_char_device(5, 0), FdKind::Tty);
        assert_eq!(FdKind::of_char_device(5, 3), FdKind::Device);
        assert_eq!(FdKind::of_anon_inode(b"anon_inode:[eventfd]"), FdKind::Eventfd);
        assert_eq!(FdKind::of_anon_inode(b"anon_inode:[eventpoll]"), FdKind::Epoll);
        assert_eq!(FdKind::of_anon_inode(b"anon_inode:[timerfd]"), FdKind::Other);
        assert!(FdKind::File.is_local_state() && !FdKind::File.is_outward());
        assert!(FdKind::Socket.is_outward() && !FdKind::Random.is_local_state());
        assert!(FdKind::InnerPipe.is_local_state() && !FdKind::InnerPipe.is_outward());
    }

    #[test]
    fn bits_round_trip() {
        for b in 0..15u16 {
            assert_eq!(FdKind::from_bits(b) as u16, b);
        }
    }
}
