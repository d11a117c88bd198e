//! The program's executable and the libraries it names, and the shim. A backup must run exactly
//! the primary's: another build of the same program makes other calls, and its replay diverges
//! far from the cause. Another build of the shim moves the program's addresses (its thread-local
//! block is part of every thread's), and an allocator's choices follow them: a redis log
//! recorded by one build diverged in every replay by a build whose thread context was 8 bytes
//! larger. The primary records each file's identity (its GNU build id, else its SHA-256) in the
//! log, the shim's under [`SHIM`]; `tandem backup` refuses to start when a file differs, naming
//! it.

use crate::error::{Error, Result};
use object::Object;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file's identity: `build-id:HEX` when its ELF notes carry one, else `sha256:HEX`.
pub fn identity(path: &Path) -> Result<String> {
    let data = std::fs::read(path).map_err(Error::io(path.display().to_string()))?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if let Ok(file) = object::File::parse(&*data) {
        if let Ok(Some(id)) = file.build_id() {
            return Ok(format!("build-id:{}", hex(id)));
        }
    }
    Ok(format!("sha256:{}", hex(&Sha256::digest(&data))))
}

/// `program` and the shared libraries the dynamic linker resolves for it (as `ldd` lists them),
/// each with its identity.
pub fn of_program(program: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = vec![program.canonicalize().unwrap_or_else(|_| program.to_path_buf())];
    // A script's interpreter is what runs: ldd says nothing of the script itself.
    if let Ok(out) = Command::new("ldd").arg(program).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.push(PathBuf::from(p));
            }
        }
    }
    files.iter().map(|f| Ok((identity(f)?, f.clone()))).collect()
}

/// The name the shim's identity is recorded under: not a path, since each host finds its own
/// shim (beside its `tandem`).
pub const SHIM: &str = "tandem:libtandem.so";

/// The files to record for a program run under `shim`: [`of_program`], then the shim.
pub fn of_launch(program: &Path, shim: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = of_program(program)?;
    files.push((identity(shim)?, PathBuf::from(SHIM)));
    Ok(files)
}

/// Refuses to run when a file the primary ran differs here (or is missing); `shim` is this
/// host's.
pub fn check(recorded: &[(Vec<u8>, Vec<u8>)], shim: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for (id, path) in recorded {
        let id = String::from_utf8_lossy(id);
        let (path, install) = match path.as_slice() {
            p if p == SHIM.as_bytes() => (shim, "run the primary's tandem build on this host"),
            p => (Path::new(std::ffi::OsStr::from_bytes(p)), "install the primary's build on this host"),
        };
        let refuse = |why: String| Error::Refused { program: path.to_path_buf(), why };
        let here = identity(path).map_err(|_| refuse("is missing on this host; the primary ran it".into()))?;
        if here != id {
            return Err(refuse(format!("differs from the primary's ({here} here, {id} there): {install}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_and_its_libraries_are_named_and_a_changed_file_is_refused() {
        let found = of_program(Path::new("/bin/sh")).unwrap();
        assert!(found.len() >= 2, "{found:?}");
        assert!(found.iter().any(|(_, p)| p.to_string_lossy().contains("libc.so")), "{found:?}");
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("tool");
        std::fs::write(&f, b"one build").unwrap();
        let shim = t.path().join("libtandem.so");
        std::fs::write(&shim, b"the shim").unwrap();
        let recorded: Vec<_> = of_launch(&f, &shim)
            .unwrap()
            .into_iter()
            .map(|(id, p)| (id.into_bytes(), p.to_string_lossy().as_bytes().to_vec()))
            .collect();
        check(&recorded, &shim).unwrap();
        std::fs::write(&f, b"another build").unwrap();
        let e = check(&recorded, &shim).unwrap_err().to_string();
        assert!(e.contains("tool") && e.contains("differs from the primary's"), "{e}");
        std::fs::remove_file(&f).unwrap();
        assert!(check(&recorded, &shim).unwrap_err().to_string().contains("is missing on this host"));
    }

    #[test]
    fn another_build_of_the_shim_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let (ours, theirs) = (t.path().join("ours.so"), t.path().join("theirs.so"));
        std::fs::write(&ours, b"one build of the shim").unwrap();
        std::fs::write(&theirs, b"another build of the shim").unwrap();
        let recorded = vec![(identity(&theirs).unwrap().into_bytes(), SHIM.as_bytes().to_vec())];
        check(&recorded, &theirs).unwrap();
        let e = check(&recorded, &ours).unwrap_err().to_string();
        assert!(e.contains("ours.so") && e.contains("run the primary's tandem build"), "{e}");
    }
}
