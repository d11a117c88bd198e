//! The program's executable and the libraries it names. A backup must run exactly the primary's:
//! another build of the same program makes other calls, and its replay diverges far from the
//! cause. The primary records each file's identity (its GNU build id, else its SHA-256) in the
//! log; `tandem backup` refuses to start when a file differs, naming it.

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

/// Refuses to run when a file the primary ran differs here (or is missing).
pub fn check(recorded: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for (id, path) in recorded {
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        let id = String::from_utf8_lossy(id);
        let refuse = |why: String| Error::Refused { program: path.to_path_buf(), why };
        let here = identity(path).map_err(|_| refuse("is missing on this host; the primary ran it".into()))?;
        if here != id {
            return Err(refuse(format!(
                "differs from the primary's ({here} here, {id} there): install the primary's build on this host"
            )));
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
        let recorded = vec![(identity(&f).unwrap().into_bytes(), f.to_string_lossy().as_bytes().to_vec())];
        check(&recorded).unwrap();
        std::fs::write(&f, b"another build").unwrap();
        let e = check(&recorded).unwrap_err().to_string();
        assert!(e.contains("tool") && e.contains("differs from the primary's"), "{e}");
        std::fs::remove_file(&f).unwrap();
        assert!(check(&recorded).unwrap_err().to_string().contains("is missing on this host"));
    }
}
