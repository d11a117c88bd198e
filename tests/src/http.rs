//! A small HTTP/1.1 client for the coordinator's JSON API (one request per connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// One exchange with `addr`: the reply's status and body, or why there was none.
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    request_with(addr, method, path, &[], body)
}

/// `request` with extra headers.
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let sock: SocketAddr = addr.parse().map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}

pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, "")
}

pub fn post(addr: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    request(addr, "POST", path, body)
}

/// An HTTPS exchange with a tandem member at `addr`, through curl: the server is checked against
/// `ca` under the cluster name every member certificate carries; `who` is the client's
/// certificate (`DIR`, `NAME` for `DIR/NAME.crt` and `.key`), or none. Returns curl's status code
/// (`000` when no TLS session was made) and the body.
pub fn curl_tls(addr: &str, ca: &Path, who: Option<(&Path, &str)>, args: &[&str], path: &str) -> (String, String) {
    let (ip, port) = addr.split_once(':').expect("ADDR:PORT");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", "--cacert"]).arg(ca);
    cmd.args(["--resolve", &format!("tandem:{port}:{ip}")]);
    if let Some((dir, name)) = who {
        cmd.arg("--cert").arg(dir.join(format!("{name}.crt"))).arg("--key").arg(dir.join(format!("{name}.key")));
    }
    let out = cmd.args(args).arg(format!("https://tandem:{port}{path}")).output().expect("run curl");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    (code.to_string(), body.to_string())
}
