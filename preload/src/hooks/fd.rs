//! Calls that create, duplicate and close descriptors. Creations record after the call (the new
//! number is held); closes take their sequence number before the descriptor is released, so a
//! later creation that reuses the number always comes after it in sequence order.
//!
//! A backup creates its descriptors for real, at the primary's numbers: local files are opened
//! for real and checked; things that exist only on the primary (accepted connections, devices
//! and /proc files whose input is replayed) get a stand-in at the same number.

use super::{bytes, cstr, PATH_MAX_RECORDED};
use crate::fdtable;
use crate::real;
use crate::replay::{self, Turn};
use crate::state::{self, Ev, Hook};
use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use core::sync::atomic::Ordering;
use eventlog::digest::digest_parts;
use eventlog::{Call, FdKind};
use libc::{mode_t, sockaddr, socklen_t, FILE};

/// Paths whose content (and existence) belongs to the host, not to the program's state: a backup
/// never opens them on the primary's word.
pub(super) fn host_specific(path: &[u8]) -> bool {
    path.starts_with(b"/proc/") || path.starts_with(b"/sys/") || path.starts_with(b"/dev/")
}

/// Replays an open-like call. Local files are opened for real (and must succeed or fail as on
/// the primary); host-specific files get a stand-in: the same file if it can be opened for
/// reading here, else /dev/null.
///
/// # Safety
/// `path` is null or a valid C string.
unsafe fn replay_open(
    t: Turn,
    dirfd: c_int,
    path: *const c_char,
    p: &[u8],
    flags: c_int,
    mode: c_uint,
    real: impl FnOnce() -> c_int,
) -> c_int {
    t.expect_digest(digest_parts([p, &flags.to_le_bytes()[..]]));
    if !host_specific(p) {
        let fd = replay::place_fd(&t, real());
        fdtable::classify_opened(fd, Some(p));
        return fd;
    }
    let kind = t.kind();
    let cloexec = flags & libc::O_CLOEXEC;
    replay::placeholder(&t, kind, || {
        // SAFETY: per the caller; never creates or truncates anything.
        let fd = unsafe {
            real::openat(dirfd, path, (flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL)) | cloexec, mode)
        };
        if fd >= 0 {
            fd
        } else {
            // SAFETY: a constant path.
            unsafe { real::open(c"/dev/null".as_ptr(), libc::O_RDWR | cloexec, 0) }
        }
    })
}

/// Records an open-like call: the path is the payload, its digest (with the flags) the digest.
///
/// # Safety
/// `path` is null or a valid C string.
unsafe fn open_with(
    call: Call,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    // SAFETY: per the caller.
    let p = unsafe { cstr(path, PATH_MAX_RECORDED) };
    if let Some(t) = hook.turn(call) {
        // SAFETY: per the caller.
        return unsafe { replay_open(t, dirfd, path, p, flags, mode, real) };
    }
    let r = real();
    fdtable::classify_opened(r, Some(p));
    let kind = if r >= 0 { fdtable::kind(r) } else { FdKind::Unknown };
    let d = digest_parts([p, &flags.to_le_bytes()[..]]);
    let ev = Ev::new(call).fd(r, kind).result(r as i64).digest(d);
    hook.emit(ev.aux((flags as u32 as u64) | ((mode as u64) << 32), dirfd as i64 as u64), &[p]);
    r
}

// open/openat/fcntl are variadic in C. On the x86_64 and aarch64 Linux ABIs a variadic integer
// argument travels exactly like a named one, so the optional argument is declared as a named
// parameter (and is garbage, unused, when the caller passed none).

#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { open_with(Call::Open, libc::AT_FDCWD, path, flags, mode, || real::open(path, flags, mode)) }
}

#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: as above.
    unsafe { open(path, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above; the real __open_2 keeps its O_CREAT check.
    unsafe { open_with(Call::Open, libc::AT_FDCWD, path, flags, 0, || real::__open_2(path, flags)) }
}

#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { __open_2(path, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: as above.
    unsafe { open_with(Call::Openat, dirfd, path, flags, mode, || real::openat(dirfd, path, flags, mode)) }
}

#[no_mangle]
pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: as above.
    unsafe { openat(dirfd, path, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { open_with(Call::Openat, dirfd, path, flags, 0, || real::__openat_2(dirfd, path, flags)) }
}

#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { __openat_2(dirfd, path, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn creat(path: *const c_char, mode: mode_t) -> c_int {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    // SAFETY: as above.
    unsafe { open_with(Call::Creat, libc::AT_FDCWD, path, flags, mode, || real::creat(path, mode)) }
}

#[no_mangle]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: as above.
    unsafe { creat(path, mode) }
}

/// The program must not close the shim's own descriptor: pretend it did.
fn is_shim_fd(fd: c_int) -> bool {
    state::active() && fd == state::SHM_FD.load(Ordering::Relaxed)
}

/// Closes for real (unless it is the shim's descriptor) and forgets what the table knew.
fn close_for_real(fd: c_int) -> c_int {
    if is_shim_fd(fd) {
        return 0;
    }
    fdtable::clear(fd);
    replay::forget_binding(fd);
    // SAFETY: closing the program's own descriptor, as it asked.
    unsafe { real::close(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::close(fd) };
    };
    if let Some(t) = hook.turn(Call::Close) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        let r = close_for_real(fd);
        t.expect_outcome(r as i64);
        return r;
    }
    let kind = fdtable::kind(fd);
    hook.release(|| {
        let r = close_for_real(fd);
        (r, Ev::new(Call::Close).fd(fd, kind).result(r as i64))
    })
}

/// close_range with the shim's descriptor carved out of the range.
fn close_range_for_real(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let shim = state::SHM_FD.load(Ordering::Relaxed);
    let closing = flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0;
    // SAFETY: closing the program's own descriptors, as it asked.
    let r = unsafe {
        if closing && shim >= 0 && (first..=last).contains(&(shim as c_uint)) {
            let a = if shim as c_uint > first { real::close_range(first, shim as c_uint - 1, flags) } else { 0 };
            let b = if (shim as c_uint) < last { real::close_range(shim as c_uint + 1, last, flags) } else { 0 };
            if a != 0 {
                a
            } else {
                b
            }
        } else {
            real::close_range(first, last, flags)
        }
    };
    if closing && r == 0 {
        let end = (last as usize).min(fdtable::MAX_FDS - 1);
        for fd in first as usize..=end {
            if fd as c_int != shim {
                fdtable::clear(fd as c_int);
                replay::forget_binding(fd as c_int);
            }
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::close_range(first, last, flags) };
    };
    if let Some(t) = hook.turn(Call::CloseRange) {
        t.expect("the first descriptor", t.header().aux[0] as i64, first as i64);
        let r = close_range_for_real(first, last, flags);
        t.expect_outcome(r as i64);
        return r;
    }
    hook.release(|| {
        let r = close_range_for_real(first, last, flags);
        (r, Ev::new(Call::CloseRange).result(r as i64).aux(first as u64, last as u64))
    })
}

/// closefrom closes through an internal close_range; route it through ours so the shim's own
/// descriptor survives and the table stays true.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    // SAFETY: closing every descriptor from `lowfd` up, as the program asked.
    unsafe { close_range(lowfd.max(0) as c_uint, c_uint::MAX, 0) };
}

/// Moves the shim's descriptor out of the way of a dup2/dup3 onto its number.
fn evacuate_shim_fd(target: c_int) {
    if is_shim_fd(target) {
        // SAFETY: plain F_DUPFD on a descriptor we own.
        let moved = unsafe { real::fcntl(target, libc::F_DUPFD, 1000) };
        if moved >= 0 {
            state::SHM_FD.store(moved, Ordering::Relaxed);
            fdtable::set(moved, FdKind::Shim);
        }
    }
}

/// The new descriptor is a copy of `from`: same kind, same stand-in status.
fn copy_entry(from: c_int, to: c_int, kind: FdKind) {
    if to >= 0 && to != from {
        let dead = fdtable::is_dead(from);
        fdtable::set(to, kind);
        if dead {
            fdtable::set_dead(to);
        }
    }
}

/// Records (or replays) a duplication: the new descriptor inherits the old one's kind.
fn dup_with(call: Call, fd: c_int, aux1: u64, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    let kind = fdtable::kind(fd);
    if let Some(t) = hook.turn(call) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        let r = replay::place_fd(&t, real());
        copy_entry(fd, r, t.kind());
        return r;
    }
    let r = real();
    copy_entry(fd, r, kind);
    hook.emit(Ev::new(call).fd(fd, kind).result(r as i64).aux(aux1, 0), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarding the program's own argument.
    dup_with(Call::Dup, fd, 0, || unsafe { real::dup(fd) })
}

#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    evacuate_shim_fd(to);
    // SAFETY: as above.
    dup_with(Call::Dup2, fd, to as u64, || unsafe { real::dup2(fd, to) })
}

#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    evacuate_shim_fd(to);
    // SAFETY: as above.
    dup_with(Call::Dup3, fd, to as u64, || unsafe { real::dup3(fd, to, flags) })
}

/// Records (or replays) a call creating a pair of descriptors of `kind`. The pair is created for
/// real on a backup too (the program's own channel), at the primary's numbers.
///
/// # Safety
/// `fds` points to two ints (the real call fills them on success).
unsafe fn pair_with(call: Call, fds: *mut c_int, kind: FdKind, aux_extra: u64, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    let replaying = hook.turn(call);
    let r = real();
    let (a, b) = if r == 0 {
        // SAFETY: per the caller, filled on success.
        unsafe { (*fds, *fds.add(1)) }
    } else {
        (-1, -1)
    };
    if let Some(t) = replaying {
        t.expect_outcome(r as i64);
        if r == 0 {
            let (want_a, want_b) = (t.header().fd, t.header().aux[0] as i32);
            let (a, b) = replay::place_pair(&t, (a, b), (want_a, want_b));
            fdtable::set(a, kind);
            fdtable::set(b, kind);
            // SAFETY: as above.
            unsafe { (*fds, *fds.add(1)) = (a, b) };
        }
        return r;
    }
    if r == 0 {
        fdtable::set(a, kind);
        fdtable::set(b, kind);
    }
    hook.emit(Ev::new(call).fd(a, kind).result(r as i64).aux(b as i64 as u64, aux_extra), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { pair_with(Call::Pipe, fds, FdKind::InnerPipe, 0, || real::pipe(fds)) }
}

#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { pair_with(Call::Pipe2, fds, FdKind::InnerPipe, flags as u64, || real::pipe2(fds, flags)) }
}

#[no_mangle]
pub unsafe extern "C" fn socketpair(domain: c_int, ty: c_int, proto: c_int, sv: *mut c_int) -> c_int {
    let aux = (domain as u32 as u64) | ((ty as u32 as u64) << 32);
    // SAFETY: as above.
    unsafe { pair_with(Call::Socketpair, sv, FdKind::SocketPair, aux, || real::socketpair(domain, ty, proto, sv)) }
}

/// Records (or replays) a call creating one descriptor of a known kind. A backup creates it for
/// real (an unbound socket is the stand-in for the primary's until it goes live).
fn create_with(call: Call, kind: FdKind, aux: [u64; 2], real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(call) {
        let r = replay::place_fd(&t, real());
        fdtable::set(r, kind);
        return r;
    }
    let r = real();
    fdtable::set(r, kind);
    hook.emit(Ev::new(call).fd(r, kind).result(r as i64).aux(aux[0], aux[1]), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    let aux = [domain as u64, (ty as u32 as u64) | ((proto as u32 as u64) << 32)];
    // SAFETY: forwarding the program's own arguments.
    create_with(Call::Socket, FdKind::Socket, aux, || unsafe { real::socket(domain, ty, proto) })
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: as above.
    create_with(Call::EpollCreate, FdKind::Epoll, [size as u64, 0], || unsafe { real::epoll_create(size) })
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: as above.
    create_with(Call::EpollCreate1, FdKind::Epoll, [flags as u64, 0], || unsafe { real::epoll_create1(flags) })
}

#[no_mangle]
pub unsafe extern "C" fn eventfd(initval: c_uint, flags: c_int) -> c_int {
    // SAFETY: as above.
    create_with(Call::Eventfd, FdKind::Eventfd, [initval as u64, flags as u64], || unsafe {
        real::eventfd(initval, flags)
    })
}

/// accept/accept4: the new descriptor is the result, the peer address the payload. A backup
/// accepts nothing: it gets a stand-in socket at the primary's number, which reads as closed once
/// the backup goes live (the connection existed only on the primary).
///
/// # Safety
/// As for accept(2).
unsafe fn accept_with(
    call: Call,
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(call) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        let mut family = [0u8; 2];
        t.payload(0, &mut family);
        let domain = match u16::from_ne_bytes(family) as c_int {
            0 => libc::AF_INET,
            f => f,
        };
        let ty = libc::SOCK_STREAM | (flags & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC));
        let r = replay::placeholder(&t, FdKind::Socket, || replay::stand_in_socket(domain, ty));
        if r >= 0 {
            fdtable::set_dead(r);
            // SAFETY: per the caller.
            unsafe { hand_back_addr(&t, addr, len) };
        }
        return r;
    }
    let r = real();
    fdtable::set(r, FdKind::Socket);
    // SAFETY: on success the kernel wrote `*len` bytes of address.
    let alen = if r >= 0 && !addr.is_null() && !len.is_null() { unsafe { (*len as usize).min(128) } } else { 0 };
    let ev = Ev::new(call).fd(fd, FdKind::Listener).result(r as i64).aux(flags as u64, alen as u64);
    // SAFETY: as above.
    hook.emit(ev, &[unsafe { bytes(addr, alen as isize) }]);
    r
}

/// Copies the recorded address (the whole payload) into the program's `addr`/`len`.
///
/// # Safety
/// `addr` is null or valid for `*len` bytes; `len` is null or valid.
pub unsafe fn hand_back_addr(t: &Turn, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let full = t.payload_len();
    // SAFETY: per the caller.
    unsafe {
        let room = (*len as usize).min(full);
        t.payload(0, core::slice::from_raw_parts_mut(addr as *mut u8, room));
        *len = full as socklen_t;
    }
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { accept_with(Call::Accept, fd, addr, len, 0, || real::accept(fd, addr, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { accept_with(Call::Accept4, fd, addr, len, flags, || real::accept4(fd, addr, len, flags)) }
}

/// fcntl: result and arguments; F_DUPFD copies hand their kind on. A backup runs it for real
/// (descriptor flags and file locks are its own state) and checks the result on local state; on
/// a stand-in it hands back the primary's result.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::fcntl(fd, cmd, arg) };
    };
    let kind = fdtable::kind(fd);
    let dup = cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC;
    if let Some(t) = hook.turn(Call::Fcntl) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        t.expect("the command", t.header().aux[0] as i64, cmd as i64);
        // SAFETY: as above.
        let r = unsafe { real::fcntl(fd, cmd, arg) };
        if dup {
            let r = replay::place_fd(&t, r);
            copy_entry(fd, r, t.kind());
            return r;
        }
        if t.kind().is_local_state() {
            t.expect_outcome(r as i64);
            return r;
        }
        return t.ret() as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    if dup {
        copy_entry(fd, r, kind);
    }
    hook.emit(Ev::new(Call::Fcntl).fd(fd, kind).result(r as i64).aux(cmd as u64, arg), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: as above.
    unsafe { fcntl(fd, cmd, arg) }
}

// ---- stdio streams -----------------------------------------------------------------------------
//
// stdio does its I/O through libc-internal calls no interposer sees. A random device opened with
// fopen is input the program would read unseen, so it gets a stream whose reads go through the
// read hook; other streams are only tracked so the descriptor table stays true.

fn is_random_device(path: &[u8]) -> bool {
    path == b"/dev/urandom" || path == b"/dev/random"
}

/// glibc's `cookie_io_functions_t`.
#[repr(C)]
struct CookieIo {
    read: Option<extern "C" fn(*mut c_void, *mut c_char, usize) -> isize>,
    write: Option<extern "C" fn(*mut c_void, *const c_char, usize) -> isize>,
    seek: Option<extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<extern "C" fn(*mut c_void) -> c_int>,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, funcs: CookieIo) -> *mut FILE;
}

extern "C" fn cookie_read(cookie: *mut c_void, buf: *mut c_char, size: usize) -> isize {
    // SAFETY: stdio hands us its buffer of `size` bytes; the cookie is the descriptor.
    unsafe { crate::hooks::io::read(cookie as usize as c_int, buf as *mut c_void, size) }
}

extern "C" fn cookie_close(cookie: *mut c_void) -> c_int {
    // SAFETY: the cookie is the descriptor we opened.
    unsafe { close(cookie as usize as c_int) }
}

/// Opens a random device as a stream whose reads are recorded.
///
/// # Safety
/// `path` and `mode` are valid C strings.
unsafe fn fopen_random(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: per the caller; `open` is our own hook, so the open is recorded.
    let fd = unsafe { open(path, libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return core::ptr::null_mut();
    }
    let funcs = CookieIo { read: Some(cookie_read), write: None, seek: None, close: Some(cookie_close) };
    // SAFETY: fopencookie copies `funcs`; the cookie is just the descriptor number.
    let f = unsafe { fopencookie(fd as usize as *mut c_void, mode, funcs) };
    if f.is_null() {
        // SAFETY: our own descriptor.
        unsafe { close(fd) };
    }
    f
}

/// fopen allocates (the stream and its buffer) through the program's allocator, which may make
/// calls of its own: the real call runs outside the hook so those calls are events like any
/// other, and the fopen event follows them. A backup first waits until its next event is due, so
/// they take their turns in order.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        if !state::active() {
            return real::fopen(path, mode);
        }
        let p = cstr(path, PATH_MAX_RECORDED);
        if is_random_device(p) && *mode == b'r' as c_char && state::mode() != state::MODE_LIVE {
            return fopen_random(path, mode);
        }
        replay::wait_for_own_turn();
        let f = real::fopen(path, mode);
        let Some(hook) = Hook::enter() else { return f };
        let d = digest_parts([p, cstr(mode, 16)]);
        let fd = if f.is_null() { -1 } else { libc::fileno(f) };
        fdtable::classify_opened(fd, Some(p));
        let result = if f.is_null() { -1 } else { fd as i64 };
        if let Some(t) = hook.turn(Call::Fopen) {
            t.expect_digest(d);
            t.expect_outcome(result);
            return f;
        }
        let kind = if fd >= 0 { fdtable::kind(fd) } else { FdKind::Unknown };
        hook.emit(Ev::new(Call::Fopen).fd(fd, kind).result(result).digest(d), &[p]);
        f
    }
}

#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: as above.
    unsafe { fopen(path, mode) }
}

/// fclose: the event marks the release of the descriptor and comes first; the real close (which
/// frees through the program's allocator) runs after it, outside the hook. Its result is not
/// recorded: a flush failure is the backup's own.
#[no_mangle]
pub unsafe extern "C" fn fclose(f: *mut FILE) -> c_int {
    // SAFETY: forwarding the program's own stream; fileno only reads it.
    unsafe {
        let fd = libc::fileno(f);
        if fd >= 0 {
            if let Some(hook) = Hook::enter() {
                let kind = fdtable::kind(fd);
                match hook.turn(Call::Fclose) {
                    Some(t) => t.expect("the descriptor", t.header().fd as i64, fd as i64),
                    None => hook.emit(Ev::new(Call::Fclose).fd(fd, kind), &[]),
                }
                fdtable::clear(fd);
            }
        }
        // A cookie stream (fd < 0) records its close through its close function.
        real::fclose(f)
    }
}
