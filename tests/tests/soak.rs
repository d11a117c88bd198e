//! Each case of `scripts/soak.sh` once (the script repeats them for the support matrix): real
//! programs recorded under load, replayed under jitter from a directory of another length, the
//! replay's files the primary's; live failover on one host in sync and async mode, with the
//! backup restarted once with its files left behind; and the coordinator's leader killed and
//! restarted 20 times under a steered primary, which must keep its epoch.

use tandem_tests::*;

#[test]
fn real_programs_replay_from_another_directory() {
    for tool in ["nginx", "wrk", "memcached", "sqlite3", "python3", "redis-server", "redis-cli", "curl"] {
        require(tool);
    }
    let cases = [
        "nginx",
        "python",
        "python_gil",
        "sqlite",
        "memcached",
        "pipeline",
        "popen",
        "tmpfiles",
        "stdin",
        "sigsuspend",
        "failover_sync",
        "failover_received",
        "failover_async",
        "coordinator_leader",
    ];
    let out = std::process::Command::new(root().join("scripts/soak.sh"))
        .arg("--no-doc")
        .args(cases)
        .env("RUNS", "1")
        .output()
        .expect("run scripts/soak.sh");
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    for case in cases {
        let clean = |l: &str| l.split_whitespace().next() == Some(case) && l.contains("1 of 1 clean");
        assert!(report.lines().any(clean), "{case}:\n{report}");
    }
}
