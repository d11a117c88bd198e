//! Processes: fork, exec, spawn, exit, wait (`system` and `popen` are in `shell`).
//!
//! A child's logical pid is handed out by the fork or spawn event that creates it (recorded in
//! aux[0]), so a backup creates the same ids. exec keeps the logical pid; the shim survives it by
//! putting `LD_PRELOAD` and the `TANDEM_*` variables back into whatever environment the program
//! passes.

use super::{bytes, cstr, PATH_MAX_RECORDED};
use crate::msg::write_decimal;
use crate::real;
use crate::replay::Turn;
use crate::state::{self, Ev, Hook, LPID};
use crate::sys;
use core::ffi::{c_char, c_int};
use core::sync::atomic::Ordering;
use eventlog::digest::digest_parts;
use eventlog::{env, Call};
use libc::{id_t, idtype_t, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t, rusage, siginfo_t};

extern "C" {
    static environ: *const *const c_char;
}

pub(super) fn current_environ() -> *const *const c_char {
    // SAFETY: reading the libc global; it is only replaced, never freed, while we read it.
    unsafe { environ }
}

/// The shim's own path, for `LD_PRELOAD` in the environments it rebuilds. Set by the constructor.
pub static mut PRELOAD_PATH: [u8; 1024] = [0; 1024];
pub static PRELOAD_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn preload_path() -> &'static [u8] {
    let n = PRELOAD_LEN.load(Ordering::Acquire);
    // SAFETY: written once by the constructor before PRELOAD_LEN is published.
    unsafe { &(&*core::ptr::addr_of!(PRELOAD_PATH))[..n] }
}

/// An environment rebuilt for exec/spawn, in one anonymous mapping: the pointer array, then the
/// strings the shim adds. Entries of the original environment are reused in place.
pub(super) struct EnvBlock {
    base: *mut u8,
    len: usize,
}

impl EnvBlock {
    /// `base` minus any `TANDEM_*`/`LD_PRELOAD`, plus ours for logical pid `lpid` owned by
    /// `owner` (0: whichever process starts with it).
    ///
    /// # Safety
    /// `base` is null or a valid NULL-terminated environment array.
    pub(super) unsafe fn build(base: *const *const c_char, lpid: u32, owner: i32) -> Option<EnvBlock> {
        // SAFETY: per the caller; we only read entries up to the terminating NULL.
        unsafe {
            let mut n = 0usize;
            let mut their_preload: &[u8] = &[];
            while !base.is_null() && !(*base.add(n)).is_null() {
                let e = cstr(*base.add(n), 1 << 20);
                if let Some(v) = e.strip_prefix(b"LD_PRELOAD=") {
                    their_preload = v;
                }
                n += 1;
            }
            let ours = preload_path();
            let strings = 11 + ours.len() + 1 + their_preload.len() + 1 + 64 * 5;
            let len = (n + 7) * 8 + strings;
            let block = EnvBlock { base: sys::mmap_anon(len)?, len };
            let ptrs = block.base as *mut *const c_char;
            let mut w = Writer { at: block.base.add((n + 7) * 8), end: block.base.add(len) };
            let mut k = 0;
            for i in 0..n {
                let e = *base.add(i);
                let s = cstr(e, 64);
                if s.starts_with(b"TANDEM_") || s.starts_with(b"LD_PRELOAD=") {
                    continue;
                }
                *ptrs.add(k) = e;
                k += 1;
            }
            let mut num = [0u8; 20];
            // LD_PRELOAD: ours first, then whatever the program asked for.
            let already = their_preload.split(|&c| c == b' ' || c == b':').any(|p| p == ours);
            *ptrs.add(k) = w.entry(&[
                b"LD_PRELOAD=",
                ours,
                if already || their_preload.is_empty() { b"" } else { b" " },
                if already { b"" } else { their_preload },
            ]);
            k += 1;
            let fd = state::SHM_FD.load(Ordering::Relaxed);
            let nlen = write_decimal(&mut num, fd as i64);
            *ptrs.add(k) = w.entry(&[env::SHM_FD.as_bytes(), b"=", &num[..nlen]]);
            k += 1;
            *ptrs.add(k) = w.entry(&[env::MODE.as_bytes(), b"=", state::mode_name()]);
            k += 1;
            let nlen = write_decimal(&mut num, lpid as i64);
            *ptrs.add(k) = w.entry(&[env::LPID.as_bytes(), b"=", &num[..nlen]]);
            k += 1;
            let mut owner_digits = [b'0'; env::OWNER_WIDTH];
            let nlen = write_decimal(&mut num, owner as i64);
            owner_digits[env::OWNER_WIDTH - nlen..].copy_from_slice(&num[..nlen]);
            *ptrs.add(k) = w.entry(&[env::LPID_OWNER.as_bytes(), b"=", &owner_digits]);
            k += 1;
            *ptrs.add(k) = core::ptr::null();
            Some(block)
        }
    }

    pub(super) fn envp(&self) -> *const *const c_char {
        self.base as *const *const c_char
    }
}

impl Drop for EnvBlock {
    fn drop(&mut self) {
        sys::munmap(self.base, self.len);
    }
}

struct Writer {
    at: *mut u8,
    end: *mut u8,
}

impl Writer {
    /// Writes the concatenation of `parts` and a NUL; returns its start.
    ///
    /// # Safety
    /// The block was sized for everything written into it.
    unsafe fn entry(&mut self, parts: &[&[u8]]) -> *const c_char {
        let start = self.at;
        for p in parts {
            // SAFETY: `build` sized the block for these strings.
            unsafe {
                debug_assert!(self.at.add(p.len()) < self.end);
                core::ptr::copy_nonoverlapping(p.as_ptr(), self.at, p.len());
                self.at = self.at.add(p.len());
            }
        }
        // SAFETY: as above; one byte for the NUL.
        unsafe {
            *self.at = 0;
            self.at = self.at.add(1);
        }
        start as *const c_char
    }
}

/// Digest of a program path and its argument vector.
///
/// # Safety
/// `argv` is null or a valid NULL-terminated array.
unsafe fn exec_digest(path: &[u8], argv: *const *const c_char) -> u64 {
    let mut i = 0;
    let args = core::iter::from_fn(|| {
        // SAFETY: per the caller.
        unsafe {
            if argv.is_null() || (*argv.add(i)).is_null() {
                return None;
            }
            let a = cstr(*argv.add(i), 1 << 16);
            i += 1;
            Some(a)
        }
    });
    digest_parts(core::iter::once(path).chain(args))
}

/// Every exec goes through here: record, close the ring, exec with our environment; if the exec
/// fails, take a ring again and record the failure.
///
/// # Safety
/// `path` and `argv` as for execve; `envp` null or valid.
unsafe fn exec_with(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    real: impl FnOnce(*const *const c_char) -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else { return real(envp) };
    // SAFETY: per the caller.
    let block = unsafe { EnvBlock::build(envp, LPID.load(Ordering::Relaxed), sys::getpid()) };
    let env_to_pass = block.as_ref().map_or(envp, EnvBlock::envp);
    // SAFETY: per the caller.
    let p = unsafe { cstr(path, PATH_MAX_RECORDED) };
    // SAFETY: per the caller.
    let d = unsafe { exec_digest(p, argv) };
    match hook.turn(Call::Execve) {
        Some(t) => {
            t.expect_digest(d);
            t.done();
        }
        None => hook.emit(Ev::new(Call::Execve).digest(d), &[p]),
    }
    let ctx = hook.ctx();
    ctx.finish();
    let r = real(env_to_pass);
    let errno = sys::errno();
    ctx.start(ctx.ltid.get());
    match hook.turn(Call::ExecFailed) {
        Some(t) => t.expect("errno", t.errno() as i64, errno as i64),
        None => hook.emit(Ev::new(Call::ExecFailed).failed(errno), &[]),
    }
    drop(block);
    sys::set_errno(errno);
    r
}

#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { exec_with(path, argv, envp, |e| real::execve(path, argv, e)) }
}

#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: as above.
    unsafe { exec_with(path, argv, current_environ(), |e| real::execve(path, argv, e)) }
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: as above; libc's execvpe does the PATH search with the environment we give it.
    unsafe { exec_with(file, argv, envp, |e| real::execvpe(file, argv, e)) }
}

#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: as above.
    unsafe { exec_with(file, argv, current_environ(), |e| real::execvpe(file, argv, e)) }
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: as above; the path recorded is empty (the program is named by its descriptor).
    unsafe { exec_with(c"".as_ptr(), argv, envp, |e| real::fexecve(fd, argv, e)) }
}

/// execl/execlp/execle: the variadic argument list, spilled by the trampolines below into an
/// array (`argv`); for execle the environment follows argv's NULL.
#[cfg(target_arch = "x86_64")]
mod variadic_exec {
    use super::*;

    /// # Safety
    /// `argv` is the spilled, NULL-terminated argument list.
    unsafe extern "C" fn execl_impl(path: *const c_char, argv: *const *const c_char) -> c_int {
        // SAFETY: per the caller.
        unsafe { execv(path, argv) }
    }

    /// # Safety
    /// As above.
    unsafe extern "C" fn execlp_impl(file: *const c_char, argv: *const *const c_char) -> c_int {
        // SAFETY: per the caller.
        unsafe { execvp(file, argv) }
    }

    /// # Safety
    /// As above, with the environment pointer right after the NULL.
    unsafe extern "C" fn execle_impl(path: *const c_char, argv: *const *const c_char) -> c_int {
        // SAFETY: per the caller.
        unsafe {
            let mut i = 0;
            while !(*argv.add(i)).is_null() {
                i += 1;
            }
            let envp = *argv.add(i + 1) as *const *const c_char;
            execve(path, argv, envp)
        }
    }

    // Each trampoline turns `f(path, arg0, ...)` into `impl(path, &arg0)`: it takes the return
    // address off the stack, pushes the five register-passed arguments (rsi, rdx, rcx, r8, r9) so
    // they sit directly below the caller's stack-passed ones, calls the implementation with a
    // pointer to that array, then restores the stack and returns.
    macro_rules! spill_trampoline {
        ($name:ident => $imp:ident) => {
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn $name(path: *const c_char, arg0: *const c_char) -> c_int {
                core::arch::naked_asm!(
                    "pop rax",
                    "push r9",
                    "push r8",
                    "push rcx",
                    "push rdx",
                    "push rsi",
                    "mov rsi, rsp",
                    "push rax",
                    "call {imp}",
                    "pop rcx",
                    "add rsp, 32",
                    "mov qword ptr [rsp], rcx",
                    "ret",
                    imp = sym $imp,
                )
            }
        };
    }

    spill_trampoline!(execl => execl_impl);
    spill_trampoline!(execlp => execlp_impl);
    spill_trampoline!(execle => execle_impl);
}

/// posix_spawn/posix_spawnp: the child is a new process with the logical pid in aux[0].
///
/// # Safety
/// As for posix_spawn(3).
unsafe fn spawn_with(
    pid: *mut pid_t,
    envp: *const *mut c_char,
    real: impl FnOnce(*const *mut c_char) -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else { return real(envp) };
    let Some(region) = state::region() else { return real(envp) };
    let base = if envp.is_null() { current_environ() } else { envp as *const *const c_char };
    let spawn = |child: u32| {
        // SAFETY: per the caller.
        let block = unsafe { EnvBlock::build(base, child, 0) };
        let r = real(block.as_ref().map_or(envp, |b| b.envp() as *const *mut c_char));
        // SAFETY: on success the real call stored the child's pid.
        let child_pid = if r == 0 && !pid.is_null() { unsafe { *pid } } else { -1 };
        (r, child_pid)
    };
    if let Some(t) = hook.turn(Call::PosixSpawn) {
        let (r, here) = spawn(t.header().aux[0] as u32);
        t.expect_status(r);
        crate::replay::remember_child(t.header().aux[1] as i64 as pid_t, here);
        if r == 0 && !pid.is_null() {
            // SAFETY: the program's pid slot; it sees the primary's child pid.
            unsafe { *pid = t.header().aux[1] as i64 as pid_t };
        }
        return r;
    }
    let child = region.take_lpid();
    let seq = hook.reserve();
    let (r, child_pid) = spawn(child);
    hook.emit_at(seq, Ev::new(Call::PosixSpawn).status(r).aux(child as u64, child_pid as i64 as u64), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { spawn_with(pid, envp, |e| real::posix_spawn(pid, path, fa, attr, argv, e)) }
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: as above.
    unsafe { spawn_with(pid, envp, |e| real::posix_spawnp(pid, file, fa, attr, argv, e)) }
}

#[no_mangle]
pub extern "C" fn fork() -> pid_t {
    let Some(hook) = Hook::enter() else {
        // SAFETY: plain fork.
        return unsafe { real::fork() };
    };
    let Some(region) = state::region() else {
        // SAFETY: as above.
        return unsafe { real::fork() };
    };
    if let Some(t) = hook.turn(Call::Fork) {
        let child = t.header().aux[0] as u32;
        // SAFETY: as above.
        let here = unsafe { real::fork() };
        if here == 0 {
            // The turn belongs to the parent, which consumes it.
            core::mem::forget(t);
            state::become_child(child);
            return 0;
        }
        if (here < 0) != (t.result() < 0) {
            t.expect_outcome(here as i64);
        }
        crate::replay::remember_child(t.result() as pid_t, here);
        return t.ret() as pid_t;
    }
    let child = region.take_lpid();
    let seq = hook.reserve();
    // SAFETY: as above.
    let pid = unsafe { real::fork() };
    if pid == 0 {
        state::become_child(child);
        return 0;
    }
    hook.emit_at(seq, Ev::new(Call::Fork).result(pid as i64).aux(child as u64, 0), &[]);
    pid
}

/// vfork's shared-memory child cannot run the shim's bookkeeping; a real fork is equivalent for
/// every program that uses vfork correctly (exec or _exit right away).
#[no_mangle]
pub extern "C" fn vfork() -> pid_t {
    fork()
}

/// An exit is an event; a backup must exit with the primary's status.
fn record_exit(hook: &Hook, call: Call, status: c_int) {
    match hook.turn(call) {
        Some(t) => t.expect("the exit status", t.header().aux[0] as i32 as i64, status as i64),
        None => hook.emit(Ev::new(call).aux(status as u64, 0), &[]),
    }
}

#[no_mangle]
pub extern "C" fn exit(status: c_int) -> ! {
    if let Some(hook) = Hook::enter() {
        record_exit(&hook, Call::Exit, status);
    }
    // SAFETY: never returns; atexit handlers run (and are recorded) as usual.
    unsafe { real::exit(status) };
    super::thread::unreachable_exit()
}

#[no_mangle]
pub extern "C" fn _exit(status: c_int) -> ! {
    if let Some(hook) = Hook::enter() {
        record_exit(&hook, Call::ExitNow, status);
    }
    // SAFETY: never returns.
    unsafe { real::_exit(status) };
    super::thread::unreachable_exit()
}

#[no_mangle]
pub extern "C" fn _Exit(status: c_int) -> ! {
    _exit(status)
}

/// wait-like calls: the result is the primary's child pid, aux[0] the status; wait4's rusage is
/// the payload.
///
/// # Safety
/// `status` null or valid; `ru` null or valid.
unsafe fn wait_with(
    call: Call,
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    ru: *mut rusage,
    real: impl FnOnce() -> pid_t,
) -> pid_t {
    let Some(hook) = Hook::enter() else { return real() };
    let ru_len = core::mem::size_of::<rusage>();
    if let Some(t) = hook.turn(call) {
        let primary_child = t.result() as pid_t;
        if primary_child > 0 {
            follow_child(&t, call, "the child's status", t.header().aux[0] as u32 as i64, primary_child, |here| {
                let mut st: c_int = 0;
                let got = retry_interrupted(|| {
                    // SAFETY: waiting for our own child; `st` is a local.
                    unsafe { real::waitpid(here, &mut st, options & !libc::WNOHANG) }
                });
                (got == here).then(|| (libc::WIFEXITED(st) || libc::WIFSIGNALED(st), st as u32 as i64))
            });
            // SAFETY: the program's status and rusage pointers, as it passed them.
            unsafe {
                if !status.is_null() {
                    *status = t.header().aux[0] as u32 as c_int;
                }
                if !ru.is_null() && t.payload_len() == ru_len {
                    t.payload(0, core::slice::from_raw_parts_mut(ru as *mut u8, ru_len));
                }
            }
        }
        return t.ret() as pid_t;
    }
    let r = real();
    // SAFETY: filled on success.
    let st = if r > 0 && !status.is_null() { unsafe { *status } } else { 0 };
    let ru_len = if r > 0 && !ru.is_null() { ru_len as isize } else { 0 };
    let ev =
        Ev::new(call).result(r as i64).aux(st as u32 as u64, (pid as u32 as u64) | ((options as u32 as u64) << 32));
    // SAFETY: as above.
    hook.emit(ev, &[unsafe { bytes(ru, ru_len) }]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        wait_with(Call::Waitpid, pid, status, options, core::ptr::null_mut(), || real::waitpid(pid, status, options))
    }
}

#[no_mangle]
pub unsafe extern "C" fn wait(status: *mut c_int) -> pid_t {
    // SAFETY: as above.
    unsafe { wait_with(Call::Waitpid, -1, status, 0, core::ptr::null_mut(), || real::wait(status)) }
}

/// wait4 for any child (shells reap with it).
#[no_mangle]
pub unsafe extern "C" fn wait3(status: *mut c_int, options: c_int, ru: *mut rusage) -> pid_t {
    // SAFETY: as above.
    unsafe { wait_with(Call::Wait4, -1, status, options, ru, || real::wait3(status, options, ru)) }
}

#[no_mangle]
pub unsafe extern "C" fn wait4(pid: pid_t, status: *mut c_int, options: c_int, ru: *mut rusage) -> pid_t {
    // SAFETY: as above.
    unsafe { wait_with(Call::Wait4, pid, status, options, ru, || real::wait4(pid, status, options, ru)) }
}

/// A backup's own wait for a child the record says has changed: a signal arriving meanwhile (a
/// real one, which a backup does not deliver, but whose handler the program installed without
/// `SA_RESTART`) must not end it.
fn retry_interrupted<T: PartialEq + From<i8>>(mut wait: impl FnMut() -> T) -> T {
    loop {
        let r = wait();
        if r != T::from(-1) || sys::errno() != libc::EINTR {
            return r;
        }
    }
}

/// A backup follows the primary's wait for `primary_child`: `wait_here` waits for the same change
/// of this backup's own child (which follows its events to it) and says whether it reaped it and
/// what it saw, compared with `recorded`. A reaped child's entry is free for the next child.
fn follow_child(
    t: &Turn,
    call: Call,
    what: &str,
    recorded: i64,
    primary_child: pid_t,
    wait_here: impl FnOnce(pid_t) -> Option<(bool, i64)>,
) {
    let Some(here) = crate::replay::child_here(primary_child) else {
        t.diverge(format_args!(
            "{}: the primary waited for child {primary_child}, which this backup never started",
            call.name()
        ))
    };
    let seen = wait_here(here);
    if let Some((true, _)) = seen {
        crate::replay::forget_child(primary_child);
    }
    t.expect(what, recorded, seen.map_or(-1, |(_, outcome)| outcome));
}

/// waitid: the result is 0 or -1, the payload the siginfo the primary got (whose `si_pid` is
/// the primary's child), aux[0] its code and status. Recorded through a siginfo of the shim's,
/// so the child is known even when the program passes none.
#[no_mangle]
pub unsafe extern "C" fn waitid(idtype: idtype_t, id: id_t, info: *mut siginfo_t, options: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    let Some(hook) = Hook::enter() else { return unsafe { real::waitid(idtype, id, info, options) } };
    let info_len = core::mem::size_of::<siginfo_t>();
    // SAFETY: siginfo_t is plain data; all zeroes is "no child" (si_pid 0).
    let mut got: siginfo_t = unsafe { core::mem::zeroed() };
    if let Some(t) = hook.turn(Call::Waitid) {
        if t.payload_len() == info_len {
            // SAFETY: `got` is `info_len` bytes of plain data.
            t.payload(0, unsafe { core::slice::from_raw_parts_mut(&mut got as *mut siginfo_t as *mut u8, info_len) });
        }
        // SAFETY: the kernel filled si_pid for every waitid that returned 0.
        let primary_child = unsafe { got.si_pid() };
        if t.result() == 0 && primary_child > 0 {
            follow_child(
                &t,
                Call::Waitid,
                "the child's code and status",
                t.header().aux[0] as i64,
                primary_child,
                |here| {
                    // SAFETY: as above.
                    let mut local: siginfo_t = unsafe { core::mem::zeroed() };
                    let r = retry_interrupted(|| {
                        // SAFETY: `local` is ours; P_PID with our own child.
                        unsafe { real::waitid(libc::P_PID, here as id_t, &mut local, options & !libc::WNOHANG) }
                    });
                    let reaped = options & libc::WNOWAIT == 0
                        && matches!(local.si_code, libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED);
                    (r == 0).then(|| (reaped, code_and_status(&local)))
                },
            );
        }
        if !info.is_null() {
            // SAFETY: the program's siginfo, as it passed it.
            unsafe { *info = got };
        }
        return t.ret() as c_int;
    }
    // SAFETY: `got` is ours.
    let r = unsafe { real::waitid(idtype, id, &mut got, options) };
    if r == 0 && !info.is_null() {
        // SAFETY: the program's siginfo, as it passed it.
        unsafe { *info = got };
    }
    let ev = Ev::new(Call::Waitid)
        .result(r as i64)
        .aux(if r == 0 { code_and_status(&got) as u64 } else { 0 }, (idtype as u64) | ((options as u32 as u64) << 32));
    // SAFETY: `got` is `info_len` bytes of plain data.
    hook.emit(ev, &[if r == 0 { unsafe { bytes(&got, info_len as isize) } } else { &[] }]);
    r
}

/// A waitid outcome as one number: the code (how the child changed) and its status.
fn code_and_status(info: &siginfo_t) -> i64 {
    // SAFETY: si_status is filled for every child state change waitid reports.
    let status = unsafe { info.si_status() };
    ((info.si_code as u32 as i64) << 32) | status as u32 as i64
}

// Sending a signal is a call like any other; a signal the program sends itself is delivered
// right after it, as without the shim. A backup sends nothing a recorded delivery will bring
// anyway: only signals the program does not handle (they end a process) and signals to its own
// children are sent for real, to this backup's processes.

/// Records (or replays) a signal sent with `send`; `to_self` says it targets this process.
fn signal_with(call: Call, target: i64, sig: c_int, to_self: bool, send: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return send() };
    if let Some(t) = hook.turn(call) {
        t.expect("the signal", t.header().aux[1] as i64, sig as i64);
        let handled = crate::signals::is_handled(sig);
        if to_self && !handled && sig != 0 {
            drop(t);
            sys::tgkill(sys::getpid(), sys::gettid(), sig);
            return 0;
        }
        if !to_self && target > 0 {
            if let Some(here) = crate::replay::child_here(target as pid_t) {
                // SAFETY: a signal to this backup's own child.
                unsafe { real::kill(here, sig) };
            }
        }
        return t.ret() as c_int;
    }
    let r = send();
    hook.emit(Ev::new(call).result(r as i64).aux(target as u64, sig as u64), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn raise(sig: c_int) -> c_int {
    // SAFETY: forwarding the program's own argument.
    signal_with(Call::Raise, 0, sig, true, || unsafe { real::raise(sig) })
}

#[no_mangle]
pub unsafe extern "C" fn kill(pid: pid_t, sig: c_int) -> c_int {
    let own = crate::replay::PRIMARY_SELF.load(Ordering::Relaxed);
    let to_self = if state::mode() == state::MODE_REPLAY { pid == own && own != 0 } else { pid == sys::getpid() };
    // SAFETY: forwarding the program's own arguments.
    signal_with(Call::Kill, pid as i64, sig, to_self, || unsafe { real::kill(pid, sig) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_kill(t: libc::pthread_t, sig: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    signal_with(Call::PthreadKill, 0, sig, true, || unsafe { real::pthread_kill(t, sig) })
}

/// The program's `main`, wrapped so that returning from it goes through the `exit` hook (libc's
/// own call to exit after main is internal and would not be seen).
static PROGRAM_MAIN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

type MainFn = extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) -> c_int;

extern "C" fn main_then_exit(argc: c_int, argv: *mut *mut c_char, envp: *mut *mut c_char) -> c_int {
    // SAFETY: set by __libc_start_main below to the program's main before it calls us.
    let main: MainFn = unsafe { core::mem::transmute(PROGRAM_MAIN.load(Ordering::Relaxed)) };
    exit(main(argc, argv, envp))
}

#[no_mangle]
pub unsafe extern "C" fn __libc_start_main(
    main: MainFn,
    argc: c_int,
    argv: *mut *mut c_char,
    init: usize,
    fini: usize,
    rtld_fini: usize,
    stack_end: usize,
) -> c_int {
    PROGRAM_MAIN.store(main as usize, Ordering::Relaxed);
    // SAFETY: forwarding the loader's arguments with our wrapper in place of main.
    unsafe { real::__libc_start_main(main_then_exit, argc, argv, init, fini, rtld_fini, stack_end) }
}
