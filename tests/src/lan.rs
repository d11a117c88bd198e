//! Separate hosts on one machine: a network namespace per host, each joined by a veth pair to a
//! bridge in the test's own namespace (which can reach every host). Needs root.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static LANS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (scripts/test.sh installs iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The bridge's end of the host's cable: setting it down cuts the host off.
    cable: String,
    /// A relay standing in for `tc netem` where the kernel lacks it.
    relay: Option<Child>,
}

pub struct Lan {
    bridge: String,
    pub hosts: Vec<Host>,
}

impl Lan {
    /// A LAN of hosts with these names, addressed 10.X.Y.1, .2, ... in the order given.
    pub fn new(names: &[&str]) -> Lan {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the multi-host tests create network namespaces and need root: run scripts/test.sh as root"
        );
        crate::require("ip");
        let n = LANS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100_000, n);
        let subnet = (100 + n % 100, pid % 250);
        let bridge = format!("tb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.{}.{}.254/24", subnet.0, subnet.1), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut lan = Lan { bridge, hosts: Vec::new() };
        for (i, name) in names.iter().enumerate() {
            let ns = format!("t{tag}{name}");
            let (cable, inside) = (format!("tc{tag}x{i}"), format!("th{tag}x{i}"));
            let addr = Ipv4Addr::new(10, subnet.0 as u8, subnet.1 as u8, i as u8 + 1);
            ip(&["netns", "add", &ns]);
            lan.hosts.push(Host { name: name.to_string(), ns: ns.clone(), addr, cable: cable.clone(), relay: None });
            ip(&["link", "add", &cable, "type", "veth", "peer", "name", &inside]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &cable, "master", &lan.bridge, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inside]);
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).expect("a host of this LAN")
    }

    /// `program` run on `host`.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(host).ns]).arg(program);
        c
    }

    /// Cuts `host` off the LAN (its cable out of the bridge) or plugs it back in.
    pub fn set_link(&self, host: &str, up: bool) {
        ip(&["link", "set", &self.host(host).cable, if up { "up" } else { "down" }]);
    }

    /// Delays every packet leaving `host` by `delay_ms` and drops `loss_percent` of them, with
    /// `tc netem`. Returns the port to use for `port` on that host: the same one with netem, or
    /// the port of a relay on the host's address that does the same to what leaves through it,
    /// where this kernel has no netem.
    pub fn impair(&mut self, host: &str, port: u16, delay_ms: u32, loss_percent: f64) -> u16 {
        let ns = self.host(host).ns.clone();
        let netem = Command::new("ip")
            .args(["netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay"])
            .arg(format!("{delay_ms}ms"))
            .arg("loss")
            .arg(format!("{loss_percent}%"))
            .output()
            .expect("run tc");
        if netem.status.success() {
            return port;
        }
        let why = String::from_utf8_lossy(&netem.stderr);
        assert!(why.contains("qdisc kind is unknown"), "tc netem: {why}");
        let h = self.hosts.iter_mut().find(|h| h.name == host).expect("a host of this LAN");
        let relay_port = port + 1;
        let relay = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(crate::bin_dir().join("impair"))
            .arg(format!("{}:{relay_port}", h.addr))
            .arg(format!("{}:{port}", h.addr))
            .arg(delay_ms.to_string())
            .arg(loss_percent.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the impairing relay");
        h.relay = Some(relay);
        std::thread::sleep(Duration::from_millis(200));
        relay_port
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut r) = h.relay.take() {
                let _ = r.kill();
                let _ = r.wait();
            }
            kill_host(&h.ns);
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).status();
            let _ = Command::new("ip").args(["link", "del", &h.cable]).stderr(Stdio::null()).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

/// Kills every process on the host, as if it lost power.
pub fn kill_host(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}
