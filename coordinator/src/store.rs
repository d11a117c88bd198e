//! Durable storage of one coordinator member, in one redb file (`coordinator.redb` in the data
//! dir): the Raft log, the vote, the last snapshot of the state machine, and the member's
//! identity. Every value carries a CRC32C of its bytes, so a damaged file is refused with its name
//! instead of being served; every write transaction is fsync'd before it is acknowledged.
//!
//! The state machine itself lives in memory: a restart loads the last snapshot and Raft applies
//! the committed log after it again.

use crate::model::{Outcome, State};
use crate::raft::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const FILE_NAME: &str = "coordinator.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT: &str = "snapshot";
const IDENTITY: &str = "identity";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("{path} is damaged ({what}); refusing to serve from it: wipe the data dir so the member rejoins from its peers, or restore it from a backup")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Db { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
}

/// Who this member is, kept with its state: a wiped data dir loses it, which is how a member
/// knows it must not vote before it has state again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub member: NodeId,
    /// Names this disk: a member restarted on another disk is a new member.
    pub disk: String,
    /// The coordinator's incarnation this member holds.
    pub incarnation: String,
    /// This member created the incarnation (at the cluster's first start, or by `reinit`): it
    /// starts Raft with every member, and fresh members may join it at once until it is formed.
    #[serde(default)]
    pub distributor: bool,
    /// A majority of members has held the incarnation: from then on a fresh member joins only by
    /// catching up from a majority.
    #[serde(default)]
    pub formed: bool,
    /// The incarnation this one replaced (by `reinit`), whose clients are told their data was lost.
    #[serde(default)]
    pub replaced: Option<String>,
}

/// The snapshot as stored and sent: the state machine and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    state: State,
}

/// `crc32c(body)` little-endian, then the JSON body.
fn seal(value: &impl Serialize) -> Vec<u8> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut out = crc32c::crc32c(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

impl Store {
    /// Opens (or creates) the member's file in `dir`, checking every stored value's checksum.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|source| match source {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
                StoreError::Corrupt { path: path.clone(), what }
            }
            source => StoreError::Open { path: path.clone(), source },
        })?;
        let store = Store { db: Arc::new(db), path: Arc::new(path) };
        let tx = store.db.begin_write().map_err(|e| store.db_err(e))?;
        tx.open_table(LOG).map_err(|e| store.db_err(e))?;
        tx.open_table(META).map_err(|e| store.db_err(e))?;
        tx.commit().map_err(|e| store.db_err(e))?;
        store.verify()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Db { path: self.path.to_path_buf(), source: Box::new(e) }
    }

    fn unseal<T: DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, StoreError> {
        let corrupt =
            || StoreError::Corrupt { path: self.path.to_path_buf(), what: format!("{what} fails its checksum") };
        let (crc, body) = bytes.split_at_checked(4).ok_or_else(corrupt)?;
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(corrupt());
        }
        serde_json::from_slice(body).map_err(|_| corrupt())
    }

    /// Reads every value once, so damage is found at start and not mid-run.
    fn verify(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let log = tx.open_table(LOG).map_err(|e| self.db_err(e))?;
        for row in log.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            self.unseal::<Entry<TypeConfig>>(v.value(), &format!("log entry {}", k.value()))?;
        }
        let meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
        for row in meta.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            self.unseal::<serde_json::Value>(v.value(), k.value())?;
        }
        Ok(())
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(META).map_err(|e| self.db_err(e))?;
        let Some(v) = table.get(key).map_err(|e| self.db_err(e))? else { return Ok(None) };
        self.unseal(v.value(), key).map(Some)
    }

    fn put_meta(&self, key: &str, value: &impl Serialize) -> Result<(), StoreError> {
        self.put_meta_with(key, value, redb::Durability::Immediate)
    }

    fn put_meta_with(&self, key: &str, value: &impl Serialize, durability: redb::Durability) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        tx.set_durability(durability);
        {
            let mut table = tx.open_table(META).map_err(|e| self.db_err(e))?;
            table.insert(key, seal(value).as_slice()).map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Empties the file: the member's state was from an incarnation that no longer exists.
    pub fn discard(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        tx.delete_table(LOG).map_err(|e| self.db_err(e))?;
        tx.delete_table(META).map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))
    }

    pub fn identity(&self) -> Result<Option<Identity>, StoreError> {
        self.get_meta(IDENTITY)
    }

    pub fn set_identity(&self, identity: &Identity) -> Result<(), StoreError> {
        self.put_meta(IDENTITY, identity)
    }

    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(LOG).map_err(|e| self.db_err(e))?;
        let Some((k, v)) = table.last().map_err(|e| self.db_err(e))? else { return Ok(None) };
        let entry: Entry<TypeConfig> = self.unseal(v.value(), &format!("log entry {}", k.value()))?;
        Ok(Some(entry.log_id))
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(LOG).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in table.range(range).map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            out.push(self.unseal(v.value(), &format!("log entry {}", k.value()))?);
        }
        Ok(out)
    }

    fn write_entries(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut table = tx.open_table(LOG).map_err(|e| self.db_err(e))?;
            for entry in entries {
                table.insert(entry.log_id.index, seal(&entry).as_slice()).map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Removes log entries in `range` (and records the purge point, if one is given).
    fn remove_entries(&self, range: impl RangeBounds<u64>, purged: Option<&LogId<NodeId>>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut table = tx.open_table(LOG).map_err(|e| self.db_err(e))?;
            table.retain_in(range, |_, _| false).map_err(|e| self.db_err(e))?;
            if let Some(p) = purged {
                let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
                meta.insert(PURGED, seal(p).as_slice()).map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db_err(e))
    }
}

fn read_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

fn write_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for Store {
    type LogReader = Store;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = self.get_meta(PURGED).map_err(read_err)?;
        let last = self.last_log_id().map_err(read_err)?.or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(VOTE, vote).map_err(write_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(VOTE).map_err(read_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // A hint for a faster restart (the log is re-applied up to it at once): it reaches the
        // disk with the next log append, and losing it loses nothing.
        self.put_meta_with(COMMITTED, &committed, redb::Durability::None).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // The commit is fsync'd: the entries are durable when it returns.
        let result = self.write_entries(entries);
        let io = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        result.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_entries(log_id.index.., None).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_entries(..=log_id.index, Some(&log_id)).map_err(write_err)
    }
}

/// The in-memory state machine and where it stands.
#[derive(Debug, Default)]
pub struct Machine {
    pub state: State,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
}

/// The state machine half of the member: applies committed entries, builds and installs snapshots
/// (kept in the same file as the log).
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub machine: Arc<Mutex<Machine>>,
    store: Store,
}

impl StateMachine {
    /// The state machine as of the last stored snapshot (Raft applies the rest of the log).
    pub fn load(store: &Store) -> Result<StateMachine, StoreError> {
        let mut machine = Machine::default();
        if let Some(snap) = store.get_meta::<StoredSnapshot>(SNAPSHOT)? {
            machine.state = snap.state;
            machine.last_applied = snap.meta.last_log_id;
            machine.membership = snap.meta.last_membership;
        }
        Ok(StateMachine { machine: Arc::new(Mutex::new(machine)), store: store.clone() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stored_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        Ok(self.store.get_meta::<StoredSnapshot>(SNAPSHOT)?.map(|snap| Snapshot {
            meta: snap.meta.clone(),
            snapshot: Box::new(Cursor::new(serde_json::to_vec(&snap).unwrap_or_default())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snap = {
            let m = self.lock();
            let id = match &m.last_applied {
                Some(l) => format!("{}-{}", l.leader_id, l.index),
                None => "empty".to_string(),
            };
            StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: m.last_applied,
                    last_membership: m.membership.clone(),
                    snapshot_id: id,
                },
                state: m.state.clone(),
            }
        };
        self.store.put_meta(SNAPSHOT, &snap).map_err(write_err)?;
        let data = serde_json::to_vec(&snap).map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Snapshot { meta: snap.meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>), StorageError<NodeId>> {
        let m = self.lock();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<Outcome>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut m = self.lock();
        let mut replies = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            replies.push(match entry.payload {
                EntryPayload::Normal(ref req) => Some(m.state.apply(req)),
                EntryPayload::Membership(ref mem) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), mem.clone());
                    None
                }
                EntryPayload::Blank => None,
            });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let snap: StoredSnapshot = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        let snap = StoredSnapshot { meta: meta.clone(), state: snap.state };
        self.store.put_meta(SNAPSHOT, &snap).map_err(write_err)?;
        let mut m = self.lock();
        m.state = snap.state;
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.stored_snapshot().map_err(read_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_reopening_and_a_damaged_value_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            member: 2,
            disk: "d".into(),
            incarnation: "i".into(),
            distributor: true,
            formed: false,
            replaced: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.identity().unwrap(), None);
            store.set_identity(&identity).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.identity().unwrap(), Some(identity.clone()));
        // Damage the stored bytes of the identity (one bit of its body), as a bad disk would.
        let mut bytes = seal(&identity);
        bytes[6] ^= 1;
        store.put_raw(IDENTITY, &bytes);
        drop(store);
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&dir.path().join(FILE_NAME).display().to_string()), "{e}");
        assert!(e.contains("identity fails its checksum"), "{e}");
    }

    impl Store {
        fn put_raw(&self, key: &str, bytes: &[u8]) {
            let tx = self.db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert(key, bytes).unwrap();
            tx.commit().unwrap();
        }
    }
}
