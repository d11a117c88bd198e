//! Readiness: poll, select and epoll. What the kernel reported ready is input, recorded as
//! descriptors and event masks, never as the program's pointers, and handed back in replay.
//!
//! epoll: `epoll_ctl` stores the program's `epoll_data` in the descriptor table and registers a
//! tag (`EPOLL_TAG << 32 | fd`) with the kernel instead; `epoll_wait` records the kernel's events
//! (with tags) as its payload, then hands the program its own data back. A backup runs
//! `epoll_ctl` for real (the set's membership is its own state) and answers `epoll_wait` from the
//! record, with the data its own program registered.

use super::bytes;
use super::run::{self, Particular};
use crate::fdtable;
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use core::ffi::c_int;
use eventlog::ring::MAX_PAYLOAD;
use eventlog::{Call, FdKind};
use libc::{epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

/// High half of the `epoll_data` the shim registers: marks the low half as a descriptor.
pub const EPOLL_TAG: u64 = 0x7a4d_0000;

/// Copies the recorded payload from `offset` over `len` bytes at `dst`; returns the offset after.
///
/// # Safety
/// `dst` is valid for `len` writable bytes.
unsafe fn hand_back<T>(t: &Turn, offset: usize, dst: *mut T, len: usize) -> usize {
    if !dst.is_null() {
        // SAFETY: per the caller.
        t.payload(offset, unsafe { core::slice::from_raw_parts_mut(dst as *mut u8, len) });
    }
    offset + len
}

/// poll-like calls: the pollfd array after the call is the payload.
struct Polled<F> {
    fds: *mut pollfd,
    len: usize,
    mask: Option<u64>,
    real: F,
}

impl<F: FnMut() -> c_int> Particular for Polled<F> {
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    fn wait_mask(&self) -> Option<u64> {
        self.mask
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        // SAFETY: the program's `n` pollfds, cut to what one event carries.
        hook.emit(ev, &[unsafe { bytes(self.fds, self.len as isize) }]);
    }

    fn hand_back(&mut self, t: &Turn) {
        // SAFETY: the program's `n` pollfds.
        unsafe { hand_back(t, 0, self.fds, self.len) };
    }
}

/// # Safety
/// `fds` holds `n` pollfds.
/// `mask` is null or the signal mask the call waits under.
unsafe fn poll_with(
    call: Call,
    fds: *mut pollfd,
    n: nfds_t,
    timeout_ms: i64,
    mask: *const sigset_t,
    real: impl FnMut() -> c_int,
) -> c_int {
    let len = (n as usize * core::mem::size_of::<pollfd>()).min(MAX_PAYLOAD);
    // SAFETY: per the caller.
    let mask = unsafe { mask_bits(mask) };
    run::input(call, -1, [n, timeout_ms as u64], Polled { fds, len, mask, real }) as c_int
}

/// The signals a wait's mask blocks (`None` when it gives none).
///
/// # Safety
/// `mask` is null or a valid sigset.
unsafe fn mask_bits(mask: *const sigset_t) -> Option<u64> {
    // SAFETY: per the caller; the first 64 bits are signals 1-64.
    (!mask.is_null()).then(|| unsafe { *(mask as *const u64) })
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
    unsafe { poll_with(Call::Poll, fds, n, timeout as i64, core::ptr::null(), || real::poll(fds, n, timeout)) }
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    // SAFETY: as above.
    unsafe {
        poll_with(Call::Poll, fds, n, timeout as i64, core::ptr::null(), || real::__poll_chk(fds, n, timeout, fdslen))
    }
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(fds: *mut pollfd, n: nfds_t, ts: *const timespec, mask: *const sigset_t) -> c_int {
    // SAFETY: as above.
    unsafe { poll_with(Call::Ppoll, fds, n, timespec_ms(ts), mask, || real::ppoll(fds, n, ts, mask)) }
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
    unsafe { poll_with(Call::Ppoll, fds, n, timespec_ms(ts), mask, || real::__ppoll_chk(fds, n, ts, mask, fdslen)) }
}

/// select-like calls: the payload is each given set after the call, in the order read, write,
/// except (aux[1] bits 0-2 say which were given), then the remaining timeout if it was given
/// (bit 3).
struct Selected<F> {
    sets: [*mut fd_set; 3],
    tv: *mut timeval,
    mask: Option<u64>,
    real: F,
}

const SET_LEN: usize = core::mem::size_of::<fd_set>();

impl<F: FnMut() -> c_int> Particular for Selected<F> {
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    fn wait_mask(&self) -> Option<u64> {
        self.mask
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let mut parts: [&[u8]; 4] = [&[]; 4];
        let mut used = 0;
        for s in self.sets.iter().filter(|s| !s.is_null()) {
            // SAFETY: the program's fd_set.
            parts[used] = unsafe { bytes(*s, SET_LEN as isize) };
            used += 1;
        }
        if !self.tv.is_null() {
            // SAFETY: the program's timeval.
            parts[used] = unsafe { bytes(self.tv, core::mem::size_of::<timeval>() as isize) };
            used += 1;
        }
        hook.emit(ev, &parts[..used]);
    }

    fn hand_back(&mut self, t: &Turn) {
        let present = t.header().aux[1];
        let mut offset = 0;
        for (i, s) in self.sets.iter().enumerate() {
            if present & (1 << i) != 0 {
                // SAFETY: a set the primary was given is given here too.
                offset = unsafe { hand_back(t, offset, *s, SET_LEN) };
            }
        }
        if present & (1 << 3) != 0 {
            // SAFETY: as above.
            unsafe { hand_back(t, offset, self.tv, core::mem::size_of::<timeval>()) };
        }
    }
}

/// # Safety
/// The sets are null or valid fd_sets; `tv` is null or a valid timeval; `mask` is null or a
/// valid sigset.
unsafe fn select_with(
    call: Call,
    n: c_int,
    sets: [*mut fd_set; 3],
    tv: *mut timeval,
    mask: *const sigset_t,
    real: impl FnMut() -> c_int,
) -> c_int {
    // SAFETY: per the caller.
    let mask = unsafe { mask_bits(mask) };
    let mut given = 0u64;
    for (i, s) in sets.iter().enumerate() {
        if !s.is_null() {
            given |= 1 << i;
        }
    }
    if !tv.is_null() {
        given |= 1 << 3;
    }
    run::input(call, -1, [n as u64, given], Selected { sets, tv, mask, real }) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, tv: *mut timeval) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { select_with(Call::Select, n, [r, w, e], tv, core::ptr::null(), || real::select(n, r, w, e, tv)) }
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
        select_with(Call::Pselect, n, [r, w, e], core::ptr::null_mut(), mask, || real::pselect(n, r, w, e, ts, mask))
    }
}

/// Runs epoll_ctl for real with the shim's tag in place of the program's data.
///
/// # Safety
/// As for epoll_ctl(2).
unsafe fn epoll_ctl_for_real(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    // SAFETY: per the caller.
    unsafe {
        if (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && !ev.is_null() {
            let want = core::ptr::read_unaligned(ev);
            if fdtable::epoll_register(epfd, fd, want.u64) {
                let mut tagged = epoll_event { events: want.events, u64: (EPOLL_TAG << 32) | fd as u32 as u64 };
                let r = real::epoll_ctl(epfd, op, fd, &mut tagged);
                if r != 0 && op == libc::EPOLL_CTL_ADD {
                    fdtable::epoll_unregister(epfd, fd);
                }
                return r;
            }
            // Out of room to translate: the program's data goes to the kernel as is.
            return real::epoll_ctl(epfd, op, fd, ev);
        }
        let r = real::epoll_ctl(epfd, op, fd, ev);
        if r == 0 && op == libc::EPOLL_CTL_DEL {
            fdtable::epoll_unregister(epfd, fd);
        }
        r
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::epoll_ctl(epfd, op, fd, ev) };
    };
    let events = if (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && !ev.is_null() {
        // SAFETY: events are read only for ADD/MOD, where the program passes a valid event.
        unsafe { core::ptr::read_unaligned(ev) }.events
    } else {
        0
    };
    let aux0 = (op as u32 as u64) | ((fd as u32 as u64) << 32);
    if let Some(t) = hook.turn(Call::EpollCtl) {
        t.expect("the epoll descriptor", t.header().fd as i64, epfd as i64);
        t.expect("the operation and descriptor", t.header().aux[0] as i64, aux0 as i64);
        // SAFETY: forwarding the program's own arguments.
        let r = unsafe { epoll_ctl_for_real(epfd, op, fd, ev) };
        t.expect_outcome(r as i64);
        return r;
    }
    // SAFETY: as above.
    let r = unsafe { epoll_ctl_for_real(epfd, op, fd, ev) };
    hook.emit(Ev::new(Call::EpollCtl).fd(epfd, FdKind::Epoll).result(r as i64).aux(aux0, events as u64), &[]);
    r
}

/// Replaces the shim's tags in `n` kernel events with the program's own data.
///
/// # Safety
/// `evs` holds `n` events.
unsafe fn untag(epfd: c_int, evs: *mut epoll_event, n: usize) {
    for i in 0..n {
        // SAFETY: in bounds; epoll_event is packed, so unaligned access.
        unsafe {
            let e = evs.add(i);
            let data = core::ptr::read_unaligned(core::ptr::addr_of!((*e).u64));
            if data >> 32 == EPOLL_TAG {
                let program_data = fdtable::epoll_data(epfd, data as u32 as c_int).unwrap_or(0);
                core::ptr::write_unaligned(core::ptr::addr_of_mut!((*e).u64), program_data);
            }
        }
    }
}

/// epoll_wait-like calls: record the kernel's (tagged) events, then translate them back.
struct Waited<F> {
    epfd: c_int,
    evs: *mut epoll_event,
    max: c_int,
    mask: Option<u64>,
    real: F,
}

const EVENT_LEN: usize = core::mem::size_of::<epoll_event>();

impl<F: FnMut() -> c_int> Particular for Waited<F> {
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    fn wait_mask(&self) -> Option<u64> {
        self.mask
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let n = ev.result.max(0) as usize;
        // SAFETY: the kernel filled `n` events.
        let raw = unsafe { bytes(self.evs, (n * EVENT_LEN).min(MAX_PAYLOAD) as isize) };
        hook.emit(ev.fd(self.epfd, FdKind::Epoll), &[raw]);
        // SAFETY: as above.
        unsafe { untag(self.epfd, self.evs, n) };
    }

    fn hand_back(&mut self, t: &Turn) {
        let n = (t.result().max(0) as usize).min(self.max.max(0) as usize);
        // SAFETY: `evs` holds `max >= n` events; the recorded tags name descriptors, which this
        // backup's own registrations translate.
        unsafe {
            hand_back(t, 0, self.evs, n * EVENT_LEN);
            untag(self.epfd, self.evs, n);
        }
    }
}

/// # Safety
/// `evs` holds `max` epoll_events; `mask` is null or a valid sigset.
unsafe fn epoll_wait_with(
    call: Call,
    epfd: c_int,
    evs: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
    real: impl FnMut() -> c_int,
) -> c_int {
    // SAFETY: per the caller.
    let mask = unsafe { mask_bits(mask) };
    let p = Waited { epfd, evs, max, mask, real };
    run::input(call, epfd, [max as u64, timeout as i64 as u64], p) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(epfd: c_int, evs: *mut epoll_event, max: c_int, timeout: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        epoll_wait_with(Call::EpollWait, epfd, evs, max, timeout, core::ptr::null(), || {
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
        epoll_wait_with(Call::EpollPwait, epfd, evs, max, timeout, mask, || {
            real::epoll_pwait(epfd, evs, max, timeout, mask)
        })
    }
}
