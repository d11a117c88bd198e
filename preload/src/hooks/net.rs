//! Socket set-up and addressing. Addresses given by the program (bind, connect) are the
//! payload, so a backup can later bind the same listening address for real; addresses returned
//! by the kernel (getsockname, getpeername) are input and recorded the same way.

use super::bytes;
use crate::fdtable;
use crate::real;
use crate::state::{Ev, Hook};
use core::ffi::c_int;
use eventlog::{Call, FdKind};
use libc::{sockaddr, socklen_t};

/// A call passing an address in: result plus the address bytes.
///
/// # Safety
/// `addr` is valid for `len` bytes (or null).
unsafe fn addr_in(
    call: Call,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let kind = fdtable::kind(fd);
    let r = real();
    let n = if addr.is_null() {
        0
    } else {
        (len as isize).min(128)
    };
    // SAFETY: per the caller.
    hook.emit(
        Ev::new(call)
            .fd(fd, kind)
            .result(r as i64)
            .aux(len as u64, 0),
        &[unsafe { bytes(addr, n) }],
    );
    r
}

/// A call returning an address: result plus the bytes the kernel wrote.
///
/// # Safety
/// As for getsockname(2).
unsafe fn addr_out(
    call: Call,
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let kind = fdtable::kind(fd);
    let r = real();
    let (full, n) = if r == 0 && !addr.is_null() && !len.is_null() {
        // SAFETY: on success the kernel set `*len` (the full length, which may exceed the buffer).
        let full = unsafe { *len } as usize;
        (full, full.min(128))
    } else {
        (0, 0)
    };
    // SAFETY: the first `n` bytes of `addr` were written.
    hook.emit(
        Ev::new(call)
            .fd(fd, kind)
            .result(r as i64)
            .aux(full as u64, 0),
        &[unsafe { bytes(addr, n as isize) }],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { addr_in(Call::Bind, fd, addr, len, || real::bind(fd, addr, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: as above.
    unsafe {
        addr_in(Call::Connect, fd, addr, len, || {
            real::connect(fd, addr, len)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: as above.
    unsafe {
        addr_out(Call::Getsockname, fd, addr, len, || {
            real::getsockname(fd, addr, len)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: as above.
    unsafe {
        addr_out(Call::Getpeername, fd, addr, len, || {
            real::getpeername(fd, addr, len)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::listen(fd, backlog) };
    };
    // SAFETY: as above.
    let r = unsafe { real::listen(fd, backlog) };
    if r == 0 {
        fdtable::set(fd, FdKind::Listener);
    }
    hook.emit(
        Ev::new(Call::Listen)
            .fd(fd, fdtable::kind(fd))
            .result(r as i64)
            .aux(backlog as u64, 0),
        &[],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        crate::hooks::io::simple_fd_call(Call::Shutdown, fd, [how as u64, 0], || {
            real::shutdown(fd, how)
        })
    }
}
