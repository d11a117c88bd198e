//! Clocks and sleeps. Times are input; a sleep's result (and remaining time) is recorded so a
//! backup can return at once with the same answer.

use crate::real;
use crate::state::{Ev, Hook};
use core::ffi::{c_int, c_uint, c_void};
use eventlog::{Call, FdKind};
use libc::{clockid_t, time_t, timespec, timeval, useconds_t};

fn ts_ns(ts: *const timespec) -> u64 {
    if ts.is_null() {
        return 0;
    }
    // SAFETY: non-null timespecs given to these calls are valid.
    let t = unsafe { *ts };
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// clock_gettime: `fd` holds the clock id, aux the seconds and nanoseconds.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clk: clockid_t, tp: *mut timespec) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::clock_gettime(clk, tp) };
    };
    // SAFETY: as above.
    let r = unsafe { real::clock_gettime(clk, tp) };
    let (s, ns) = if r == 0 {
        // SAFETY: filled on success.
        unsafe { ((*tp).tv_sec as u64, (*tp).tv_nsec as u64) }
    } else {
        (0, 0)
    };
    hook.emit(
        Ev::new(Call::ClockGettime)
            .fd(clk, FdKind::Unknown)
            .result(r as i64)
            .aux(s, ns),
        &[],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn gettimeofday(tv: *mut timeval, tz: *mut c_void) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::gettimeofday(tv, tz) };
    };
    // SAFETY: as above.
    let r = unsafe { real::gettimeofday(tv, tz) };
    let (s, us) = if r == 0 && !tv.is_null() {
        // SAFETY: filled on success when given.
        unsafe { ((*tv).tv_sec as u64, (*tv).tv_usec as u64) }
    } else {
        (0, 0)
    };
    hook.emit(Ev::new(Call::Gettimeofday).result(r as i64).aux(s, us), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn time(t: *mut time_t) -> time_t {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::time(t) };
    };
    // SAFETY: as above.
    let r = unsafe { real::time(t) };
    hook.emit(Ev::new(Call::Time).result(r), &[]);
    r
}

/// nanosleep: aux = requested and remaining nanoseconds.
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::nanosleep(req, rem) };
    };
    // SAFETY: as above.
    let r = unsafe { real::nanosleep(req, rem) };
    hook.emit(
        Ev::new(Call::Nanosleep)
            .result(r as i64)
            .aux(ts_ns(req), if r != 0 { ts_ns(rem) } else { 0 }),
        &[],
    );
    r
}

/// clock_nanosleep returns an error number; `fd` holds the clock, aux the request and the
/// remaining time.
#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clk: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::clock_nanosleep(clk, flags, req, rem) };
    };
    // SAFETY: as above.
    let r = unsafe { real::clock_nanosleep(clk, flags, req, rem) };
    let ev = Ev::new(Call::ClockNanosleep)
        .fd(clk, FdKind::Unknown)
        .status(r);
    hook.emit(ev.aux(ts_ns(req), if r != 0 { ts_ns(rem) } else { 0 }), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn usleep(us: useconds_t) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::usleep(us) };
    };
    // SAFETY: as above.
    let r = unsafe { real::usleep(us) };
    hook.emit(
        Ev::new(Call::Usleep).result(r as i64).aux(us as u64, 0),
        &[],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn sleep(s: c_uint) -> c_uint {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::sleep(s) };
    };
    // SAFETY: as above.
    let r = unsafe { real::sleep(s) };
    hook.emit(Ev::new(Call::Sleep).result(r as i64).aux(s as u64, 0), &[]);
    r
}
