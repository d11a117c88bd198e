//! Refuses programs the shim cannot see into, before launching them: a clear message up front
//! beats a recording that silently misses everything.

use crate::error::{Error, Result};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn refuse(program: &Path, why: impl Into<String>) -> Error {
    Error::Refused { program: program.to_path_buf(), why: why.into() }
}

/// Checks `program` (and, for a script, its interpreter).
pub fn check(program: &Path) -> Result<()> {
    check_depth(program, 0)
}

fn check_depth(program: &Path, depth: u32) -> Result<()> {
    let meta = fs::metadata(program).map_err(Error::io(program.display().to_string()))?;
    if meta.permissions().mode() & 0o6000 != 0 {
        return Err(refuse(
            program,
            "is setuid or setgid: the dynamic linker ignores LD_PRELOAD for such programs, so tandem cannot see its calls",
        ));
    }
    let mut head = [0u8; 256];
    let n = fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .map_err(Error::io(program.display().to_string()))?;
    if head[..n].starts_with(b"#!") {
        if depth >= 4 {
            return Err(refuse(program, "has a chain of #! interpreters too deep to follow"));
        }
        let line = head[2..n].split(|&c| c == b'\n').next().unwrap_or_default();
        let interp = String::from_utf8_lossy(line).split_whitespace().next().unwrap_or("").to_string();
        if interp.is_empty() {
            return Err(refuse(program, "is a script without an interpreter on its #! line"));
        }
        return check_depth(&PathBuf::from(interp), depth + 1);
    }
    let data = fs::read(program).map_err(Error::io(program.display().to_string()))?;
    check_elf(program, &data)
}

/// Why `program`'s threads would synchronise where tandem cannot see them (not through the C
/// library's locks, condition variables and semaphores), if they would: a replay of such a
/// program stalls or diverges, so recording one is refused unless the user insists.
pub fn unseen_sync(program: &Path) -> Result<Option<&'static str>> {
    let data = match script_interpreter(program)? {
        Some(interp) => return unseen_sync(&interp),
        None => fs::read(program).map_err(Error::io(program.display().to_string()))?,
    };
    let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    // Rust's panic locations name the standard library's sources, even in a stripped binary.
    if has(b"/library/std/src/") {
        return Ok(Some(
            "is a Rust program: the standard library's Mutex, RwLock, Condvar and channels wait on futexes directly, not through the C library, so tandem cannot see which thread takes them first",
        ));
    }
    if has(b"libjli.so\0") || has(b"libjvm.so\0") {
        return Ok(Some(
            "runs a Java virtual machine: the JVM synchronises its threads with its own locks and atomics, not the C library's, so tandem cannot see which thread takes them first",
        ));
    }
    Ok(None)
}

/// The interpreter a `#!` script names, if `program` is one.
fn script_interpreter(program: &Path) -> Result<Option<PathBuf>> {
    let mut head = [0u8; 256];
    let n = fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .map_err(Error::io(program.display().to_string()))?;
    if !head[..n].starts_with(b"#!") {
        return Ok(None);
    }
    let line = head[2..n].split(|&c| c == b'\n').next().unwrap_or_default();
    let interp = String::from_utf8_lossy(line).split_whitespace().next().unwrap_or("").to_string();
    Ok((!interp.is_empty()).then(|| PathBuf::from(interp)))
}

fn check_elf(program: &Path, data: &[u8]) -> Result<()> {
    if !data.starts_with(b"\x7fELF") {
        return Err(refuse(program, "is neither an ELF executable nor a #! script"));
    }
    if data.get(4) != Some(&elf::ELFCLASS64) {
        return Err(refuse(program, "is a 32-bit program; libtandem.so is 64-bit"));
    }
    let header = elf::FileHeader64::<Endianness>::parse(data)
        .map_err(|e| refuse(program, format!("is not a readable ELF file ({e})")))?;
    let endian = header.endian().map_err(|e| refuse(program, format!("has a bad ELF header ({e})")))?;
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| refuse(program, format!("has unreadable program headers ({e})")))?;
    let dynamic = segments.iter().any(|s| s.p_type(endian) == elf::PT_INTERP);
    let file = object::File::parse(data).map_err(|e| refuse(program, format!("is not a readable ELF file ({e})")))?;
    let is_go = file.sections().any(|s| matches!(s.name(), Ok(".go.buildinfo" | ".note.go.buildid" | ".gopclntab")));
    if is_go {
        return Err(refuse(
            program,
            "is a Go program: Go makes system calls directly instead of through the C library, so tandem cannot see them",
        ));
    }
    if !dynamic {
        return Err(refuse(
            program,
            "is statically linked: tandem sees a program's calls through the dynamic linker (LD_PRELOAD), which a static binary never uses",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_system_binary_passes() {
        check(Path::new("/bin/sh")).unwrap();
    }

    #[test]
    fn scripts_are_checked_through_their_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.sh");
        fs::write(&ok, "#!/bin/sh\necho hi\n").unwrap();
        check(&ok).unwrap();
        let bad = dir.path().join("bad.sh");
        fs::write(&bad, "#!/nonexistent/interp\n").unwrap();
        assert!(matches!(check(&bad), Err(Error::Io { .. })));
    }

    #[test]
    fn c_programs_synchronise_where_tandem_sees_it() {
        assert_eq!(unseen_sync(Path::new("/bin/sh")).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("launcher");
        fs::write(&fake, b"\x7fELF....libjli.so\0....").unwrap();
        assert!(unseen_sync(&fake).unwrap().unwrap().contains("Java"));
        let script = dir.path().join("run.sh");
        fs::write(&script, format!("#!{}\n", fake.display())).unwrap();
        assert!(unseen_sync(&script).unwrap().is_some(), "a script is judged by its interpreter");
    }

    #[test]
    fn non_elf_and_setuid_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        fs::write(&text, "hello").unwrap();
        assert!(check(&text).unwrap_err().to_string().contains("neither an ELF"));
        let suid = dir.path().join("suid");
        fs::copy("/bin/sh", &suid).unwrap();
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
        let msg = check(&suid).unwrap_err().to_string();
        assert!(msg.contains("setuid"), "{msg}");
    }
}
