//! An agent steered by the coordinator (`--coordinator`): it registers with its group, takes the
//! group's incarnation token and epoch from there, reports how far it holds the primary's events,
//! and follows the coordinator's decisions: a backup named primary of a new epoch promotes itself
//! and keeps that epoch's lease (`lease.rs`, as `tandem primary` does).

use crate::certs::{Identity, CLUSTER_NAME};
use crate::control::{self, ControlReply, ControlRequest};
use crate::error::{Error, Result};
use crate::lease::{self, Fence};
use coordinator::api::{Group, Mode, Refusal, Request};
use coordinator::client::{Client, ClientError};
use coordinator::http::Transport;
use eventlog::{Epoch, IncarnationToken, Seq};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an agent reports its position.
pub const REPORT_EVERY: Duration = Duration::from_millis(100);
/// How often an agent reports a position that has not moved: the coordinator's view of when
/// each member last reported tells a quiet member from a stopped one.
pub const REPORT_UNCHANGED_EVERY: Duration = Duration::from_secs(1);
/// How often a backup looks at its group.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long a stopping agent tries to tell the coordinator: well within the lease, which its
/// group's primary stops renewing.
pub const STOP_PATIENCE: Duration = Duration::from_millis(500);

/// An agent that ran with `--coordinator` and whose program ended (or that was told to stop):
/// tells the coordinator, whatever its role now is (a backup may have been promoted). Best
/// effort: the outcome is only logged.
pub fn say_stopped(addresses: &[String], group: &str, member: &str, identity: &Identity, diverged: bool) {
    let Ok(steering) = Steering::new(addresses, group, member, identity) else { return };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    runtime.block_on(async {
        let epoch = match tokio::time::timeout(STOP_PATIENCE, steering.client.group(group)).await {
            Ok(Ok(g)) => g.epoch,
            _ => Epoch::FIRST,
        };
        steering.stop(epoch, diverged).await
    });
}

#[derive(Clone)]
pub struct Steering {
    pub client: Arc<Client>,
    pub group: String,
    pub member: String,
}

/// A refusal is said as the coordinator put it; anything else names the coordinator.
fn registration_error(e: ClientError) -> Error {
    match e {
        ClientError::Refused(r) => Error::Setup(r.to_string()),
        e => Error::Setup(format!("coordinator: {e}")),
    }
}

/// How to reach the coordinator's members at `addresses`: over HTTPS with this agent's
/// certificate when they are given as `https://ADDR`, else over HTTP. Returns the bare addresses.
pub fn transport(addresses: &[String], identity: &Identity) -> Result<(Transport, Vec<String>)> {
    let bare: Vec<String> = addresses.iter().map(|a| a.strip_prefix("https://").unwrap_or(a).to_string()).collect();
    let tls = addresses.iter().filter(|a| a.starts_with("https://")).count();
    if tls == 0 {
        return Ok((Transport::plain(), bare));
    }
    if tls != addresses.len() {
        return Err(Error::Setup("--coordinator: give every member as https://ADDR, or none".into()));
    }
    let transport = Transport::tls(identity.client_config()?, None, CLUSTER_NAME)
        .map_err(|e| Error::Setup(format!("coordinator: {e}")))?;
    Ok((transport, bare))
}

impl Steering {
    pub fn new(addresses: &[String], group: &str, member: &str, identity: &Identity) -> Result<Steering> {
        let (transport, addresses) = transport(addresses, identity)?;
        Ok(Steering { client: Arc::new(Client::new(addresses, transport)), group: group.into(), member: member.into() })
    }

    /// `register`, waiting while the group does not exist yet (a backup started before its primary).
    pub async fn register_when_ready(&self, address: String, held: Option<IncarnationToken>) -> Result<Group> {
        let mut waited = false;
        loop {
            match self.client.write(self.registration(address.clone(), None, held)).await {
                Err(ClientError::Refused(Refusal::NoGroup { .. })) => {
                    if !waited {
                        tracing::info!(group = self.group, "waiting for the group's primary to register");
                        waited = true;
                    }
                    tokio::time::sleep(WATCH_EVERY * 4).await;
                }
                other => return other.map_err(registration_error),
            }
        }
    }

    /// Joins the group: as its primary with `mode` (creating it), or as a backup (`mode` none).
    /// `held`: the token this member's state dir holds (none: a backup joins only through a full
    /// catch-up; an older incarnation's token is refused).
    pub async fn register(&self, address: String, mode: Option<Mode>, held: Option<IncarnationToken>) -> Result<Group> {
        self.client.write(self.registration(address, mode, held)).await.map_err(registration_error)
    }

    fn registration(&self, address: String, mode: Option<Mode>, held: Option<IncarnationToken>) -> Request {
        Request::Register {
            group: self.group.clone(),
            member: self.member.clone(),
            address,
            primary: mode.is_some(),
            mode,
            token: held.filter(|t| !t.is_none()),
        }
    }

    /// Asks the coordinator to name `to` (or the best backup) primary, under request id `id`.
    pub async fn failover_as(&self, id: &str, to: Option<String>) -> std::result::Result<Group, ClientError> {
        self.client.write_as(id, Request::Failover { group: self.group.clone(), to }).await
    }

    /// The group as the coordinator sees it now.
    pub async fn group_view(&self) -> std::result::Result<Group, ClientError> {
        self.client.group(&self.group).await
    }

    /// Tells the coordinator this member stops on purpose: as primary of `epoch` its group is
    /// stopped (no lease is kept, nobody is promoted), as a backup it is marked exited (and
    /// diverged, with `diverged`). Must come before the lease lapses: tried for [`STOP_PATIENCE`],
    /// and a failure is only said.
    pub async fn stop(&self, epoch: Epoch, diverged: bool) {
        let said = Request::Stop { group: self.group.clone(), member: self.member.clone(), epoch, diverged };
        match tokio::time::timeout(STOP_PATIENCE, self.client.write(said)).await {
            Ok(Ok(g)) if g.stopped && g.primary.as_deref() == Some(self.member.as_str()) => {
                tracing::info!(group = self.group, "told the coordinator the group stopped")
            }
            Ok(Ok(_)) => tracing::info!(group = self.group, "told the coordinator this member stopped"),
            Ok(Err(e)) => tracing::warn!(group = self.group, "could not tell the coordinator this member stopped: {e}"),
            Err(_) => tracing::warn!(
                group = self.group,
                "could not tell the coordinator this member stopped: no answer within {} ms",
                STOP_PATIENCE.as_millis()
            ),
        }
    }

    /// Reports `position()`: (held, released) every REPORT_EVERY while `epoch` lasts. A backup
    /// holds what it synced; the primary holds what it recorded and released output for what its
    /// backups acknowledged.
    pub fn report(&self, epoch: Epoch, position: impl Fn() -> (Seq, Seq) + Send + 'static) {
        self.report_from(epoch, false, position)
    }

    /// A backup's reports: they go on in each later epoch, since what a backup holds durably is
    /// the group's history whoever is primary now, and the coordinator judges by it whom it may
    /// name next (a primary named and gone again leaves the backups it did not stream to with
    /// their last word otherwise).
    pub fn report_held(&self, epoch: Epoch, position: impl Fn() -> (Seq, Seq) + Send + 'static) {
        self.report_from(epoch, true, position)
    }

    fn report_from(&self, mut epoch: Epoch, follow_epochs: bool, position: impl Fn() -> (Seq, Seq) + Send + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPORT_EVERY);
            let mut last = (Seq(u64::MAX), Seq(u64::MAX));
            let mut last_sent = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let now = position();
                if now == last && last_sent.elapsed() < REPORT_UNCHANGED_EVERY {
                    continue;
                }
                let report = Request::Report {
                    group: me.group.clone(),
                    member: me.member.clone(),
                    epoch,
                    held: now.0,
                    released: now.1,
                    diverged: false,
                };
                match me.client.write(report).await {
                    Ok(_) => (last, last_sent) = (now, tokio::time::Instant::now()),
                    Err(ClientError::Refused(Refusal::StaleEpoch { current, .. }))
                        if follow_epochs && current > epoch =>
                    {
                        epoch = current
                    }
                    Err(ClientError::Refused(Refusal::StaleEpoch { .. } | Refusal::NoMember { .. })) => return,
                    Err(e) => tracing::warn!(group = me.group, "could not report to the coordinator: {e}"),
                }
            }
        });
    }

    /// A backup: once the coordinator names this member primary of an epoch after `epoch`, asks
    /// the agent to promote itself (through the same channel as `tandem promote`), then keeps the
    /// new epoch's lease, fencing the program through `fence` as a primary does once it lapses.
    pub fn await_promotion(
        &self,
        epoch: Epoch,
        agent: mpsc::Sender<control::Request>,
        fence: Arc<Fence>,
        named: Arc<std::sync::atomic::AtomicU64>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut group = me.client.clone().watch_group(me.group.clone(), WATCH_EVERY);
            let new_epoch = loop {
                if group.changed().await.is_err() {
                    return;
                }
                let g = group.borrow_and_update().clone();
                if let Some(g) = g.filter(|g| g.epoch > epoch && g.primary.as_deref() == Some(me.member.as_str())) {
                    break g.epoch;
                }
            };
            drop(group);
            named.store(new_epoch.0, std::sync::atomic::Ordering::SeqCst);
            match control::ask(&agent, ControlRequest::Promote).await {
                ControlReply::Ok { message } => {
                    tracing::info!(epoch = new_epoch.0, "the coordinator named this member primary: {message}")
                }
                ControlReply::Error { reason } => {
                    tracing::error!(epoch = new_epoch.0, "the coordinator named this member primary, but: {reason}");
                    return;
                }
                ControlReply::Report { .. } => {
                    tracing::error!(
                        epoch = new_epoch.0,
                        "the coordinator named this member primary, but the agent answered with a report"
                    );
                    return;
                }
            }
            drop(agent);
            lease::keep(&me, new_epoch, fence);
        });
    }
}
