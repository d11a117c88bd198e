//! The local control socket of an agent (`STATE_DIR/control.sock`): one JSON request line in
//! ([`ControlRequest`]), one JSON reply line out ([`ControlReply`]). Scripts use it through
//! `tandem promote` and `tandem status`. Every agent that runs a program (`tandem primary`,
//! `tandem backup`) has one; a status request is answered by the socket itself, from the agent's
//! [`StatusSource`], without interrupting what the agent does.

use crate::error::{Error, Result};
use crate::metrics::StatusSource;
use crate::status::AgentStatus;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Longest request line read: anything longer is not a control request.
const MAX_REQUEST: u64 = 64 << 10;

/// What an agent is asked to do. On the socket: `{"op":"promote"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Make this backup the primary's successor: stop following, replay what it holds, go live.
    Promote,
    /// Say where the agent stands: `{"op":"status"}`, answered with a report.
    Status,
}

/// The operations an agent knows, as they are spelt on the socket.
pub const KNOWN_OPS: &[&str] = &["promote", "status"];

/// An agent's answer. On the socket: `{"status":"ok","message":...}`,
/// `{"status":"error","reason":...}`, or to a status request `{"status":"report","agent":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ControlReply {
    Ok { message: String },
    Error { reason: String },
    Report { agent: Box<AgentStatus> },
}

impl ControlReply {
    pub fn ok(message: impl Into<String>) -> ControlReply {
        ControlReply::Ok { message: message.into() }
    }

    pub fn error(reason: impl Into<String>) -> ControlReply {
        ControlReply::Error { reason: reason.into() }
    }
}

impl ControlRequest {
    /// Reads one request line; the reason it is refused otherwise, said for the client.
    pub fn parse(line: &str) -> std::result::Result<ControlRequest, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            format!("the request is not JSON ({e}); send one object a line, such as {{\"op\":\"promote\"}}")
        })?;
        let op = match value.get("op") {
            Some(serde_json::Value::String(op)) => op.clone(),
            _ => {
                return Err(
                    "the request names no operation; send one object a line, such as {\"op\":\"promote\"}".into()
                )
            }
        };
        if !KNOWN_OPS.contains(&op.as_str()) {
            return Err(format!("unknown operation \"{op}\"; this agent knows: {}", KNOWN_OPS.join(", ")));
        }
        let request: ControlRequest =
            serde_json::from_value(value.clone()).map_err(|e| format!("bad \"{op}\" request: {e}"))?;
        // A field this agent does not know could change what the client meant: refused, not
        // ignored.
        let known = serde_json::to_value(&request).map_err(|e| format!("bad \"{op}\" request: {e}"))?;
        if let (Some(given), Some(known)) = (value.as_object(), known.as_object()) {
            if let Some(field) = given.keys().find(|k| !known.contains_key(*k)) {
                return Err(format!("bad \"{op}\" request: unknown field \"{field}\""));
            }
        }
        Ok(request)
    }
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Sends `request` to the agent owning `state_dir` and returns its message; an error reply
/// becomes an error carrying the agent's reason.
pub fn request(state_dir: &Path, request: &ControlRequest) -> Result<String> {
    match exchange(state_dir, request)? {
        ControlReply::Ok { message } => Ok(message),
        ControlReply::Error { reason } => Err(Error::Setup(reason)),
        ControlReply::Report { .. } => Err(Error::Setup(format!(
            "the agent on {} answered with a report where a message was due",
            socket_path(state_dir).display()
        ))),
    }
}

/// Asks the agent owning `state_dir` where it stands.
pub fn status(state_dir: &Path) -> Result<AgentStatus> {
    match exchange(state_dir, &ControlRequest::Status)? {
        ControlReply::Report { agent } => Ok(*agent),
        ControlReply::Error { reason } => Err(Error::Setup(reason)),
        ControlReply::Ok { .. } => Err(Error::Setup(format!(
            "the agent on {} does not report its status; is it an older version of tandem?",
            socket_path(state_dir).display()
        ))),
    }
}

fn exchange(state_dir: &Path, request: &ControlRequest) -> Result<ControlReply> {
    let path = socket_path(state_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        Error::Setup(format!(
            "no agent answers on {}: {e} (is `tandem primary` or `tandem backup` running with this state directory?)",
            path.display()
        ))
    })?;
    let mut line =
        serde_json::to_string(request).map_err(|e| Error::Setup(format!("cannot encode the control request: {e}")))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(Error::io(format!("talking to the agent on {}", path.display())))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(Error::io(format!("reading the agent's reply on {}", path.display())))?;
    if reply.trim().is_empty() {
        return Err(Error::Setup(format!("the agent on {} closed without a reply", path.display())));
    }
    serde_json::from_str(reply.trim_end()).map_err(|e| {
        Error::Setup(format!(
            "the agent on {} answered something that is not a control reply ({e}); is it another version of tandem?",
            path.display()
        ))
    })
}

/// A request as the agent receives it, and where its reply goes.
pub struct Request {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlReply>,
}

/// Listens on the state directory's control socket, answering status requests from `status`
/// and handing every other request to `requests`. Runs until the receiving side is dropped.
/// An agent the coordinator steers (`steered`) refuses a promotion asked here: the coordinator
/// names primaries, and one promoted behind its back would be a second live primary.
pub async fn serve(
    state_dir: PathBuf,
    requests: mpsc::Sender<Request>,
    status: StatusSource,
    steered: bool,
) -> std::io::Result<()> {
    let path = socket_path(&state_dir);
    // A socket left by an agent that died is in the way; a live agent on the same directory
    // would be a configuration error the state directory's lock reports first.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let requests = requests.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let read = tokio::io::BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line).await;
            let reply = match read {
                Err(e) => ControlReply::error(format!("cannot read the request: {e}")),
                Ok(_) => match ControlRequest::parse(line.trim()) {
                    Err(reason) => ControlReply::error(reason),
                    Ok(ControlRequest::Status) => ControlReply::Report { agent: Box::new(status()) },
                    Ok(ControlRequest::Promote) if steered => {
                        let me = status();
                        ControlReply::error(format!(
                            "{} follows the coordinator, which names group {}'s primary: ask it with `tandem failover --group {} --to {} --coordinator ADDR,...` (or `tandem promote --coordinator ADDR,...`)",
                            me.member, me.group, me.group, me.member
                        ))
                    }
                    Ok(request) => ask(&requests, request).await,
                },
            };
            // A reply always encodes; should it not, the client reports a closed socket.
            if let Ok(mut out) = serde_json::to_string(&reply) {
                out.push('\n');
                let _ = write.write_all(out.as_bytes()).await;
            }
        });
    }
}

/// Hands `request` to the agent and waits for its reply.
pub async fn ask(requests: &mpsc::Sender<Request>, request: ControlRequest) -> ControlReply {
    let (reply, answer) = oneshot::channel();
    if requests.send(Request { request, reply }).await.is_err() {
        return ControlReply::error("the agent is shutting down");
    }
    answer.await.unwrap_or_else(|_| ControlReply::error("the agent dropped the request"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn requests_and_replies_round_trip_as_one_json_line() {
        let line = serde_json::to_string(&ControlRequest::Promote).unwrap();
        assert_eq!(line, r#"{"op":"promote"}"#);
        assert_eq!(ControlRequest::parse(&line), Ok(ControlRequest::Promote));
        for reply in [ControlReply::ok("promoted: the program goes live after event 7"), ControlReply::error("no")] {
            let line = serde_json::to_string(&reply).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<ControlReply>(&line).unwrap(), reply);
        }
        assert_eq!(serde_json::to_string(&ControlReply::error("no")).unwrap(), r#"{"status":"error","reason":"no"}"#);
    }

    #[test]
    fn unknown_or_malformed_requests_are_refused_with_a_reason() {
        let unknown = ControlRequest::parse(r#"{"op":"frobnicate"}"#).unwrap_err();
        assert!(
            unknown.contains("unknown operation \"frobnicate\"") && unknown.contains("promote, status"),
            "{unknown}"
        );
        assert_eq!(ControlRequest::parse(r#"{"op":"status"}"#), Ok(ControlRequest::Status));
        let text = ControlRequest::parse("promote").unwrap_err();
        assert!(text.contains("not JSON"), "{text}");
        let no_op = ControlRequest::parse(r#"{"do":"promote"}"#).unwrap_err();
        assert!(no_op.contains("names no operation"), "{no_op}");
        let extra = ControlRequest::parse(r#"{"op":"promote","force":true}"#).unwrap_err();
        assert!(extra.starts_with("bad \"promote\" request"), "{extra}");
        assert!(ControlRequest::parse("").is_err());
    }

    #[tokio::test]
    async fn the_socket_answers_a_bad_request_without_asking_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let agent = crate::status::AgentStatus {
            group: "g".into(),
            member: "b1".into(),
            role: crate::status::Role::Backup,
            address: "10.0.0.2".into(),
            epoch: 1,
            held: 5,
            replayed: Some(4),
            released: None,
            state: "ok".into(),
            kept_from: None,
            backups: vec![],
        };
        let shown = agent.clone();
        tokio::spawn(serve(dir.path().to_path_buf(), tx, Arc::new(move || shown.clone()), false));
        let path = dir.path().to_path_buf();
        let handler = tokio::spawn(async move {
            let r = rx.recv().await.unwrap();
            assert_eq!(r.request, ControlRequest::Promote);
            let _ = r.reply.send(ControlReply::ok("promoted"));
        });
        while !socket_path(&path).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let p = path.clone();
        let said = tokio::task::spawn_blocking(move || request(&p, &ControlRequest::Promote)).await.unwrap();
        assert_eq!(said.unwrap(), "promoted");
        handler.await.unwrap();
        // A status request is answered without the agent's loop.
        let p = path.clone();
        let told = tokio::task::spawn_blocking(move || status(&p)).await.unwrap().unwrap();
        assert_eq!(told, agent);
        let raw = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(socket_path(&path)).unwrap();
            s.write_all(b"{\"op\":\"frobnicate\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line
        })
        .await
        .unwrap();
        let reply: ControlReply = serde_json::from_str(raw.trim_end()).unwrap();
        assert!(matches!(reply, ControlReply::Error { ref reason } if reason.contains("frobnicate")), "{raw}");
    }
}
