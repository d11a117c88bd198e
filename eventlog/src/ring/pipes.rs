//! The order of the bytes through the program's own pipes, across its threads and processes.
//!
//! A backup moves the bytes of the program's own pipes for real, each read or write before its
//! turn (a read's bytes may come from a write logged after it). Two writes to one pipe must still
//! put their bytes in the primary's order, and two reads take them in the primary's order: so a
//! primary holds the pipe's lock for that direction while such a call runs and takes its number,
//! and the event names the number of the call before it in that direction ([`Region::pipe_swap_last`]).
//! A backup's call waits until that one has had its turn: everything numbered up to it had its
//! number before this call started on the primary, so nothing there waits for this call.
//!
//! Pipes are found by inode in a small table of the region, probed from the inode's hash. Entries
//! are never freed (a pipe's end is not seen); a full probe window gives up the entry used longest
//! ago, unless it is locked. A pipe whose entry was given up while it is still in use starts a new
//! chain: its next call waits for nothing.

use super::{inodes, sys, Region, PAGE};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Entries in the table.
pub const PIPES: usize = 256;
/// Entries a lookup probes, from the inode's hash on.
const PROBE: usize = 8;

/// One pipe: its inode, and per direction (0 reads, 1 writes) the number of the last call and
/// the lock held while a call runs and takes its number.
#[repr(C)]
pub struct PipeEntry {
    pub inode: AtomicU64,
    pub last: [AtomicU64; 2],
    pub lock: [AtomicU32; 2],
}

#[repr(C)]
pub struct PipeTable {
    pub entries: [PipeEntry; PIPES],
}

pub const PIPES_LEN: usize = core::mem::size_of::<PipeTable>();
const _: () = assert!(core::mem::size_of::<PipeEntry>() == 32);
const _: () = assert!(PIPES_LEN.is_multiple_of(PAGE));
const _: () = assert!(PIPES.is_power_of_two());

/// Which way bytes move in a call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Way {
    Read = 0,
    Write = 1,
}

impl Region {
    fn pipes(&self) -> &PipeTable {
        // SAFETY: the table lies inside the validated mapping, page aligned, and is only accessed
        // through atomics; it lives as long as the mapping.
        unsafe { &*(self.at(self.geometry.pipes_offset()) as *const PipeTable) }
    }

    /// The entry of the pipe with inode `inode` (non-zero), made if there is none: its index.
    pub fn pipe_entry(&self, inode: u64) -> u16 {
        let table = &self.pipes().entries;
        let start = (inode.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
        let at = |i: usize| (start + i) % PIPES;
        for i in 0..PROBE {
            let e = &table[at(i)];
            match e.inode.load(Ordering::Acquire) {
                v if v == inode => return at(i) as u16,
                0 => match e.inode.compare_exchange(0, inode, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return at(i) as u16,
                    Err(v) if v == inode => return at(i) as u16,
                    Err(_) => {}
                },
                _ => {}
            }
        }
        // Full: give up the unlocked entry used longest ago.
        loop {
            let oldest = (0..PROBE)
                .map(at)
                .filter(|&i| table[i].lock.iter().all(|l| l.load(Ordering::Relaxed) == 0))
                .min_by_key(|&i| table[i].last.iter().map(|l| l.load(Ordering::Relaxed)).max());
            let Some(i) = oldest else {
                // Every entry in reach is in use: wait a little for one to be given back.
                let w = &table[at(0)].lock[0];
                sys::futex_wait(w, w.load(Ordering::Relaxed), 50_000);
                continue;
            };
            let e = &table[i];
            let old = e.inode.load(Ordering::Acquire);
            if old == inode {
                return i as u16;
            }
            if e.inode.compare_exchange(old, inode, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                e.last[0].store(0, Ordering::Relaxed);
                e.last[1].store(0, Ordering::Relaxed);
                return i as u16;
            }
        }
    }

    /// Takes the lock of pipe `inode` for `way` in thread `tid` (as [`Region::lock_inode`]): the
    /// entry's index, which holds the pipe once the lock is held.
    pub fn lock_pipe(&self, inode: u64, way: Way, tid: u32) -> u16 {
        loop {
            let i = self.pipe_entry(inode);
            let e = &self.pipes().entries[i as usize];
            inodes::lock_word(&e.lock[way as usize], tid);
            if e.inode.load(Ordering::Acquire) == inode {
                return i;
            }
            // Given up to another pipe meanwhile.
            self.unlock_pipe(i, way);
        }
    }

    pub fn unlock_pipe(&self, index: u16, way: Way) {
        inodes::unlock_word(&self.pipes().entries[index as usize % PIPES].lock[way as usize]);
    }

    /// Under the pipe's lock: notes `seq` as the last call's number in `way`, and gives the one
    /// before it (0: none).
    pub fn pipe_swap_last(&self, index: u16, way: Way, seq: u64) -> u64 {
        self.pipes().entries[index as usize % PIPES].last[way as usize].swap(seq, Ordering::Relaxed)
    }
}
