//! JSON over HTTP/1.1: the client the members and agents use, and the pieces of the server.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How long one HTTP exchange may take before it counts as lost.
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    /// Connected, but the exchange broke off (a pooled connection the other side had closed).
    #[error("the exchange with {0} broke off: {1}")]
    Broken(String, String),
    #[error("{0} did not answer within {within}", within = humantime::format_duration(*.1))]
    Timeout(String, Duration),
    #[error("{addr} answered {status}: {body}")]
    Status { addr: String, status: StatusCode, body: String },
    #[error("{0} sent a reply that is not what was asked for: {1}")]
    BadReply(String, String),
}

/// How members and clients reach each other: plain HTTP, or HTTPS with the cluster's
/// certificates (mutual TLS: each side presents one the cluster's CA issued).
#[derive(Clone)]
pub struct Transport {
    client: Connector,
    /// What a member accepts connections with (TLS), if it serves.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
}

#[derive(Clone)]
enum Connector {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.client {
            Connector::Plain(_) => "Transport(http)",
            Connector::Tls(_) => "Transport(https)",
        })
    }
}

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    connector.enforce_http(false);
    connector
}

impl Transport {
    pub fn plain() -> Transport {
        Transport {
            client: Connector::Plain(Client::builder(TokioExecutor::new()).build(http_connector())),
            acceptor: None,
        }
    }

    /// HTTPS: `client` presents this side's certificate and checks the other's against the CA
    /// under `server_name` (the name every member certificate carries); `server`, for a member,
    /// requires the same of whoever connects.
    pub fn tls(
        mut client: rustls::ClientConfig,
        server: Option<rustls::ServerConfig>,
        server_name: &str,
    ) -> Result<Transport, HttpError> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| HttpError::Connect(server_name.to_string(), e.to_string()))?;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector =
            HttpsConnector::new(http_connector(), client, true, Arc::new(FixedServerNameResolver::new(name)));
        let acceptor = server.map(|mut s| {
            s.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(s))
        });
        Ok(Transport { client: Connector::Tls(Client::builder(TokioExecutor::new()).build(connector)), acceptor })
    }

    fn scheme(&self) -> &'static str {
        match self.client {
            Connector::Plain(_) => "http",
            Connector::Tls(_) => "https",
        }
    }
}

/// The header naming the coordinator incarnation a request belongs to: members refuse Raft
/// messages of another incarnation, and tell clients of a lost one that their data is gone.
pub const INCARNATION_HEADER: &str = "x-tandem-incarnation";

/// One exchange: the status and body of the reply. `incarnation`: the one the caller speaks for.
pub async fn exchange(
    transport: &Transport,
    addr: &str,
    method: Method,
    path: &str,
    incarnation: Option<&str>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), HttpError> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}://{addr}{path}", transport.scheme()))
        .header("content-type", "application/json");
    if let Some(inc) = incarnation.filter(|i| !i.is_empty()) {
        req = req.header(INCARNATION_HEADER, inc);
    }
    let req = req.body(Full::new(body)).map_err(|e| HttpError::Connect(addr.to_string(), e.to_string()))?;
    let work = async {
        let sent = match &transport.client {
            Connector::Plain(c) => c.request(req).await,
            Connector::Tls(c) => c.request(req).await,
        };
        let resp = sent.map_err(|e| {
            let why = connect_error(&e);
            if e.is_connect() {
                HttpError::Connect(addr.to_string(), why)
            } else {
                HttpError::Broken(addr.to_string(), why)
            }
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Broken(addr.to_string(), e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, work).await.map_err(|_| HttpError::Timeout(addr.to_string(), TIMEOUT))?
}

fn decode<T: DeserializeOwned>(addr: &str, status: StatusCode, body: &[u8]) -> Result<T, HttpError> {
    if !status.is_success() {
        return Err(HttpError::Status {
            addr: addr.to_string(),
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
    serde_json::from_slice(body).map_err(|e| HttpError::BadReply(addr.to_string(), e.to_string()))
}

/// The innermost cause, which names a refused certificate.
fn connect_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    if std::ptr::eq(inner, e) {
        e.to_string()
    } else {
        format!("{e}: {inner}")
    }
}

pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
    transport: &Transport,
    addr: &str,
    path: &str,
    incarnation: Option<&str>,
    req: &Req,
) -> Result<Resp, HttpError> {
    let body = serde_json::to_vec(req).map_err(|e| HttpError::BadReply(addr.to_string(), e.to_string()))?;
    let (status, reply) = exchange(transport, addr, Method::POST, path, incarnation, body.into()).await?;
    decode(addr, status, &reply)
}

pub async fn get_json<Resp: DeserializeOwned>(
    transport: &Transport,
    addr: &str,
    path: &str,
) -> Result<Resp, HttpError> {
    let (status, reply) = exchange(transport, addr, Method::GET, path, None, Bytes::new()).await?;
    decode(addr, status, &reply)
}

/// A reply with a JSON body.
pub fn json_reply(status: StatusCode, value: &impl Serialize) -> hyper::Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    raw_reply(status, body.into())
}

pub fn raw_reply(status: StatusCode, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    resp
}

/// A one-line error for the caller, as `{"error": kind, "message": text}`.
pub fn error_reply(status: StatusCode, kind: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    json_reply(status, &crate::api::Problem { error: kind.to_string(), message: message.to_string() })
}

/// An answer to a GET: status code, content type and body.
pub type Answer = (u16, &'static str, String);

/// Serves GET requests over plain HTTP on `listener` (an agent's metrics and health), each
/// answered by `answer(path)`. Runs until the listener fails.
pub async fn serve_get(
    listener: tokio::net::TcpListener,
    answer: Arc<dyn Fn(&str) -> Answer + Send + Sync>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, kind, body) = if req.method() == Method::GET {
                    answer(req.uri().path())
                } else {
                    (405, "text/plain", "only GET is served here\n".into())
                };
                let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(kind));
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}
