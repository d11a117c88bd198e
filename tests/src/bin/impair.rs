//! `impair LISTEN TARGET DELAY_MS LOSS_PERCENT`: a UDP relay that does what `tc netem delay
//! DELAY_MS loss LOSS_PERCENT` on TARGET's host would do to the packets TARGET sends: each reply
//! from TARGET to a client is dropped with that probability or else delivered DELAY_MS later.
//! Packets from clients to TARGET pass at once. For kernels built without netem.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

struct Late {
    due: Instant,
    to: SocketAddr,
    data: Vec<u8>,
}

/// xorshift64*: enough randomness to drop packets.
struct Dice(u64);

impl Dice {
    fn below(&mut self, percent: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (x as f64 / (1u64 << 53) as f64) * 100.0 < percent
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, delay_ms, loss] = args.as_slice() else {
        eprintln!("usage: impair LISTEN TARGET DELAY_MS LOSS_PERCENT");
        std::process::exit(2);
    };
    let (Ok(listen), Ok(target), Ok(delay_ms), Ok(loss)) =
        (listen.parse::<SocketAddr>(), target.parse::<SocketAddr>(), delay_ms.parse::<u64>(), loss.parse::<f64>())
    else {
        eprintln!("impair: bad arguments {args:?}");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay_ms);
    let front = Arc::new(UdpSocket::bind(listen).expect("bind the relay"));
    let (late_tx, late_rx) = mpsc::channel::<Late>();
    let out = front.clone();
    // One delay for every packet keeps them in order: the queue is first in, first due.
    std::thread::spawn(move || {
        for p in late_rx {
            if let Some(wait) = p.due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = out.send_to(&p.data, p.to);
        }
    });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seed = now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32 | 1;
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf) else { continue };
        let up = upstreams.entry(client).or_insert_with(|| {
            let up = Arc::new(UdpSocket::bind((target.ip(), 0)).expect("bind an upstream socket"));
            up.connect(target).expect("connect upstream");
            let (reader, late) = (up.clone(), late_tx.clone());
            let mut dice = Dice(seed ^ u64::from(client.port()));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    // A packet that reached TARGET before it listened comes back as a refusal on
                    // the next read: that is no reason to stop relaying.
                    let Ok(n) = reader.recv(&mut buf) else { continue };
                    if !dice.below(loss) {
                        let _ = late.send(Late { due: Instant::now() + delay, to: client, data: buf[..n].to_vec() });
                    }
                }
            });
            up
        });
        let _ = up.send(&buf[..n]);
    }
}
