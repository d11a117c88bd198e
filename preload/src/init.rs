//! The constructor: runs in every process image the program becomes, before `main`.

use crate::hooks::process::{PRELOAD_LEN, PRELOAD_PATH};
use crate::msg::{fatal, parse_decimal, report, write_decimal};
use crate::state::{self, Ev, Hook};
use crate::{fdtable, real, seccomp, sys};
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicU32, Ordering};
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
    let mut s = Settings { shm_fd: -1, mode: state::MODE_OFF, lpid: 0, owner: core::ptr::null_mut(), owner_pid: 0 };
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
                    b"replay" => state::MODE_REPLAY,
                    b"live" => state::MODE_LIVE,
                    other => fatal!("unknown {}={}", env::MODE, core::str::from_utf8(other).unwrap_or("?")),
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

/// Where the shim maps its shared region: far from where the program's own mappings go (the
/// heap grows up from the executable, mappings grow down from below the stack). A region at a
/// fixed place leaves the program's memory layout the same whatever the region's size, so a
/// primary (recording rings) and a backup (replay feed) lay out the program's memory alike.
const REGION_ADDRESS: usize = 0x5a00_0000_0000;

fn attach(fd: c_int) -> Region {
    let Some(st) = sys::fstat(fd) else {
        fatal!("descriptor {fd} ({}) is not open; was the program started by tandem?", env::SHM_FD)
    };
    let len = st.st_size as usize;
    let Some(base) = sys::mmap_shared(fd, len, REGION_ADDRESS) else {
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
    // SAFETY: the loader passes the process environment to init_array functions.
    unsafe { start(envp) };
    // Here, not in `start`: a lookup that fails allocates (dlerror's text), which `start` must
    // not, as it can run inside an allocator's first call.
    crate::hooks::alloc::resolve();
}

extern "C" {
    static environ: *const *const c_char;
}

/// Other libraries' constructors can run before ours, and call hooked functions (an allocator
/// reading the clock as it sets itself up). The first such call starts the shim then, so the
/// process's every call is recorded or replayed, not only those after our constructor.
#[cold]
pub fn start_early() {
    // SAFETY: libc's `environ` is set before any constructor runs.
    unsafe { start(environ) };
}

/// 0: not started; 1: starting; 2: done.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// Whether nothing has started the shim yet in this process image.
#[inline(always)]
pub fn not_started() -> bool {
    STARTED.load(Ordering::Relaxed) == 0
}

/// Starts the shim in this process image, once. Allocates nothing and takes no locks of the
/// program's: it may run inside another library's constructor, even inside its allocator.
///
/// # Safety
/// `envp` is the process's NULL-terminated environment.
unsafe fn start(envp: *const *const c_char) {
    if STARTED.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    real::resolve_all();
    // SAFETY: per the caller.
    let Some(s) = (unsafe { settings(envp) }) else {
        STARTED.store(2, Ordering::Release);
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
                *s.owner.add(i) = if i + n >= env::OWNER_WIDTH { digits[i + n - env::OWNER_WIDTH] } else { b'0' };
            }
        }
    }
    state::SHM_FD.store(s.shm_fd, Ordering::Relaxed);
    state::LPID.store(lpid, Ordering::Relaxed);
    state::set_region(region);
    fdtable::set_process(pid);
    fdtable::set(s.shm_fd, FdKind::Shim);
    let launched = ids::LogicalPid(lpid) == ids::FIRST_PID && s.owner_pid == 0;
    if launched {
        fdtable::note_outside_pipes();
    }
    // The standard descriptors are known from the start.
    for fd in 0..3 {
        fdtable::kind(fd);
    }
    remember_own_path();
    if launched && !seccomp::install_filter() {
        report!("could not install the io_uring filter; io_uring calls will not be seen");
    }
    seccomp::install_handler();
    // Test and debugging knobs come through the region, not the environment: the program's
    // environment must be the same on the primary and its backups.
    state::JITTER_NS.store(region.header().jitter_us.load(Ordering::Relaxed) as u64 * 1000, Ordering::Relaxed);
    crate::replay::TRACE.store(region.header().trace.load(Ordering::Relaxed) != 0, Ordering::Relaxed);
    state::MODE.store(s.mode, Ordering::Release);
    if let Some(feed) = region.feed() {
        // After exec, the old image's threads are gone: drop their slots before taking ours.
        crate::replay::drop_stale_threads(&feed, pid);
    }
    state::ctx().start(ids::MAIN_TID.0);
    STARTED.store(2, Ordering::Release);
    if unseen_spawn {
        if let Some(hook) = Hook::enter() {
            match hook.turn(Call::ProcessStart) {
                Some(t) => t.done(),
                None => {
                    let ev = Ev::new(Call::ProcessStart).result(pid as i64).aux(s.lpid as u64, sys::getppid() as u64);
                    hook.emit(ev, &[]);
                }
            }
        }
    }
}
