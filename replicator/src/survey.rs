//! Gathers what `tandem status` shows: the local agents' accounts (from their control sockets)
//! and, when one is named, the coordinator's view of each group.

use crate::certs::Identity;
use crate::error::{Error, Result};
use crate::status::{self, AgentStatus, GroupStatus};
use coordinator::client::Client;
use std::path::{Path, PathBuf};

/// What to ask.
pub struct Survey {
    /// The coordinator's members (`https://ADDR` for TLS).
    pub coordinator: Option<Vec<String>>,
    /// Only this group.
    pub group: Option<String>,
    /// These agents' state directories; none: every agent under the default state home.
    pub state_dirs: Vec<PathBuf>,
    /// The certificate to reach a coordinator over TLS with: (certs dir, name).
    pub identity: Option<(PathBuf, String)>,
}

/// The state directories under `home` (GROUP/NAME) that have a control socket.
fn local_state_dirs(home: &Path) -> Vec<PathBuf> {
    let children = |dir: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> =
            std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        found.sort();
        found
    };
    children(home)
        .iter()
        .flat_map(|group| children(group))
        .filter(|dir| crate::control::socket_path(dir).exists())
        .collect()
}

impl Survey {
    /// The agents that answer. Named state directories must answer; found ones that do not
    /// (an agent that died left its socket) are passed over.
    fn local_agents(&self) -> Result<Vec<AgentStatus>> {
        if !self.state_dirs.is_empty() {
            return self.state_dirs.iter().map(|d| crate::control::status(d)).collect();
        }
        Ok(local_state_dirs(&crate::statedir::state_home())
            .iter()
            .filter_map(|d| crate::control::status(d).ok())
            .filter(|a| self.group.as_ref().is_none_or(|g| &a.group == g))
            .collect())
    }

    pub fn take(&self) -> Result<Vec<GroupStatus>> {
        let local = self.local_agents()?;
        let Some(addresses) = &self.coordinator else {
            if local.is_empty() {
                return Err(Error::Setup(format!(
                    "no agent answers under {}; name one with --state-dir DIR, or ask the coordinator with --coordinator ADDR,...",
                    crate::statedir::state_home().display()
                )));
            }
            let mut groups = status::from_agents(&local);
            groups.retain(|g| self.group.as_ref().is_none_or(|name| &g.group == name));
            return Ok(groups);
        };
        let identity = match &self.identity {
            Some((dir, name)) => Some(Identity::load(dir, name)?),
            None => None,
        };
        let client = match identity {
            Some(identity) => {
                let (transport, bare) = crate::steer::transport(addresses, &identity)?;
                Client::new(bare, transport)
            }
            None if addresses.iter().any(|a| a.starts_with("https://")) => {
                return Err(Error::Setup(
                    "--coordinator names members over https: give this host's certificate too, with --certs DIR --name NAME".into(),
                ))
            }
            None => Client::new(addresses.clone(), coordinator::http::Transport::plain()),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("cannot start a runtime to ask the coordinator"))?;
        let unreachable = |e: coordinator::client::ClientError| Error::Setup(format!("coordinator: {e}"));
        let groups = runtime.block_on(async {
            match &self.group {
                Some(name) => client.group(name).await.map(|g| [(name.clone(), g)].into()),
                None => client.groups().await,
            }
        });
        let groups: std::collections::BTreeMap<String, coordinator::api::Group> = groups.map_err(unreachable)?;
        Ok(groups.iter().map(|(name, g)| status::from_coordinator(name, g, &local)).collect())
    }
}
