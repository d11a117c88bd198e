//! The parts of a call's declaration: what a backup does with it, what its arguments are, what
//! each field of its event holds. The declarations themselves are in `call.rs`, one per call; the
//! shim, `log show` and the call table in ARCHITECTURE.md all read them.

/// What a backup does when its program reaches the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Replay {
    /// Hands back the primary's result and data: input from outside, time, randomness, identity.
    HandBack,
    /// Runs the call for real and compares its outcome with the primary's.
    Reexecute,
    /// By the descriptor's kind: re-executed and compared on local state (files, devices), handed
    /// back otherwise (sockets, pipes, ttys, random devices, `/proc`).
    ByKind,
    /// Output: a backup compares the bytes (by digest) and writes for real only to local state;
    /// a sync primary holds it until the backups hold every event it can depend on.
    Output,
    /// Makes a descriptor, thread or process for real, at the number the primary's got.
    Create,
    /// Runs for real at its turn; the recorded value is the identity a backup adopts (a child's
    /// logical id, a signal's delivery point).
    Follow,
    /// Runs the call for real and checks its outcome (success or the same errno, and what the
    /// hook adds), then hands back the primary's result and data: facts about local state that
    /// differ from host to host where a program must not see them differ (a file's times, inode
    /// and device numbers).
    Verify,
    /// Not a call on a backup: a marker in the log.
    Marker,
}

impl Replay {
    pub const fn describe(self) -> &'static str {
        match self {
            Replay::HandBack => "hand back",
            Replay::Reexecute => "re-execute, compare",
            Replay::ByKind => "by kind: re-execute local, else hand back",
            Replay::Output => "output: compare digest, held for commit",
            Replay::Create => "create at the primary's number",
            Replay::Follow => "run at its turn, adopt the recorded ids",
            Replay::Verify => "re-execute, check the outcome, hand back the data",
            Replay::Marker => "marker",
        }
    }
}

/// When the call takes its sequence number, so that sequence order is real order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    /// After the real call returns, while what it acquired is held (locks, opens, waits, reads).
    After,
    /// Before the real call, while the resource is still held or before a new thread or process
    /// can run (releases, creations, exits).
    Before,
    /// Taken inside a per-descriptor critical section on local state (files, devices).
    UnderFdLock,
}

impl Order {
    pub const fn describe(self) -> &'static str {
        match self {
            Order::After => "after",
            Order::Before => "before",
            Order::UnderFdLock => "under the fd lock",
        }
    }
}

/// What an argument is to the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// A descriptor the call works on.
    FdIn,
    /// Where the call stores descriptors it creates.
    FdOut,
    /// Bytes the call reads from the program.
    BufIn,
    /// Memory the call fills.
    BufOut,
    /// A path name.
    Path,
    /// Flags, options or a mode.
    Options,
    /// A byte or element count.
    Count,
    /// A file offset (in, or in and out).
    Offset,
    /// A socket address (in or out).
    Addr,
    /// A time or timeout.
    Time,
    /// The address of a synchronisation object.
    Object,
    /// Anything else.
    Value,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Role::FdIn => "fd",
            Role::FdOut => "fd out",
            Role::BufIn => "buf in",
            Role::BufOut => "buf out",
            Role::Path => "path",
            Role::Options => "flags",
            Role::Count => "count",
            Role::Offset => "offset",
            Role::Addr => "addr",
            Role::Time => "time",
            Role::Object => "object",
            Role::Value => "value",
        }
    }
}

/// One argument of the C call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub role: Role,
}

/// A named set of flag bits (or of values, for [`Format::Enum`]).
pub type Names = &'static [(u64, &'static str)];

/// How a 64-bit field of the event reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// An unsigned number.
    Unsigned,
    /// A signed number (the field holds an `i64`, or an `i32` sign-extended).
    Signed,
    /// A number shown in hex (an address, a raw mask).
    Hex,
    /// A descriptor.
    Fd,
    /// A signal number, shown by name.
    Signal,
    /// Bits shown by name (unknown bits in hex).
    Flags(Names),
    /// One value shown by name (unknown values as numbers).
    Enum(Names),
    /// A clock id.
    Clock,
    /// A duration in nanoseconds.
    Nanos,
    /// A wait status (`exited 0`, `killed by SIGKILL`).
    WaitStatus,
    /// A waitid code (high 32 bits) and status (low 32 bits).
    ChildState,
    /// A 64-bit digest, shown in hex.
    Digest,
}

/// A named value in an event's `fd` or `aux` slot, or half of one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Field {
    pub name: &'static str,
    pub format: Format,
    /// Which bits of the slot: all 64, the low 32 or the high 32.
    pub bits: Bits,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bits {
    All,
    Low32,
    High32,
}

/// What an `aux` slot holds: nothing, one field, or two 32-bit halves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Slot {
    Unused,
    One(Field),
    Halves(Field, Field),
}

/// How a payload part reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// Bytes of data.
    Bytes,
    /// A path or other text.
    Text,
    /// A `sockaddr`.
    SockAddr,
    /// A `siginfo_t`.
    Siginfo,
    /// `struct pollfd` entries.
    PollFds,
    /// 12-byte packed `(events u32, tag u64)` entries, the tag's low half the descriptor.
    EpollEvents,
    /// `fd_set`s and a remaining `timeval`, as `aux[1]`'s bits say which are present.
    SelectSets,
    /// A `struct utsname`.
    Utsname,
    /// A `struct rusage`.
    Rusage,
    /// Four `u32`s: name length, control length, message flags, 0 (recvmsg).
    MsgMeta,
    /// A `struct stat` (x86_64, 144 bytes).
    Stat,
    /// A `struct statx` (256 bytes).
    Statx,
    /// One `struct dirent64` up to its name's end: `d_ino`, `d_off`, `d_reclen`, `d_type`
    /// (19 bytes), then the name without its NUL.
    Dirent,
    /// The `struct linux_dirent64` records `getdents64` filled.
    Dirents64,
    /// The `struct linux_dirent` records the old `getdents` system call filled (the type in each
    /// record's last byte).
    Dirents,
    /// Ancillary data (`cmsghdr`s).
    Control,
}

/// Where a payload part's length comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Len {
    /// The call's result (a byte count), at least 0.
    Result,
    /// The value of `aux[i]`.
    Aux(usize),
    /// The `i`-th `u32` of the first part.
    Word(usize),
    /// A fixed size.
    Fixed(usize),
    /// A fixed size when the call succeeded (its result is 0 or more), none when it failed.
    IfOk(usize),
    /// Whatever follows the earlier parts.
    Rest,
}

/// One part of an event's payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Part {
    pub name: &'static str,
    pub shape: Shape,
    pub len: Len,
}

/// Which recorded inputs a backup checks its own call against before it runs or answers it (a
/// mismatch is a divergence).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Checks {
    pub fd: bool,
    pub aux: [bool; 2],
}

impl Checks {
    pub const NONE: Checks = Checks { fd: false, aux: [false, false] };
    /// The descriptor.
    pub const FD: Checks = Checks { fd: true, aux: [false, false] };
    /// The descriptor and `aux[0]` (a byte count, say).
    pub const FD_AUX0: Checks = Checks { fd: true, aux: [true, false] };
    /// The descriptor and both `aux` slots.
    pub const FD_AUX: Checks = Checks { fd: true, aux: [true, true] };
    /// `aux[0]` alone.
    pub const AUX0: Checks = Checks { fd: false, aux: [true, false] };
    /// Both `aux` slots.
    pub const AUX: Checks = Checks { fd: false, aux: [true, true] };
    /// `aux[1]` alone.
    pub const AUX1: Checks = Checks { fd: false, aux: [false, true] };
}

/// Everything about one call except its id, name and family (which the `Call` enum carries).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Spec {
    /// Exported symbols that record as this call: the plain name, fortified (`__read_chk`),
    /// 64-bit (`pread64`) and other variants. Empty for events that are not calls.
    pub entries: &'static [&'static str],
    /// System call names (`SYS_*` without the prefix) that `syscall(2)` routes to the hook.
    pub syscalls: &'static [&'static str],
    pub args: &'static [Arg],
    pub replay: Replay,
    pub order: Order,
    /// What the event's `fd` holds.
    pub fd: Slot,
    pub aux: [Slot; 2],
    /// What a backup compares before running or answering the call.
    pub checks: Checks,
    pub payload: &'static [Part],
    /// What the digest covers ("" for none).
    pub digest: &'static str,
}

impl Spec {
    /// The declaration's defaults: a hand-back call of no arguments that records nothing else.
    pub const DEFAULT: Spec = Spec {
        entries: &[],
        syscalls: &[],
        args: &[],
        replay: Replay::HandBack,
        order: Order::After,
        fd: Slot::Unused,
        aux: [Slot::Unused, Slot::Unused],
        checks: Checks::NONE,
        payload: &[],
        digest: "",
    };
}

// Short constructors, so each declaration reads as a line or two.

pub const fn arg(name: &'static str, role: Role) -> Arg {
    Arg { name, role }
}

pub const fn field(name: &'static str, format: Format) -> Field {
    Field { name, format, bits: Bits::All }
}

pub const fn one(name: &'static str, format: Format) -> Slot {
    Slot::One(field(name, format))
}

/// A slot holding `low` in its low 32 bits and `high` in its high 32 bits.
pub const fn halves(low: (&'static str, Format), high: (&'static str, Format)) -> Slot {
    Slot::Halves(
        Field { name: low.0, format: low.1, bits: Bits::Low32 },
        Field { name: high.0, format: high.1, bits: Bits::High32 },
    )
}

pub const fn part(name: &'static str, shape: Shape, len: Len) -> Part {
    Part { name, shape, len }
}

/// The descriptor a call works on.
pub const FD: Slot = one("fd", Format::Fd);
pub const UNUSED: Slot = Slot::Unused;

pub mod names {
    //! Flag and value names the declarations use (Linux x86_64 values).
    use super::Names;

    pub const OPEN: Names = &[
        (0o1, "O_WRONLY"),
        (0o2, "O_RDWR"),
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o2000000, "O_CLOEXEC"),
        (0o4010000, "O_SYNC"),
        (0o20200000, "O_TMPFILE"),
        (0o40000, "O_DIRECT"),
        (0o1000000, "O_NOATIME"),
        (0o10000000, "O_PATH"),
    ];
    /// Flags of pipe2, dup3, eventfd, epoll_create1, accept4 (they share the O_ bits).
    pub const CLOEXEC_NONBLOCK: Names = &[(0o2000000, "CLOEXEC"), (0o4000, "NONBLOCK"), (0o10000, "DIRECT")];
    pub const DOMAIN: Names =
        &[(1, "AF_UNIX"), (2, "AF_INET"), (10, "AF_INET6"), (16, "AF_NETLINK"), (17, "AF_PACKET")];
    pub const SOCK_TYPE: Names = &[
        (1, "SOCK_STREAM"),
        (2, "SOCK_DGRAM"),
        (3, "SOCK_RAW"),
        (5, "SOCK_SEQPACKET"),
        (0o4000, "SOCK_NONBLOCK"),
        (0o2000000, "SOCK_CLOEXEC"),
    ];
    pub const MSG: Names = &[
        (0x1, "MSG_OOB"),
        (0x2, "MSG_PEEK"),
        (0x8, "MSG_DONTROUTE"),
        (0x20, "MSG_TRUNC"),
        (0x40, "MSG_DONTWAIT"),
        (0x80, "MSG_EOR"),
        (0x100, "MSG_WAITALL"),
        (0x4000, "MSG_NOSIGNAL"),
        (0x8000, "MSG_MORE"),
        (0x40000000, "MSG_CMSG_CLOEXEC"),
    ];
    pub const EPOLL_OP: Names = &[(1, "ADD"), (2, "DEL"), (3, "MOD")];
    pub const EPOLL_EVENTS: Names = &[
        (0x001, "IN"),
        (0x002, "PRI"),
        (0x004, "OUT"),
        (0x008, "ERR"),
        (0x010, "HUP"),
        (0x2000, "RDHUP"),
        (1 << 28, "EXCLUSIVE"),
        (1 << 29, "WAKEUP"),
        (1 << 30, "ONESHOT"),
        (1 << 31, "ET"),
    ];
    pub const WAIT_OPTIONS: Names = &[
        (1, "WNOHANG"),
        (2, "WUNTRACED"),
        (4, "WEXITED"),
        (8, "WCONTINUED"),
        (0x0100_0000, "WNOWAIT"),
        (0x2000_0000, "__WNOTHREAD"),
        (0x4000_0000, "__WALL"),
        (0x8000_0000, "__WCLONE"),
    ];
    pub const ID_TYPE: Names = &[(0, "P_ALL"), (1, "P_PID"), (2, "P_PGID"), (3, "P_PIDFD")];
    pub const WHENCE: Names = &[(0, "SEEK_SET"), (1, "SEEK_CUR"), (2, "SEEK_END"), (3, "SEEK_DATA"), (4, "SEEK_HOLE")];
    pub const SIGMASK_HOW: Names = &[(0, "SIG_BLOCK"), (1, "SIG_UNBLOCK"), (2, "SIG_SETMASK")];
    pub const SHUTDOWN_HOW: Names = &[(0, "SHUT_RD"), (1, "SHUT_WR"), (2, "SHUT_RDWR")];
    pub const FCNTL_CMD: Names = &[
        (0, "F_DUPFD"),
        (1, "F_GETFD"),
        (2, "F_SETFD"),
        (3, "F_GETFL"),
        (4, "F_SETFL"),
        (5, "F_GETLK"),
        (6, "F_SETLK"),
        (7, "F_SETLKW"),
        (1030, "F_DUPFD_CLOEXEC"),
        (1031, "F_SETPIPE_SZ"),
        (1032, "F_GETPIPE_SZ"),
        (36, "F_OFD_GETLK"),
        (37, "F_OFD_SETLK"),
        (38, "F_OFD_SETLKW"),
    ];
    pub const GETRANDOM: Names = &[(1, "GRND_NONBLOCK"), (2, "GRND_RANDOM"), (4, "GRND_INSECURE")];
    pub const SPLICE: Names = &[(1, "SPLICE_F_MOVE"), (2, "SPLICE_F_NONBLOCK"), (4, "SPLICE_F_MORE")];
    /// Flags of the `*at` calls that look a path up (fstatat, statx).
    pub const AT: Names = &[
        (0x100, "AT_SYMLINK_NOFOLLOW"),
        (0x800, "AT_NO_AUTOMOUNT"),
        (0x1000, "AT_EMPTY_PATH"),
        (0x2000, "AT_STATX_FORCE_SYNC"),
        (0x4000, "AT_STATX_DONT_SYNC"),
    ];
    /// The fields statx is asked for (and says it filled).
    pub const STATX_MASK: Names = &[
        (0x7ff, "BASIC_STATS"),
        (0x1, "TYPE"),
        (0x2, "MODE"),
        (0x4, "NLINK"),
        (0x8, "UID"),
        (0x10, "GID"),
        (0x20, "ATIME"),
        (0x40, "MTIME"),
        (0x80, "CTIME"),
        (0x100, "INO"),
        (0x200, "SIZE"),
        (0x400, "BLOCKS"),
        (0x800, "BTIME"),
        (0x1000, "MNT_ID"),
        (0x2000, "DIOALIGN"),
    ];
    /// Which of select's sets were given (bits 0-2) and whether a timeout was (bit 3).
    pub const SELECT_PRESENT: Names = &[(1, "read"), (2, "write"), (4, "except"), (8, "timeout")];
}
