//! Calls that move bytes between two descriptors inside the kernel: each is recorded and a replay
//! in another directory ends with the primary's files.

use eventlog::Call;
use std::path::Path;
use tandem_tests::*;

/// Records `fixture` in one directory and replays it in another, each holding the same `input`;
/// returns the log's events of `call`.
fn record_and_replay(fixture_name: &str, call: Call, files: &[&str]) -> Vec<LoggedEvent> {
    let program = fixture(fixture_name, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    let input: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Only the primary's directory holds it: a replay finds it in the capture.
    std::fs::write(p.join("input"), &input).unwrap();
    let log = dir.path().join("calls.tlog");
    let rec = record_in(&p, &log, &program, &[], 20);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    let rep = replay_in(&b, &log, &[], &[], 20);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{}", text(&rep.stderr));
    let b = replayed(&b, &log);
    for f in files {
        let read = |d: &Path| std::fs::read(d.join(f)).unwrap_or_else(|e| panic!("{f} in {}: {e}", d.display()));
        assert_eq!(text(&read(&p)), text(&read(&b)), "{f} differs");
    }
    let events: Vec<_> = read_log(&log).unwrap().into_iter().filter(|e| e.call() == call).collect();
    assert!(!events.is_empty(), "{call} was not recorded");
    events
}

#[test]
fn sendfile_is_recorded_and_a_replay_moves_the_file_offset_as_the_primary_did() {
    let events = record_and_replay("sendfile", Call::Sendfile, &["transcript", "copy"]);
    assert_eq!(events.len(), 3, "three sendfile calls");
    assert!(events.iter().all(|e| e.header.result > 0), "every sendfile moved bytes");
    assert_eq!(events[0].header.aux, [1000, events[0].header.aux[1]]);
}

#[test]
fn copy_file_range_is_recorded_and_replayed_for_real() {
    let events = record_and_replay("copy_range", Call::CopyFileRange, &["transcript", "copy"]);
    assert_eq!(events.len(), 2, "two copy_file_range calls");
    assert_eq!((events[0].header.result, events[1].header.result), (4000, 2000));
}

/// Splices through the program's own pipe (to a socket and back, from a file, into a file) are
/// recorded as the reads and writes they amount to: a backup moves the pipe's bytes for real.
#[test]
fn splice_between_a_pipe_a_socket_and_files_is_recorded_and_replayed() {
    let events = record_and_replay("splice", Call::Pread, &["transcript", "spliced"]);
    assert_eq!(events.len(), 1, "the splice from the file, as a pread at its offset");
    assert_eq!(events[0].header.result, 5000);
}
