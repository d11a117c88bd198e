//! Direct system calls and errno access for code inside hooks. Nothing here goes through a libc
//! function that the shim itself hooks.

use core::ffi::{c_int, c_void};
use eventlog::ring::sys::syscall6;

#[inline(always)]
fn sc(nr: i64, a: [usize; 6]) -> isize {
    // SAFETY: every caller in this module passes arguments that match the call's contract
    // (pointers to live buffers of the stated length).
    unsafe { syscall6(nr, a) }
}

#[inline(always)]
pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
pub fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

/// errno if `r` signals failure (negative), else 0.
#[inline(always)]
pub fn errno_if(r: i64) -> c_int {
    if r < 0 {
        errno()
    } else {
        0
    }
}

pub fn getpid() -> i32 {
    sc(libc::SYS_getpid, [0; 6]) as i32
}

pub fn getppid() -> i32 {
    sc(libc::SYS_getppid, [0; 6]) as i32
}

pub fn gettid() -> i32 {
    sc(libc::SYS_gettid, [0; 6]) as i32
}

pub fn write_all(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let r = sc(libc::SYS_write, [fd as usize, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0]);
        if r == -(libc::EINTR as isize) {
            continue;
        }
        if r <= 0 {
            return;
        }
        bytes = &bytes[r as usize..];
    }
}

/// Waits until `fd` is ready for `events` (`POLLIN`, `POLLOUT`), or has hung up or failed.
pub fn wait_ready(fd: c_int, events: libc::c_short) {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    sc(libc::SYS_ppoll, [&mut p as *mut _ as usize, 1, 0, 0, 0, 0]);
}

pub fn fstat(fd: c_int) -> Option<libc::stat> {
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = sc(libc::SYS_fstat, [fd as usize, &mut st as *mut _ as usize, 0, 0, 0, 0]);
    (r == 0).then_some(st)
}

/// Target of `/proc/self/fd/<fd>` into `buf`; returns the filled prefix.
pub fn fd_path(fd: c_int, buf: &mut [u8]) -> &[u8] {
    let mut path = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    path[..prefix.len()].copy_from_slice(prefix);
    let n = prefix.len() + crate::msg::write_decimal(&mut path[prefix.len()..], fd as i64);
    path[n] = 0;
    let r = sc(
        libc::SYS_readlinkat,
        [libc::AT_FDCWD as usize, path.as_ptr() as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0],
    );
    if r <= 0 {
        &[]
    } else {
        &buf[..r as usize]
    }
}

pub fn getsockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len: libc::socklen_t = core::mem::size_of::<c_int>() as _;
    let r = sc(
        libc::SYS_getsockopt,
        [fd as usize, level as usize, name as usize, &mut v as *mut _ as usize, &mut len as *mut _ as usize, 0],
    );
    (r == 0).then_some(v)
}

/// Anonymous private mapping (for scratch memory outside the hot path).
pub fn mmap_anon(len: usize) -> Option<*mut u8> {
    let r = sc(
        libc::SYS_mmap,
        [
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize,
            usize::MAX,
            0,
        ],
    );
    (r >= 0).then_some(r as *mut u8)
}

pub fn munmap(ptr: *mut u8, len: usize) {
    sc(libc::SYS_munmap, [ptr as usize, len, 0, 0, 0, 0]);
}

/// Maps `len` bytes of `fd` shared, read-write, at `at` if that range is free (else anywhere).
pub fn mmap_shared(fd: c_int, len: usize, at: usize) -> Option<*mut u8> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as usize;
    let fixed =
        sc(libc::SYS_mmap, [at, len, prot, (libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE) as usize, fd as usize, 0]);
    if fixed == at as isize {
        return Some(fixed as *mut u8);
    }
    let r = sc(libc::SYS_mmap, [0, len, prot, libc::MAP_SHARED as usize, fd as usize, 0]);
    (r >= 0).then_some(r as *mut u8)
}

pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as _, tv_nsec: (ns % 1_000_000_000) as _ };
    sc(libc::SYS_nanosleep, [&ts as *const _ as usize, 0, 0, 0, 0, 0]);
}

/// The calling thread's blocked-signal mask.
pub fn current_sigmask() -> u64 {
    let mut old: u64 = 0;
    sc(libc::SYS_rt_sigprocmask, [libc::SIG_BLOCK as usize, 0, &mut old as *mut _ as usize, 8, 0, 0]);
    old
}

pub fn set_sigmask(mask: u64) -> u64 {
    let mut old: u64 = 0;
    sc(
        libc::SYS_rt_sigprocmask,
        [libc::SIG_SETMASK as usize, &mask as *const _ as usize, &mut old as *mut _ as usize, 8, 0, 0],
    );
    old
}

pub fn tgkill(pid: i32, tid: i32, sig: c_int) {
    sc(libc::SYS_tgkill, [pid as usize, tid as usize, sig as usize, 0, 0, 0]);
}

/// Raw prctl, for the seccomp filter.
///
/// # Safety
/// As for the prctl option used.
pub unsafe fn prctl(option: c_int, a2: usize, a3: *const c_void) -> isize {
    sc(libc::SYS_prctl, [option as usize, a2, a3 as usize, 0, 0, 0])
}

pub fn futex_wait_private(word: &core::sync::atomic::AtomicU32, expected: u32) {
    sc(
        libc::SYS_futex,
        [word.as_ptr() as usize, (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize, expected as usize, 0, 0, 0],
    );
}

pub fn futex_wake_private(word: &core::sync::atomic::AtomicU32, count: u32) {
    sc(
        libc::SYS_futex,
        [word.as_ptr() as usize, (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize, count as usize, 0, 0, 0],
    );
}

/// CLOCK_MONOTONIC in nanoseconds, through the kernel (for the shim's own timing and seeding).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    sc(libc::SYS_clock_gettime, [libc::CLOCK_MONOTONIC as usize, &mut ts as *mut _ as usize, 0, 0, 0, 0]);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
