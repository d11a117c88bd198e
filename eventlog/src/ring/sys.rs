//! Raw system calls. The shim exports hooks for libc's own wrappers (including `syscall`), so
//! code that runs inside the shim must enter the kernel directly.

use core::arch::asm;

/// Raw system call with up to six arguments; returns the kernel's result (negative errno on
/// failure).
///
/// # Safety
/// The caller must uphold the contract of system call `nr` for these arguments (valid pointers,
/// lengths that match the buffers).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall instruction clobbers rcx and r11 only; arguments follow the
    // kernel ABI; the caller upholds the call's own contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Raw system call with up to six arguments (aarch64).
///
/// # Safety
/// As for the x86_64 variant.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: svc #0 with the call number in x8 and arguments in x0-x5, per the kernel ABI.
    unsafe {
        asm!(
            "svc #0",
            in("x8") nr,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

const FUTEX_WAIT: usize = 0;
const FUTEX_WAKE: usize = 1;

/// Sleeps while `*word == expected`, at most `timeout_ns` (0: no limit). Shared (not private)
/// futex: the word lives in memory mapped by several processes.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    let ts_ptr = if timeout_ns == 0 { 0 } else { &ts as *const _ as usize };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call and `ts_ptr` is null or
    // points to a live timespec; FUTEX_WAIT only reads both.
    unsafe {
        syscall6(libc::SYS_futex, [word.as_ptr() as usize, FUTEX_WAIT, expected as usize, ts_ptr, 0, 0]);
    }
}

/// Wakes up to `count` waiters sleeping on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32, count: u32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key.
    unsafe {
        syscall6(libc::SYS_futex, [word.as_ptr() as usize, FUTEX_WAKE, count as usize, 0, 0, 0]);
    }
}
