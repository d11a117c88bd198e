//! The real libc functions behind every hook, resolved once with `dlsym(RTLD_NEXT)` and cached.
//!
//! The constructor resolves the whole table. A hook that runs before it (called from another
//! library's constructor) finds an empty slot and triggers the same one-time resolution of the
//! whole table; after that no hook ever resolves anything.

use core::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{
    clockid_t, epoll_event, fd_set, id_t, idtype_t, mode_t, msghdr, nfds_t, off_t, pid_t, pollfd,
    posix_spawn_file_actions_t, posix_spawnattr_t, pthread_attr_t, pthread_cond_t, pthread_mutex_t, pthread_rwlock_t,
    pthread_t, rusage, sem_t, siginfo_t, sigset_t, size_t, sockaddr, socklen_t, ssize_t, time_t, timespec, timeval,
    useconds_t, utsname, FILE,
};

pub type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;

#[cold]
fn resolve(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    // `name` is NUL-terminated (built with concat!). libc's own dlsym, not the shim's: this
    // library exports `dlsym` and would otherwise find itself.
    let p = crate::dl::real_dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) as usize;
    slot.store(p, Ordering::Relaxed);
    p
}

#[inline(always)]
fn get(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    let p = slot.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    missing(slot, name)
}

#[cold]
#[inline(never)]
fn missing(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    resolve_all();
    let p = slot.load(Ordering::Relaxed);
    if p == 0 {
        let n = core::str::from_utf8(&name[..name.len() - 1]).unwrap_or("?");
        crate::msg::fatal!("the C library has no {n}; this program cannot run under tandem");
    }
    p
}

macro_rules! real_fns {
    (
        $( fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ; )*
        variadic:
        $( fn $vname:ident ( $($varg:ident : $vty:ty),* ; $($xarg:ident : $xty:ty),* ) -> $vret:ty ; )*
    ) => {
        #[allow(non_upper_case_globals)]
        mod slot {
            use core::sync::atomic::AtomicUsize;
            $( pub static $name: AtomicUsize = AtomicUsize::new(0); )*
            $( pub static $vname: AtomicUsize = AtomicUsize::new(0); )*
        }

        /// Resolves every real function. Idempotent.
        pub fn resolve_all() {
            $( resolve(&slot::$name, concat!(stringify!($name), "\0").as_bytes()); )*
            $( resolve(&slot::$vname, concat!(stringify!($vname), "\0").as_bytes()); )*
        }

        $(
            /// Calls the real function.
            ///
            /// # Safety
            /// The libc contract of the function.
            #[inline(always)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let p = get(&slot::$name, concat!(stringify!($name), "\0").as_bytes());
                // SAFETY: `p` is the address dlsym returned for this symbol, whose C signature
                // this declaration mirrors.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: the caller upholds the function's contract.
                unsafe { f($($arg),*) }
            }
        )*

        $(
            /// Calls the real variadic function with its optional arguments.
            ///
            /// # Safety
            /// The libc contract of the function.
            #[inline(always)]
            pub unsafe fn $vname($($varg: $vty),* , $($xarg: $xty),*) -> $vret {
                let p = get(&slot::$vname, concat!(stringify!($vname), "\0").as_bytes());
                // SAFETY: `p` is the address dlsym returned for this variadic symbol.
                let f: unsafe extern "C" fn($($vty),* , ...) -> $vret = unsafe { core::mem::transmute(p) };
                // SAFETY: the caller upholds the function's contract.
                unsafe { f($($varg),* , $($xarg),*) }
            }
        )*
    };
}

real_fns! {
    // bytes through descriptors
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t;
    fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t;
    fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t;
    fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t;
    fn fsync(fd: c_int) -> c_int;
    fn fdatasync(fd: c_int) -> c_int;
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    fn splice(fd_in: c_int, off_in: *mut off_t, fd_out: c_int, off_out: *mut off_t, len: size_t, flags: c_uint) -> ssize_t;
    fn copy_file_range(fd_in: c_int, off_in: *mut off_t, fd_out: c_int, off_out: *mut off_t, len: size_t, flags: c_uint) -> ssize_t;
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    fn __pread_chk(fd: c_int, buf: *mut c_void, n: size_t, off: off_t, buflen: size_t) -> ssize_t;
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    // descriptors
    fn __open_2(path: *const c_char, flags: c_int) -> c_int;
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn creat(path: *const c_char, mode: mode_t) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(fd: c_int, to: c_int) -> c_int;
    fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int;
    fn pipe(fds: *mut c_int) -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fn socketpair(domain: c_int, ty: c_int, proto: c_int, sv: *mut c_int) -> c_int;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn epoll_create(size: c_int) -> c_int;
    fn epoll_create1(flags: c_int) -> c_int;
    fn eventfd(initval: c_uint, flags: c_int) -> c_int;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE;
    fn mkostemps(template: *mut c_char, suffix_len: c_int, flags: c_int) -> c_int;
    fn mkdtemp(template: *mut c_char) -> *mut c_char;
    fn system(command: *const c_char) -> c_int;
    fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE;
    fn pclose(f: *mut FILE) -> c_int;
    fn mktemp(template: *mut c_char) -> *mut c_char;
    fn tmpfile() -> *mut FILE;
    fn tmpnam(s: *mut c_char) -> *mut c_char;
    fn tmpnam_r(s: *mut c_char) -> *mut c_char;
    fn tempnam(dir: *const c_char, pfx: *const c_char) -> *mut c_char;
    fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE;
    fn fclose(f: *mut FILE) -> c_int;
    // file metadata
    fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int;
    fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int;
    fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int;
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int;
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut libc::statx) -> c_int;
    fn __xstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int;
    fn __lxstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int;
    fn __fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int;
    fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int;
    // directory listings
    fn readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64;
    fn readdir64_r(dir: *mut libc::DIR, entry: *mut libc::dirent64, result: *mut *mut libc::dirent64) -> c_int;
    fn getdents64(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t;
    fn dirfd(dir: *mut libc::DIR) -> c_int;
    // sockets
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn shutdown(fd: c_int, how: c_int) -> c_int;
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    // readiness
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int;
    fn ppoll(fds: *mut pollfd, n: nfds_t, ts: *const timespec, mask: *const sigset_t) -> c_int;
    fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, ts: *const timespec, mask: *const sigset_t, fdslen: size_t) -> c_int;
    fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, tv: *mut timeval) -> c_int;
    fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, ts: *const timespec, mask: *const sigset_t) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int;
    fn epoll_wait(epfd: c_int, evs: *mut epoll_event, max: c_int, timeout: c_int) -> c_int;
    fn epoll_pwait(epfd: c_int, evs: *mut epoll_event, max: c_int, timeout: c_int, mask: *const sigset_t) -> c_int;
    // time
    fn clock_gettime(clk: clockid_t, tp: *mut timespec) -> c_int;
    fn gettimeofday(tv: *mut timeval, tz: *mut c_void) -> c_int;
    fn time(t: *mut time_t) -> time_t;
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int;
    fn clock_nanosleep(clk: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int;
    fn usleep(us: useconds_t) -> c_int;
    fn sleep(s: c_uint) -> c_uint;
    // randomness
    fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t;
    fn getentropy(buf: *mut c_void, n: size_t) -> c_int;
    fn arc4random() -> u32;
    fn arc4random_buf(buf: *mut c_void, n: size_t) -> ();
    fn arc4random_uniform(bound: u32) -> u32;
    // identity
    fn getpid() -> pid_t;
    fn getppid() -> pid_t;
    fn gettid() -> pid_t;
    fn gethostname(name: *mut c_char, len: size_t) -> c_int;
    fn __gethostname_chk(name: *mut c_char, len: size_t, buflen: size_t) -> c_int;
    fn uname(buf: *mut utsname) -> c_int;
    // processes
    fn fork() -> pid_t;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, fa: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, fa: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    fn exit(status: c_int) -> ();
    fn __libc_start_main(main: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) -> c_int, argc: c_int, argv: *mut *mut c_char, init: usize, fini: usize, rtld_fini: usize, stack_end: usize) -> c_int;
    fn _exit(status: c_int) -> ();
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    fn wait4(pid: pid_t, status: *mut c_int, options: c_int, ru: *mut rusage) -> pid_t;
    fn wait3(status: *mut c_int, options: c_int, ru: *mut rusage) -> pid_t;
    fn wait(status: *mut c_int) -> pid_t;
    fn waitid(idtype: idtype_t, id: id_t, info: *mut siginfo_t, options: c_int) -> c_int;
    // threads
    fn pthread_create(t: *mut pthread_t, attr: *const pthread_attr_t, start: StartRoutine, arg: *mut c_void) -> c_int;
    fn pthread_join(t: pthread_t, ret: *mut *mut c_void) -> c_int;
    fn pthread_exit(ret: *mut c_void) -> ();
    // synchronisation
    fn pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int;
    fn pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int;
    fn pthread_mutex_timedlock(m: *mut pthread_mutex_t, ts: *const timespec) -> c_int;
    fn pthread_mutex_clocklock(m: *mut pthread_mutex_t, clk: clockid_t, ts: *const timespec) -> c_int;
    fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int;
    fn pthread_rwlock_rdlock(l: *mut pthread_rwlock_t) -> c_int;
    fn pthread_rwlock_tryrdlock(l: *mut pthread_rwlock_t) -> c_int;
    fn pthread_rwlock_timedrdlock(l: *mut pthread_rwlock_t, ts: *const timespec) -> c_int;
    fn pthread_rwlock_clockrdlock(l: *mut pthread_rwlock_t, clk: clockid_t, ts: *const timespec) -> c_int;
    fn pthread_rwlock_wrlock(l: *mut pthread_rwlock_t) -> c_int;
    fn pthread_rwlock_trywrlock(l: *mut pthread_rwlock_t) -> c_int;
    fn pthread_rwlock_timedwrlock(l: *mut pthread_rwlock_t, ts: *const timespec) -> c_int;
    fn pthread_rwlock_clockwrlock(l: *mut pthread_rwlock_t, clk: clockid_t, ts: *const timespec) -> c_int;
    fn pthread_rwlock_unlock(l: *mut pthread_rwlock_t) -> c_int;
    fn pthread_cond_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) -> c_int;
    fn pthread_cond_timedwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, ts: *const timespec) -> c_int;
    fn pthread_cond_clockwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, clk: clockid_t, ts: *const timespec) -> c_int;
    fn pthread_cond_signal(c: *mut pthread_cond_t) -> c_int;
    fn pthread_cond_broadcast(c: *mut pthread_cond_t) -> c_int;
    fn sem_wait(s: *mut sem_t) -> c_int;
    fn sem_trywait(s: *mut sem_t) -> c_int;
    fn sem_timedwait(s: *mut sem_t, ts: *const timespec) -> c_int;
    fn sem_clockwait(s: *mut sem_t, clk: clockid_t, ts: *const timespec) -> c_int;
    fn sem_post(s: *mut sem_t) -> c_int;
    // signals
    fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
    fn raise(sig: c_int) -> c_int;
    fn kill(pid: pid_t, sig: c_int) -> c_int;
    fn pthread_kill(t: pthread_t, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int;
    fn pthread_sigmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int;
    fn sigsuspend(mask: *const sigset_t) -> c_int;
    fn pause() -> c_int;
    fn sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int;
    variadic:
    fn open(path: *const c_char, flags: c_int; mode: c_uint) -> c_int;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int; mode: c_uint) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int; arg: c_ulong) -> c_int;
    fn syscall(nr: c_long; a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long;
}
