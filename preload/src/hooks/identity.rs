//! Identity: pids, tids, host name, kernel name. Input like any other: a backup answers with the
//! primary's values.

use super::run::{self, Particular};
use super::time::Answer;
use super::{bytes, cstr};
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use core::ffi::{c_char, c_int};
use eventlog::Call;
use libc::{pid_t, size_t, utsname};

/// getpid: a backup answers with the primary's pid and remembers it (a signal the program sends
/// to that pid is one to itself).
struct OwnPid;

impl Particular for OwnPid {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        // SAFETY: no arguments.
        unsafe { real::getpid() as i64 }
    }

    fn hand_back(&mut self, t: &Turn) {
        crate::replay::PRIMARY_SELF.store(t.result() as pid_t, core::sync::atomic::Ordering::Relaxed);
    }
}

#[no_mangle]
pub extern "C" fn getpid() -> pid_t {
    run::input(Call::Getpid, -1, [0; 2], OwnPid) as pid_t
}

#[no_mangle]
pub extern "C" fn getppid() -> pid_t {
    // SAFETY: no arguments.
    run::input(Call::Getppid, -1, [0; 2], Answer(|| unsafe { real::getppid() } as i64)) as pid_t
}

#[no_mangle]
pub extern "C" fn gettid() -> pid_t {
    // SAFETY: no arguments.
    run::input(Call::Gettid, -1, [0; 2], Answer(|| unsafe { real::gettid() } as i64)) as pid_t
}

/// gethostname: the payload is the name as returned (up to its NUL).
struct HostName<F> {
    name: *mut c_char,
    len: usize,
    real: F,
}

impl<F: FnMut() -> c_int> Particular for HostName<F> {
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        // SAFETY: on success `name` holds a string of at most `len` bytes.
        let s = if ev.result == 0 { unsafe { cstr(self.name, self.len) } } else { &[] };
        hook.emit(ev, &[s]);
    }

    fn hand_back(&mut self, t: &Turn) {
        if t.result() == 0 && self.len > 0 {
            // SAFETY: the program's buffer of `len` bytes; the name is NUL-terminated when it fits.
            unsafe {
                let n = t.payload(0, core::slice::from_raw_parts_mut(self.name as *mut u8, self.len));
                if n < self.len {
                    *self.name.add(n) = 0;
                }
            }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostname(name: *mut c_char, len: size_t) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    let p = HostName { name, len, real: || unsafe { real::gethostname(name, len) } };
    run::input(Call::Gethostname, -1, [len as u64, 0], p) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn __gethostname_chk(name: *mut c_char, len: size_t, buflen: size_t) -> c_int {
    // SAFETY: as above.
    let p = HostName { name, len, real: || unsafe { real::__gethostname_chk(name, len, buflen) } };
    run::input(Call::Gethostname, -1, [len as u64, 0], p) as c_int
}

/// uname: the payload is the whole `utsname`.
struct KernelName(*mut utsname);

impl Particular for KernelName {
    fn real(&mut self, _cap: usize) -> i64 {
        // SAFETY: the program's utsname.
        unsafe { real::uname(self.0) as i64 }
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let n = if ev.result == 0 { core::mem::size_of::<utsname>() as isize } else { 0 };
        // SAFETY: filled on success.
        hook.emit(ev, &[unsafe { bytes(self.0, n) }]);
    }

    fn hand_back(&mut self, t: &Turn) {
        if t.result() == 0 {
            // SAFETY: the program's utsname.
            t.payload(0, unsafe {
                core::slice::from_raw_parts_mut(self.0 as *mut u8, core::mem::size_of::<utsname>())
            });
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn uname(buf: *mut utsname) -> c_int {
    run::input(Call::Uname, -1, [0; 2], KernelName(buf)) as c_int
}
