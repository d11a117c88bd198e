//! QUIC between agents: endpoints with the cluster's mutual TLS, and frames over streams.

use crate::certs::{CertError, Identity, CLUSTER_NAME};
use crate::wire::frame::{Frame, FrameError, Header, HEADER_LEN};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A silent peer is given up after this long (a cut link is noticed, and the backup reconnects).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Keep-alives keep an idle but healthy session open.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("QUIC set-up: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("connecting to {addr}: {why}")]
    Connect { addr: SocketAddr, why: String },
    /// The TLS handshake failed: one side's certificate is not from the other's cluster CA.
    /// Retrying cannot help.
    #[error("{addr}: {why}")]
    Refused { addr: SocketAddr, why: String },
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("bad frame from the peer: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Protocol(String),
    /// The primary's history does not hold this backup's log.
    #[error("{0}")]
    StartOver(String),
    /// The backup's own log could not be written (a full disk).
    #[error("{}: {source}", path.display())]
    LocalLog { path: std::path::PathBuf, source: std::io::Error },
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(2000))),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // Event batches are up to a few MiB: windows well above one batch keep the link busy.
    t.stream_receive_window(quinn::VarInt::from_u32(32 << 20));
    t.receive_window(quinn::VarInt::from_u32(64 << 20));
    t.send_window(64 << 20);
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(16));
    Arc::new(t)
}

/// An endpoint that accepts members of the cluster on `addr`.
pub fn server(id: &Identity, addr: SocketAddr) -> Result<quinn::Endpoint, NetError> {
    let crypto = QuicServerConfig::try_from(id.server_config()?).map_err(|e| NetError::Setup(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    quinn::Endpoint::server(config, addr).map_err(|source| NetError::Listen { addr, source })
}

/// An endpoint for connecting to members of the cluster.
pub fn client(id: &Identity) -> Result<quinn::Endpoint, NetError> {
    let crypto = QuicClientConfig::try_from(id.client_config()?).map_err(|e| NetError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let any: SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut endpoint = quinn::Endpoint::client(any).map_err(|source| NetError::Listen { addr: any, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

pub async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
    let connecting =
        endpoint.connect(addr, CLUSTER_NAME).map_err(|e| NetError::Connect { addr, why: e.to_string() })?;
    connecting.await.map_err(|e| match tls_refusal(&e) {
        Some(why) => NetError::Refused { addr, why },
        None => NetError::Connect { addr, why: e.to_string() },
    })
}

/// What a handshake failure says about certificates, if it was TLS that failed (QUIC carries
/// TLS alerts as the transport error codes 0x100-0x1ff).
pub fn tls_refusal(e: &quinn::ConnectionError) -> Option<String> {
    let is_tls = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if is_tls(t.code) => {
            Some(format!("the peer's certificate is not from this cluster's CA ({})", t.reason))
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_tls(c.error_code) => {
            Some(format!("the peer refused this member's certificate ({})", c.error_code))
        }
        _ => None,
    }
}

/// The close code of a session that ended as it should: the backup holds the whole program.
pub const COMPLETE: u32 = 0;
/// The close code of a session that failed on the closing side.
pub const FAILED: u32 = 1;

/// Whether `e` ended a connection at its TLS handshake over certificates, and why: final, since
/// another try is refused the same way. The client learns that the server refused its
/// certificate only once its own side of the handshake is done, at its first use of the
/// connection.
pub fn refusal(e: &NetError) -> Option<String> {
    use quinn::{ReadError, ReadExactError, WriteError};
    match e {
        NetError::Refused { why, .. } => Some(why.clone()),
        NetError::Connection(c)
        | NetError::Read(ReadExactError::ReadError(ReadError::ConnectionLost(c)))
        | NetError::Write(WriteError::ConnectionLost(c)) => tls_refusal(c),
        _ => None,
    }
}

/// Whether `e` is the peer closing the connection with [`COMPLETE`].
pub fn closed_complete(e: &NetError) -> bool {
    use quinn::{ConnectionError, ReadError, ReadExactError, WriteError};
    let lost = match e {
        NetError::Connection(c)
        | NetError::Read(ReadExactError::ReadError(ReadError::ConnectionLost(c)))
        | NetError::Write(WriteError::ConnectionLost(c)) => c,
        _ => return false,
    };
    matches!(lost, ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(COMPLETE))
}

/// The member name in the peer's certificate (its common name).
pub fn peer_name(conn: &quinn::Connection) -> Option<String> {
    let certs = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    crate::certs::common_name(certs.first()?)
}

/// Reads one frame; `None` when the peer finished the stream cleanly.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<Frame>, NetError> {
    let mut raw = [0u8; HEADER_LEN];
    match recv.read_exact(&mut raw).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let header = Header::parse(&raw)?;
    let mut body = vec![0u8; header.body_len as usize];
    recv.read_exact(&mut body).await?;
    Ok(Some(Frame::decode(&raw, body.into())?))
}

/// The frames arriving on `recv`, read by a task of their own: reading a frame is not
/// cancel-safe (a dropped read loses part of one), so a session that waits on several things at
/// once waits on this channel instead. The channel ends after the stream's end or first error.
pub fn frames(mut recv: quinn::RecvStream) -> tokio::sync::mpsc::Receiver<Result<Option<Frame>, NetError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut recv).await;
            let last = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), NetError> {
    let (head, events) = frame.encode_parts();
    send.write_all(&head).await?;
    if let Some(events) = events {
        send.write_all_chunks(&mut [events]).await?;
    }
    Ok(())
}

/// This host's address on the way to `peer` (the interface a packet to it would leave by): what
/// a backup, which listens nowhere, is known by. Nothing is sent.
pub fn local_address_towards(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr =
        if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Body;
    use eventlog::ids::IncarnationToken;

    fn cluster(dir: &std::path::Path, names: &[&str]) {
        crate::certs::init(dir).unwrap();
        for n in names {
            crate::certs::issue(dir, n).unwrap();
        }
    }

    #[tokio::test]
    async fn members_talk_and_strangers_are_refused() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        cluster(ours.path(), &["primary", "backup"]);
        cluster(theirs.path(), &["backup"]);
        let server = server(&Identity::load(ours.path(), "primary").unwrap(), ([127, 0, 0, 1], 0).into()).unwrap();
        let addr = server.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let incoming = server.accept().await.unwrap();
                match incoming.await {
                    Ok(conn) => {
                        let who = peer_name(&conn);
                        let (_, mut recv) = conn.accept_bi().await.unwrap();
                        let frame = read_frame(&mut recv).await.unwrap().unwrap();
                        results.push(Ok((who, frame)));
                    }
                    Err(e) => results.push(Err(e.to_string())),
                }
            }
            results
        });

        let good = client(&Identity::load(ours.path(), "backup").unwrap()).unwrap();
        let conn = connect(&good, addr).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let hello = Frame::new(IncarnationToken::NONE, 1, Body::Ack { seq: eventlog::Seq(7) });
        write_frame(&mut send, &hello).await.unwrap();
        send.finish().unwrap();

        let stranger = client(&Identity::load(theirs.path(), "backup").unwrap()).unwrap();
        let refused = connect(&stranger, addr).await;
        assert!(refused.is_err(), "a certificate from another CA must not connect");

        let results = accepting.await.unwrap();
        assert_eq!(results[0].as_ref().unwrap(), &(Some("backup".to_string()), hello));
        let err = results[1].as_ref().unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        conn.close(0u32.into(), b"done");
    }
}
