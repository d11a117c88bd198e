//! `garbage_peer CERTS NAME ADDR`: a misbehaving cluster member, for testing the primary: it holds a
//! valid certificate, opens a session with the primary at ADDR and sends random bytes instead of
//! frames, then sprays random UDP datagrams at the same port. Prints how the primary answered;
//! exits 0 once the primary has closed the connection with an error.

use replicator::certs::Identity;
use replicator::net;
use replicator::statedir::random;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [certs, name, addr] = args.as_slice() else {
        eprintln!("usage: garbage_peer CERTS NAME ADDR");
        std::process::exit(2);
    };
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR");
    let identity = Identity::load(std::path::Path::new(certs), name).expect("certificates");
    let endpoint = net::client(&identity).expect("endpoint");
    let conn = net::connect(&endpoint, addr).await.expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    // A header-sized prefix of random bytes is never a valid frame (magic and checksum).
    let _ = send.write_all(&random::<4096>().expect("random bytes")).await;
    let _ = send.finish();
    let answer = recv.read_to_end(1 << 20).await;
    let closed = conn.closed().await;
    println!("stream: {answer:?}");
    println!("connection: {closed}");

    let udp = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("udp");
    for _ in 0..200 {
        let _ = udp.send_to(&random::<1200>().expect("random bytes"), addr);
    }
    let by_primary = matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if u64::from(c.error_code) != 0);
    std::process::exit(if by_primary { 0 } else { 1 });
}
