//! Every call the shim records, with a stable numeric id (part of the log format: never reuse or
//! renumber an id; add new ones at the end of their family's range).

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
}

macro_rules! calls {
    ($($id:literal $variant:ident $name:literal $family:ident,)*) => {
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
        }
    };
}

calls! {
    // processes
    1 Fork "fork" Process,
    2 Execve "execve" Process,
    3 ExecFailed "execve_failed" Process,
    4 Exit "exit" Process,
    5 ExitNow "_exit" Process,
    6 Waitpid "waitpid" Process,
    7 Wait4 "wait4" Process,
    8 PosixSpawn "posix_spawn" Process,
    9 ProcessStart "process_start" Process,
    10 Waitid "waitid" Process,
    // threads
    20 PthreadCreate "pthread_create" Thread,
    21 PthreadJoin "pthread_join" Thread,
    22 PthreadExit "pthread_exit" Thread,
    23 PthreadCreateFailed "pthread_create_failed" Thread,
    // synchronisation
    40 MutexLock "pthread_mutex_lock" Sync,
    41 MutexTrylock "pthread_mutex_trylock" Sync,
    42 MutexTimedlock "pthread_mutex_timedlock" Sync,
    43 MutexUnlock "pthread_mutex_unlock" Sync,
    44 RwlockRdlock "pthread_rwlock_rdlock" Sync,
    45 RwlockTryrdlock "pthread_rwlock_tryrdlock" Sync,
    46 RwlockTimedrdlock "pthread_rwlock_timedrdlock" Sync,
    47 RwlockWrlock "pthread_rwlock_wrlock" Sync,
    48 RwlockTrywrlock "pthread_rwlock_trywrlock" Sync,
    49 RwlockTimedwrlock "pthread_rwlock_timedwrlock" Sync,
    50 RwlockUnlock "pthread_rwlock_unlock" Sync,
    51 CondWait "pthread_cond_wait" Sync,
    52 CondTimedwait "pthread_cond_timedwait" Sync,
    53 CondSignal "pthread_cond_signal" Sync,
    54 CondBroadcast "pthread_cond_broadcast" Sync,
    55 SemWait "sem_wait" Sync,
    56 SemTrywait "sem_trywait" Sync,
    57 SemTimedwait "sem_timedwait" Sync,
    58 SemPost "sem_post" Sync,
    59 CondWaitRelease "cond_wait_release" Sync, // the mutex a condition wait releases, as it starts
    // time
    70 ClockGettime "clock_gettime" Time,
    71 Gettimeofday "gettimeofday" Time,
    72 Time "time" Time,
    73 Nanosleep "nanosleep" Time,
    74 ClockNanosleep "clock_nanosleep" Time,
    75 Usleep "usleep" Time,
    76 Sleep "sleep" Time,
    // randomness
    90 Getrandom "getrandom" Random,
    91 Getentropy "getentropy" Random,
    92 Arc4random "arc4random" Random,
    93 Arc4randomBuf "arc4random_buf" Random,
    94 Arc4randomUniform "arc4random_uniform" Random,
    // identity
    110 Getpid "getpid" Identity,
    111 Getppid "getppid" Identity,
    112 Gettid "gettid" Identity,
    113 Gethostname "gethostname" Identity,
    114 Uname "uname" Identity,
    // descriptors
    130 Open "open" Fd,
    131 Openat "openat" Fd,
    132 Creat "creat" Fd,
    133 Close "close" Fd,
    134 Dup "dup" Fd,
    135 Dup2 "dup2" Fd,
    136 Dup3 "dup3" Fd,
    137 Pipe "pipe" Fd,
    138 Pipe2 "pipe2" Fd,
    139 Socket "socket" Fd,
    140 Socketpair "socketpair" Fd,
    141 Accept "accept" Fd,
    142 Accept4 "accept4" Fd,
    143 EpollCreate "epoll_create" Fd,
    144 EpollCreate1 "epoll_create1" Fd,
    145 Eventfd "eventfd" Fd,
    146 Fcntl "fcntl" Fd,
    147 Fopen "fopen" Fd,
    148 Fclose "fclose" Fd,
    149 CloseRange "close_range" Fd,
    // bytes through descriptors
    170 Read "read" Io,
    171 Readv "readv" Io,
    172 Pread "pread" Io,
    173 Recv "recv" Io,
    174 Recvfrom "recvfrom" Io,
    175 Recvmsg "recvmsg" Io,
    176 Write "write" Io,
    177 Writev "writev" Io,
    178 Pwrite "pwrite" Io,
    179 Send "send" Io,
    180 Sendto "sendto" Io,
    181 Sendmsg "sendmsg" Io,
    182 Lseek "lseek" Io,
    183 Fsync "fsync" Io,
    184 Fdatasync "fdatasync" Io,
    // sockets
    200 Bind "bind" Net,
    201 Listen "listen" Net,
    202 Connect "connect" Net,
    203 Shutdown "shutdown" Net,
    204 Getsockname "getsockname" Net,
    205 Getpeername "getpeername" Net,
    // readiness
    220 Poll "poll" Poll,
    221 Ppoll "ppoll" Poll,
    222 Select "select" Poll,
    223 Pselect "pselect" Poll,
    224 EpollCtl "epoll_ctl" Poll,
    225 EpollWait "epoll_wait" Poll,
    226 EpollPwait "epoll_pwait" Poll,
    // signals
    240 Signal "signal" Signal,
    241 Kill "kill" Signal,
    242 Raise "raise" Signal,
    243 PthreadKill "pthread_kill" Signal,
    244 Sigprocmask "sigprocmask" Signal,
    // refusals and markers
    250 IoUringSetup "io_uring_setup" Misc,
    251 Unsupported "unsupported" Misc,
    252 Lost "lost" Misc, // a number taken by a writer that died before writing its event
}

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
