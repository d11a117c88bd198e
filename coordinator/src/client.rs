//! The client the agents use: any member will do (each passes writes to the leader); a member
//! that does not answer is skipped for the next; a write is retried under its request id, so it
//! runs once however many times it is sent.

use crate::api::{Group, Problem, Refusal, Refused, Renewal, Renewed, Request, WriteRequest};
use crate::http::{exchange, Transport};
use crate::membership::Status;
use bytes::Bytes;
use eventlog::Epoch;
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a call keeps trying members before it gives up.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long one try at one member may take before the next member is tried. A member that
/// hangs (its host gone, its packets dropped) costs this much, not the HTTP timeout.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(1);
/// The same for a lease renewal, which is a map update on the leader: a renewal stuck on a dead
/// member for longer would itself let the lease lapse (see `RENEW_TRY_TIMEOUT` in ARCHITECTURE.md,
/// Leases).
pub const RENEW_TRY_TIMEOUT: Duration = Duration::from_millis(150);
/// The pause after every member was tried once without an answer.
pub const ROUND_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("no coordinator member answered within {patience}: {0}", patience = humantime::format_duration(PATIENCE))]
    Unavailable(String),
    /// A renewal got no answer that counts by its deadline; the last member's answer says why.
    #[error("no member confirmed the renewal in time: {0}")]
    Unconfirmed(String),
    #[error("the coordinator refused: {0}")]
    Refused(Refusal),
    /// The coordinator's incarnation this client knew is gone (the message names both).
    #[error("{0}")]
    IncarnationLost(String),
    /// The member does not know the request's version or op (an older build).
    #[error("the coordinator cannot serve this request: {0}")]
    Unsupported(String),
    #[error("the coordinator answered {0}")]
    BadReply(String),
}

#[derive(Debug)]
pub struct Client {
    members: Vec<String>,
    transport: Transport,
    /// The member to try first (the last that answered).
    next: AtomicUsize,
    /// The coordinator incarnation this client has seen; sent with every call.
    incarnation: Mutex<Option<String>>,
}

/// A primary's lease as its renewal loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Renewed; the caller is primary of this epoch.
    Held { epoch: Epoch },
    /// The group moved on to this epoch: the caller is primary no more.
    Lost { epoch: Epoch },
}

/// What one member's answer means for a call.
enum Judged<T> {
    /// The call is over: its result, or a refusal another member would give too.
    Done(Result<T, ClientError>),
    /// No answer worth having from this member (why): another may do.
    Retry(String),
}

fn judge<T: DeserializeOwned>(addr: &str, answer: Result<(StatusCode, Bytes), crate::http::HttpError>) -> Judged<T> {
    let done = |r| Judged::Done(r);
    match answer {
        Ok((status, reply)) if status.is_success() => {
            done(serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply(e.to_string())))
        }
        Ok((StatusCode::CONFLICT, reply)) => done(match serde_json::from_slice::<Refused>(&reply) {
            Ok(refused) => Err(ClientError::Refused(refused.error)),
            Err(_) => Err(ClientError::BadReply(String::from_utf8_lossy(&reply).into_owned())),
        }),
        Ok((StatusCode::GONE, reply)) => {
            let message = serde_json::from_slice::<Problem>(&reply)
                .map_or_else(|_| String::from_utf8_lossy(&reply).into_owned(), |p| p.message);
            done(Err(ClientError::IncarnationLost(message)))
        }
        Ok((status, reply)) if status.is_client_error() => done(Err(match serde_json::from_slice::<Problem>(&reply) {
            Ok(p) if p.error == "unsupported_request" => ClientError::Unsupported(p.message),
            _ => ClientError::BadReply(format!("{status}: {}", String::from_utf8_lossy(&reply))),
        })),
        Ok((status, reply)) => Judged::Retry(format!("{addr}: {status}: {}", String::from_utf8_lossy(&reply))),
        Err(e) => Judged::Retry(e.to_string()),
    }
}

/// A fresh request id: random where the kernel gives randomness, else time and pid.
fn request_id() -> String {
    crate::server::random_token().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!("{:x}-{}", t.as_nanos(), std::process::id())
    })
}

impl Client {
    pub fn new(members: Vec<String>, transport: Transport) -> Client {
        Client { members, transport, next: AtomicUsize::new(0), incarnation: Mutex::new(None) }
    }

    /// The coordinator incarnation this client speaks to (learnt on first contact).
    pub fn incarnation(&self) -> Option<String> {
        self.incarnation.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Bytes) -> Result<T, ClientError> {
        self.call_within(method, path, body, TRY_TIMEOUT).await
    }

    /// A call that gives each member `per_try` to answer before it tries the next.
    async fn call_within<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        per_try: Duration,
    ) -> Result<T, ClientError> {
        if self.incarnation().is_none() {
            self.learn_incarnation().await;
        }
        let deadline = Instant::now() + PATIENCE;
        let mut turn = self.next.load(Ordering::Relaxed);
        loop {
            let addr = &self.members[turn % self.members.len()];
            let inc = self.incarnation();
            let tried = exchange(&self.transport, addr, method.clone(), path, inc.as_deref(), body.clone());
            let answer = tokio::time::timeout(per_try, tried)
                .await
                .unwrap_or_else(|_| Err(crate::http::HttpError::Timeout(addr.clone(), per_try)));
            let last = match judge(addr, answer) {
                Judged::Done(done) => {
                    if done.is_ok() {
                        self.next.store(turn, Ordering::Relaxed);
                    }
                    return done;
                }
                Judged::Retry(why) => why,
            };
            if Instant::now() > deadline {
                return Err(ClientError::Unavailable(last));
            }
            turn += 1;
            if turn % self.members.len() == self.next.load(Ordering::Relaxed) % self.members.len() {
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }

    async fn learn_incarnation(&self) {
        for addr in &self.members {
            let asked = exchange(&self.transport, addr, Method::GET, "/v1/status", None, Bytes::new());
            if let Ok(Ok((StatusCode::OK, body))) = tokio::time::timeout(TRY_TIMEOUT, asked).await {
                if let Ok(Status { incarnation: Some(inc), ready: true, .. }) = serde_json::from_slice(&body) {
                    *self.incarnation.lock().unwrap_or_else(|p| p.into_inner()) = Some(inc);
                    return;
                }
            }
        }
    }

    /// Sends `request` (under a new request id, kept across retries).
    pub async fn write(&self, request: Request) -> Result<Group, ClientError> {
        self.write_as(&request_id(), request).await
    }

    /// Sends `request` under the caller's request id: sent again, it runs once.
    pub async fn write_as(&self, id: &str, request: Request) -> Result<Group, ClientError> {
        let req = WriteRequest::new(id.to_string(), request);
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::BadReply(e.to_string()))?;
        self.call(Method::POST, "/v1/write", body.into()).await
    }

    pub async fn group(&self, name: &str) -> Result<Group, ClientError> {
        self.call(Method::GET, &format!("/v1/groups/{name}"), Bytes::new()).await
    }

    /// Every group, by name.
    pub async fn groups(&self) -> Result<std::collections::BTreeMap<String, Group>, ClientError> {
        self.call(Method::GET, "/v1/groups", Bytes::new()).await
    }

    /// Renews a lease at every member at once and takes the first answer: a renewal must not
    /// wait for a member that hangs (the leader just lost, whose followers still pass writes to
    /// it) before it tries the next, or the lease lapses while a new leader is already there.
    /// Renewals are idempotent: the leader counts each, followers pass theirs on.
    pub async fn renew(&self, group: &str, member: &str, epoch: Epoch) -> Result<Renewed, ClientError> {
        self.renew_by(group, member, epoch, Instant::now() + PATIENCE).await
    }

    /// The same, trying until `deadline`; past it, the error says what the members last answered.
    pub async fn renew_by(
        &self,
        group: &str,
        member: &str,
        epoch: Epoch,
        deadline: Instant,
    ) -> Result<Renewed, ClientError> {
        let r = Renewal { group: group.to_string(), member: member.to_string(), epoch };
        let body = Bytes::from(serde_json::to_vec(&r).map_err(|e| ClientError::BadReply(e.to_string()))?);
        let last = Mutex::new(String::from("no member answered"));
        let rounds = async {
            if self.incarnation().is_none() {
                self.learn_incarnation().await;
            }
            loop {
                if let Some(done) = self.renew_round(&body, &last).await {
                    return done;
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        };
        let why = |last: Mutex<String>| last.into_inner().unwrap_or_else(|p| p.into_inner());
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), rounds).await {
            Ok(done) => done,
            Err(_) if deadline.saturating_duration_since(Instant::now()) < PATIENCE => {
                Err(ClientError::Unconfirmed(why(last)))
            }
            Err(_) => Err(ClientError::Unavailable(why(last))),
        }
    }

    /// One round: the renewal to every member at once; the first answer that counts, if any
    /// (`last` keeps why the others did not).
    async fn renew_round(&self, body: &Bytes, last: &Mutex<String>) -> Option<Result<Renewed, ClientError>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(self.members.len().max(1));
        for addr in &self.members {
            let (tx, addr, transport, body, inc) =
                (tx.clone(), addr.clone(), self.transport.clone(), body.clone(), self.incarnation());
            tokio::spawn(async move {
                let tried = exchange(&transport, &addr, Method::POST, "/v1/lease", inc.as_deref(), body);
                let answer = tokio::time::timeout(RENEW_TRY_TIMEOUT, tried)
                    .await
                    .unwrap_or_else(|_| Err(crate::http::HttpError::Timeout(addr.clone(), RENEW_TRY_TIMEOUT)));
                let _ = tx.send(judge::<Renewed>(&addr, answer)).await;
            });
        }
        drop(tx);
        while let Some(judged) = rx.recv().await {
            match judged {
                Judged::Done(done) => return Some(done),
                Judged::Retry(why) => *last.lock().unwrap_or_else(|p| p.into_inner()) = why,
            }
        }
        None
    }

    /// Renews the lease of `member`, primary of `group` in `epoch`, every `period`, until the
    /// group moves on; the receiver sees each change. A lease not confirmed for `expire_after`
    /// (until the coordinator says its timeout; then four fifths of that) counts as lost: the
    /// coordinator may be about to end the epoch without this member hearing of it.
    pub fn keep_lease(
        self: Arc<Self>,
        group: String,
        member: String,
        epoch: Epoch,
        period: Duration,
        mut expire_after: Duration,
    ) -> watch::Receiver<Lease> {
        let (tx, rx) = watch::channel(Lease::Held { epoch });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut confirmed = Instant::now();
            loop {
                tick.tick().await;
                let sent = Instant::now();
                // A renewal still unanswered when the lease expires is too late.
                match self.renew_by(&group, &member, epoch, confirmed + expire_after).await {
                    Ok(Renewed { primary: true, timeout_ms, .. }) => {
                        confirmed = sent;
                        if timeout_ms > 0 {
                            expire_after = Duration::from_millis(timeout_ms * 4 / 5);
                        }
                    }
                    Ok(Renewed { epoch: now, .. }) => {
                        let _ = tx.send(Lease::Lost { epoch: now });
                        return;
                    }
                    Err(e) => tracing::warn!(group, "could not renew the lease: {e}"),
                }
                if confirmed.elapsed() >= expire_after {
                    let _ = tx.send(Lease::Lost { epoch: epoch.next() });
                    return;
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }

    /// Reads `group` every `period`; the receiver sees each new state.
    pub fn watch_group(self: Arc<Self>, group: String, period: Duration) -> watch::Receiver<Option<Group>> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Ok(g) = self.group(&group).await {
                    tx.send_if_modified(|old| {
                        let changed = old.as_ref() != Some(&g);
                        *old = Some(g);
                        changed
                    });
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }
}
