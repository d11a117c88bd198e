//! The local control socket of an agent (`STATE_DIR/control.sock`): one request line in, one
//! reply line out. Scripts use it through `tandem promote`.

use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Make this backup the primary's successor: stop following, replay what it holds, go live.
pub const PROMOTE: &str = "promote";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Sends `request` to the agent owning `state_dir` and returns its reply; a reply starting with
/// `error:` becomes an error.
pub fn request(state_dir: &Path, request: &str) -> Result<String> {
    let path = socket_path(state_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        Error::Setup(format!(
            "no agent answers on {}: {e} (is `tandem backup` running with this state directory?)",
            path.display()
        ))
    })?;
    let io = Error::io(format!("talking to the agent on {}", path.display()));
    stream.write_all(format!("{request}\n").as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(Error::io(format!("reading the agent's reply on {}", path.display())))?;
    let reply = reply.trim_end().to_string();
    match reply.strip_prefix("error: ") {
        Some(why) => Err(Error::Setup(why.to_string())),
        None if reply.is_empty() => {
            Err(Error::Setup(format!("the agent on {} closed without a reply", path.display())))
        }
        None => Ok(reply),
    }
}

/// A request as the agent receives it: the line, and where its reply goes.
pub struct Request {
    pub line: String,
    pub reply: oneshot::Sender<String>,
}

/// Listens on the state directory's control socket, handing each request to `requests`. Runs
/// until the receiving side is dropped.
pub async fn serve(state_dir: PathBuf, requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let path = socket_path(&state_dir);
    // A socket left by an agent that died is in the way; a live agent on the same directory
    // would be a configuration error the state directory's lock reports first.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if tokio::io::BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let (tx, rx) = oneshot::channel();
            let reply = if requests.send(Request { line: line.trim().to_string(), reply: tx }).await.is_err() {
                "error: the agent is shutting down".to_string()
            } else {
                rx.await.unwrap_or_else(|_| "error: the agent dropped the request".to_string())
            };
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
}
