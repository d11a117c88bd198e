//! Clocks and sleeps. Times are input; a sleep's result (and remaining time) is recorded so a
//! backup returns at once with the same answer: a backup never waits on the wall clock.

use super::run::{self, Particular};
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use core::ffi::{c_int, c_uint, c_void};
use eventlog::Call;
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

fn ts_ns(ts: *const timespec) -> u64 {
    if ts.is_null() {
        return 0;
    }
    // SAFETY: non-null timespecs given to these calls are valid.
    let t = unsafe { *ts };
    (t.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec as u64)
}

/// A call reading a clock into `out`: aux holds the seconds and the fraction (nano- or
/// microseconds) it got.
struct ReadClock<F> {
    out: *mut timespec,
    real: F,
}

impl<F: FnMut() -> i64> Particular for ReadClock<F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)()
    }

    #[inline(always)]
    fn record(&self, hook: &Hook, ev: Ev) {
        let (s, frac) = if ev.result == 0 && !self.out.is_null() {
            // SAFETY: filled on success (a timeval has the same two leading fields).
            unsafe { ((*self.out).tv_sec as u64, (*self.out).tv_nsec as u64) }
        } else {
            (0, 0)
        };
        hook.emit(ev.aux(s, frac), &[]);
    }

    #[inline(always)]
    fn hand_back(&mut self, t: &Turn) {
        if t.result() == 0 && !self.out.is_null() {
            // SAFETY: the program's timespec or timeval (same two leading fields), given non-null.
            unsafe {
                (*self.out).tv_sec = t.header().aux[0] as _;
                (*self.out).tv_nsec = t.header().aux[1] as _;
            }
        }
    }
}

/// clock_gettime: `fd` holds the clock id, aux the seconds and nanoseconds.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clk: clockid_t, tp: *mut timespec) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    let p = ReadClock { out: tp, real: || unsafe { real::clock_gettime(clk, tp) } as i64 };
    run::input(Call::ClockGettime, clk, [0; 2], p) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn gettimeofday(tv: *mut timeval, tz: *mut c_void) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    let p = ReadClock { out: tv as *mut timespec, real: || unsafe { real::gettimeofday(tv, tz) } as i64 };
    run::input(Call::Gettimeofday, -1, [0; 2], p) as c_int
}

/// A call whose whole outcome is its result (`time`, `sleep`, `usleep`, `arc4random`).
pub struct Answer<F>(pub F);

impl<F: FnMut() -> i64> Particular for Answer<F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.0)()
    }
}

#[no_mangle]
pub unsafe extern "C" fn time(t: *mut time_t) -> time_t {
    // SAFETY: forwarding the program's own argument.
    let r = run::input(Call::Time, -1, [0; 2], Answer(|| unsafe { real::time(t) }));
    if !t.is_null() {
        // SAFETY: the program's time_t, given non-null (a backup's call ran nothing).
        unsafe { *t = r };
    }
    r
}

/// A sleep: aux holds the requested and the remaining nanoseconds. A backup returns at once with
/// the primary's result and remaining time: it never waits on the wall clock.
struct Sleep<F> {
    rem: *mut timespec,
    status: bool,
    real: F,
}

impl<F: FnMut() -> i64> Particular for Sleep<F> {
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)()
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let r = ev.result;
        let ev = if self.status { ev.status(r as i32) } else { ev };
        hook.emit(ev.aux(ev.aux[0], if r != 0 { ts_ns(self.rem) } else { 0 }), &[]);
    }

    fn hand_back(&mut self, t: &Turn) {
        if t.result() != 0 {
            put_ns(self.rem, t.header().aux[1]);
        }
    }
}

/// nanosleep: aux = requested and remaining nanoseconds.
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    let p = Sleep { rem, status: false, real: || unsafe { real::nanosleep(req, rem) } as i64 };
    run::input(Call::Nanosleep, -1, [ts_ns(req), 0], p) as c_int
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
    // SAFETY: forwarding the program's own arguments.
    let p = Sleep { rem, status: true, real: || unsafe { real::clock_nanosleep(clk, flags, req, rem) } as i64 };
    run::input(Call::ClockNanosleep, clk, [ts_ns(req), 0], p) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn usleep(us: useconds_t) -> c_int {
    // SAFETY: forwarding the program's own argument.
    run::input(Call::Usleep, -1, [us as u64, 0], Answer(|| unsafe { real::usleep(us) } as i64)) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn sleep(s: c_uint) -> c_uint {
    // SAFETY: forwarding the program's own argument.
    run::input(Call::Sleep, -1, [s as u64, 0], Answer(|| unsafe { real::sleep(s) } as i64)) as c_uint
}
