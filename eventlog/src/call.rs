//! Every call the shim records, declared once: its stable numeric id (part of the log format:
//! never reuse or renumber an id; add new ones at the end of their family's range), its name and
//! family, the entry points that record as it, its arguments' roles, what a backup does with it,
//! when it takes its sequence number, and what each field of its event holds. The shim's hooks,
//! `log show` (text and JSON) and the call table in ARCHITECTURE.md are all read from here.

#[cfg(feature = "host")]
pub mod decode;
pub mod spec;
#[cfg(feature = "host")]
pub mod table;

use spec::names::*;
use spec::Format::*;
use spec::Role::*;
use spec::{arg, halves, one, part, Checks, Len, Order, Replay, Shape, Slot, Spec, FD, UNUSED};

/// What kind of thing a call does; `log stats` groups by it and replay dispatches on it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Family {
    Process,
    Thread,
    Sync,
    Time,
    Random,
    Identity,
    /// Creates, duplicates or closes file descriptors.
    Fd,
    /// Moves bytes through a descriptor.
    Io,
    /// Socket set-up and addressing.
    Net,
    /// Waits for readiness.
    Poll,
    Signal,
    /// Refusals and markers.
    Misc,
    /// What the file system says about a file (the stat family).
    File,
}

macro_rules! calls {
    ($($id:literal $variant:ident $name:literal $family:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        /// An intercepted call. The discriminant is the id stored in each event.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Call {
            $($variant = $id,)*
        }

        impl Call {
            /// Every call, in id order.
            pub const ALL: &'static [Call] = &[$(Call::$variant,)*];

            /// The call for a stored id, if the id is known.
            pub const fn from_id(id: u16) -> Option<Call> {
                match id {
                    $($id => Some(Call::$variant),)*
                    _ => None,
                }
            }

            /// The libc name of the call (fortified and 64-bit variants record under the plain name).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Call::$variant => $name,)*
                }
            }

            pub const fn family(self) -> Family {
                match self {
                    $(Call::$variant => Family::$family,)*
                }
            }

            /// The call's declaration. Constant for a constant call, so a hook that asks it what
            /// to do costs nothing at run time.
            #[inline(always)]
            pub const fn spec(self) -> &'static Spec {
                match self {
                    $(Call::$variant => {
                        // A declaration may name every field.
                        #[allow(clippy::needless_update)]
                        const S: Spec = Spec { $($field: $value,)* ..Spec::DEFAULT };
                        &S
                    })*
                }
            }
        }
    };
}

// Shared shapes of several declarations.
const OBJECT: Slot = one("object", Hex);
const COUNT: Slot = one("count", Unsigned);
/// On the program's own pipes: the number of the call before this one in its direction.
const AFTER: Slot = one("after", Unsigned);
const DATA: spec::Part = part("data", Shape::Bytes, Len::Result);
const PATH: spec::Part = part("path", Shape::Text, Len::Rest);
const SLEPT: [Slot; 2] = [one("requested", Nanos), one("remaining", Nanos)];
const WAIT: [Slot; 2] = [one("status", WaitStatus), halves(("pid", Signed), ("options", Flags(WAIT_OPTIONS)))];
const SEND_TO: [Slot; 2] = [one("signal_target", Signed), one("signal", Signal)];
const STAT: spec::Part = part("stat", Shape::Stat, Len::IfOk(144));
const STAT_PATH: [spec::Arg; 2] = [arg("path", Path), arg("buf", BufOut)];

calls! {
    // processes
    1 Fork "fork" Process {
        entries: &["fork", "vfork"], replay: Replay::Follow, order: Order::Before,
        aux: [one("child", Unsigned), UNUSED],
    }
    2 Execve "execve" Process {
        entries: &["execve", "execv", "execvp", "execvpe", "execl", "execle", "execlp", "fexecve"],
        args: &[arg("path", Path), arg("argv", Value), arg("envp", Value)],
        replay: Replay::Reexecute, order: Order::Before, payload: &[PATH], digest: "path and argv",
    }
    3 ExecFailed "execve_failed" Process { replay: Replay::Reexecute }
    4 Exit "exit" Process {
        entries: &["exit"], args: &[arg("status", Value)], replay: Replay::Reexecute, order: Order::Before,
        aux: [one("status", Signed), UNUSED],
        checks: Checks::AUX0,
    }
    5 ExitNow "_exit" Process {
        entries: &["_exit", "_Exit"], args: &[arg("status", Value)], replay: Replay::Reexecute, order: Order::Before,
        aux: [one("status", Signed), UNUSED],
        checks: Checks::AUX0,
    }
    6 Waitpid "waitpid" Process {
        entries: &["waitpid", "wait"],
        args: &[arg("pid", Value), arg("status", BufOut), arg("options", Options)],
        replay: Replay::Follow, aux: WAIT,
    }
    7 Wait4 "wait4" Process {
        entries: &["wait4", "wait3"], syscalls: &["wait4"],
        args: &[arg("pid", Value), arg("status", BufOut), arg("options", Options), arg("rusage", BufOut)],
        replay: Replay::Follow, aux: WAIT, payload: &[part("rusage", Shape::Rusage, Len::Rest)],
    }
    8 PosixSpawn "posix_spawn" Process {
        entries: &["posix_spawn", "posix_spawnp"],
        args: &[arg("pid", BufOut), arg("path", Path), arg("actions", Value), arg("attr", Value), arg("argv", Value), arg("envp", Value)],
        replay: Replay::Follow, order: Order::Before,
        aux: [one("child", Unsigned), one("os_pid", Signed)],
    }
    9 ProcessStart "process_start" Process {
        replay: Replay::Follow, aux: [one("spawner", Unsigned), one("parent_os_pid", Signed)],
    }
    10 Waitid "waitid" Process {
        entries: &["waitid"], syscalls: &["waitid"],
        args: &[arg("idtype", Value), arg("id", Value), arg("info", BufOut), arg("options", Options)],
        replay: Replay::Follow,
        aux: [one("child", ChildState), halves(("idtype", Enum(ID_TYPE)), ("options", Flags(WAIT_OPTIONS)))],
        payload: &[part("siginfo", Shape::Siginfo, Len::Rest)],
    }
    // system(3): the shell's logical pid, given before it runs; its exit status after it ends.
    11 System "system" Process {
        entries: &["system"], args: &[arg("command", Path)], replay: Replay::Follow, order: Order::Before,
        aux: [one("child", Unsigned), UNUSED], payload: &[part("command", Shape::Text, Len::Rest)],
        digest: "the command",
    }
    12 SystemStatus "system_status" Process { replay: Replay::Reexecute, aux: [one("status", WaitStatus), UNUSED] }
    // popen(3): the shell's logical pid, given before it runs; the stream's descriptor once it is
    // made. pclose(3): the stream's release before it closes; the shell's exit status after.
    13 Popen "popen" Process {
        entries: &["popen"], args: &[arg("command", Path), arg("mode", Options)], replay: Replay::Follow,
        order: Order::Before, aux: [one("child", Unsigned), UNUSED],
        payload: &[part("command", Shape::Text, Len::Rest)], digest: "the command and mode",
    }
    14 PopenStream "popen_stream" Process { replay: Replay::Create, fd: one("fd", Fd) }
    15 Pclose "pclose" Process {
        entries: &["pclose"], args: &[arg("stream", Value)], replay: Replay::Reexecute, order: Order::Before, fd: FD,
        checks: Checks::FD,
    }
    16 PcloseStatus "pclose_status" Process { aux: [one("status", WaitStatus), UNUSED] }
    // threads
    // The agent's own: bytes it hands the program on its standard input (0: the end of it).
    17 Stdin "stdin" Process { payload: &[DATA] }
    20 PthreadCreate "pthread_create" Thread {
        entries: &["pthread_create"],
        args: &[arg("thread", BufOut), arg("attr", Value), arg("start", Value), arg("arg", Value)],
        replay: Replay::Create, order: Order::Before, aux: [one("thread", Unsigned), UNUSED],
    }
    21 PthreadJoin "pthread_join" Thread {
        entries: &["pthread_join"], args: &[arg("thread", Value), arg("retval", BufOut)], replay: Replay::Reexecute,
    }
    22 PthreadExit "pthread_exit" Thread {
        entries: &["pthread_exit"], args: &[arg("retval", Value)], replay: Replay::Reexecute, order: Order::Before,
    }
    23 PthreadCreateFailed "pthread_create_failed" Thread { aux: [one("thread", Unsigned), UNUSED] }
    // synchronisation
    40 MutexLock "pthread_mutex_lock" Sync {
        entries: &["pthread_mutex_lock"], args: &[arg("mutex", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    41 MutexTrylock "pthread_mutex_trylock" Sync {
        entries: &["pthread_mutex_trylock"], args: &[arg("mutex", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    42 MutexTimedlock "pthread_mutex_timedlock" Sync {
        entries: &["pthread_mutex_timedlock", "pthread_mutex_clocklock"],
        args: &[arg("mutex", Object), arg("abstime", Time)], replay: Replay::Reexecute, aux: [OBJECT, one("clock", Clock)],
    }
    43 MutexUnlock "pthread_mutex_unlock" Sync {
        entries: &["pthread_mutex_unlock"], args: &[arg("mutex", Object)], replay: Replay::Reexecute,
        order: Order::Before, aux: [OBJECT, UNUSED],
    }
    44 RwlockRdlock "pthread_rwlock_rdlock" Sync {
        entries: &["pthread_rwlock_rdlock"], args: &[arg("rwlock", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    45 RwlockTryrdlock "pthread_rwlock_tryrdlock" Sync {
        entries: &["pthread_rwlock_tryrdlock"], args: &[arg("rwlock", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    46 RwlockTimedrdlock "pthread_rwlock_timedrdlock" Sync {
        entries: &["pthread_rwlock_timedrdlock", "pthread_rwlock_clockrdlock"],
        args: &[arg("rwlock", Object), arg("abstime", Time)], replay: Replay::Reexecute, aux: [OBJECT, one("clock", Clock)],
    }
    47 RwlockWrlock "pthread_rwlock_wrlock" Sync {
        entries: &["pthread_rwlock_wrlock"], args: &[arg("rwlock", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    48 RwlockTrywrlock "pthread_rwlock_trywrlock" Sync {
        entries: &["pthread_rwlock_trywrlock"], args: &[arg("rwlock", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    49 RwlockTimedwrlock "pthread_rwlock_timedwrlock" Sync {
        entries: &["pthread_rwlock_timedwrlock", "pthread_rwlock_clockwrlock"],
        args: &[arg("rwlock", Object), arg("abstime", Time)], replay: Replay::Reexecute, aux: [OBJECT, one("clock", Clock)],
    }
    50 RwlockUnlock "pthread_rwlock_unlock" Sync {
        entries: &["pthread_rwlock_unlock"], args: &[arg("rwlock", Object)], replay: Replay::Reexecute,
        order: Order::Before, aux: [OBJECT, UNUSED],
    }
    51 CondWait "pthread_cond_wait" Sync {
        entries: &["pthread_cond_wait"], args: &[arg("cond", Object), arg("mutex", Object)],
        replay: Replay::Reexecute, aux: [OBJECT, one("mutex", Hex)],
    }
    52 CondTimedwait "pthread_cond_timedwait" Sync {
        entries: &["pthread_cond_timedwait", "pthread_cond_clockwait"],
        args: &[arg("cond", Object), arg("mutex", Object), arg("abstime", Time)],
        replay: Replay::Reexecute, aux: [OBJECT, one("mutex", Hex)],
    }
    53 CondSignal "pthread_cond_signal" Sync {
        entries: &["pthread_cond_signal"], args: &[arg("cond", Object)], replay: Replay::HandBack,
        order: Order::Before, aux: [OBJECT, UNUSED],
    }
    54 CondBroadcast "pthread_cond_broadcast" Sync {
        entries: &["pthread_cond_broadcast"], args: &[arg("cond", Object)], replay: Replay::HandBack,
        order: Order::Before, aux: [OBJECT, UNUSED],
    }
    55 SemWait "sem_wait" Sync {
        entries: &["sem_wait"], args: &[arg("sem", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    56 SemTrywait "sem_trywait" Sync {
        entries: &["sem_trywait"], args: &[arg("sem", Object)], replay: Replay::Reexecute, aux: [OBJECT, UNUSED],
    }
    57 SemTimedwait "sem_timedwait" Sync {
        entries: &["sem_timedwait", "sem_clockwait"], args: &[arg("sem", Object), arg("abstime", Time)],
        replay: Replay::Reexecute, aux: [OBJECT, one("clock", Clock)],
    }
    58 SemPost "sem_post" Sync {
        entries: &["sem_post"], args: &[arg("sem", Object)], replay: Replay::Reexecute, order: Order::Before,
        aux: [OBJECT, UNUSED],
    }
    // The mutex a condition wait releases, as it starts.
    59 CondWaitRelease "cond_wait_release" Sync {
        replay: Replay::Reexecute, order: Order::Before, aux: [OBJECT, one("mutex", Hex)],
    }
    // time
    70 ClockGettime "clock_gettime" Time {
        entries: &["clock_gettime"], syscalls: &["clock_gettime"], args: &[arg("clock", Value), arg("tp", BufOut)],
        fd: one("clock", Clock), aux: [one("seconds", Unsigned), one("nanoseconds", Unsigned)],
        checks: Checks::FD,
    }
    71 Gettimeofday "gettimeofday" Time {
        entries: &["gettimeofday"], syscalls: &["gettimeofday"], args: &[arg("tv", BufOut), arg("tz", BufOut)],
        aux: [one("seconds", Unsigned), one("microseconds", Unsigned)],
    }
    72 Time "time" Time { entries: &["time"], args: &[arg("t", BufOut)] }
    73 Nanosleep "nanosleep" Time {
        entries: &["nanosleep"], syscalls: &["nanosleep"], args: &[arg("req", Time), arg("rem", BufOut)], aux: SLEPT,
        checks: Checks::AUX0,
    }
    74 ClockNanosleep "clock_nanosleep" Time {
        entries: &["clock_nanosleep"], syscalls: &["clock_nanosleep"],
        args: &[arg("clock", Value), arg("flags", Options), arg("req", Time), arg("rem", BufOut)],
        fd: one("clock", Clock), aux: SLEPT,
        checks: Checks::FD_AUX0,
    }
    75 Usleep "usleep" Time { entries: &["usleep"], args: &[arg("usec", Time)], aux: [one("microseconds", Unsigned), UNUSED], checks: Checks::AUX0 }
    76 Sleep "sleep" Time { entries: &["sleep"], args: &[arg("seconds", Time)], aux: [one("seconds", Unsigned), UNUSED], checks: Checks::AUX0 }
    // randomness
    90 Getrandom "getrandom" Random {
        entries: &["getrandom"], syscalls: &["getrandom"], args: &[arg("buf", BufOut), arg("count", Count), arg("flags", Options)],
        aux: [COUNT, one("flags", Flags(GETRANDOM))], payload: &[part("bytes", Shape::Bytes, Len::Result)],
        checks: Checks::AUX0,
    }
    91 Getentropy "getentropy" Random {
        entries: &["getentropy"], args: &[arg("buf", BufOut), arg("count", Count)],
        aux: [COUNT, UNUSED], payload: &[part("bytes", Shape::Bytes, Len::Aux(0))],
        checks: Checks::AUX0,
    }
    92 Arc4random "arc4random" Random { entries: &["arc4random"] }
    93 Arc4randomBuf "arc4random_buf" Random {
        entries: &["arc4random_buf"], args: &[arg("buf", BufOut), arg("count", Count)],
        aux: [COUNT, one("done", Unsigned)], payload: &[part("bytes", Shape::Bytes, Len::Result)],
        checks: Checks::AUX0,
    }
    94 Arc4randomUniform "arc4random_uniform" Random {
        entries: &["arc4random_uniform"], args: &[arg("bound", Value)], aux: [one("bound", Unsigned), UNUSED],
        checks: Checks::AUX0,
    }
    // identity
    110 Getpid "getpid" Identity { entries: &["getpid"], syscalls: &["getpid"] }
    111 Getppid "getppid" Identity { entries: &["getppid"], syscalls: &["getppid"] }
    112 Gettid "gettid" Identity { entries: &["gettid"], syscalls: &["gettid"] }
    113 Gethostname "gethostname" Identity {
        entries: &["gethostname", "__gethostname_chk"], args: &[arg("name", BufOut), arg("len", Count)],
        aux: [one("len", Unsigned), UNUSED], payload: &[part("name", Shape::Text, Len::Rest)],
    }
    114 Uname "uname" Identity {
        entries: &["uname"], args: &[arg("buf", BufOut)], payload: &[part("utsname", Shape::Utsname, Len::Rest)],
    }
    // descriptors
    130 Open "open" Fd {
        entries: &["open", "open64", "__open_2", "__open64_2"], syscalls: &["open"],
        args: &[arg("path", Path), arg("flags", Options), arg("mode", Options)],
        replay: Replay::Create, fd: one("fd", Fd),
        aux: [halves(("flags", Flags(OPEN)), ("mode", Hex)), one("dirfd", Fd)], payload: &[PATH], digest: "path and flags",
    }
    131 Openat "openat" Fd {
        entries: &["openat", "openat64", "__openat_2", "__openat64_2"], syscalls: &["openat"],
        args: &[arg("dirfd", FdIn), arg("path", Path), arg("flags", Options), arg("mode", Options)],
        replay: Replay::Create, fd: one("fd", Fd),
        aux: [halves(("flags", Flags(OPEN)), ("mode", Hex)), one("dirfd", Fd)], payload: &[PATH], digest: "path and flags",
    }
    132 Creat "creat" Fd {
        entries: &["creat", "creat64"], args: &[arg("path", Path), arg("mode", Options)],
        replay: Replay::Create, fd: one("fd", Fd),
        aux: [halves(("flags", Flags(OPEN)), ("mode", Hex)), one("dirfd", Fd)], payload: &[PATH], digest: "path and flags",
    }
    133 Close "close" Fd {
        entries: &["close"], syscalls: &["close"], args: &[arg("fd", FdIn)], replay: Replay::Reexecute, order: Order::Before, fd: FD,
        checks: Checks::FD,
    }
    134 Dup "dup" Fd {
        entries: &["dup"], syscalls: &["dup"], args: &[arg("fd", FdIn)], replay: Replay::Create, fd: FD,
        checks: Checks::FD,
    }
    135 Dup2 "dup2" Fd {
        entries: &["dup2"], args: &[arg("fd", FdIn), arg("to", FdOut)], replay: Replay::Create, fd: FD,
        aux: [one("to", Fd), UNUSED],
        checks: Checks::FD,
    }
    136 Dup3 "dup3" Fd {
        entries: &["dup3"], syscalls: &["dup3"], args: &[arg("fd", FdIn), arg("to", FdOut), arg("flags", Options)],
        replay: Replay::Create, fd: FD, aux: [one("to", Fd), UNUSED],
        checks: Checks::FD,
    }
    137 Pipe "pipe" Fd {
        entries: &["pipe"], args: &[arg("fds", FdOut)], replay: Replay::Create, fd: one("read_end", Fd),
        aux: [one("write_end", Fd), UNUSED],
    }
    138 Pipe2 "pipe2" Fd {
        entries: &["pipe2"], syscalls: &["pipe2"], args: &[arg("fds", FdOut), arg("flags", Options)],
        replay: Replay::Create, fd: one("read_end", Fd), aux: [one("write_end", Fd), one("flags", Flags(CLOEXEC_NONBLOCK))],
    }
    139 Socket "socket" Fd {
        entries: &["socket"], syscalls: &["socket"], args: &[arg("domain", Value), arg("type", Options), arg("protocol", Value)],
        replay: Replay::Create, fd: one("fd", Fd),
        aux: [one("domain", Enum(DOMAIN)), one("type", Flags(SOCK_TYPE))],
    }
    140 Socketpair "socketpair" Fd {
        entries: &["socketpair"], args: &[arg("domain", Value), arg("type", Options), arg("protocol", Value), arg("sv", FdOut)],
        replay: Replay::Create, fd: one("first", Fd),
        aux: [one("second", Fd), halves(("domain", Enum(DOMAIN)), ("type", Flags(SOCK_TYPE)))],
    }
    141 Accept "accept" Fd {
        entries: &["accept"], args: &[arg("fd", FdIn), arg("addr", Addr), arg("len", Count)],
        replay: Replay::Create, fd: one("listener", Fd),
        aux: [one("flags", Flags(CLOEXEC_NONBLOCK)), one("addr_len", Unsigned)],
        payload: &[part("peer", Shape::SockAddr, Len::Aux(1))],
        checks: Checks::FD,
    }
    142 Accept4 "accept4" Fd {
        entries: &["accept4"], syscalls: &["accept4"],
        args: &[arg("fd", FdIn), arg("addr", Addr), arg("len", Count), arg("flags", Options)],
        replay: Replay::Create, fd: one("listener", Fd),
        aux: [one("flags", Flags(CLOEXEC_NONBLOCK)), one("addr_len", Unsigned)],
        payload: &[part("peer", Shape::SockAddr, Len::Aux(1))],
        checks: Checks::FD,
    }
    143 EpollCreate "epoll_create" Fd {
        entries: &["epoll_create"], args: &[arg("size", Value)], replay: Replay::Create, fd: one("fd", Fd),
        aux: [one("size", Unsigned), UNUSED],
    }
    144 EpollCreate1 "epoll_create1" Fd {
        entries: &["epoll_create1"], args: &[arg("flags", Options)], replay: Replay::Create, fd: one("fd", Fd),
        aux: [one("flags", Flags(CLOEXEC_NONBLOCK)), UNUSED],
    }
    145 Eventfd "eventfd" Fd {
        entries: &["eventfd"], syscalls: &["eventfd2"], args: &[arg("initval", Value), arg("flags", Options)],
        replay: Replay::Create, fd: one("fd", Fd), aux: [one("initval", Unsigned), one("flags", Flags(CLOEXEC_NONBLOCK))],
    }
    146 Fcntl "fcntl" Fd {
        entries: &["fcntl", "fcntl64"], args: &[arg("fd", FdIn), arg("cmd", Value), arg("arg", Value)],
        replay: Replay::Reexecute, fd: FD, aux: [one("cmd", Enum(FCNTL_CMD)), one("arg", Hex)],
        checks: Checks::FD_AUX0,
    }
    147 Fopen "fopen" Fd {
        entries: &["fopen", "fopen64"], args: &[arg("path", Path), arg("mode", Options)],
        replay: Replay::Create, fd: one("fd", Fd), payload: &[PATH], digest: "path and mode",
    }
    148 Fclose "fclose" Fd { entries: &["fclose"], args: &[arg("stream", Value)], replay: Replay::Reexecute, order: Order::Before, fd: FD, checks: Checks::FD }
    149 CloseRange "close_range" Fd {
        entries: &["close_range", "closefrom"], args: &[arg("first", FdIn), arg("last", FdIn), arg("flags", Options)],
        replay: Replay::Reexecute, order: Order::Before, aux: [one("first", Fd), one("last", Unsigned)],
        checks: Checks::AUX0,
    }
    // Temporary names: the primary's random name is the input.
    150 Mkstemp "mkstemp" Fd {
        entries: &[
            "mkstemp", "mkstemp64", "mkostemp", "mkostemp64", "mkstemps", "mkstemps64", "mkostemps", "mkostemps64",
        ],
        args: &[arg("template", Path), arg("suffix_len", Count), arg("flags", Options)],
        replay: Replay::Create, fd: one("fd", Fd),
        aux: [one("flags", Flags(OPEN)), one("suffix_len", Unsigned)], checks: Checks::AUX,
        payload: &[PATH],
    }
    151 Mkdtemp "mkdtemp" Fd {
        entries: &["mkdtemp"], args: &[arg("template", Path)], replay: Replay::Create, payload: &[PATH],
    }
    152 Mktemp "mktemp" Fd {
        entries: &["mktemp"], args: &[arg("template", Path)], payload: &[PATH],
    }
    // An unlinked file of its own: a backup makes its own at the primary's descriptor number.
    153 Tmpfile "tmpfile" Fd { entries: &["tmpfile", "tmpfile64"], replay: Replay::Create, fd: one("fd", Fd) }
    154 Tmpnam "tmpnam" Fd { entries: &["tmpnam", "tmpnam_r"], args: &[arg("s", BufOut)], payload: &[PATH] }
    155 Tempnam "tempnam" Fd {
        entries: &["tempnam"], args: &[arg("dir", Path), arg("pfx", Path)], payload: &[PATH],
    }
    // bytes through descriptors
    170 Read "read" Io {
        entries: &["read", "__read_chk"], syscalls: &["read"],
        args: &[arg("fd", FdIn), arg("buf", BufOut), arg("count", Count)],
        replay: Replay::ByKind, order: Order::UnderFdLock, fd: FD, aux: [COUNT, AFTER], payload: &[DATA],
        digest: "bytes read (local files)",
        checks: Checks::FD_AUX0,
    }
    171 Readv "readv" Io {
        entries: &["readv"], args: &[arg("fd", FdIn), arg("iov", BufOut), arg("iovcnt", Count)],
        replay: Replay::ByKind, order: Order::UnderFdLock, fd: FD, aux: [one("iovcnt", Unsigned), UNUSED], payload: &[DATA],
        digest: "bytes read (local files)",
        checks: Checks::FD_AUX0,
    }
    172 Pread "pread" Io {
        entries: &["pread", "pread64", "__pread_chk", "__pread64_chk"],
        args: &[arg("fd", FdIn), arg("buf", BufOut), arg("count", Count), arg("offset", Offset)],
        replay: Replay::ByKind, order: Order::UnderFdLock, fd: FD, aux: [COUNT, UNUSED], payload: &[DATA],
        digest: "bytes read (local files)",
        checks: Checks::FD_AUX0,
    }
    173 Recv "recv" Io {
        entries: &["recv", "__recv_chk"], args: &[arg("fd", FdIn), arg("buf", BufOut), arg("count", Count), arg("flags", Options)],
        replay: Replay::ByKind, order: Order::UnderFdLock, fd: FD, aux: [COUNT, UNUSED], payload: &[DATA],
        digest: "bytes read (local files)",
        checks: Checks::FD_AUX0,
    }
    174 Recvfrom "recvfrom" Io {
        entries: &["recvfrom", "__recvfrom_chk"],
        args: &[arg("fd", FdIn), arg("buf", BufOut), arg("count", Count), arg("flags", Options), arg("addr", Addr), arg("len", Count)],
        replay: Replay::HandBack, fd: FD, aux: [COUNT, one("addr_len", Unsigned)],
        payload: &[DATA, part("source", Shape::SockAddr, Len::Aux(1))],
        checks: Checks::FD_AUX0,
    }
    175 Recvmsg "recvmsg" Io {
        entries: &["recvmsg"], args: &[arg("fd", FdIn), arg("msg", BufOut), arg("flags", Options)],
        replay: Replay::HandBack, fd: FD, aux: [one("flags", Flags(MSG)), UNUSED],
        payload: &[
            part("meta", Shape::MsgMeta, Len::Fixed(16)),
            part("source", Shape::SockAddr, Len::Word(0)),
            part("control", Shape::Control, Len::Word(1)),
            part("data", Shape::Bytes, Len::Rest),
        ],
        checks: Checks::FD,
    }
    176 Write "write" Io {
        entries: &["write"], syscalls: &["write"], args: &[arg("fd", FdIn), arg("buf", BufIn), arg("count", Count)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: FD, aux: [COUNT, AFTER], digest: "bytes written",
        checks: Checks::FD_AUX0,
    }
    177 Writev "writev" Io {
        entries: &["writev"], args: &[arg("fd", FdIn), arg("iov", BufIn), arg("iovcnt", Count)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: FD, aux: [COUNT, UNUSED], digest: "bytes written",
        checks: Checks::FD_AUX0,
    }
    178 Pwrite "pwrite" Io {
        entries: &["pwrite", "pwrite64"], args: &[arg("fd", FdIn), arg("buf", BufIn), arg("count", Count), arg("offset", Offset)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: FD, aux: [COUNT, one("offset", Signed)], digest: "bytes written",
        checks: Checks::FD_AUX0,
    }
    179 Send "send" Io {
        entries: &["send"], args: &[arg("fd", FdIn), arg("buf", BufIn), arg("count", Count), arg("flags", Options)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: FD, aux: [COUNT, one("flags", Flags(MSG))], digest: "bytes written",
        checks: Checks::FD_AUX0,
    }
    180 Sendto "sendto" Io {
        entries: &["sendto"],
        args: &[arg("fd", FdIn), arg("buf", BufIn), arg("count", Count), arg("flags", Options), arg("addr", Addr), arg("len", Count)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: FD, aux: [COUNT, one("destination", Digest)], digest: "bytes written",
        checks: Checks::FD_AUX0,
    }
    181 Sendmsg "sendmsg" Io {
        entries: &["sendmsg"], args: &[arg("fd", FdIn), arg("msg", BufIn), arg("flags", Options)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: FD, aux: [COUNT, one("flags", Flags(MSG))], digest: "bytes written",
        checks: Checks::FD_AUX0,
    }
    182 Lseek "lseek" Io {
        entries: &["lseek", "lseek64"], args: &[arg("fd", FdIn), arg("offset", Offset), arg("whence", Value)],
        replay: Replay::ByKind, order: Order::UnderFdLock, fd: FD, aux: [one("offset", Signed), one("whence", Enum(WHENCE))],
        checks: Checks::FD,
    }
    183 Fsync "fsync" Io { entries: &["fsync"], args: &[arg("fd", FdIn)], replay: Replay::ByKind, fd: FD, checks: Checks::FD }
    184 Fdatasync "fdatasync" Io { entries: &["fdatasync"], args: &[arg("fd", FdIn)], replay: Replay::ByKind, fd: FD, checks: Checks::FD }
    185 Sendfile "sendfile" Io {
        entries: &["sendfile", "sendfile64"],
        args: &[arg("out_fd", FdIn), arg("in_fd", FdIn), arg("offset", Offset), arg("count", Count)],
        replay: Replay::Output, order: Order::UnderFdLock, fd: one("out_fd", Fd), aux: [COUNT, one("in_fd", Fd)],
        checks: Checks::FD_AUX,
    }
    186 CopyFileRange "copy_file_range" Io {
        entries: &["copy_file_range"],
        args: &[
            arg("fd_in", FdIn), arg("off_in", Offset), arg("fd_out", FdIn), arg("off_out", Offset),
            arg("len", Count), arg("flags", Options),
        ],
        replay: Replay::Output, order: Order::UnderFdLock, fd: one("fd_out", Fd),
        aux: [COUNT, halves(("fd_in", Fd), ("flags", Hex))], checks: Checks::FD_AUX,
    }
    187 Splice "splice" Io {
        entries: &["splice"],
        args: &[
            arg("fd_in", FdIn), arg("off_in", Offset), arg("fd_out", FdIn), arg("off_out", Offset),
            arg("len", Count), arg("flags", Options),
        ],
        replay: Replay::Output, order: Order::UnderFdLock, fd: one("fd_out", Fd),
        aux: [COUNT, halves(("fd_in", Fd), ("flags", Flags(SPLICE)))], checks: Checks::FD_AUX,
    }
    // sockets
    200 Bind "bind" Net {
        entries: &["bind"], args: &[arg("fd", FdIn), arg("addr", Addr), arg("len", Count)],
        replay: Replay::HandBack, fd: FD, aux: [one("addr_len", Unsigned), UNUSED],
        payload: &[part("address", Shape::SockAddr, Len::Rest)],
        checks: Checks::FD,
    }
    201 Listen "listen" Net {
        entries: &["listen"], args: &[arg("fd", FdIn), arg("backlog", Value)], replay: Replay::Reexecute, fd: FD,
        aux: [one("backlog", Signed), UNUSED],
        checks: Checks::FD,
    }
    202 Connect "connect" Net {
        entries: &["connect"], args: &[arg("fd", FdIn), arg("addr", Addr), arg("len", Count)],
        replay: Replay::HandBack, fd: FD, aux: [one("addr_len", Unsigned), UNUSED],
        payload: &[part("address", Shape::SockAddr, Len::Rest)],
        checks: Checks::FD,
    }
    203 Shutdown "shutdown" Net {
        entries: &["shutdown"], args: &[arg("fd", FdIn), arg("how", Value)], replay: Replay::ByKind, fd: FD,
        aux: [one("how", Enum(SHUTDOWN_HOW)), UNUSED],
        checks: Checks::FD,
    }
    204 Getsockname "getsockname" Net {
        entries: &["getsockname"], args: &[arg("fd", FdIn), arg("addr", Addr), arg("len", Count)], fd: FD,
        aux: [one("addr_len", Unsigned), UNUSED], payload: &[part("address", Shape::SockAddr, Len::Rest)],
        checks: Checks::FD,
    }
    205 Getpeername "getpeername" Net {
        entries: &["getpeername"], args: &[arg("fd", FdIn), arg("addr", Addr), arg("len", Count)], fd: FD,
        aux: [one("addr_len", Unsigned), UNUSED], payload: &[part("address", Shape::SockAddr, Len::Rest)],
        checks: Checks::FD,
    }
    // readiness
    220 Poll "poll" Poll {
        entries: &["poll", "__poll_chk"], args: &[arg("fds", BufOut), arg("nfds", Count), arg("timeout", Time)],
        aux: [one("nfds", Unsigned), one("timeout_ms", Signed)], payload: &[part("fds", Shape::PollFds, Len::Rest)],
        checks: Checks::AUX0,
    }
    221 Ppoll "ppoll" Poll {
        entries: &["ppoll", "__ppoll_chk"],
        args: &[arg("fds", BufOut), arg("nfds", Count), arg("timeout", Time), arg("sigmask", Value)],
        aux: [one("nfds", Unsigned), one("timeout_ms", Signed)], payload: &[part("fds", Shape::PollFds, Len::Rest)],
        checks: Checks::AUX0,
    }
    222 Select "select" Poll {
        entries: &["select"],
        args: &[arg("nfds", Count), arg("readfds", BufOut), arg("writefds", BufOut), arg("exceptfds", BufOut), arg("timeout", Time)],
        aux: [one("nfds", Unsigned), one("given", Flags(SELECT_PRESENT))], payload: &[part("sets", Shape::SelectSets, Len::Rest)],
        checks: Checks::AUX0,
    }
    223 Pselect "pselect" Poll {
        entries: &["pselect"],
        args: &[arg("nfds", Count), arg("readfds", BufOut), arg("writefds", BufOut), arg("exceptfds", BufOut), arg("timeout", Time), arg("sigmask", Value)],
        aux: [one("nfds", Unsigned), one("given", Flags(SELECT_PRESENT))], payload: &[part("sets", Shape::SelectSets, Len::Rest)],
        checks: Checks::AUX0,
    }
    224 EpollCtl "epoll_ctl" Poll {
        entries: &["epoll_ctl"], syscalls: &["epoll_ctl"],
        args: &[arg("epfd", FdIn), arg("op", Value), arg("fd", FdIn), arg("event", BufIn)],
        replay: Replay::Reexecute, fd: one("epfd", Fd),
        aux: [halves(("op", Enum(EPOLL_OP)), ("fd", Fd)), one("events", Flags(EPOLL_EVENTS))],
        checks: Checks::FD_AUX0,
    }
    225 EpollWait "epoll_wait" Poll {
        entries: &["epoll_wait"], syscalls: &["epoll_wait"],
        args: &[arg("epfd", FdIn), arg("events", BufOut), arg("maxevents", Count), arg("timeout", Time)],
        fd: one("epfd", Fd), aux: [one("maxevents", Unsigned), one("timeout_ms", Signed)],
        payload: &[part("ready", Shape::EpollEvents, Len::Rest)],
        checks: Checks::FD,
    }
    226 EpollPwait "epoll_pwait" Poll {
        entries: &["epoll_pwait"],
        args: &[arg("epfd", FdIn), arg("events", BufOut), arg("maxevents", Count), arg("timeout", Time), arg("sigmask", Value)],
        fd: one("epfd", Fd), aux: [one("maxevents", Unsigned), one("timeout_ms", Signed)],
        payload: &[part("ready", Shape::EpollEvents, Len::Rest)],
        checks: Checks::FD,
    }
    // signals
    240 Signal "signal" Signal {
        replay: Replay::Follow, aux: [one("signal", Signal), UNUSED], payload: &[part("siginfo", Shape::Siginfo, Len::Rest)],
    }
    241 Kill "kill" Signal { entries: &["kill"], args: &[arg("pid", Value), arg("sig", Value)], aux: SEND_TO, checks: Checks::AUX1 }
    242 Raise "raise" Signal { entries: &["raise"], args: &[arg("sig", Value)], aux: SEND_TO, checks: Checks::AUX1 }
    243 PthreadKill "pthread_kill" Signal { entries: &["pthread_kill"], args: &[arg("thread", Value), arg("sig", Value)], aux: SEND_TO, checks: Checks::AUX1 }
    244 Sigprocmask "sigprocmask" Signal {
        entries: &["sigprocmask", "pthread_sigmask"], args: &[arg("how", Value), arg("set", BufIn), arg("oldset", BufOut)],
        replay: Replay::Reexecute, aux: [one("how", Enum(SIGMASK_HOW)), UNUSED],
    }
    // Waiting for a signal: the wait ends with the recorded signal, delivered under the mask the
    // wait put in place.
    245 Sigsuspend "sigsuspend" Signal {
        entries: &["sigsuspend", "pause"], args: &[arg("mask", BufIn)], replay: Replay::HandBack,
    }
    246 Sigwait "sigwait" Signal {
        entries: &["sigwait", "sigwaitinfo", "sigtimedwait"], args: &[arg("set", BufIn), arg("info", BufOut)],
        aux: [one("signal", Signal), UNUSED], payload: &[part("siginfo", Shape::Siginfo, Len::Rest)],
    }
    // refusals and markers
    250 IoUringSetup "io_uring_setup" Misc { replay: Replay::Reexecute, aux: [one("syscall", Unsigned), UNUSED], checks: Checks::AUX0 }
    251 Unsupported "unsupported" Misc { replay: Replay::Marker }
    // A number taken by a writer that died before writing its event.
    252 Lost "lost" Misc { replay: Replay::Marker }
    // file metadata: a backup stats for real and checks the outcome (and a regular file's size),
    // then hands back the primary's struct (times, inode and device numbers differ by host).
    260 Stat "stat" File {
        entries: &["stat", "stat64", "__xstat", "__xstat64"], syscalls: &["stat"], args: &STAT_PATH,
        replay: Replay::Verify, payload: &[STAT, PATH], digest: "path",
    }
    261 Lstat "lstat" File {
        entries: &["lstat", "lstat64", "__lxstat", "__lxstat64"], syscalls: &["lstat"], args: &STAT_PATH,
        replay: Replay::Verify, payload: &[STAT, PATH], digest: "path",
    }
    262 Fstat "fstat" File {
        entries: &["fstat", "fstat64", "__fxstat", "__fxstat64"], syscalls: &["fstat"],
        args: &[arg("fd", FdIn), arg("buf", BufOut)],
        replay: Replay::Verify, order: Order::UnderFdLock, fd: FD, payload: &[STAT],
        checks: Checks::FD,
    }
    263 Fstatat "fstatat" File {
        entries: &["fstatat", "fstatat64", "__fxstatat", "__fxstatat64"], syscalls: &["newfstatat"],
        args: &[arg("dirfd", FdIn), arg("path", Path), arg("buf", BufOut), arg("flags", Options)],
        replay: Replay::Verify, fd: one("dirfd", Fd), aux: [one("flags", Flags(AT)), UNUSED],
        payload: &[STAT, PATH], digest: "path", checks: Checks::FD_AUX0,
    }
    264 Statx "statx" File {
        entries: &["statx"], syscalls: &["statx"],
        args: &[arg("dirfd", FdIn), arg("path", Path), arg("flags", Options), arg("mask", Options), arg("buf", BufOut)],
        replay: Replay::Verify, fd: one("dirfd", Fd), aux: [one("flags", Flags(AT)), one("mask", Flags(STATX_MASK))],
        payload: &[part("statx", Shape::Statx, Len::IfOk(256)), PATH], digest: "path", checks: Checks::FD_AUX,
    }
    // directory listings: a backup hands back the primary's entries, in the primary's order, and
    // checks that each named entry is in its own directory, of the same type. readdir's result is
    // 1 for an entry, 0 at the end of the directory, -1 on failure.
    265 Readdir "readdir" File {
        entries: &["readdir", "readdir64", "readdir_r", "readdir64_r"],
        args: &[arg("dirp", Value), arg("entry", BufOut), arg("result", BufOut)],
        replay: Replay::Verify, fd: one("dirfd", Fd), payload: &[part("entry", Shape::Dirent, Len::Rest)],
    }
    266 Getdents64 "getdents64" File {
        entries: &["getdents64"], syscalls: &["getdents64"],
        args: &[arg("fd", FdIn), arg("buf", BufOut), arg("count", Count)],
        replay: Replay::Verify, fd: FD, aux: [COUNT, UNUSED],
        payload: &[part("entries", Shape::Dirents64, Len::Result)], checks: Checks::AUX0,
    }
    267 Getdents "getdents" File {
        syscalls: &["getdents"], args: &[arg("fd", FdIn), arg("buf", BufOut), arg("count", Count)],
        replay: Replay::Verify, fd: FD, aux: [COUNT, UNUSED],
        payload: &[part("entries", Shape::Dirents, Len::Result)], checks: Checks::AUX0,
    }
}

/// Exported symbols of the shim that are not calls of their own: they set up what the calls
/// need (handler wrapping, the generic `syscall(2)` router, `main`'s wrapper, `dlsym` lookups)
/// or keep a program away from what no call can order (`mallctl`: jemalloc's background thread).
pub const SUPPORT_ENTRIES: &[&str] = &["__libc_start_main", "dlsym", "mallctl", "sigaction", "signal", "syscall"];

impl core::fmt::Display for Call {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for &c in Call::ALL {
            assert_eq!(Call::from_id(c as u16), Some(c));
            assert!(names.insert(c.name()), "duplicate name {}", c.name());
        }
        assert_eq!(Call::from_id(0), None);
    }
}

/// A set of call ids, one bit each (ids are taken modulo 512: a set may hold an id it was not
/// given, never lack one it was).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CallSet([u64; 8]);

impl CallSet {
    pub const EMPTY: CallSet = CallSet([0; 8]);

    /// The set with `id` added.
    pub const fn with(mut self, id: u16) -> CallSet {
        let bit = id as usize % 512;
        self.0[bit / 64] |= 1 << (bit % 64);
        self
    }

    pub fn add(&mut self, id: u16) {
        *self = self.with(id);
    }

    /// Whether the two sets share an id.
    pub fn meets(&self, other: &CallSet) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }
}
