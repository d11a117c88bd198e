//! `syscall()`: the numbers of calls the shim records are routed to their hooks, so a program
//! that reaches them through the generic wrapper is recorded the same way. io_uring numbers are
//! trapped by the seccomp filter wherever they come from.

use super::{dir, fd, identity, io, poll, process, random, stat, time};
use crate::real;
use crate::sys;
use core::ffi::{c_int, c_long, c_uint, c_void};

#[no_mangle]
pub unsafe extern "C" fn syscall(
    nr: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    // SAFETY: the program's arguments, reinterpreted as the call numbered `nr` defines them.
    unsafe {
        match nr {
            libc::SYS_read => io::read(a1 as c_int, a2 as *mut c_void, a3 as usize) as c_long,
            libc::SYS_write => io::write(a1 as c_int, a2 as *const c_void, a3 as usize) as c_long,
            libc::SYS_getrandom => random::getrandom(a1 as *mut c_void, a2 as usize, a3 as c_uint) as c_long,
            libc::SYS_getpid => identity::getpid() as c_long,
            libc::SYS_getppid => identity::getppid() as c_long,
            libc::SYS_gettid => identity::gettid() as c_long,
            libc::SYS_clock_gettime => time::clock_gettime(a1 as libc::clockid_t, a2 as *mut libc::timespec) as c_long,
            libc::SYS_gettimeofday => time::gettimeofday(a1 as *mut libc::timeval, a2 as *mut c_void) as c_long,
            libc::SYS_nanosleep => time::nanosleep(a1 as *const libc::timespec, a2 as *mut libc::timespec) as c_long,
            libc::SYS_clock_nanosleep => {
                let r = time::clock_nanosleep(
                    a1 as libc::clockid_t,
                    a2 as c_int,
                    a3 as *const libc::timespec,
                    a4 as *mut libc::timespec,
                );
                if r != 0 {
                    sys::set_errno(r);
                    -1
                } else {
                    0
                }
            }
            libc::SYS_open => fd::open(a1 as *const _, a2 as c_int, a3 as c_uint) as c_long,
            libc::SYS_openat => fd::openat(a1 as c_int, a2 as *const _, a3 as c_int, a4 as c_uint) as c_long,
            libc::SYS_close => fd::close(a1 as c_int) as c_long,
            libc::SYS_dup => fd::dup(a1 as c_int) as c_long,
            libc::SYS_dup3 => fd::dup3(a1 as c_int, a2 as c_int, a3 as c_int) as c_long,
            libc::SYS_pipe2 => fd::pipe2(a1 as *mut c_int, a2 as c_int) as c_long,
            libc::SYS_socket => fd::socket(a1 as c_int, a2 as c_int, a3 as c_int) as c_long,
            libc::SYS_accept4 => fd::accept4(a1 as c_int, a2 as *mut _, a3 as *mut _, a4 as c_int) as c_long,
            libc::SYS_eventfd2 => fd::eventfd(a1 as c_uint, a2 as c_int) as c_long,
            libc::SYS_stat => stat::stat(a1 as *const _, a2 as *mut _) as c_long,
            libc::SYS_lstat => stat::lstat(a1 as *const _, a2 as *mut _) as c_long,
            libc::SYS_fstat => stat::fstat(a1 as c_int, a2 as *mut _) as c_long,
            libc::SYS_newfstatat => stat::fstatat(a1 as c_int, a2 as *const _, a3 as *mut _, a4 as c_int) as c_long,
            libc::SYS_statx => {
                stat::statx(a1 as c_int, a2 as *const _, a3 as c_int, a4 as c_uint, a5 as *mut _) as c_long
            }
            libc::SYS_getdents64 => dir::getdents64(a1 as c_int, a2 as *mut c_void, a3 as usize) as c_long,
            libc::SYS_getdents => dir::getdents(a1 as c_int, a2 as *mut c_void, a3 as usize),
            libc::SYS_epoll_ctl => poll::epoll_ctl(a1 as c_int, a2 as c_int, a3 as c_int, a4 as *mut _) as c_long,
            libc::SYS_epoll_wait => poll::epoll_wait(a1 as c_int, a2 as *mut _, a3 as c_int, a4 as c_int) as c_long,
            libc::SYS_wait4 => process::wait4(a1 as c_int, a2 as *mut c_int, a3 as c_int, a4 as *mut _) as c_long,
            // The kernel's waitid also takes a rusage, which the library call does not have.
            libc::SYS_waitid if a5 == 0 => {
                process::waitid(a1 as libc::idtype_t, a2 as libc::id_t, a3 as *mut _, a4 as c_int) as c_long
            }
            _ => real::syscall(nr, a1, a2, a3, a4, a5, a6),
        }
    }
}
