//! `tandem switchover`: a planned change of primary. The coordinator says who the primary is and
//! where; the primary, asked over its own endpoint (with a cluster certificate), stops releasing
//! output and taking events, lets the chosen backup receive everything it recorded, has the
//! coordinator name that backup primary of the next epoch, and rejoins as a backup.

use crate::certs::Identity;
use crate::error::{Error, Result};
use crate::net::{self, read_frame, write_frame};
use crate::steer::Steering;
use crate::wire::frame::{Body, Frame};
use std::net::SocketAddr;

pub struct SwitchoverOptions {
    pub coordinator: Vec<String>,
    pub group: String,
    /// The backup to hand over to (`None`: the one holding most).
    pub to: Option<String>,
    /// Names the request: asked again under the same id, the coordinator answers as the first
    /// time and changes nothing.
    pub id: String,
    pub certs: std::path::PathBuf,
    pub name: String,
}

/// What happened, in a line; an error says why not.
pub fn run(opts: &SwitchoverOptions) -> Result<String> {
    let identity = Identity::load(&opts.certs, &opts.name)?;
    let steering = Steering::new(&opts.coordinator, &opts.group, &opts.name, &identity)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the network runtime"))?;
    runtime.block_on(async {
        let g = steering.group_view().await.map_err(|e| Error::Setup(format!("coordinator: {e}")))?;
        let Some(primary) = g.primary.clone() else {
            return Err(Error::Setup(format!(
                "group {} has no primary (epoch {}): there is nothing to switch over; use `tandem failover`",
                opts.group, g.epoch
            )));
        };
        if opts.to.as_deref() == Some(primary.as_str()) {
            return Ok(format!("{primary} is the primary of group {} (epoch {}); nothing to do", opts.group, g.epoch));
        }
        let at = g.members.get(&primary).map(|m| m.address.clone()).unwrap_or_default();
        let addr: SocketAddr = at.parse().map_err(|_| {
            Error::Setup(format!("the coordinator has no address for {primary} that can be reached ({at:?})"))
        })?;
        let endpoint = net::client(&identity)?;
        let conn = net::connect(&endpoint, addr).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(net::NetError::from)?;
        let ask = Body::Switchover { to: opts.to.clone().unwrap_or_default(), id: opts.id.clone() };
        write_frame(&mut send, &Frame::new(g.incarnation, g.epoch.0, ask)).await?;
        let answer = read_frame(&mut recv).await?;
        conn.close(0u32.into(), b"done");
        match answer.map(|f| f.body) {
            Some(Body::SwitchedOver { to, epoch }) => Ok(format!(
                "switched over: {to} is the primary of group {} in epoch {epoch}; {primary} rejoins as its backup",
                opts.group
            )),
            Some(Body::Refuse { reason }) => Err(Error::Setup(format!("{primary} did not switch over: {reason}"))),
            Some(other) => Err(Error::Setup(format!("{primary} answered {} to the switchover", other.name()))),
            None => Err(Error::Setup(format!("{primary} closed the connection without an answer"))),
        }
    })
}
