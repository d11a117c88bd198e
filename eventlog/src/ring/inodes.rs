//! Locks that order calls on one regular file across the program's threads and processes.
//!
//! A descriptor's own lock (the shim's, per process) orders the calls made through it. Calls on
//! one file through descriptors of several processes (an inherited `O_APPEND` log) or through
//! separate opens must also take their sequence numbers in the order they really ran, or a backup
//! re-executing them in sequence order writes the file's bytes in another order. So a primary
//! holds the file's lock while such a call runs and takes its number. Files are hashed by
//! (device, inode) onto a page of lock words in the shared region; two files sharing a word only
//! wait for each other.
//!
//! A word holds its holder's OS thread id (unique across the program's processes), plus
//! [`WAITERS`] once someone sleeps on it (a shared futex: the sleepers are in several
//! processes). A waiter that is not woken for [`DEAD_CHECK_NS`] looks whether the holder's thread
//! still exists, and takes the lock over if it does not (a process killed while holding it).

use super::{sys, Region, PAGE};
use core::sync::atomic::{AtomicU32, Ordering};

/// Lock words in the table.
pub const INODE_LOCKS: usize = 1024;

/// The table of lock words: one page of the region.
#[repr(C)]
pub struct InodeLocks {
    pub words: [AtomicU32; INODE_LOCKS],
}

pub const INODE_LOCKS_LEN: usize = core::mem::size_of::<InodeLocks>();
const _: () = assert!(INODE_LOCKS_LEN == PAGE);
const _: () = assert!(INODE_LOCKS.is_power_of_two());

/// Set in a lock word while a thread sleeps on it.
pub const WAITERS: u32 = 1 << 31;

/// How long a waiter sleeps before it checks that the holder is still alive.
pub const DEAD_CHECK_NS: u64 = 100_000_000;

/// The slot of the file with device `dev` and inode `ino`.
#[inline(always)]
pub const fn inode_slot(dev: u64, ino: u64) -> u16 {
    let h = (ino ^ dev.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - INODE_LOCKS.trailing_zeros())) as u16
}

impl Region {
    fn inode_word(&self, slot: u16) -> &AtomicU32 {
        let table = self.at(self.geometry.inode_locks_offset()) as *const InodeLocks;
        // SAFETY: the table lies inside the validated mapping, page aligned, and is only accessed
        // through atomics; it lives as long as the mapping.
        let table = unsafe { &*table };
        &table.words[slot as usize % INODE_LOCKS]
    }

    /// Takes the lock of file slot `slot` for the thread with OS id `tid` (non-zero, below
    /// [`WAITERS`]). Not reentrant: the holder must not take it again before [`unlock_inode`].
    ///
    /// [`unlock_inode`]: Region::unlock_inode
    #[inline(always)]
    pub fn lock_inode(&self, slot: u16, tid: u32) {
        lock_word(self.inode_word(slot), tid);
    }

    /// Gives back the lock of file slot `slot`, waking one waiter.
    #[inline(always)]
    pub fn unlock_inode(&self, slot: u16) {
        unlock_word(self.inode_word(slot));
    }

    /// The thread holding file slot `slot` (0: free). For tests and diagnostics.
    pub fn inode_holder(&self, slot: u16) -> u32 {
        self.inode_word(slot).load(Ordering::Relaxed) & !WAITERS
    }
}

/// Takes lock word `w` (shared between processes) for the thread with OS id `tid`.
#[inline(always)]
pub(super) fn lock_word(w: &AtomicU32, tid: u32) {
    if w.compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed).is_err() {
        lock_contended(w, tid);
    }
}

/// Gives back lock word `w`, waking one waiter.
#[inline(always)]
pub(super) fn unlock_word(w: &AtomicU32) {
    if w.swap(0, Ordering::Release) & WAITERS != 0 {
        sys::futex_wake(w, 1);
    }
}

#[cold]
#[inline(never)]
fn lock_contended(w: &AtomicU32, tid: u32) {
    loop {
        let cur = w.load(Ordering::Relaxed);
        if cur == 0 {
            // Taken marked as contended: others may still sleep on the word.
            if w.compare_exchange(0, tid | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
            continue;
        }
        let asleep = cur | WAITERS;
        if cur & WAITERS == 0 && w.compare_exchange(cur, asleep, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            continue;
        }
        sys::futex_wait(w, asleep, DEAD_CHECK_NS);
        if w.load(Ordering::Relaxed) == asleep
            && !thread_exists(asleep & !WAITERS)
            && w.compare_exchange(asleep, tid | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return;
        }
    }
}

/// Whether a thread with OS id `tid` exists (signal 0 checks without sending).
fn thread_exists(tid: u32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only looks the id up.
    let r = unsafe { sys::syscall6(libc::SYS_kill, [tid as usize, 0, 0, 0, 0, 0]) };
    r != -(libc::ESRCH as isize)
}
