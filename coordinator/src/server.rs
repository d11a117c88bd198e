//! One coordinator member: its Raft node, the HTTP/JSON API (the same on every member), and the
//! leader-local leases.
//!
//! API (JSON bodies; every write carries a client-generated request `id`):
//! - `POST /v1/write` `{"id", "command": {"op": "register" | "report" | "failover", ...}}`
//! - `POST /v1/lease` `{"group", "member", "epoch"}`: renews the primary's lease
//! - `GET /v1/groups`, `GET /v1/groups/NAME`: linearizable reads
//! - `GET /v1/status`: this member's view of the cluster
//!
//! A member that is not the leader passes writes and reads to the leader and relays its reply:
//! callers never need to find the leader.

use crate::http::{error_reply, exchange, json_reply, raw_reply};
use crate::lease::Leases;
use crate::model::{Command, Group, Request};
use crate::raft::{Network, NodeId, Raft, APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::store::{Identity, StateMachine, Store, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a member is started.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// This member's id and every member's API address (itself included). One member, id 1, when
    /// embedded.
    pub id: NodeId,
    pub peers: BTreeMap<NodeId, String>,
    pub lease_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot start the Raft node: {0}")]
    Raft(String),
    #[error("{path} belongs to member {stored}, not {asked}; start it with --id {stored} or give it its own data dir")]
    WrongMember { path: PathBuf, stored: NodeId, asked: NodeId },
}

pub struct Member {
    pub id: NodeId,
    pub raft: Raft,
    machine: StateMachine,
    pub identity: Identity,
    leases: Leases,
}

/// The body of `POST /v1/lease`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Renewal {
    pub group: String,
    pub member: String,
    pub epoch: u64,
}

/// The reply to a renewal: whether the caller is still primary, and of which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewed {
    pub primary: bool,
    pub epoch: u64,
}

/// What `GET /v1/status` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub state: String,
    pub incarnation: String,
    pub last_applied: Option<u64>,
}

fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "tandem".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    }
}

/// A fresh random token (128 bits, hex).
pub fn random_token() -> Result<String, StoreError> {
    let token = eventlog::IncarnationToken::random()
        .map_err(|e| StoreError::Db { path: "/dev/urandom".into(), source: Box::new(e) })?;
    Ok(token.to_string())
}

/// Parses `ID=ADDR,ID=ADDR,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| format!("{item:?} is not ID=ADDR"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("{id:?} is not a member id (a number)"))?;
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("member {id} is named twice"));
        }
    }
    Ok(peers)
}

/// Starts a member and serves its API until the process ends.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let member = Member::start(&config).await?;
    tracing::info!(id = config.id, listen = %config.listen, incarnation = member.identity.incarnation, "coordinator member serving");
    member.serve(config.listen).await
}

impl Member {
    /// Opens the data dir and starts the Raft node. A member with a fresh data dir that is the
    /// only member (embedded mode) creates the coordinator's first incarnation.
    pub async fn start(config: &Config) -> Result<Arc<Member>, ServeError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::Db { path: config.data_dir.clone(), source: Box::new(e) })?;
        let store = Store::open(&config.data_dir)?;
        let fresh = store.identity()?.is_none();
        let identity = match store.identity()? {
            Some(id) if id.member != config.id => {
                return Err(ServeError::WrongMember {
                    path: store.path().to_path_buf(),
                    stored: id.member,
                    asked: config.id,
                })
            }
            Some(id) => id,
            None => {
                let id = Identity { member: config.id, disk: random_token()?, incarnation: random_token()? };
                store.set_identity(&id)?;
                id
            }
        };
        let machine = StateMachine::load(&store)?;
        let raft = Raft::new(config.id, Arc::new(raft_config()), Network, store.clone(), machine.clone())
            .await
            .map_err(|e| ServeError::Raft(e.to_string()))?;
        if fresh && config.peers.len() == 1 {
            let nodes: BTreeMap<NodeId, BasicNode> =
                config.peers.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
            raft.initialize(nodes).await.map_err(|e| ServeError::Raft(e.to_string()))?;
        }
        Ok(Arc::new(Member { id: config.id, raft, machine, identity, leases: Leases::new(config.lease_timeout) }))
    }

    /// Serves the API until the process ends.
    pub async fn serve(self: Arc<Self>, listen: SocketAddr) -> Result<(), ServeError> {
        let listener = TcpListener::bind(listen).await.map_err(|e| ServeError::Listen(listen, e))?;
        tokio::spawn(self.clone().watch_leases());
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let member = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let member = member.clone();
                    async move { Ok::<_, std::convert::Infallible>(member.handle(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    async fn handle(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error_reply(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        };
        match (&method, path.as_str()) {
            (&Method::POST, APPEND_PATH) => {
                self.raft_rpc(&body, |raft, rpc| async move { raft.append_entries(rpc).await }).await
            }
            (&Method::POST, VOTE_PATH) => self.raft_rpc(&body, |raft, rpc| async move { raft.vote(rpc).await }).await,
            (&Method::POST, SNAPSHOT_PATH) => {
                self.raft_rpc(&body, |raft, rpc| async move { raft.install_snapshot(rpc).await }).await
            }
            (&Method::POST, "/v1/write") => match serde_json::from_slice::<Request>(&body) {
                Ok(req) => self.write(req, &path, body).await,
                Err(e) => error_reply(StatusCode::BAD_REQUEST, "bad_request", &format!("not a write request: {e}")),
            },
            (&Method::POST, "/v1/lease") => match serde_json::from_slice::<Renewal>(&body) {
                Ok(r) => self.renew(r, &path, body).await,
                Err(e) => error_reply(StatusCode::BAD_REQUEST, "bad_request", &format!("not a lease renewal: {e}")),
            },
            (&Method::GET, "/v1/status") => json_reply(StatusCode::OK, &self.status()),
            (&Method::GET, "/v1/groups") => self.read(&path, |groups| serde_json::to_value(groups)).await,
            (&Method::GET, p) if p.starts_with("/v1/groups/") => {
                let name = p["/v1/groups/".len()..].to_string();
                self.read(&path, move |groups| match groups.get(&name) {
                    Some(g) => serde_json::to_value(g),
                    None => Ok(serde_json::Value::Null),
                })
                .await
            }
            _ => error_reply(StatusCode::NOT_FOUND, "not_found", &format!("no endpoint {method} {path}")),
        }
    }

    async fn raft_rpc<Req, Resp, E, F, Fut>(&self, body: &[u8], call: F) -> hyper::Response<Full<Bytes>>
    where
        Req: serde::de::DeserializeOwned,
        Resp: Serialize,
        E: std::error::Error + Serialize,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        match serde_json::from_slice::<Req>(body) {
            Ok(rpc) => json_reply(StatusCode::OK, &call(self.raft.clone(), rpc).await),
            Err(e) => error_reply(StatusCode::BAD_REQUEST, "bad_request", &format!("not a Raft message: {e}")),
        }
    }

    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        Status {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            state: format!("{:?}", m.state),
            incarnation: self.identity.incarnation.clone(),
            last_applied: m.last_applied.map(|l| l.index),
        }
    }

    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    /// Relays a request to the leader and its reply back.
    async fn relay(&self, method: Method, path: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
        let Some(addr) = self.leader_addr() else {
            return error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                "no leader is elected yet; retry shortly",
            );
        };
        match exchange(&addr, method, path, body).await {
            Ok((status, reply)) => raw_reply(status, reply),
            Err(e) => {
                error_reply(StatusCode::SERVICE_UNAVAILABLE, "no_leader", &format!("the leader did not answer: {e}"))
            }
        }
    }

    /// Proposes a write through Raft and replies once this member applied it.
    async fn write(&self, mut req: Request, path: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
        if let Command::Register { new_incarnation, .. } = &mut req.command {
            if new_incarnation.is_empty() {
                match random_token() {
                    Ok(token) => *new_incarnation = token,
                    Err(e) => return error_reply(StatusCode::INTERNAL_SERVER_ERROR, "random", &e.to_string()),
                }
            }
        }
        match self.raft.client_write(req).await {
            Ok(resp) => outcome_reply(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                self.relay(Method::POST, path, body).await
            }
            Err(e) => error_reply(StatusCode::SERVICE_UNAVAILABLE, "raft", &e.to_string()),
        }
    }

    /// A linearizable read: this member confirms it still leads, then reads what it applied.
    async fn read(
        &self,
        path: &str,
        view: impl FnOnce(&BTreeMap<String, Group>) -> serde_json::Result<serde_json::Value>,
    ) -> hyper::Response<Full<Bytes>> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                let value = {
                    let m = self.machine.machine.lock().unwrap_or_else(|p| p.into_inner());
                    view(&m.state.groups)
                };
                match value {
                    Ok(serde_json::Value::Null) => error_reply(StatusCode::NOT_FOUND, "no_group", "no such group"),
                    Ok(v) => json_reply(StatusCode::OK, &v),
                    Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "encode", &e.to_string()),
                }
            }
            Err(e) if e.forward_to_leader::<BasicNode>().is_some() => self.relay(Method::GET, path, Bytes::new()).await,
            Err(e) => error_reply(StatusCode::SERVICE_UNAVAILABLE, "raft", &e.to_string()),
        }
    }

    fn group(&self, name: &str) -> Option<Group> {
        let m = self.machine.machine.lock().unwrap_or_else(|p| p.into_inner());
        m.state.groups.get(name).cloned()
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader
    }

    /// Renews a primary's lease on the leader, without a Raft round: leases are leader-local.
    async fn renew(&self, r: Renewal, path: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
        if !self.is_leader() {
            return self.relay(Method::POST, path, body).await;
        }
        let Some(g) = self.group(&r.group) else {
            return error_reply(StatusCode::NOT_FOUND, "no_group", &format!("no group named {}", r.group));
        };
        let primary = g.epoch == r.epoch && g.primary.as_deref() == Some(r.member.as_str());
        if primary {
            self.leases.renew(&r.group, g.epoch);
        }
        json_reply(StatusCode::OK, &Renewed { primary, epoch: g.epoch })
    }

    /// On the leader: a primary whose lease lapsed loses its epoch (through Raft, so every
    /// member agrees). A new leader first extends every lease by a full timeout.
    async fn watch_leases(self: Arc<Self>) {
        let mut was_leader = false;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        loop {
            tick.tick().await;
            let leader = self.is_leader();
            if leader && !was_leader {
                self.leases.extend_all();
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let groups: Vec<(String, u64)> = {
                let m = self.machine.machine.lock().unwrap_or_else(|p| p.into_inner());
                m.state.groups.iter().filter(|(_, g)| g.primary.is_some()).map(|(n, g)| (n.clone(), g.epoch)).collect()
            };
            for (group, epoch) in self.leases.lapsed(&groups) {
                // The id names the lapse, so two leaders proposing it apply it once.
                let id = format!("lease-lapsed/{group}/{epoch}");
                let req = Request { id, command: Command::LeaseExpired { group: group.clone(), epoch } };
                match self.raft.client_write(req).await {
                    Ok(_) => tracing::warn!(group, epoch, "the primary's lease lapsed: epoch ended"),
                    Err(e) => tracing::warn!(group, epoch, "could not end a lapsed epoch: {e}"),
                }
            }
        }
    }
}

/// A write's outcome as the reply: the group (200) or why nothing changed (409).
fn outcome_reply(outcome: Option<crate::model::Outcome>) -> hyper::Response<Full<Bytes>> {
    match outcome {
        Some(Ok(group)) => json_reply(StatusCode::OK, &group),
        Some(Err(refusal)) => {
            json_reply(StatusCode::CONFLICT, &serde_json::json!({ "error": refusal, "message": refusal.to_string() }))
        }
        None => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the write had no outcome"),
    }
}
