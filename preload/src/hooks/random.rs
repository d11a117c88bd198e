//! Randomness: input, recorded as the bytes or values the program got.

use super::bytes;
use crate::real;
use crate::state::{Ev, Hook};
use core::ffi::{c_int, c_uint, c_void};
use eventlog::ring::MAX_PAYLOAD;
use eventlog::Call;
use libc::{size_t, ssize_t};

#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::getrandom(buf, n, flags) };
    };
    if let Some(t) = hook.turn(Call::Getrandom) {
        t.expect("the byte count", t.header().aux[0] as i64, n as i64);
        let got = t.result().clamp(0, n as i64) as usize;
        // SAFETY: the program's buffer of `n >= got` bytes.
        t.payload(0, unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, got) });
        return t.ret() as ssize_t;
    }
    // SAFETY: as above; a short result is legal for getrandom.
    let r = unsafe { real::getrandom(buf, n.min(MAX_PAYLOAD), flags) };
    // SAFETY: `r` bytes were filled.
    hook.emit(Ev::new(Call::Getrandom).result(r as i64).aux(n as u64, flags as u64), &[unsafe { bytes(buf, r) }]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn getentropy(buf: *mut c_void, n: size_t) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::getentropy(buf, n) };
    };
    if let Some(t) = hook.turn(Call::Getentropy) {
        t.expect("the byte count", t.header().aux[0] as i64, n as i64);
        if t.result() == 0 {
            // SAFETY: the program's buffer of `n` bytes (at most 256 when it succeeded).
            t.payload(0, unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, n.min(256)) });
        }
        return t.ret() as c_int;
    }
    // SAFETY: as above (getentropy allows at most 256 bytes).
    let r = unsafe { real::getentropy(buf, n) };
    let filled = if r == 0 { n.min(256) as isize } else { 0 };
    // SAFETY: filled on success.
    hook.emit(Ev::new(Call::Getentropy).result(r as i64).aux(n as u64, 0), &[unsafe { bytes(buf, filled) }]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn arc4random() -> u32 {
    let Some(hook) = Hook::enter() else {
        // SAFETY: no arguments.
        return unsafe { real::arc4random() };
    };
    if let Some(t) = hook.turn(Call::Arc4random) {
        return t.result() as u32;
    }
    // SAFETY: as above.
    let r = unsafe { real::arc4random() };
    hook.emit(Ev::new(Call::Arc4random).result(r as i64), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn arc4random_uniform(bound: u32) -> u32 {
    let Some(hook) = Hook::enter() else {
        // SAFETY: plain integer argument.
        return unsafe { real::arc4random_uniform(bound) };
    };
    if let Some(t) = hook.turn(Call::Arc4randomUniform) {
        t.expect("the bound", t.header().aux[0] as i64, bound as i64);
        return t.result() as u32;
    }
    // SAFETY: as above.
    let r = unsafe { real::arc4random_uniform(bound) };
    hook.emit(Ev::new(Call::Arc4randomUniform).result(r as i64).aux(bound as u64, 0), &[]);
    r
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
