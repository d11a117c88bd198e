//! One coordinator member: its Raft node, the HTTP/JSON API (the same on every member), and the
//! leader-local leases.
//!
//! API (JSON bodies, types in `api`; every write carries a client-generated request `id`):
//! - `POST /v1/write` `{"version": 1, "id", "request": {"op": "register" | "report" | "failover", ...}}`
//!   (without `version`: the older `{"id", "command": {"op", ...}}`)
//! - `POST /v1/lease` `{"group", "member", "epoch"}`: renews the primary's lease
//! - `GET /v1/groups`, `GET /v1/groups/NAME`: linearizable reads
//! - `GET /v1/status`: this member's view of the cluster
//! - `GET /health`, `GET /ready`: 200 while it is part of a working majority (and, for `/ready`,
//!   serves), else 503 with the reason; `GET /metrics`: Prometheus text
//!
//! A member that is not the leader passes writes and reads to the leader and relays its reply:
//! callers never need to find the leader. A caller that names the incarnation it knows
//! (`x-tandem-incarnation`) is told when that incarnation was lost instead of being served.

use crate::api::{self, Renewal, Renewed};
use crate::http::{error_reply, exchange, get_json, json_reply, raw_reply, Transport, INCARNATION_HEADER};
use crate::lease::{Leases, QuorumClock};
use crate::membership::{self, Join, Status};
use crate::metrics::{self, Metrics, RaftView};
use crate::model::{Command, Group, Request};
use crate::raft::{Network, NodeId, Raft, SpeaksFor, APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::store::{Identity, StateMachine, Store, StoreError};
use bytes::Bytes;
use eventlog::Epoch;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader, InitializeError, RaftError};
use openraft::StorageError;
use openraft::{BasicNode, ServerState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
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
    /// How members are reached (and this one accepts): HTTP, or HTTPS with mutual TLS.
    pub transport: Transport,
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
    #[error("this member held incarnation {held}, but the other members moved to {now} (a reinit): its state was discarded; start it again to join {now}")]
    Superseded { held: String, now: String },
}

/// Where this member stands, as it changes.
#[derive(Debug, Default)]
struct Standing {
    /// Stored once the member holds state of its incarnation.
    identity: Option<Identity>,
    /// Why it does not serve, when it does not.
    trouble: Option<String>,
}

pub struct Member {
    pub id: NodeId,
    peers: BTreeMap<NodeId, String>,
    pub raft: Raft,
    machine: StateMachine,
    store: Store,
    standing: RwLock<Standing>,
    /// The incarnation in this member's Raft messages (the one it holds or is joining).
    speaks_for: SpeaksFor,
    /// What the other members last said of themselves (`None`: no answer).
    census: Mutex<BTreeMap<NodeId, Option<Status>>>,
    transport: Transport,
    /// Set when the member must stop (its incarnation was replaced).
    ended: Mutex<Option<ServeError>>,
    ending: tokio::sync::Notify,
    leases: Leases,
    /// When a majority last acknowledged this member as leader (it confirms renewals only then).
    quorum: QuorumClock,
    metrics: Metrics,
    /// When this member, as leader, last applied a report of each (group, member): leader-local,
    /// like the leases.
    reported: Mutex<BTreeMap<(String, String), Instant>>,
    /// Since when this member leads (none while it does not): a member it has not heard from
    /// in all that time counts as silent only once it has led for `SILENT_AFTER`.
    leading_since: Mutex<Option<Instant>>,
}

/// The leader's heartbeat, in ms. openraft ticks every one and a half of it, so heartbeats
/// leave every 45 ms and a follower looks at its election timer as often.
pub const HEARTBEAT_MS: u64 = 30;
/// A follower's election timeout is drawn from `ELECTION_MIN_MS..ELECTION_MAX_MS`. openraft
/// (0.9) lets a follower that followed a leader stand only after the leader's own lease
/// (`ELECTION_MAX_MS`) and then its timeout, both counted from the last heartbeat, and checks at
/// its tick: a dead leader is replaced within `2 × ELECTION_MAX_MS + 1.5 × HEARTBEAT_MS` (285 ms)
/// plus a vote's round trip and fsync. Primaries' leases must outlast that (ARCHITECTURE.md,
/// Leases).
pub const ELECTION_MIN_MS: u64 = 90;
pub const ELECTION_MAX_MS: u64 = 120;
/// How long a member that comes back to its group (restarted with its state) waits before it
/// may stand for election: long enough to hear a working leader, short next to a lease lost to
/// a second election.
const RETURN_QUIET: Duration = Duration::from_secs(1);

fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "tandem".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
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
        let (id, addr) = item.split_once('=').ok_or_else(|| format!("`{item}` is not ID=ADDR"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("`{id}` is not a member id (a number)"))?;
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("member {id} is named twice"));
        }
    }
    Ok(peers)
}

/// Creates a member's data dir (and its missing parents) for its owner alone.
fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(path)
}

/// `tandem coordinator reinit`: gives the (stopped) member in `data_dir` a new incarnation, for
/// when the old one is held by fewer than a majority and its data may be lost. Its old state is
/// discarded; started again, it forms the new incarnation with the other members, and clients of
/// the old one are told their data was lost. Returns the old incarnation (if it held one) and the
/// new one.
pub fn reinit(data_dir: &std::path::Path, id: NodeId, members: usize) -> Result<(Option<String>, String), ServeError> {
    create_private_dir(data_dir).map_err(|e| StoreError::Db { path: data_dir.to_path_buf(), source: Box::new(e) })?;
    let store = match Store::open(data_dir) {
        Ok(store) => store,
        Err(StoreError::Corrupt { path, .. }) => {
            std::fs::remove_file(&path).map_err(|e| StoreError::Db { path: path.clone(), source: Box::new(e) })?;
            Store::open(data_dir)?
        }
        Err(e) => return Err(e.into()),
    };
    let old = store.identity().ok().flatten().map(|i| i.incarnation);
    store.discard()?;
    drop(store);
    let store = Store::open(data_dir)?;
    let incarnation = random_token()?;
    let identity = Identity {
        member: id,
        disk: random_token()?,
        incarnation: incarnation.clone(),
        distributor: true,
        formed: members == 1,
        replaced: old.clone(),
    };
    store.set_identity(&identity)?;
    Ok((old, incarnation))
}

/// Starts a member and serves its API until the process ends.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let member = Member::start(&config).await?;
    tracing::info!(id = config.id, listen = %config.listen, "coordinator member serving");
    member.serve(config.listen).await
}

impl Member {
    /// Opens the data dir and starts the Raft node. A member without its identity joins (or
    /// creates) an incarnation first, in the background (see `membership`).
    pub async fn start(config: &Config) -> Result<Arc<Member>, ServeError> {
        create_private_dir(&config.data_dir)
            .map_err(|e| StoreError::Db { path: config.data_dir.clone(), source: Box::new(e) })?;
        let store = Store::open(&config.data_dir)?;
        let identity = store.identity()?;
        if let Some(id) = identity.as_ref().filter(|id| id.member != config.id) {
            return Err(ServeError::WrongMember {
                path: store.path().to_path_buf(),
                stored: id.member,
                asked: config.id,
            });
        }
        let speaks_for: SpeaksFor =
            Arc::new(RwLock::new(identity.as_ref().map(|i| i.incarnation.clone()).unwrap_or_default()));
        let machine = StateMachine::load(&store)?;
        let network = Network { speaks_for: speaks_for.clone(), transport: config.transport.clone() };
        let raft = Raft::new(config.id, Arc::new(raft_config()), network, store.clone(), machine.clone())
            .await
            .map_err(|e| ServeError::Raft(fatal_text(&e)))?;
        let member = Arc::new(Member {
            id: config.id,
            peers: config.peers.clone(),
            raft,
            machine,
            store,
            standing: RwLock::new(Standing { identity: identity.clone(), trouble: None }),
            speaks_for,
            census: Mutex::new(config.peers.keys().filter(|&&id| id != config.id).map(|&id| (id, None)).collect()),
            transport: config.transport.clone(),
            ended: Mutex::new(None),
            ending: tokio::sync::Notify::new(),
            leases: Leases::new(config.lease_timeout),
            metrics: Metrics::default(),
            reported: Mutex::new(BTreeMap::new()),
            leading_since: Mutex::new(None),
            quorum: QuorumClock::default(),
        });
        match identity {
            // A distributor whose incarnation is not formed yet starts Raft with every member
            // (after the cluster's first start or a reinit), once.
            Some(id) if id.distributor && !id.formed => member.initialize().await?,
            // A member coming back to its group stands for election only after a while: it may
            // not hear the leader's heartbeats before its election timeout (the leader tries an
            // unreachable member again only every heartbeat), and its election would unseat a
            // working leader; two elections within one lease fence the primary.
            Some(_) if member.peers.len() > 1 => {
                member.raft.runtime_config().elect(false);
                let raft = member.raft.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETURN_QUIET).await;
                    raft.runtime_config().elect(true);
                });
            }
            Some(_) => {}
            None => {
                member.set_trouble(Some("this member holds no state yet: it is asking the others".into()));
                tokio::spawn(member.clone().join());
            }
        }
        tokio::spawn(member.clone().take_census());
        Ok(member)
    }

    async fn initialize(&self) -> Result<(), ServeError> {
        if self.raft.is_initialized().await.map_err(|e| ServeError::Raft(fatal_text(&e)))? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> =
            self.peers.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
        self.raft.initialize(nodes).await.map_err(|e| {
            ServeError::Raft(raft_text(&e, |e| match e {
                InitializeError::NotAllowed(_) => "the cluster was initialized already".into(),
                InitializeError::NotInMembers(_) => "this member is not among the cluster's members".into(),
            }))
        })
    }

    fn identity(&self) -> Option<Identity> {
        self.standing.read().unwrap_or_else(|p| p.into_inner()).identity.clone()
    }

    fn set_trouble(&self, trouble: Option<String>) {
        let mut s = self.standing.write().unwrap_or_else(|p| p.into_inner());
        if s.trouble != trouble {
            if let Some(t) = &trouble {
                tracing::warn!("{t}");
            }
            s.trouble = trouble;
        }
    }

    /// Stores the identity: from here on the member votes and serves.
    fn hold(&self, identity: Identity) -> Result<(), StoreError> {
        self.store.set_identity(&identity)?;
        *self.speaks_for.write().unwrap_or_else(|p| p.into_inner()) = identity.incarnation.clone();
        tracing::info!(incarnation = identity.incarnation, "holding the coordinator's incarnation");
        let mut s = self.standing.write().unwrap_or_else(|p| p.into_inner());
        s.identity = Some(identity);
        s.trouble = None;
        Ok(())
    }

    fn new_identity(&self, incarnation: String, distributor: bool, formed: bool) -> Result<Identity, StoreError> {
        Ok(Identity { member: self.id, disk: random_token()?, incarnation, distributor, formed, replaced: None })
    }

    /// A member without an identity: asks the others until it may join an incarnation.
    async fn join(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CENSUS_EVERY);
        // The first census is under way.
        tick.tick().await;
        loop {
            tick.tick().await;
            let census = self.census.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let n = self.peers.len();
            let result = match membership::decide_join(self.id, &census) {
                Join::Bootstrap => match random_token().and_then(|t| self.new_identity(t, true, n == 1)) {
                    Ok(identity) => match self.hold(identity) {
                        Ok(()) => self.initialize().await.map(|_| true),
                        Err(e) => Err(e.into()),
                    },
                    Err(e) => Err(e.into()),
                },
                Join::Forming(inc) => {
                    self.new_identity(inc, false, false).and_then(|i| self.hold(i)).map(|_| true).map_err(Into::into)
                }
                Join::CatchUp { incarnation, applied } => self.catch_up(incarnation, applied).await,
                Join::Lost { incarnation, holders } => {
                    self.set_trouble(Some(lost_message(&incarnation, holders, n)));
                    Ok(false)
                }
                Join::Wait { silent } => {
                    let silent: Vec<String> = silent.iter().map(NodeId::to_string).collect();
                    self.set_trouble(Some(format!(
                        "this member holds no state yet and members {} do not answer",
                        silent.join(", ")
                    )));
                    Ok(false)
                }
            };
            match result {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => self.set_trouble(Some(format!("cannot join the cluster: {e}"))),
            }
        }
    }

    /// Takes the Raft log of `incarnation` from its leader until this member has applied what a
    /// majority had, and only then holds it (and votes).
    async fn catch_up(&self, incarnation: String, applied: u64) -> Result<bool, ServeError> {
        *self.speaks_for.write().unwrap_or_else(|p| p.into_inner()) = incarnation.clone();
        self.set_trouble(Some(format!("this member is catching up on incarnation {incarnation} before it votes")));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut metrics = self.raft.metrics();
        while metrics.borrow().last_applied.map_or(0, |l| l.index) < applied {
            if Instant::now() > deadline {
                return Ok(false);
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        }
        self.hold(self.new_identity(incarnation, false, true)?)?;
        Ok(true)
    }

    /// Every member, every CENSUS_EVERY: asks the others what they hold, then acts on it.
    async fn take_census(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CENSUS_EVERY);
        loop {
            tick.tick().await;
            let asks = self.peers.iter().filter(|(&id, _)| id != self.id).map(|(&id, addr)| {
                let (addr, transport) = (addr.clone(), self.transport.clone());
                async move { (id, get_json::<Status>(&transport, &addr, "/v1/status").await.ok()) }
            });
            let census: BTreeMap<NodeId, Option<Status>> = futures_join_all(asks).await.into_iter().collect();
            *self.census.lock().unwrap_or_else(|p| p.into_inner()) = census.clone();
            let Some(identity) = self.identity() else { continue };
            let n = self.peers.len();
            if !identity.formed {
                let holding = 1 + census
                    .values()
                    .flatten()
                    .filter(|s| s.ready && s.incarnation.as_deref() == Some(&identity.incarnation))
                    .count();
                if holding >= membership::majority(n) {
                    let formed = Identity { formed: true, ..identity.clone() };
                    if self.store.set_identity(&formed).is_ok() {
                        self.standing.write().unwrap_or_else(|p| p.into_inner()).identity = Some(formed);
                    }
                }
            }
            if let Some(now) = membership::superseded_by(&identity.incarnation, &census) {
                self.end(ServeError::Superseded { held: identity.incarnation.clone(), now }).await;
                return;
            }
            // Every other member answered and too few hold this incarnation: no quorum can form
            // in it again, and what only the others held is gone.
            let lost = identity.formed.then(|| membership::lost_majority(&identity.incarnation, &census)).flatten();
            let trouble = lost.map(|holders| lost_message(&identity.incarnation, holders, n));
            self.set_trouble(trouble);
        }
    }

    /// The other members moved to a new incarnation: this member's state is from a lost history.
    /// It discards it and stops.
    async fn end(&self, why: ServeError) {
        tracing::error!("{why}");
        let _ = self.raft.shutdown().await;
        if let Err(e) = self.store.discard() {
            tracing::error!("could not discard {}: {e}", self.store.path().display());
        }
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.ending.notify_one();
    }

    pub fn status(&self) -> Status {
        // Health borrows the Raft metrics itself: not while they are borrowed here (a second
        // read behind openraft's waiting update would never be granted, and both would hang).
        let health = self.health();
        let (leader, term, last_applied) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.current_term, m.last_applied.map(|l| l.index))
        };
        let s = self.standing.read().unwrap_or_else(|p| p.into_inner());
        let speaks_for = self.speaks_for.read().map(|s| s.clone()).unwrap_or_default();
        Status {
            id: self.id,
            incarnation: (!speaks_for.is_empty()).then_some(speaks_for),
            ready: s.identity.is_some(),
            forming: s.identity.as_ref().is_some_and(|i| i.distributor && !i.formed),
            replaced: s.identity.as_ref().and_then(|i| i.replaced.clone()),
            leader,
            term,
            last_applied,
            trouble: s.trouble.clone(),
            healthy: health.is_ok(),
            unhealthy: health.err(),
        }
    }

    fn raft_view(&self) -> RaftView {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        RaftView {
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            last_applied: m.last_applied.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            voters: m.membership_config.membership().voter_ids().count(),
        }
    }

    /// Whether this member is part of a working majority, and why not.
    fn health(&self) -> Result<(), String> {
        metrics::health(&self.raft_view())
    }

    /// `/health`: a working majority; `/ready`: that, and this member serves the API.
    fn health_reply(&self, ready: bool) -> hyper::Response<Full<Bytes>> {
        let trouble = self.standing.read().unwrap_or_else(|p| p.into_inner()).trouble.clone();
        let why = match self.health() {
            Err(why) => Some(why),
            Ok(()) if ready => {
                trouble.or_else(|| self.identity().is_none().then(|| "this member holds no state".into()))
            }
            Ok(()) => None,
        };
        let status = if why.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let key = if ready { "ready" } else { "healthy" };
        json_reply(status, &serde_json::json!({ key: why.is_none(), "reason": why }))
    }

    fn metrics_reply(&self) -> hyper::Response<Full<Bytes>> {
        let text = self.groups(|gs| self.metrics.render(&self.raft_view(), gs));
        let mut resp = raw_reply(StatusCode::OK, text.into());
        resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(metrics::CONTENT_TYPE));
        resp
    }

    /// On the leader: the members of `group` it has not heard from for `SILENT_AFTER` (those it
    /// never heard from count once it has led that long).
    fn silent_members(&self, group: &str) -> Vec<String> {
        let members: Vec<String> =
            self.groups(|gs| gs.get(group).map(|g| g.members.keys().cloned().collect())).unwrap_or_default();
        self.silent_among(group, members)
    }

    /// Which of `members` of `group` are silent (see `silent_members`).
    fn silent_among(&self, group: &str, members: Vec<String>) -> Vec<String> {
        let since = *self.leading_since.lock().unwrap_or_else(|p| p.into_inner());
        let Some(since) = since else { return Vec::new() };
        let reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        members
            .into_iter()
            .filter(|m| {
                let heard = reported.get(&(group.to_string(), m.clone())).copied().unwrap_or(since);
                heard.elapsed() >= api::SILENT_AFTER
            })
            .collect()
    }

    /// On the leader: why `group` may not be reset while its primary holds a lease.
    fn live_primary(&self, group: &str) -> Option<crate::model::Refusal> {
        let primary = self.groups(|gs| gs.get(group).filter(|g| !g.stopped).and_then(|g| g.primary.clone()))?;
        let left = self.leases.left(group).filter(|l| !l.is_zero())?;
        Some(crate::model::Refusal::PrimaryLive { group: group.to_string(), primary, left_ms: left.as_millis() as u64 })
    }

    /// The leader-local part of a group's view: its lease and when each member last reported.
    fn with_leader_view(&self, name: &str, mut g: api::Group) -> api::Group {
        if !self.is_leader() {
            return g;
        }
        g.lease_left_ms = g.primary.as_ref().and(self.leases.left(name)).map(|d| d.as_millis() as u64);
        let reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for (member, m) in g.members.iter_mut() {
            m.last_report_ms =
                reported.get(&(name.to_string(), member.clone())).map(|at| at.elapsed().as_millis() as u64);
        }
        drop(reported);
        // Called with the state machine locked: the members come from `g`.
        let silent = self.silent_among(name, g.members.keys().cloned().collect());
        for (member, m) in g.members.iter_mut() {
            m.silent = silent.contains(member);
        }
        g
    }

    /// Serves the API until the process ends.
    pub async fn serve(self: Arc<Self>, listen: SocketAddr) -> Result<(), ServeError> {
        let listener = TcpListener::bind(listen).await.map_err(|e| ServeError::Listen(listen, e))?;
        tokio::spawn(self.clone().watch_leases());
        tokio::spawn(self.clone().watch_quorum());
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.ending.notified() => match self.ended.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(why) => return Err(why),
                    None => continue,
                },
            };
            let Ok((stream, from)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let member = self.clone();
            tokio::spawn(async move {
                match member.transport.acceptor.clone() {
                    None => member.serve_connection(stream).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => member.serve_connection(tls).await,
                        Err(e) => tracing::warn!(%from, "refused a peer at the handshake: {e}"),
                    },
                }
            });
        }
    }

    async fn serve_connection<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let member = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let member = member.clone();
            async move { Ok::<_, std::convert::Infallible>(member.handle(req).await) }
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
    }

    async fn handle(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let theirs = req.headers().get(INCARNATION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error_reply(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        };
        if let Some(refusal) = self.refusal(&method, &path, theirs.as_deref()) {
            return refusal;
        }
        match (&method, path.as_str()) {
            (&Method::POST, APPEND_PATH) => {
                self.raft_rpc(&body, |raft, rpc| async move { raft.append_entries(rpc).await }).await
            }
            (&Method::POST, VOTE_PATH) => self.raft_rpc(&body, |raft, rpc| async move { raft.vote(rpc).await }).await,
            (&Method::POST, SNAPSHOT_PATH) => {
                self.raft_rpc(&body, |raft, rpc| async move { raft.install_snapshot(rpc).await }).await
            }
            (&Method::POST, "/v1/write") => match api::parse_write(&body) {
                Ok(write) => self.write(write, &path, body).await,
                Err(e) => error_reply(StatusCode::BAD_REQUEST, e.kind(), &e.to_string()),
            },
            (&Method::POST, "/v1/lease") => match serde_json::from_slice::<Renewal>(&body) {
                Ok(r) => self.renew(r, &path, body).await,
                Err(e) => error_reply(StatusCode::BAD_REQUEST, "bad_request", &format!("not a lease renewal: {e}")),
            },
            (&Method::GET, "/v1/status") => json_reply(StatusCode::OK, &self.status()),
            (&Method::GET, "/health") => self.health_reply(false),
            (&Method::GET, "/ready") => self.health_reply(true),
            (&Method::GET, "/metrics") => self.metrics_reply(),
            (&Method::GET, "/v1/groups") => {
                self.read(&path, |groups| {
                    let shown: BTreeMap<&String, api::Group> =
                        groups.iter().map(|(n, g)| (n, self.with_leader_view(n, g.into()))).collect();
                    serde_json::to_value(shown)
                })
                .await
            }
            (&Method::GET, p) if p.starts_with("/v1/groups/") => {
                let name = p["/v1/groups/".len()..].to_string();
                self.read(&path, |groups| match groups.get(&name) {
                    Some(g) => serde_json::to_value(self.with_leader_view(&name, g.into())),
                    None => Ok(serde_json::Value::Null),
                })
                .await
            }
            _ => error_reply(StatusCode::NOT_FOUND, "not_found", &format!("no endpoint {method} {path}")),
        }
    }

    /// Why this member does not answer a request, if it does not: Raft messages of another
    /// incarnation (and votes while it holds no state), and API calls it cannot serve.
    fn refusal(&self, method: &Method, path: &str, theirs: Option<&str>) -> Option<hyper::Response<Full<Bytes>>> {
        // A member in trouble still says how it stands.
        if matches!(path, "/v1/status" | "/health" | "/ready" | "/metrics") {
            return None;
        }
        let ours = self.speaks_for.read().map(|s| s.clone()).unwrap_or_default();
        let ready = self.identity().is_some();
        if path.starts_with("/raft/") {
            if theirs != Some(ours.as_str()) || ours.is_empty() {
                let why = format!(
                    "Raft message of incarnation {} refused: this member holds {}",
                    theirs.unwrap_or("none"),
                    if ours.is_empty() { "none yet" } else { ours.as_str() }
                );
                return Some(error_reply(StatusCode::CONFLICT, "incarnation", &why));
            }
            if path == VOTE_PATH && !ready {
                return Some(error_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_state",
                    "this member does not vote before it holds state",
                ));
            }
            return None;
        }
        if let Some(theirs) = theirs.filter(|t| ready && *t != ours) {
            let why = format!(
                "the coordinator's incarnation {theirs} was lost; it is now incarnation {ours}: state kept in {theirs} is gone, register again ({method} {path})"
            );
            return Some(error_reply(StatusCode::GONE, "incarnation_lost", &why));
        }
        let trouble = self.standing.read().unwrap_or_else(|p| p.into_inner()).trouble.clone();
        trouble.map(|t| error_reply(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &t))
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

    fn leader_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
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
        let ours = self.speaks_for.read().map(|s| s.clone()).unwrap_or_default();
        match exchange(&self.transport, &addr, method, path, Some(&ours), body).await {
            Ok((status, reply)) => raw_reply(status, reply),
            Err(e) => {
                error_reply(StatusCode::SERVICE_UNAVAILABLE, "no_leader", &format!("the leader did not answer: {e}"))
            }
        }
    }

    /// Proposes a write through Raft and replies once this member applied it. A follower passes
    /// the caller's own body to the leader, which reads it in whatever version it came.
    async fn write(&self, write: api::Write, path: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
        let reset_force = write.reset_force();
        let req = match write.into_entry(eventlog::IncarnationToken::random) {
            Ok(req) => req,
            Err(e) => return error_reply(StatusCode::INTERNAL_SERVER_ERROR, "random", &e.to_string()),
        };
        let mut req = req;
        let report = match &mut req.command {
            Command::Report { group, member, .. } => Some((group.clone(), member.clone())),
            Command::Failover { group, silent, .. } => {
                *silent = self.silent_members(group);
                None
            }
            _ => None,
        };
        if let (Command::Reset { group }, Some(false)) = (&req.command, reset_force) {
            // Only the leader knows the leases.
            if !self.is_leader() {
                return self.relay(Method::POST, path, body).await;
            }
            if let Some(refusal) = self.live_primary(group) {
                self.metrics.wrote("refused");
                return outcome_reply(Some(Err(refusal)));
            }
        }
        let Ok(written) = tokio::time::timeout(QUORUM_WAIT, self.raft.client_write(req)).await else {
            self.metrics.wrote("failed");
            return error_reply(StatusCode::SERVICE_UNAVAILABLE, "no_quorum", &no_quorum());
        };
        match written {
            Ok(resp) => {
                let applied = matches!(resp.data, Some(Ok(_)));
                self.metrics.wrote(if applied { "ok" } else { "refused" });
                if let (true, Some(key)) = (applied, report) {
                    self.metrics.reports.inc();
                    self.reported.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now());
                }
                outcome_reply(resp.data)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                self.relay(Method::POST, path, body).await
            }
            Err(e) => {
                self.metrics.wrote("failed");
                error_reply(StatusCode::SERVICE_UNAVAILABLE, "raft", &raft_text(&e, write_text))
            }
        }
    }

    /// A linearizable read: this member confirms it still leads, then reads what it applied.
    async fn read(
        &self,
        path: &str,
        view: impl FnOnce(&BTreeMap<String, Group>) -> serde_json::Result<serde_json::Value>,
    ) -> hyper::Response<Full<Bytes>> {
        let Ok(confirmed) = tokio::time::timeout(QUORUM_WAIT, self.raft.ensure_linearizable()).await else {
            return error_reply(StatusCode::SERVICE_UNAVAILABLE, "no_quorum", &no_quorum());
        };
        match confirmed {
            Ok(_) => {
                let value = self.groups(view);
                match value {
                    Ok(serde_json::Value::Null) => error_reply(StatusCode::NOT_FOUND, "no_group", "no such group"),
                    Ok(v) => json_reply(StatusCode::OK, &v),
                    Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "encode", &e.to_string()),
                }
            }
            Err(e) if e.forward_to_leader::<BasicNode>().is_some() => self.relay(Method::GET, path, Bytes::new()).await,
            Err(e) => error_reply(StatusCode::SERVICE_UNAVAILABLE, "raft", &raft_text(&e, read_text)),
        }
    }

    /// Looks at the groups this member has applied.
    fn groups<T>(&self, look: impl FnOnce(&BTreeMap<String, Group>) -> T) -> T {
        let m = self.machine.machine.lock().unwrap_or_else(|p| p.into_inner());
        look(&m.state.groups)
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Renews a primary's lease on the leader, without a Raft round: leases are leader-local.
    async fn renew(&self, r: Renewal, path: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
        if !self.is_leader() {
            return self.relay(Method::POST, path, body).await;
        }
        // A leader cut off from the majority believes it leads until it hears of a new term
        // (openraft has no check-quorum), and so does a member restarted with a vote of its own.
        let within = self.leases.confirmed_within();
        match self.quorum.confirm(self.raft_view().voters, within) {
            Ok(()) if self.quorum.refusing(false) => {
                tracing::info!("confirming lease renewals again: a majority acknowledges this leader")
            }
            Ok(()) => {}
            Err(age) => {
                self.metrics.lease_unconfirmed.inc();
                if self.quorum.refusing(true) {
                    match age {
                        // Just elected: its first heartbeats are on their way.
                        None => tracing::debug!(
                            group = r.group,
                            "not confirming lease renewals: no majority acknowledged this leader yet"
                        ),
                        Some(age) => tracing::warn!(
                            group = r.group,
                            "not confirming lease renewals until a majority acknowledges this leader: the last did {} ago",
                            humantime::format_duration(Duration::from_millis(age.as_millis() as u64))
                        ),
                    }
                }
                let why = format!(
                    "this member leads, but no majority acknowledged it within {}; retry",
                    humantime::format_duration(within)
                );
                return error_reply(StatusCode::SERVICE_UNAVAILABLE, "unconfirmed", &why);
            }
        }
        let standing =
            self.groups(|gs| gs.get(&r.group).map(|g| (g.epoch, g.primary.as_deref() == Some(r.member.as_str()))));
        let Some((epoch, is_primary)) = standing else {
            return error_reply(StatusCode::NOT_FOUND, "no_group", &format!("no group named {}", r.group));
        };
        let primary = is_primary && epoch == r.epoch;
        if primary {
            self.leases.renew(&r.group, epoch);
            self.metrics.lease_renewals.inc();
        } else {
            self.metrics.lease_refusals.inc();
        }
        let timeout_ms = self.leases.timeout().as_millis() as u64;
        json_reply(StatusCode::OK, &Renewed { primary, epoch, timeout_ms })
    }

    /// Notes every metrics report's age of the last majority acknowledgement, with its time.
    async fn watch_quorum(self: Arc<Self>) {
        let mut reports = self.raft.metrics();
        loop {
            let millis = reports.borrow_and_update().millis_since_quorum_ack;
            self.quorum.saw(millis);
            if reports.changed().await.is_err() {
                return;
            }
        }
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
            if leader != was_leader {
                *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) = leader.then(Instant::now);
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let groups: Vec<(String, Epoch)> = self.groups(|gs| {
                gs.iter()
                    .filter(|(_, g)| g.primary.is_some() && !g.stopped)
                    .map(|(n, g)| (n.clone(), g.epoch))
                    .collect()
            });
            for (group, epoch) in self.leases.lapsed(&groups) {
                // The id names the lapse, so two leaders proposing it apply it once.
                let id = format!("lease-lapsed/{group}/{epoch}");
                let silent = self.silent_members(&group);
                let req = Request { id, command: Command::LeaseExpired { group: group.clone(), epoch, silent } };
                match self.raft.client_write(req).await {
                    Ok(_) => {
                        self.metrics.lease_lapses.inc();
                        tracing::warn!(group, epoch = epoch.0, "the primary's lease lapsed: epoch ended")
                    }
                    Err(e) => {
                        let why = raft_text(&e, write_text);
                        tracing::warn!(group, epoch = epoch.0, "could not end a lapsed epoch: {why}")
                    }
                }
            }
        }
    }
}

/// How long a write or a read waits for a majority before the caller is told to retry.
const QUORUM_WAIT: Duration = Duration::from_secs(3);

fn no_quorum() -> String {
    format!(
        "no majority of members answered within {}; retry (with the same request id for a write)",
        humantime::format_duration(QUORUM_WAIT)
    )
}

// Openraft's own error texts carry Rust's debug notation (`Some(2)`, `BasicNode { addr: .. }`):
// members say these instead.

fn raft_text<E>(e: &RaftError<NodeId, E>, api_text: impl FnOnce(&E) -> String) -> String {
    match e {
        RaftError::APIError(e) => api_text(e),
        RaftError::Fatal(fatal) => fatal_text(fatal),
    }
}

fn fatal_text(e: &Fatal<NodeId>) -> String {
    match e {
        Fatal::Stopped => "the Raft node has stopped".into(),
        Fatal::Panicked => "the Raft node failed".into(),
        Fatal::StorageError(StorageError::IO { source }) => match std::error::Error::source(source) {
            Some(cause) => format!("the Raft node's storage failed: {cause}"),
            None => "the Raft node's storage failed".into(),
        },
        Fatal::StorageError(StorageError::Defensive { .. }) => "the Raft node found its storage inconsistent".into(),
    }
}

fn write_text(e: &ClientWriteError<NodeId, BasicNode>) -> String {
    match e {
        ClientWriteError::ForwardToLeader(to) => leader_text(to),
        ClientWriteError::ChangeMembershipError(_) => "the cluster's membership cannot change now".into(),
    }
}

fn read_text(e: &CheckIsLeaderError<NodeId, BasicNode>) -> String {
    match e {
        CheckIsLeaderError::ForwardToLeader(to) => leader_text(to),
        CheckIsLeaderError::QuorumNotEnough(_) => no_quorum(),
    }
}

fn leader_text(to: &ForwardToLeader<NodeId, BasicNode>) -> String {
    match (to.leader_id, &to.leader_node) {
        (Some(id), Some(node)) => format!("this member does not lead: member {id} at {} does", node.addr),
        (Some(id), None) => format!("this member does not lead: member {id} does"),
        (None, _) => "no leader is elected yet; retry shortly".into(),
    }
}

/// How often members ask each other what they hold.
const CENSUS_EVERY: Duration = Duration::from_millis(200);

fn lost_message(incarnation: &str, holders: usize, members: usize) -> String {
    format!(
        "the coordinator's incarnation {incarnation} is held by {holders} of {members} members, fewer than a majority: its data may be lost; an operator must run `tandem coordinator reinit` on one member to start a new incarnation"
    )
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// A write's outcome as the reply: the group (200) or why nothing changed (409).
fn outcome_reply(outcome: Option<crate::model::Outcome>) -> hyper::Response<Full<Bytes>> {
    match outcome {
        Some(Ok(group)) => json_reply(StatusCode::OK, &api::Group::from(&group)),
        Some(Err(refusal)) => {
            json_reply(StatusCode::CONFLICT, &api::Refused { message: refusal.to_string(), error: refusal })
        }
        None => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the write had no outcome"),
    }
}
