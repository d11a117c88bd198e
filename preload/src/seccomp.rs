//! io_uring moves I/O out of sight of any call interposer, so under the shim it does not exist:
//! a seccomp filter (installed once, inherited by every descendant) traps `io_uring_setup`,
//! `io_uring_enter` and `io_uring_register`; the SIGSYS handler makes them fail with ENOSYS and
//! records the attempt, whether it came through libc's `syscall()` or inline assembly.

use crate::state::{Ev, Hook};
use crate::sys;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use eventlog::Call;

static OWNS_SIGSYS: AtomicBool = AtomicBool::new(false);
/// The program's own SIGSYS handler and flags, for SIGSYS that is not ours.
static PROGRAM_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PROGRAM_FLAGS: AtomicU64 = AtomicU64::new(0);

const IO_URING_SETUP: u32 = 425;
const IO_URING_ENTER: u32 = 426;
const IO_URING_REGISTER: u32 = 427;
const SYS_SECCOMP: c_int = 1;

pub fn owns_sigsys() -> bool {
    OWNS_SIGSYS.load(Ordering::Relaxed)
}

/// Installs the filter for this process and all its descendants. Returns false if the kernel
/// refused (the program then runs without it, and io_uring stays invisible).
#[cfg(target_arch = "x86_64")]
pub fn install_filter() -> bool {
    use libc::{sock_filter, sock_fprog, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_TRAP: u32 = 0x0003_0000;
    let stmt = |code: u32, k: u32| sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt, jf, k };
    let filter = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        jeq(AUDIT_ARCH_X86_64, 0, 5),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jeq(IO_URING_SETUP, 3, 0),
        jeq(IO_URING_ENTER, 2, 0),
        jeq(IO_URING_REGISTER, 1, 0),
        stmt(BPF_RET | BPF_K, RET_ALLOW),
        stmt(BPF_RET | BPF_K, RET_TRAP),
    ];
    let prog = sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut sock_filter };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes no pointer; PR_SET_SECCOMP reads `prog`, which points to
    // the live `filter` array for the duration of the call.
    unsafe {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, core::ptr::null()) == 0
            && sys::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as usize, &prog as *const _ as *const c_void)
                == 0
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn install_filter() -> bool {
    false
}

/// Installs our SIGSYS handler in this process image (handlers do not survive exec).
pub fn install_handler() {
    // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is valid.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        if crate::real::sigaction(libc::SIGSYS, &sa, core::ptr::null_mut()) == 0 {
            OWNS_SIGSYS.store(true, Ordering::Relaxed);
        }
    }
}

/// `sigaction(SIGSYS, ...)` by the program: keep our handler, remember theirs.
///
/// # Safety
/// As for sigaction(2).
pub unsafe fn program_sigsys_action(act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: the caller vouches for the pointers.
    unsafe {
        if !old.is_null() {
            *old = core::mem::zeroed();
            (*old).sa_sigaction = PROGRAM_HANDLER.load(Ordering::Relaxed);
            (*old).sa_flags = PROGRAM_FLAGS.load(Ordering::Relaxed) as c_int;
        }
        if !act.is_null() {
            PROGRAM_HANDLER.store((*act).sa_sigaction, Ordering::Relaxed);
            PROGRAM_FLAGS.store((*act).sa_flags as u64, Ordering::Relaxed);
        }
    }
    0
}

extern "C" fn on_sigsys(sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    if info.is_null() || uctx.is_null() {
        return;
    }
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an SA_SIGINFO handler. For
    // SIGSYS the syscall number is the int at byte 24 of siginfo (after si_call_addr).
    let (code, nr) = unsafe { ((*info).si_code, *((info as *const u8).add(24) as *const c_int)) };
    if code != SYS_SECCOMP {
        let handler = PROGRAM_HANDLER.load(Ordering::Relaxed);
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            // SAFETY: the program's handler, installed with SA_SIGINFO or not as its flags say.
            unsafe {
                if PROGRAM_FLAGS.load(Ordering::Relaxed) & libc::SA_SIGINFO as u64 != 0 {
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = core::mem::transmute(handler);
                    f(sig, info, uctx);
                } else {
                    let f: extern "C" fn(c_int) = core::mem::transmute(handler);
                    f(sig);
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: on x86_64 the interrupted context's RAX is the syscall's return value.
    unsafe {
        let uc = uctx as *mut libc::ucontext_t;
        (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::ENOSYS as i64);
    }
    if let Some(hook) = Hook::enter() {
        match hook.turn(Call::IoUringSetup) {
            Some(t) => t.expect("the system call", t.header().aux[0] as i64, nr as i64),
            None => hook.emit(Ev::new(Call::IoUringSetup).failed(libc::ENOSYS).aux(nr as u64, 0), &[]),
        }
        crate::state::leave_without_delivery(hook);
    }
}
