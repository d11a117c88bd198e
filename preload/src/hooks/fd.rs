//! Calls that create, duplicate and close descriptors. Creations record after the call (the new
//! number is held); closes take their sequence number before the descriptor is released, so a
//! later creation that reuses the number always comes after it in sequence order.

use super::{bytes, cstr, PATH_MAX_RECORDED};
use crate::fdtable;
use crate::real;
use crate::state::{self, Ev, Hook};
use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use core::sync::atomic::Ordering;
use eventlog::digest::digest_parts;
use eventlog::{Call, FdKind};
use libc::{mode_t, sockaddr, socklen_t, FILE};

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
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    // SAFETY: per the caller.
    let p = unsafe { cstr(path, PATH_MAX_RECORDED) };
    fdtable::classify_opened(r, Some(p));
    let kind = if r >= 0 {
        fdtable::kind(r)
    } else {
        FdKind::Unknown
    };
    let d = digest_parts([p, &flags.to_le_bytes()[..]]);
    let ev = Ev::new(call).fd(r, kind).result(r as i64).digest(d);
    hook.emit(
        ev.aux(
            (flags as u32 as u64) | ((mode as u64) << 32),
            dirfd as i64 as u64,
        ),
        &[p],
    );
    r
}

// open/openat/fcntl are variadic in C. On the x86_64 and aarch64 Linux ABIs a variadic integer
// argument travels exactly like a named one, so the optional argument is declared as a named
// parameter (and is garbage, unused, when the caller passed none).

#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        open_with(Call::Open, libc::AT_FDCWD, path, flags, mode, || {
            real::open(path, flags, mode)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: as above.
    unsafe { open(path, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above; the real __open_2 keeps its O_CREAT check.
    unsafe {
        open_with(Call::Open, libc::AT_FDCWD, path, flags, 0, || {
            real::__open_2(path, flags)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { __open_2(path, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        open_with(Call::Openat, dirfd, path, flags, mode, || {
            real::openat(dirfd, path, flags, mode)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: as above.
    unsafe { openat(dirfd, path, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe {
        open_with(Call::Openat, dirfd, path, flags, 0, || {
            real::__openat_2(dirfd, path, flags)
        })
    }
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
    unsafe {
        open_with(Call::Creat, libc::AT_FDCWD, path, flags, mode, || {
            real::creat(path, mode)
        })
    }
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

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::close(fd) };
    };
    let kind = fdtable::kind(fd);
    hook.release(|| {
        let r = if is_shim_fd(fd) {
            0
        } else {
            fdtable::clear(fd);
            // SAFETY: as above.
            unsafe { real::close(fd) }
        };
        (r, Ev::new(Call::Close).fd(fd, kind).result(r as i64))
    })
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::close_range(first, last, flags) };
    };
    let seq = hook.reserve();
    let shim = state::SHM_FD.load(Ordering::Relaxed);
    let closing = flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0;
    // SAFETY: as above; the shim's descriptor is carved out of the range.
    let r = unsafe {
        if closing && shim >= 0 && (first..=last).contains(&(shim as c_uint)) {
            let a = if shim as c_uint > first {
                real::close_range(first, shim as c_uint - 1, flags)
            } else {
                0
            };
            let b = if (shim as c_uint) < last {
                real::close_range(shim as c_uint + 1, last, flags)
            } else {
                0
            };
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
            }
        }
    }
    hook.emit_at(
        seq,
        Ev::new(Call::CloseRange)
            .result(r as i64)
            .aux(first as u64, last as u64),
        &[],
    );
    r
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

/// Records a duplication: the new descriptor inherits the old one's kind.
fn dup_with(call: Call, fd: c_int, aux1: u64, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let kind = fdtable::kind(fd);
    let r = real();
    if r >= 0 && r != fd {
        fdtable::set(r, kind);
    }
    hook.emit(
        Ev::new(call).fd(fd, kind).result(r as i64).aux(aux1, 0),
        &[],
    );
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
    dup_with(Call::Dup3, fd, to as u64, || unsafe {
        real::dup3(fd, to, flags)
    })
}

/// Records a call creating a pair of descriptors of `kind`.
///
/// # Safety
/// `fds` points to two ints (the real call fills them on success).
unsafe fn pair_with(
    call: Call,
    fds: *mut c_int,
    kind: FdKind,
    aux_extra: u64,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    let (a, b) = if r == 0 {
        // SAFETY: per the caller, filled on success.
        unsafe { (*fds, *fds.add(1)) }
    } else {
        (-1, -1)
    };
    if r == 0 {
        fdtable::set(a, kind);
        fdtable::set(b, kind);
    }
    let ev = Ev::new(call)
        .fd(a, kind)
        .result(r as i64)
        .aux(b as i64 as u64, aux_extra);
    hook.emit(ev, &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { pair_with(Call::Pipe, fds, FdKind::Pipe, 0, || real::pipe(fds)) }
}

#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe {
        pair_with(Call::Pipe2, fds, FdKind::Pipe, flags as u64, || {
            real::pipe2(fds, flags)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    proto: c_int,
    sv: *mut c_int,
) -> c_int {
    let aux = (domain as u32 as u64) | ((ty as u32 as u64) << 32);
    // SAFETY: as above.
    unsafe {
        pair_with(Call::Socketpair, sv, FdKind::SocketPair, aux, || {
            real::socketpair(domain, ty, proto, sv)
        })
    }
}

/// Records a call creating one descriptor of a known kind.
fn create_with(call: Call, kind: FdKind, aux: [u64; 2], real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    fdtable::set(r, kind);
    hook.emit(
        Ev::new(call)
            .fd(r, kind)
            .result(r as i64)
            .aux(aux[0], aux[1]),
        &[],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    let aux = [
        domain as u64,
        (ty as u32 as u64) | ((proto as u32 as u64) << 32),
    ];
    // SAFETY: forwarding the program's own arguments.
    create_with(Call::Socket, FdKind::Socket, aux, || unsafe {
        real::socket(domain, ty, proto)
    })
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: as above.
    create_with(
        Call::EpollCreate,
        FdKind::Epoll,
        [size as u64, 0],
        || unsafe { real::epoll_create(size) },
    )
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: as above.
    create_with(
        Call::EpollCreate1,
        FdKind::Epoll,
        [flags as u64, 0],
        || unsafe { real::epoll_create1(flags) },
    )
}

#[no_mangle]
pub unsafe extern "C" fn eventfd(initval: c_uint, flags: c_int) -> c_int {
    // SAFETY: as above.
    create_with(
        Call::Eventfd,
        FdKind::Eventfd,
        [initval as u64, flags as u64],
        || unsafe { real::eventfd(initval, flags) },
    )
}

/// accept/accept4: the new descriptor is the result, the peer address the payload.
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
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    fdtable::set(r, FdKind::Socket);
    let alen = if r >= 0 && !addr.is_null() && !len.is_null() {
        // SAFETY: on success the kernel wrote `*len` bytes of address.
        unsafe { (*len as usize).min(128) }
    } else {
        0
    };
    let ev = Ev::new(call)
        .fd(fd, FdKind::Listener)
        .result(r as i64)
        .aux(flags as u64, alen as u64);
    // SAFETY: as above.
    hook.emit(ev, &[unsafe { bytes(addr, alen as isize) }]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        accept_with(Call::Accept, fd, addr, len, 0, || {
            real::accept(fd, addr, len)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        accept_with(Call::Accept4, fd, addr, len, flags, || {
            real::accept4(fd, addr, len, flags)
        })
    }
}

/// fcntl: result and arguments; F_DUPFD copies hand their kind on.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::fcntl(fd, cmd, arg) };
    };
    let kind = fdtable::kind(fd);
    // SAFETY: as above.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        fdtable::set(r, kind);
    }
    hook.emit(
        Ev::new(Call::Fcntl)
            .fd(fd, kind)
            .result(r as i64)
            .aux(cmd as u64, arg),
        &[],
    );
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
    let funcs = CookieIo {
        read: Some(cookie_read),
        write: None,
        seek: None,
        close: Some(cookie_close),
    };
    // SAFETY: fopencookie copies `funcs`; the cookie is just the descriptor number.
    let f = unsafe { fopencookie(fd as usize as *mut c_void, mode, funcs) };
    if f.is_null() {
        // SAFETY: our own descriptor.
        unsafe { close(fd) };
    }
    f
}

#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        if !state::active() {
            return real::fopen(path, mode);
        }
        let p = cstr(path, PATH_MAX_RECORDED);
        if is_random_device(p) && *mode == b'r' as c_char {
            return fopen_random(path, mode);
        }
        let Some(hook) = Hook::enter() else {
            return real::fopen(path, mode);
        };
        let f = real::fopen(path, mode);
        let fd = if f.is_null() { -1 } else { libc::fileno(f) };
        fdtable::classify_opened(fd, Some(p));
        let kind = if fd >= 0 {
            fdtable::kind(fd)
        } else {
            FdKind::Unknown
        };
        let ev = Ev::new(Call::Fopen)
            .fd(fd, kind)
            .result(if f.is_null() { -1 } else { fd as i64 });
        hook.emit(ev.digest(digest_parts([p, cstr(mode, 16)])), &[p]);
        f
    }
}

#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: as above.
    unsafe { fopen(path, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn fclose(f: *mut FILE) -> c_int {
    // SAFETY: forwarding the program's own stream.
    unsafe {
        let Some(hook) = Hook::enter() else {
            return real::fclose(f);
        };
        let fd = libc::fileno(f);
        if fd < 0 {
            // A cookie stream: its close function records the close. Let it run outside the hook.
            drop(hook);
            return real::fclose(f);
        }
        let kind = fdtable::kind(fd);
        let seq = hook.reserve();
        fdtable::clear(fd);
        let r = real::fclose(f);
        hook.emit_at(
            seq,
            Ev::new(Call::Fclose).fd(fd, kind).result(r as i64),
            &[],
        );
        r
    }
}

/// closefrom closes through an internal close_range; route it through ours so the shim's own
/// descriptor survives and the table stays true.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    // SAFETY: closing every descriptor from `lowfd` up, as the program asked.
    unsafe { close_range(lowfd.max(0) as c_uint, c_uint::MAX, 0) };
}
