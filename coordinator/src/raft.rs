//! The Raft side: openraft's types for the coordinator, and the members' RPCs to each other as
//! JSON over HTTP (the same listener as the API).

use crate::http::{post_json, HttpError, Transport};
use crate::model::{Outcome, Request};
use crate::server::HEARTBEAT_MS;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Cursor;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub type NodeId = u64;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Option<Outcome>,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// The incarnation a member speaks for in its Raft messages (empty while it holds none).
pub type SpeaksFor = Arc<RwLock<String>>;

/// Connects members by their API address.
#[derive(Debug, Clone)]
pub struct Network {
    pub speaks_for: SpeaksFor,
    pub transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.clone(), speaks_for: self.speaks_for.clone(), transport: self.transport.clone() }
    }
}

#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    addr: String,
    speaks_for: SpeaksFor,
    transport: Transport,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let incarnation = self.speaks_for.read().map(|s| s.clone()).unwrap_or_default();
        let reply: Result<Resp, RaftError<NodeId, E>> =
            post_json(&self.transport, &self.addr, path, Some(&incarnation), req).await.map_err(|e| match e {
                HttpError::Connect(..) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(APPEND_PATH, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(SNAPSHOT_PATH, &rpc).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call(VOTE_PATH, &rpc).await
    }

    /// How long the leader waits before it tries an unreachable member again: one heartbeat.
    /// openraft's default (500 ms) let a member that came back hear nothing for longer than its
    /// election timeout, so it stood for election and unseated a working leader.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(HEARTBEAT_MS)))
    }
}
