//! Creating a region (agent side): a memfd the program inherits, mapped here as well.

use super::{Geometry, LayoutError, Mode, Region};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A region this process created and owns. Copies of [`SharedRegion::region`] must not outlive it.
pub struct SharedRegion {
    file: File,
    map: MmapRaw,
    region: Region,
}

impl SharedRegion {
    /// Creates a memfd of the right size (close-on-exec: the program gets its own copy at a fixed
    /// number, see `launch`),
    /// maps it and writes a fresh header.
    pub fn create(geometry: Geometry, mode: Mode) -> io::Result<SharedRegion> {
        if !geometry.is_valid() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, LayoutError::Geometry.to_string()));
        }
        let fd: OwnedFd = nix::sys::memfd::memfd_create(c"tandem-rings", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(io::Error::from)?;
        let file = File::from(fd);
        file.set_len(geometry.total_len() as u64)?;
        let map = MmapOptions::new().len(geometry.total_len()).map_raw(&file)?;
        // SAFETY: a fresh memfd mapping: page aligned, zero-filled, `total_len` bytes, and nobody
        // else has it yet. The mapping lives in `self` as long as the Region is handed out.
        let region = unsafe { Region::init(map.as_mut_ptr(), geometry, mode) }
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(SharedRegion { file, map, region })
    }

    pub fn region(&self) -> Region {
        self.region
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

impl AsFd for SharedRegion {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
