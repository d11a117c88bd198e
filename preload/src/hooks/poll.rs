//! Readiness: poll, select and epoll. What the kernel reported ready is input, recorded as
//! descriptors and event masks, never as the program's pointers.
//!
//! epoll: `epoll_ctl` stores the program's `epoll_data` in the descriptor table and registers a
//! tag (`EPOLL_TAG << 32 | fd`) with the kernel instead; `epoll_wait` records the kernel's events
//! (with tags) as its payload, then hands the program its own data back.

use super::bytes;
use crate::fdtable;
use crate::real;
use crate::state::{Ev, Hook};
use core::ffi::c_int;
use eventlog::ring::MAX_PAYLOAD;
use eventlog::{Call, FdKind};
use libc::{epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

/// High half of the `epoll_data` the shim registers: marks the low half as a descriptor.
pub const EPOLL_TAG: u64 = 0x7a4d_0000;

/// poll-like calls: the pollfd array after the call is the payload.
///
/// # Safety
/// `fds` holds `n` pollfds.
unsafe fn poll_with(
    call: Call,
    fds: *mut pollfd,
    n: nfds_t,
    timeout_ms: i64,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    let len = (n as usize * core::mem::size_of::<pollfd>()).min(MAX_PAYLOAD);
    // SAFETY: per the caller.
    hook.emit(
        Ev::new(call).result(r as i64).aux(n, timeout_ms as u64),
        &[unsafe { bytes(fds, len as isize) }],
    );
    r
}

fn timespec_ms(ts: *const timespec) -> i64 {
    if ts.is_null() {
        return -1;
    }
    // SAFETY: non-null timeouts point to a timespec.
    let t = unsafe { *ts };
    t.tv_sec * 1000 + t.tv_nsec / 1_000_000
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        poll_with(Call::Poll, fds, n, timeout as i64, || {
            real::poll(fds, n, timeout)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        poll_with(Call::Poll, fds, n, timeout as i64, || {
            real::__poll_chk(fds, n, timeout, fdslen)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        poll_with(Call::Ppoll, fds, n, timespec_ms(ts), || {
            real::ppoll(fds, n, ts, mask)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const timespec,
    mask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        poll_with(Call::Ppoll, fds, n, timespec_ms(ts), || {
            real::__ppoll_chk(fds, n, ts, mask, fdslen)
        })
    }
}

/// select-like calls: the payload is each given set after the call, in the order read, write,
/// except (aux[1] bits 0-2 say which were given), then the remaining timeout if it was given
/// (bit 3).
///
/// # Safety
/// The sets are null or valid fd_sets; `tv` is null or a valid timeval.
unsafe fn select_with(
    call: Call,
    n: c_int,
    sets: [*mut fd_set; 3],
    tv: *const timeval,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    let mut present = 0u64;
    let mut parts: [&[u8]; 4] = [&[]; 4];
    let mut used = 0;
    for (i, s) in sets.iter().enumerate() {
        if !s.is_null() {
            present |= 1 << i;
            // SAFETY: per the caller.
            parts[used] = unsafe { bytes(*s, core::mem::size_of::<fd_set>() as isize) };
            used += 1;
        }
    }
    if !tv.is_null() {
        present |= 1 << 3;
        // SAFETY: per the caller.
        parts[used] = unsafe { bytes(tv, core::mem::size_of::<timeval>() as isize) };
        used += 1;
    }
    hook.emit(
        Ev::new(call).result(r as i64).aux(n as u64, present),
        &parts[..used],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tv: *mut timeval,
) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        select_with(Call::Select, n, [r, w, e], tv, || {
            real::select(n, r, w, e, tv)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: as above (pselect does not update its timeout).
    unsafe {
        select_with(Call::Pselect, n, [r, w, e], core::ptr::null(), || {
            real::pselect(n, r, w, e, ts, mask)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut epoll_event,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::epoll_ctl(epfd, op, fd, ev) };
    };
    let mut events = 0u32;
    let r = if (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && !ev.is_null() {
        // SAFETY: the program passed a valid event for ADD/MOD.
        let want = unsafe { core::ptr::read_unaligned(ev) };
        events = want.events;
        if fdtable::epoll_register(epfd, fd, want.u64) {
            let mut tagged = epoll_event {
                events: want.events,
                u64: (EPOLL_TAG << 32) | fd as u32 as u64,
            };
            // SAFETY: `tagged` is a live local.
            let r = unsafe { real::epoll_ctl(epfd, op, fd, &mut tagged) };
            if r != 0 && op == libc::EPOLL_CTL_ADD {
                fdtable::epoll_unregister(epfd, fd);
            }
            r
        } else {
            // Out of room to translate: the program's data goes to the kernel as is.
            // SAFETY: forwarding the program's own arguments.
            unsafe { real::epoll_ctl(epfd, op, fd, ev) }
        }
    } else {
        // SAFETY: as above.
        let r = unsafe { real::epoll_ctl(epfd, op, fd, ev) };
        if r == 0 && op == libc::EPOLL_CTL_DEL {
            fdtable::epoll_unregister(epfd, fd);
        }
        r
    };
    let aux0 = (op as u32 as u64) | ((fd as u32 as u64) << 32);
    hook.emit(
        Ev::new(Call::EpollCtl)
            .fd(epfd, FdKind::Epoll)
            .result(r as i64)
            .aux(aux0, events as u64),
        &[],
    );
    r
}

/// epoll_wait-like calls: record the kernel's (tagged) events, then translate them back.
///
/// # Safety
/// `evs` holds `max` epoll_events.
unsafe fn epoll_wait_with(
    call: Call,
    epfd: c_int,
    evs: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    let n = r.max(0) as usize;
    let size = core::mem::size_of::<epoll_event>();
    // SAFETY: the kernel filled `n` events.
    let raw = unsafe { bytes(evs, (n * size).min(MAX_PAYLOAD) as isize) };
    hook.emit(
        Ev::new(call)
            .fd(epfd, FdKind::Epoll)
            .result(r as i64)
            .aux(max as u64, timeout as i64 as u64),
        &[raw],
    );
    for i in 0..n {
        // SAFETY: in bounds of the filled events; epoll_event is packed, so unaligned access.
        unsafe {
            let e = evs.add(i);
            let data = core::ptr::read_unaligned(core::ptr::addr_of!((*e).u64));
            if data >> 32 == EPOLL_TAG {
                let program_data = fdtable::epoll_data(epfd, data as u32 as c_int).unwrap_or(0);
                core::ptr::write_unaligned(core::ptr::addr_of_mut!((*e).u64), program_data);
            }
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    evs: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        epoll_wait_with(Call::EpollWait, epfd, evs, max, timeout, || {
            real::epoll_wait(epfd, evs, max, timeout)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    evs: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        epoll_wait_with(Call::EpollPwait, epfd, evs, max, timeout, || {
            real::epoll_pwait(epfd, evs, max, timeout, mask)
        })
    }
}
