//! tandem never writes to the program's own descriptors: the shim's notes and the agent's go to
//! the agent, and from there to its stderr, or to a file of its own when that stderr is a regular
//! file the program shares.

use std::fs::File;
use std::path::Path;
use tandem_tests::*;

/// `tandem ARGS` in `dir` with stdout and stderr in the files `out` and `err` there.
fn run_into_files(dir: &Path, args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> std::process::ExitStatus {
    let mut c = tandem();
    c.current_dir(dir).args(args).envs(envs.iter().copied());
    c.stdout(File::create(dir.join("out")).unwrap()).stderr(File::create(dir.join("err")).unwrap());
    c.status().expect("run tandem")
}

/// The program seeks to the end of its stderr and looks at its size; with stderr a regular file,
/// a replay in another directory with every event traced (which the shim notes) sees what the
/// primary saw, and the notes (the shim's, and the agent's summary) land in `LOG.notes`.
#[test]
fn notes_stay_out_of_a_stderr_file_the_program_shares() {
    let program = fixture("stderr_offset", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    let log = dir.path().join("stderr.tlog");
    let rec = run_into_files(
        &p,
        &["record".as_ref(), "--out".as_ref(), log.as_os_str(), "--".as_ref(), program.as_os_str()],
        &[],
    );
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    assert!(rec.success(), "record failed: {}", read(&p, "err"));
    let seen = "stderr end 0 size 0\n";
    assert_eq!((read(&p, "out"), read(&p, "err")), (seen.to_string(), seen.to_string()));

    let rep = run_into_files(&b, &["replay".as_ref(), log.as_os_str()], &[("TANDEM_TRACE", "1")]);
    let notes = std::fs::read_to_string(dir.path().join("stderr.tlog.notes")).unwrap_or_default();
    assert_eq!(rep.code(), Some(0), "replay failed:\nstderr: {}\nnotes: {notes}", read(&b, "err"));
    assert_eq!(read(&b, "err"), seen, "something besides the program wrote to its stderr");
    assert_eq!(read(&b, "out"), seen);
    assert!(notes.contains("tandem: replay: seq 1 "), "the shim's trace is missing:\n{notes}");
    assert!(notes.contains("tandem: replayed all"), "{notes}");
}
