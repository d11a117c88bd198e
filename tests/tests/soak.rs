//! Each real program of `scripts/soak.sh` once (the script repeats them for the support matrix):
//! recorded under load, replayed under jitter from a directory of another length, the replay's
//! files the primary's. The programs that docs/limits.md names as not yet replaying (shell
//! pipelines through internal pipes, stdin read through stdio) are left to the script.

use tandem_tests::*;

#[test]
fn real_programs_replay_from_another_directory() {
    for tool in ["nginx", "wrk", "memcached", "sqlite3", "python3"] {
        require(tool);
    }
    let cases = ["nginx", "python", "sqlite", "memcached", "popen", "tmpfiles", "sigsuspend"];
    let out = std::process::Command::new(root().join("scripts/soak.sh"))
        .arg("--no-doc")
        .args(cases)
        .env("RUNS", "1")
        .output()
        .expect("run scripts/soak.sh");
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    for case in cases {
        assert!(report.lines().any(|l| l.starts_with(case) && l.contains("1 of 1 clean")), "{case}:\n{report}");
    }
}
