//! Randomness: input, recorded as the bytes or values the program got.

use super::bytes;
use super::io::IntoBuf;
use super::run::{self, Particular};
use super::time::Answer;
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use core::ffi::{c_int, c_uint, c_void};
use eventlog::ring::MAX_PAYLOAD;
use eventlog::Call;
use libc::{size_t, ssize_t};

#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t {
    // SAFETY: forwarding the program's own arguments; a short result is legal for getrandom.
    let p = IntoBuf { buf, count: n, real: |k| unsafe { real::getrandom(buf, k, flags) } };
    run::input(Call::Getrandom, -1, [n as u64, flags as u64], p) as ssize_t
}

/// getentropy fills all of its (at most 256) bytes or fails.
struct Entropy {
    buf: *mut c_void,
    n: usize,
}

impl Particular for Entropy {
    fn real(&mut self, _cap: usize) -> i64 {
        // SAFETY: the program's buffer of `n` bytes.
        unsafe { real::getentropy(self.buf, self.n) as i64 }
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let filled = if ev.result == 0 { self.n.min(256) as isize } else { 0 };
        // SAFETY: filled on success.
        hook.emit(ev, &[unsafe { bytes(self.buf, filled) }]);
    }

    fn hand_back(&mut self, t: &Turn) {
        if t.result() == 0 {
            // SAFETY: the program's buffer of `n` bytes (at most 256 when it succeeded).
            t.payload(0, unsafe { core::slice::from_raw_parts_mut(self.buf as *mut u8, self.n.min(256)) });
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn getentropy(buf: *mut c_void, n: size_t) -> c_int {
    run::input(Call::Getentropy, -1, [n as u64, 0], Entropy { buf, n }) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn arc4random() -> u32 {
    // SAFETY: no arguments.
    run::input(Call::Arc4random, -1, [0; 2], Answer(|| unsafe { real::arc4random() } as i64)) as u32
}

#[no_mangle]
pub unsafe extern "C" fn arc4random_uniform(bound: u32) -> u32 {
    // SAFETY: plain integer argument.
    let p = Answer(|| unsafe { real::arc4random_uniform(bound) } as i64);
    run::input(Call::Arc4randomUniform, -1, [bound as u64, 0], p) as u32
}

/// arc4random_buf cannot return short, so large requests become one event per chunk.
#[no_mangle]
pub unsafe extern "C" fn arc4random_buf(buf: *mut c_void, n: size_t) {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::arc4random_buf(buf, n) };
    };
    let mut done = 0;
    loop {
        let chunk = (n - done).min(MAX_PAYLOAD);
        // SAFETY: `buf + done .. + chunk` is within the program's buffer of `n` bytes.
        unsafe {
            let at = (buf as *mut u8).add(done) as *mut c_void;
            if let Some(t) = hook.turn(Call::Arc4randomBuf) {
                t.expect("the byte count", t.header().aux[0] as i64, n as i64);
                t.payload(0, core::slice::from_raw_parts_mut(at as *mut u8, chunk));
            } else {
                real::arc4random_buf(at, chunk);
                let ev = Ev::new(Call::Arc4randomBuf).result(chunk as i64).aux(n as u64, done as u64);
                hook.emit(ev, &[bytes(at, chunk as isize)]);
            }
        }
        done += chunk;
        if done >= n {
            break;
        }
    }
}
