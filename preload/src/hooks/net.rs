//! Socket set-up and addressing. Addresses given by the program (bind, connect) are the
//! payload; addresses returned by the kernel (getsockname, getpeername) are input and recorded the
//! same way.
//!
//! A backup binds, listens and connects nothing while it replays (the primary owns those
//! addresses and connections): it remembers where its listening sockets must bind, and does so
//! for real when it goes live. A socket the primary connected reads as closed once live.

use super::bytes;
use crate::fdtable;
use crate::real;
use crate::replay::{self, Turn};
use crate::state::{Ev, Hook};
use core::ffi::c_int;
use eventlog::{Call, FdKind};
use libc::{sockaddr, socklen_t};

/// Checks a replayed call passes the same address the primary's did.
fn expect_addr(t: &Turn, given: &[u8]) {
    let mut recorded = [0u8; 128];
    let n = t.payload(0, &mut recorded);
    if recorded[..n] != *given {
        let (call, fd) = (t.header().call().map_or("?", Call::name), t.header().fd);
        t.diverge(format_args!("{call} fd {fd}: the address differs from the primary's"));
    }
}

/// A call passing an address in: result plus the address bytes.
///
/// # Safety
/// `addr` is valid for `len` bytes (or null).
unsafe fn addr_in(call: Call, fd: c_int, addr: *const sockaddr, len: socklen_t, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    let n = if addr.is_null() { 0 } else { (len as isize).min(128) };
    // SAFETY: per the caller.
    let given = unsafe { bytes(addr, n) };
    if let Some(t) = hook.turn(call) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        expect_addr(&t, given);
        match call {
            Call::Bind if t.result() == 0 => replay::remember_bind(fd, given),
            Call::Connect if t.result() == 0 || t.errno() == libc::EINPROGRESS => fdtable::set_dead(fd),
            _ => {}
        }
        return t.ret() as c_int;
    }
    let kind = fdtable::kind(fd);
    let r = real();
    hook.emit(Ev::new(call).fd(fd, kind).result(r as i64).aux(len as u64, 0), &[given]);
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
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(call) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        if t.result() == 0 {
            // SAFETY: per the caller.
            unsafe { super::fd::hand_back_addr(&t, addr, len) };
        }
        return t.ret() as c_int;
    }
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
    hook.emit(Ev::new(call).fd(fd, kind).result(r as i64).aux(full as u64, 0), &[unsafe { bytes(addr, n as isize) }]);
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
    unsafe { addr_in(Call::Connect, fd, addr, len, || real::connect(fd, addr, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: as above.
    unsafe { addr_out(Call::Getsockname, fd, addr, len, || real::getsockname(fd, addr, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: as above.
    unsafe { addr_out(Call::Getpeername, fd, addr, len, || real::getpeername(fd, addr, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::listen(fd, backlog) };
    };
    if let Some(t) = hook.turn(Call::Listen) {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
        if t.result() == 0 {
            replay::remember_listen(fd, backlog);
            fdtable::set_kind(fd, FdKind::Listener);
        }
        return t.ret() as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::listen(fd, backlog) };
    if r == 0 {
        fdtable::set_kind(fd, FdKind::Listener);
    }
    hook.emit(Ev::new(Call::Listen).fd(fd, fdtable::kind(fd)).result(r as i64).aux(backlog as u64, 0), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        crate::hooks::io::simple_fd_call(Call::Shutdown, fd, [how as u64, 0], || real::shutdown(fd, how) as i64)
            as c_int
    }
}
