//! The constructor: runs in every process image the program becomes, before `main`.

use crate::hooks::process::{PRELOAD_LEN, PRELOAD_PATH};
use crate::msg::{fatal, parse_decimal, report, write_decimal};
use crate::state::{self, Ev, Hook};
use crate::{fdtable, real, seccomp, sys};
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::Ordering;
use eventlog::ring::Region;
use eventlog::{env, ids, Call, FdKind};

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = construct;

/// What the agent (or the exec'ing image) told this image.
struct Settings {
    shm_fd: c_int,
    mode: u32,
    lpid: u32,
    /// The owner field's digits, patched in place with our pid.
    owner: *mut u8,
    owner_pid: u64,
}

/// Reads the `TANDEM_*` variables; `None` when this process was not launched by tandem.
///
/// # Safety
/// `envp` is the process's NULL-terminated environment.
unsafe fn settings(envp: *const *const c_char) -> Option<Settings> {
    let mut s = Settings {
        shm_fd: -1,
        mode: state::MODE_OFF,
        lpid: 0,
        owner: core::ptr::null_mut(),
        owner_pid: 0,
    };
    let mut i = 0;
    // SAFETY: per the caller.
    unsafe {
        while !envp.is_null() && !(*envp.add(i)).is_null() {
            let entry = *envp.add(i);
            let e = crate::hooks::cstr(entry, 4096);
            i += 1;
            let Some(eq) = e.iter().position(|&c| c == b'=') else {
                continue;
            };
            let (name, value) = (&e[..eq], &e[eq + 1..]);
            if name == env::SHM_FD.as_bytes() {
                s.shm_fd = parse_decimal(value).map_or(-1, |v| v as c_int);
            } else if name == env::MODE.as_bytes() {
                s.mode = match value {
                    b"record" => state::MODE_RECORD,
                    other => fatal!(
                        "unknown {}={}",
                        env::MODE,
                        core::str::from_utf8(other).unwrap_or("?")
                    ),
                };
            } else if name == env::LPID.as_bytes() {
                s.lpid = parse_decimal(value).unwrap_or(0) as u32;
            } else if name == env::LPID_OWNER.as_bytes() && value.len() == env::OWNER_WIDTH {
                s.owner = (entry as *mut u8).add(eq + 1);
                s.owner_pid = parse_decimal(value).unwrap_or(0);
            }
        }
    }
    (s.shm_fd >= 0 && s.mode != state::MODE_OFF).then_some(s)
}

fn attach(fd: c_int) -> Region {
    let Some(st) = sys::fstat(fd) else {
        fatal!(
            "descriptor {fd} ({}) is not open; was the program started by tandem?",
            env::SHM_FD
        )
    };
    let len = st.st_size as usize;
    let Some(base) = sys::mmap_shared(fd, len) else {
        fatal!("cannot map the shared event region ({len} bytes)")
    };
    // SAFETY: `base` is a fresh shared mapping of `len` bytes that stays mapped for the life of the
    // process image.
    match unsafe { Region::attach(base, len) } {
        Ok(r) => r,
        Err(e) => fatal!("{e}; libtandem.so and tandem come from different builds"),
    }
}

/// Remembers where this library lives, for `LD_PRELOAD` in rebuilt environments.
fn remember_own_path() {
    // SAFETY: dladdr fills `info` for an address inside this library; dli_fname stays valid.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(construct as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return;
        }
        let p = crate::hooks::cstr(info.dli_fname, 1023);
        let dst = &mut *core::ptr::addr_of_mut!(PRELOAD_PATH);
        dst[..p.len()].copy_from_slice(p);
        PRELOAD_LEN.store(p.len(), Ordering::Release);
    }
}

extern "C" fn construct(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) {
    real::resolve_all();
    // SAFETY: the loader passes the process environment to init_array functions.
    let Some(s) = (unsafe { settings(envp) }) else {
        return;
    };
    let pid = sys::getpid();
    let region = attach(s.shm_fd);
    // Whose logical pid is this? The launch and hooked spawns leave the owner zero; exec keeps
    // our own pid there. Anything else was inherited through a spawn the shim did not see.
    let (lpid, unseen_spawn) = match s.owner_pid {
        0 => (s.lpid, false),
        o if o == pid as u64 => (s.lpid, false),
        _ => (region.take_lpid(), true),
    };
    if !s.owner.is_null() {
        let mut digits = [0u8; 20];
        let n = write_decimal(&mut digits, pid as i64);
        // SAFETY: `owner` points at the OWNER_WIDTH digits of our own environment entry.
        unsafe {
            for i in 0..env::OWNER_WIDTH {
                *s.owner.add(i) = if i + n >= env::OWNER_WIDTH {
                    digits[i + n - env::OWNER_WIDTH]
                } else {
                    b'0'
                };
            }
        }
    }
    state::SHM_FD.store(s.shm_fd, Ordering::Relaxed);
    state::LPID.store(lpid, Ordering::Relaxed);
    state::set_region(region);
    fdtable::set_process(pid);
    fdtable::set(s.shm_fd, FdKind::Shim);
    remember_own_path();
    if lpid == ids::FIRST_PID && s.owner_pid == 0 && !seccomp::install_filter() {
        report!("could not install the io_uring filter; io_uring calls will not be seen");
    }
    seccomp::install_handler();
    state::ctx().start(ids::MAIN_TID);
    state::MODE.store(s.mode, Ordering::Release);
    if unseen_spawn {
        if let Some(hook) = Hook::enter() {
            let ev = Ev::new(Call::ProcessStart)
                .result(pid as i64)
                .aux(s.lpid as u64, sys::getppid() as u64);
            hook.emit(ev, &[]);
        }
    }
}
