//! `tandem log show` and `log stats` on good and damaged logs.

use tandem_tests::*;

/// A small real recording to damage.
fn sample_log(dir: &std::path::Path) -> std::path::PathBuf {
    let log = dir.join("bash.tlog");
    let out = record(&log, std::path::Path::new("/bin/bash"), &["-c", "for i in 1 2 3; do date +%N > /dev/null; done"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    log
}

fn show(log: &std::path::Path, json: bool) -> std::process::Output {
    let mut c = tandem();
    c.args(["log", "show"]).arg(log);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

#[test]
fn show_prints_every_event_and_json_has_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log(dir.path());
    let events = read_log(&log).unwrap();
    let plain = show(&log, false);
    assert!(plain.status.success());
    assert_eq!(text(&plain.stdout).lines().count(), events.len());
    let json = show(&log, true);
    let lines: Vec<String> = text(&json.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), events.len());
    for (line, e) in lines.iter().zip(&events) {
        for field in ["\"seq\":", "\"pid\":", "\"tid\":", "\"call\":", "\"result\":", "\"errno\":", "\"len\":"] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        assert!(line.contains(&format!("\"seq\":{},", e.header.seq)), "{line}");
        assert!(line.contains(&format!("\"call\":\"{}\"", e.call().name())), "{line}");
    }
    let forks = events.iter().filter(|e| e.call() == eventlog::Call::Fork).count();
    assert_eq!(forks, 3);
}

/// The JSON view decodes each kind of field: paths, flags by name, socket addresses, signals.
#[test]
fn json_details_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = dir.path().join("kinds.tlog");
    let script =
        format!("trap 'echo caught' USR1; kill -USR1 $$; : > made.txt; exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3");
    let out = tandem()
        .current_dir(dir.path())
        .args(["record", "--out"])
        .arg(&log)
        .args(["--", "bash", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = show(&log, true);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let lines: Vec<serde_json::Value> =
        text(&json.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let find = |call: &str, matches: &dyn Fn(&serde_json::Value) -> bool| {
        lines.iter().any(|l| l["call"] == call && matches(&l["details"]))
    };
    assert!(
        find("open", &|d| d["path"] == "made.txt" && d["flags"] == "O_WRONLY|O_CREAT|O_TRUNC"),
        "no decoded open of made.txt"
    );
    let address = format!("127.0.0.1:{port}");
    assert!(find("connect", &|d| d["address"] == address.as_str()), "no connect to {address}");
    assert!(find("kill", &|d| d["signal"] == "SIGUSR1"), "no kill naming SIGUSR1");
    assert!(find("signal", &|d| d["signal"] == "SIGUSR1" && d["siginfo"]["signo"] == "SIGUSR1"), "no delivery");
    assert!(find("socket", &|d| d["domain"] == "AF_INET"), "no socket naming AF_INET");
    // The text view shows the same decoded fields.
    let plain = text(&show(&log, false).stdout);
    assert!(plain.contains(&format!("address={address}")), "{plain}");
    assert!(plain.contains("path=\"made.txt\""), "{plain}");
}

#[test]
fn stats_counts_calls_threads_processes() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log(dir.path());
    let out = tandem().args(["log", "stats"]).arg(&log).output().unwrap();
    assert!(out.status.success());
    let s = text(&out.stdout);
    let events = read_log(&log).unwrap();
    assert!(s.contains(&format!("events    {} (seq 1..={})", events.len(), events.len())), "{s}");
    assert!(s.lines().any(|l| l.starts_with("fork ") && l.split_whitespace().nth(1) == Some("3")), "{s}");
    assert!(s.contains("duration"));
    // Processes 1 (bash) and 2-4 (the three date children).
    for pid in 1..=4 {
        assert!(s.lines().any(|l| l.split_whitespace().next() == Some(&pid.to_string())), "process {pid} in {s}");
    }
}

#[test]
fn stats_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log(dir.path());
    let out = tandem().args(["log", "stats", "--json"]).arg(&log).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let events = read_log(&log).unwrap();
    assert_eq!(stats["events"], events.len() as u64, "{stats}");
    assert_eq!(stats["last_seq"], events.len() as u64, "{stats}");
    let forks = stats["calls"].as_array().unwrap().iter().find(|c| c["call"] == "fork").expect("fork counted");
    assert_eq!(forks["events"], 3, "{stats}");
    assert_eq!(stats["processes"].as_array().unwrap().len(), 4, "{stats}");
    assert!(stats["threads"][0]["tid"].is_u64(), "{stats}");
}

#[test]
fn truncated_log_names_batch_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log(dir.path());
    let bytes = std::fs::read(&log).unwrap();
    let cut = dir.path().join("cut.tlog");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let out = show(&cut, false);
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out.stderr);
    assert!(msg.starts_with(&format!("tandem: {}: batch ", cut.display())), "{msg}");
    assert!(msg.contains(" at offset ") && msg.contains("truncated"), "{msg}");
    // Events of the batches before the damage were printed; none of the damaged one.
    let printed = text(&out.stdout).lines().count();
    assert!(printed < read_log(&log).unwrap().len());
}

#[test]
fn corrupted_log_names_batch_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let bad = dir.path().join("bad.tlog");
    std::fs::write(&bad, &bytes).unwrap();
    for args in [&["log", "show"][..], &["log", "stats"][..]] {
        let out = tandem().args(args).arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let msg = text(&out.stderr);
        assert!(msg.contains(": batch ") && msg.contains(" at offset ") && msg.contains("corrupted"), "{msg}");
    }
}

#[test]
fn log_cut_at_a_batch_boundary_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log(dir.path());
    let bytes = std::fs::read(&log).unwrap();
    // Drop only the end marker (the last 40 bytes).
    let cut = dir.path().join("noend.tlog");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let out = show(&cut, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("without an end marker"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), read_log(&log).unwrap().len());
}

#[test]
fn not_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "hello, not a log").unwrap();
    let out = show(&junk, false);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("tandem: {}: not a tandem log (no log header at offset 0)", junk.display())
    );
}

#[test]
fn help_exists_for_every_command() {
    for args in [
        &["--help"][..],
        &["record", "--help"],
        &["log", "--help"],
        &["log", "show", "--help"],
        &["log", "stats", "--help"],
    ] {
        let out = tandem().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
    let out = tandem().args(["record", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
