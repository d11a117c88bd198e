//! Measures a running coordinator cluster: write throughput and latency, lease renewals per
//! second, and the time from a primary's last renewal to the end of its epoch.
//!
//!   coordinator_bench MEMBER_ADDR,... [LEASE_TIMEOUT_MS]
//!
//! (scripts/bench.sh coordinator starts three members on loopback and runs this.)

use coordinator::api::{Mode, Request, WriteRequest};
use coordinator::client::Client;
use coordinator::http::Transport;
use eventlog::{Epoch, IncarnationToken, Seq};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent writers in each write run.
const WRITERS: [usize; 2] = [1, 16];
const RENEWERS: usize = 16;
const RUN: Duration = Duration::from_secs(5);
const LAPSES: usize = 10;

fn register(group: &str, member: &str, token: Option<IncarnationToken>) -> Request {
    Request::Register {
        group: group.into(),
        member: member.into(),
        address: format!("{member}.example:7400"),
        primary: token.is_none(),
        mode: Some(Mode::Sync),
        token,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `writers` clients writing at once for RUN, spread over every member (followers pass writes to
/// the leader); the latency of every write, sorted.
async fn write_run(members: &[String], writers: usize) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, stop) =
            (Arc::new(Client::new(members[w % members.len()..].to_vec(), Transport::plain())), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut held = Seq::ZERO;
            while !stop.load(Ordering::Relaxed) {
                held = held.next();
                let report = Request::Report {
                    group: "bench".into(),
                    member: "p".into(),
                    epoch: Epoch::FIRST,
                    held,
                    released: held,
                    diverged: false,
                };
                let t = Instant::now();
                client.write(report).await.expect("write");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("writer"));
    }
    latencies.sort();
    latencies
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let members: Vec<String> = args.next().expect("member addresses").split(',').map(str::to_string).collect();
    let timeout = Duration::from_millis(args.next().map_or(500, |t| t.parse().expect("lease timeout in ms")));
    let client = Arc::new(Client::new(members.clone(), Transport::plain()));
    let g = client.write(register("bench", "p", None)).await.expect("register the bench group");
    // The bench group's primary keeps its lease all along, as a real one does.
    let _lease = client.clone().keep_lease("bench".into(), "p".into(), g.epoch, Duration::from_millis(100), timeout);

    let size = serde_json::to_vec(&WriteRequest::new(
        "0123456789abcdef0123456789abcdef".into(),
        Request::Failover { group: "bench".into(), to: Some("backup-1".into()) },
    ))
    .map_or(0, |v| v.len());
    println!(
        "writes of {size}-byte requests (the size of a failover request), over {} members, {RUN:?} each:",
        members.len()
    );
    for writers in WRITERS {
        let latencies = write_run(&members, writers).await;
        println!(
            "  {writers:>2} clients: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms",
            latencies.len() as f64 / RUN.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
    }

    // Renewals, sent to the leader (a follower relays them there).
    let leader = client.renew("bench", "p", g.epoch).await.map(|_| ()).is_ok();
    assert!(leader, "the bench group's primary cannot renew");
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..RENEWERS {
        let (client, stop, count) = (client.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client.renew("bench", "p", Epoch::FIRST).await.is_ok_and(|r| r.primary) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("renewer");
    }
    println!(
        "lease renewals ({RENEWERS} clients): {:.0} renewals/s",
        count.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64()
    );

    // Lapses: a primary renews every 100 ms, then stops; how long after its last renewal does
    // its epoch end?
    let mut delays = Vec::new();
    for k in 0..LAPSES {
        let name = format!("lapse{k}");
        let g = client.write(register(&name, "p", None)).await.expect("register");
        client.write(register(&name, "b", Some(g.incarnation))).await.expect("register backup");
        let report = Request::Report {
            group: name.clone(),
            member: "b".into(),
            epoch: g.epoch,
            held: Seq(1),
            released: Seq::ZERO,
            diverged: false,
        };
        client.write(report).await.expect("report");
        let mut last = Instant::now();
        for _ in 0..5 {
            assert!(client.renew(&name, "p", g.epoch).await.expect("renew").primary);
            last = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let now = client.group(&name).await.expect("read");
            if now.epoch > g.epoch {
                delays.push(last.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    delays.sort();
    let over = |d: Duration| (d.as_secs_f64() - timeout.as_secs_f64()) * 1e3;
    println!("last renewal to epoch change ({LAPSES} lapses, lease timeout {} ms):", timeout.as_millis());
    println!(
        "  median {:.1} ms (timeout + {:.1} ms), worst {:.1} ms (timeout + {:.1} ms)",
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        over(percentile(&delays, 0.5)),
        delays[delays.len() - 1].as_secs_f64() * 1e3,
        over(delays[delays.len() - 1])
    );
}
