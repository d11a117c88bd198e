//! Clocks and sleeps. Times are input; a sleep's result (and remaining time) is recorded so a
//! backup returns at once with the same answer: a backup never waits on the wall clock.

use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use core::ffi::{c_int, c_uint, c_void};
use eventlog::{Call, FdKind};
use libc::{clockid_t, time_t, timespec, timeval, useconds_t};

/// Writes a recorded duration (nanoseconds) into a timespec the program passed.
fn put_ns(ts: *mut timespec, ns: u64) {
    if !ts.is_null() {
        // SAFETY: non-null timespecs given to these calls are valid for writing.
        unsafe {
            (*ts).tv_sec = (ns / 1_000_000_000) as _;
            (*ts).tv_nsec = (ns % 1_000_000_000) as _;
        }
    }
}

/// Replays a sleep: same request, no wait, the primary's result and remaining time.
fn replay_sleep(t: Turn, req_ns: u64, rem: *mut timespec) -> i64 {
    t.expect("the requested time", t.header().aux[0] as i64, req_ns as i64);
    if t.result() != 0 {
        put_ns(rem, t.header().aux[1]);
    }
    t.ret()
}

fn ts_ns(ts: *const timespec) -> u64 {
    if ts.is_null() {
        return 0;
    }
    // SAFETY: non-null timespecs given to these calls are valid.
    let t = unsafe { *ts };
    (t.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec as u64)
}

/// clock_gettime: `fd` holds the clock id, aux the seconds and nanoseconds.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clk: clockid_t, tp: *mut timespec) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::clock_gettime(clk, tp) };
    };
    if let Some(t) = hook.turn(Call::ClockGettime) {
        t.expect("the clock", t.header().fd as i64, clk as i64);
        if t.result() == 0 {
            // SAFETY: the program's timespec; the call succeeded on the primary, so it is valid.
            unsafe {
                (*tp).tv_sec = t.header().aux[0] as _;
                (*tp).tv_nsec = t.header().aux[1] as _;
            }
        }
        return t.ret() as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::clock_gettime(clk, tp) };
    let (s, ns) = if r == 0 {
        // SAFETY: filled on success.
        unsafe { ((*tp).tv_sec as u64, (*tp).tv_nsec as u64) }
    } else {
        (0, 0)
    };
    hook.emit(Ev::new(Call::ClockGettime).fd(clk, FdKind::Unknown).result(r as i64).aux(s, ns), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn gettimeofday(tv: *mut timeval, tz: *mut c_void) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::gettimeofday(tv, tz) };
    };
    if let Some(t) = hook.turn(Call::Gettimeofday) {
        if t.result() == 0 && !tv.is_null() {
            // SAFETY: the program's timeval, given non-null.
            unsafe {
                (*tv).tv_sec = t.header().aux[0] as _;
                (*tv).tv_usec = t.header().aux[1] as _;
            }
        }
        return t.ret() as c_int;
    }
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
    if let Some(turn) = hook.turn(Call::Time) {
        if !t.is_null() {
            // SAFETY: the program's time_t, given non-null.
            unsafe { *t = turn.result() };
        }
        return turn.ret();
    }
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
    if let Some(t) = hook.turn(Call::Nanosleep) {
        return replay_sleep(t, ts_ns(req), rem) as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::nanosleep(req, rem) };
    hook.emit(Ev::new(Call::Nanosleep).result(r as i64).aux(ts_ns(req), if r != 0 { ts_ns(rem) } else { 0 }), &[]);
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
    if let Some(t) = hook.turn(Call::ClockNanosleep) {
        t.expect("the clock", t.header().fd as i64, clk as i64);
        return replay_sleep(t, ts_ns(req), rem) as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::clock_nanosleep(clk, flags, req, rem) };
    let ev = Ev::new(Call::ClockNanosleep).fd(clk, FdKind::Unknown).status(r);
    hook.emit(ev.aux(ts_ns(req), if r != 0 { ts_ns(rem) } else { 0 }), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn usleep(us: useconds_t) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::usleep(us) };
    };
    if let Some(t) = hook.turn(Call::Usleep) {
        t.expect("the requested time", t.header().aux[0] as i64, us as i64);
        return t.ret() as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::usleep(us) };
    hook.emit(Ev::new(Call::Usleep).result(r as i64).aux(us as u64, 0), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn sleep(s: c_uint) -> c_uint {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::sleep(s) };
    };
    if let Some(t) = hook.turn(Call::Sleep) {
        t.expect("the requested time", t.header().aux[0] as i64, s as i64);
        return t.result() as c_uint;
    }
    // SAFETY: as above.
    let r = unsafe { real::sleep(s) };
    hook.emit(Ev::new(Call::Sleep).result(r as i64).aux(s as u64, 0), &[]);
    r
}
