//! The local store: one SQLite file in WAL mode.
//!
//! Tables (all unique by tenant, device and time, so a redelivered reading is a no-op; rows of
//! hundreds of bytes live in rowid tables with a unique index, small ones in WITHOUT ROWID ones):
//! - `readings(tenant, device, ts_ms, seq, received_ms, channels)` — `channels` in the compact
//!   binary form of [`encode_channels`];
//! - `features(tenant, device, ts_ms, features)` — JSON object, one row per window;
//! - `predictions(tenant, device, ts_ms, start_ms, probability, is_failure, model, versions,
//!   contributions, created_ms)`;
//! - `alerts(tenant, device, ts_ms, idx, severity, subject, body, probability)`;
//! - `devices(tenant, device, last_window_ms, last_seen_ms)` — where the window assembly stood;
//! - `assets(tenant, device, attributes, updated_ms)` — registry metadata (JSON object);
//! - `outbox(id, sink, target, payload, created_ms)` — everything that still has to leave the
//!   host, as a log: `sink` holds the message's [`MessageKind`] (the column kept its first name);
//! - `sink_cursors(sink, settled)` — per sink (see `crate::sinks`), the id up to which it has
//!   settled every message of its kind; rows at or below every active sink's cursor are deleted
//!   (retries and their back-off are the sinks', in memory).
//!
//! The ingest loop writes a whole batch of messages — readings, the windows they complete, the
//! predictions, alerts and outbox rows — in one transaction ([`SqliteStore::begin`] /
//! [`SqliteStore::commit`]), and acknowledges the messages to the broker only after the commit.
//! The same connection answers the policy plugins' `history` imports, so a policy sees the
//! features of the window being processed.

use super::History;
use crate::shutdown::{Shutdown, Stage};
use crate::types::{Alert, Features, Severity};
use crate::types::{Reading, Samples};
use rusqlite::{Connection, OptionalExtension as _, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::warn;

/// Interval of the WAL checkpoints ([`SqliteStore::spawn_checkpointer`]).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL frames (pages) past which the writer lets the WAL restart from its beginning
/// ([`SqliteStore::restart_wal_when_due`]): 128 MiB, about 2 s at 10k readings/s. Each restart
/// costs the writer a checkpoint's two fsyncs (10–30 ms on the benchmark machine under load), so
/// not much more often.
const WAL_RESTART_FRAMES: u64 = 32_768;
/// Largest WAL file kept on disk after it restarts (SQLite `journal_size_limit`): above the
/// restart point, so the file is reused rather than truncated and grown again.
const WAL_SIZE_LIMIT: i64 = 192 << 20;
/// How long the writer waits for the checkpoint thread's next full copy before checkpointing
/// anyway (a reader holding an old snapshot can keep the thread from copying everything).
const WAL_RESTART_PATIENCE: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings (
    tenant TEXT NOT NULL, device TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    seq INTEGER, received_ms INTEGER NOT NULL, channels BLOB NOT NULL,
    UNIQUE (tenant, device, ts_ms));
CREATE TABLE IF NOT EXISTS features (
    tenant TEXT NOT NULL, device TEXT NOT NULL, ts_ms INTEGER NOT NULL, features TEXT NOT NULL,
    UNIQUE (tenant, device, ts_ms));
CREATE TABLE IF NOT EXISTS predictions (
    tenant TEXT NOT NULL, device TEXT NOT NULL, ts_ms INTEGER NOT NULL, start_ms INTEGER NOT NULL,
    probability REAL NOT NULL, is_failure INTEGER NOT NULL, model TEXT NOT NULL,
    versions TEXT NOT NULL, contributions TEXT NOT NULL, created_ms INTEGER NOT NULL,
    UNIQUE (tenant, device, ts_ms));
CREATE TABLE IF NOT EXISTS alerts (
    tenant TEXT NOT NULL, device TEXT NOT NULL, ts_ms INTEGER NOT NULL, idx INTEGER NOT NULL,
    severity TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, probability REAL NOT NULL,
    UNIQUE (tenant, device, ts_ms, idx));
CREATE TABLE IF NOT EXISTS devices (
    tenant TEXT NOT NULL, device TEXT NOT NULL, last_window_ms INTEGER, last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS assets (
    tenant TEXT NOT NULL, device TEXT NOT NULL, attributes TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, target TEXT NOT NULL,
    payload BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sink_cursors (
    sink TEXT PRIMARY KEY, settled INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parked (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, reason TEXT NOT NULL, received_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS parked_by_tenant ON parked (tenant, id);
CREATE TABLE IF NOT EXISTS deferred (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, device TEXT NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, deferred_ms INTEGER NOT NULL);
";

/// How hard a commit waits for the disk (SQLite `PRAGMA synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync the WAL on every commit: an acknowledged reading survives a power cut (default).
    #[default]
    Full,
    /// fsync at checkpoints only: survives a killed process, not a power cut; faster.
    Normal,
}

/// The checkpoint thread's view of the WAL, for the writer ([`SqliteStore::restart_wal_when_due`]).
#[derive(Debug, Default)]
struct WalProgress {
    /// Frames in the WAL at the thread's last checkpoint.
    frames: std::sync::atomic::AtomicU64,
    /// The thread's checkpoints that copied the whole WAL they saw.
    copies: std::sync::atomic::AtomicU64,
    /// The writer's side: the count of full copies when a restart fell due, and when.
    due: Mutex<Option<(u64, Instant)>>,
}

/// Makes the commits of a store with deferred syncs durable ([`SqliteStore::defer_sync`]).
#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
}

impl WalSync {
    /// Syncs the WAL file to disk: every commit that returned before this call is durable when it
    /// returns `Ok`. A missing WAL is an error: while the store is open its WAL exists, so it was
    /// removed under the host, and the commits in it cannot be made durable.
    pub fn sync(&self) -> std::io::Result<()> {
        match std::fs::File::open(&self.wal) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(std::io::Error::new(
                e.kind(),
                format!("the WAL {} is gone (removed under the running host)", self.wal.display()),
            )),
            Err(e) => Err(e),
        }
    }
}

/// What an outbox message is; each sink takes the messages of one kind (see `crate::sinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// An MQTT publication; `target` is the topic.
    Publication,
    /// An RFC 5322 alert e-mail; `target` is its file name.
    Email,
}

impl MessageKind {
    /// The value of the outbox's `sink` column (named when each kind had one sink).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Publication => "mqtt",
            MessageKind::Email => "email",
        }
    }
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: MessageKind,
    pub target: String,
    pub payload: Vec<u8>,
    /// When the ingest loop committed it (host clock, ms since the Unix epoch).
    pub created_ms: i64,
    /// Failed delivery attempts since this process read it.
    pub attempts: u32,
}

/// A read of the outbox for one sink: its messages and how far the read looked.
#[derive(Debug, Default)]
pub struct OutboxRead {
    pub items: Vec<OutboxItem>,
    /// Every row up to this id was looked at: the next read starts after it.
    pub scanned: i64,
}

/// A window whose tenant had used its time budget of the batch that completed it: its plugins
/// run in a later batch (see `ingest::batch`). The readings are in the store; the window is
/// assembled again from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredWindow {
    pub id: i64,
    pub tenant: String,
    pub device: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// When it was deferred (host clock): readings received later are not part of it.
    pub deferred_ms: i64,
}

/// A prediction row as the store keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredPrediction {
    pub tenant: String,
    pub device: String,
    pub ts_ms: i64,
    pub probability: f64,
    pub is_failure: bool,
    pub model: String,
}

/// Row counts, for summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub readings: u64,
    pub windows: u64,
    pub predictions: u64,
    pub alerts: u64,
    pub outbox: u64,
}

/// What one window produced, in the form the store keeps.
pub struct OutcomeRow<'a> {
    pub tenant: &'a str,
    pub device: &'a str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub probability: f32,
    pub is_failure: bool,
    pub model: &'a str,
    pub versions: &'a [String; 3],
    pub contributions_json: &'a str,
    pub alerts: &'a [Alert],
}

/// Memos of one device, by (feature, threshold bits): a handful per device.
type DeviceMemos = Vec<(String, u64, AboveMemo)>;

/// The answer of `above_since` through the window that ended at `through_ms`, so the next query
/// only reads the windows recorded since.
struct AboveMemo {
    through_ms: i64,
    since: Option<i64>,
}

/// The database file at the store's path is no longer the file the store has open: it was removed
/// (SQLite would go on writing into the unlinked file, and every commit would be lost when the
/// process ends) or replaced. Not recoverable in place: the host stops so that it is restarted
/// with the file that is there now; nothing committed after the change was acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("the database file {} was removed or replaced under the running host", .0.display())]
pub struct StoreGone(pub PathBuf);

/// (device, inode) of a file.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The SQLite store. Cheap to share behind an `Arc`; one connection, serialised by a mutex.
pub struct SqliteStore {
    path: PathBuf,
    /// (device, inode) of the database file when it was opened.
    file_id: Option<(u64, u64)>,
    conn: Mutex<Connection>,
    above: Mutex<HashMap<(String, String), DeviceMemos>>,
    durability: Durability,
    /// Shared with the checkpoint thread.
    wal: Arc<WalProgress>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, durability: Durability) -> anyhow::Result<SqliteStore> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("{}: SQLite refused WAL mode (got {mode})", path.display());
        }
        conn.execute_batch(match durability {
            Durability::Full => "PRAGMA synchronous=FULL;",
            Durability::Normal => "PRAGMA synchronous=NORMAL;",
        })?;
        // 8 MiB of page cache (the hot index pages of 1,000 devices) and memory-mapped reads.
        // Not more: at the end of every write transaction SQLite walks the whole cache's hash
        // table, and with 64 MiB that walk was 5 % of the host's CPU at 10k readings/s.
        conn.execute_batch("PRAGMA cache_size=-8192; PRAGMA mmap_size=268435456; PRAGMA temp_store=MEMORY;")?;
        conn.execute_batch(&format!("PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"))?;
        // No checkpoint inside a commit: [`SqliteStore::spawn_checkpointer`] runs them from
        // another connection (a passive checkpoint never blocks the writer), so the ingest loop's
        // commit only appends to the WAL; the writer finishes one now and then (see
        // [`SqliteStore::restart_wal_when_due`]).
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("creating tables in {}", path.display()))?;
        SqliteStore::with_connection(path, conn, durability)
    }

    /// The statement cache and planner settings every connection shares, and the store around it.
    fn with_connection(path: &Path, conn: Connection, durability: Durability) -> anyhow::Result<SqliteStore> {
        conn.set_prepared_statement_cache_capacity(64);
        // Query-planner stability: without it a cached statement with a range on a bound
        // parameter (the outbox's `id > ?1`) is prepared again on every new binding (STAT4).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            file_id: file_id(path),
            conn: Mutex::new(conn),
            above: Mutex::new(HashMap::new()),
            durability,
            wal: Arc::new(WalProgress::default()),
        })
    }

    /// A connection of its own that only reads (SQLite `SQLITE_OPEN_READ_ONLY` and
    /// `query_only`) the store the writer opened at `path`: for the sinks' drivers, queries, the
    /// dashboard and reports. In WAL mode it reads the last commit while the writer goes on, and
    /// it never waits for the writer's connection (each [`SqliteStore`] has its own mutex).
    pub fn open_reader(path: &Path) -> anyhow::Result<SqliteStore> {
        use anyhow::Context as _;
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("opening {} to read", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-8192; PRAGMA mmap_size=268435456;")?;
        SqliteStore::with_connection(path, conn, Durability::Normal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// With [`Durability::Full`], makes this connection's commits return without waiting for the
    /// disk and returns the [`WalSync`] that makes them durable afterwards: the writer can go on
    /// with its next batch while the disk syncs the last one, and one sync covers every commit
    /// before it. Whoever acknowledges a commit must call [`WalSync::sync`] after it and before
    /// the acknowledgement. `None` with [`Durability::Normal`] (nothing to wait for).
    ///
    /// Sound because in WAL mode a commit only appends frames to the WAL: after an fdatasync of
    /// the WAL that follows a commit, the commit survives a power cut, exactly as with
    /// `synchronous=FULL` (which syncs at the end of the commit). Checkpoints still sync the WAL
    /// and the database file before the WAL restarts (`synchronous=NORMAL` does), and a power cut
    /// before the sync loses only commits that were not acknowledged yet — never the database.
    pub fn defer_sync(&self) -> rusqlite::Result<Option<WalSync>> {
        if self.durability != Durability::Full {
            return Ok(None);
        }
        self.conn().execute_batch("PRAGMA synchronous=NORMAL;")?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(Some(WalSync { wal: PathBuf::from(wal) }))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the batch transaction (a write transaction from the start: no upgrade deadlocks).
    pub fn begin(&self) -> rusqlite::Result<()> {
        self.conn().execute_batch("BEGIN IMMEDIATE")
    }

    /// Whether the file at the store's path is still the database this store has open.
    pub fn check_file(&self) -> Result<(), StoreGone> {
        if self.file_id.is_some() && file_id(&self.path) == self.file_id {
            Ok(())
        } else {
            Err(StoreGone(self.path.clone()))
        }
    }

    /// Bytes available to the store on its filesystem (`statvfs`), if known.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Commits the batch; only then may its messages be acknowledged.
    pub fn commit(&self) -> rusqlite::Result<()> {
        self.conn().execute_batch("COMMIT")
    }

    /// Abandons the batch. The memo of `above_since` may describe rolled-back windows: dropped.
    pub fn rollback(&self) {
        if let Err(e) = self.conn().execute_batch("ROLLBACK") {
            warn!(error = %e, "Rolling back the store transaction failed");
        }
        self.above.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Stores a reading. `false` when a reading of the same device and time is already stored.
    pub fn insert_reading(&self, r: &Reading, received_ms: i64) -> rusqlite::Result<bool> {
        let channels = encode_channels(&r.channels);
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "INSERT INTO readings (tenant, device, ts_ms, seq, received_ms, channels)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, device, ts_ms) DO NOTHING",
        )?;
        Ok(stmt.execute(params![r.tenant, r.device, r.ts_ms, r.seq, received_ms, channels])? == 1)
    }

    /// The newest `n` readings of a device, oldest first.
    pub fn recent_readings(&self, tenant: &str, device: &str, n: usize) -> rusqlite::Result<Vec<Reading>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT ts_ms, seq, channels FROM readings WHERE tenant = ?1 AND device = ?2
             ORDER BY ts_ms DESC LIMIT ?3",
        )?;
        let mut out = readings_of(tenant, device, stmt.query(params![tenant, device, n as i64])?)?;
        out.reverse();
        Ok(out)
    }

    /// End of the last window processed for a device.
    pub fn last_window_ms(&self, tenant: &str, device: &str) -> rusqlite::Result<Option<i64>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT last_window_ms FROM devices WHERE tenant = ?1 AND device = ?2")?;
        Ok(stmt.query_row(params![tenant, device], |r| r.get::<_, Option<i64>>(0)).optional()?.flatten())
    }

    /// Records that the window of a device ending at `end_ms` was processed (with or without a
    /// prediction: a window a plugin failed on is not retried).
    pub fn record_window(
        &self,
        tenant: &str,
        device: &str,
        end_ms: i64,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "INSERT INTO devices (tenant, device, last_window_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, device) DO UPDATE SET
               last_window_ms = max(coalesce(last_window_ms, excluded.last_window_ms), excluded.last_window_ms),
               last_seen_ms = excluded.last_seen_ms",
        )?;
        stmt.execute(params![tenant, device, end_ms, now_ms])?;
        Ok(())
    }

    /// Stores a prediction and its alerts; `false` when the window's prediction was already
    /// stored (a repeated window replaces nothing). Only that duplicate is ignored: any other
    /// constraint (a NULL where a value is required) fails the transaction.
    pub fn insert_outcome(&self, o: &OutcomeRow<'_>, now_ms: i64) -> rusqlite::Result<bool> {
        let conn = self.conn();
        let versions = serde_json::to_string(o.versions).unwrap_or_default();
        let inserted =
            conn.prepare_cached(
                "INSERT INTO predictions (tenant, device, ts_ms, start_ms, probability, is_failure,
               model, versions, contributions, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (tenant, device, ts_ms) DO NOTHING",
            )?
            .execute(params![
                o.tenant,
                o.device,
                o.end_ms,
                o.start_ms,
                o.probability as f64,
                o.is_failure,
                o.model,
                versions,
                o.contributions_json,
                now_ms
            ])? == 1;
        if !inserted {
            return Ok(false);
        }
        let mut alert = conn.prepare_cached(
            "INSERT INTO alerts (tenant, device, ts_ms, idx, severity, subject, body, probability)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (i, a) in o.alerts.iter().enumerate() {
            alert.execute(params![
                o.tenant,
                o.device,
                o.end_ms,
                i as i64,
                severity_str(a.severity),
                a.subject,
                a.body,
                o.probability as f64
            ])?;
        }
        Ok(true)
    }

    /// Queues a message, inside the caller's transaction.
    pub fn enqueue(
        &self,
        kind: MessageKind,
        target: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO outbox (sink, target, payload, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![kind.as_str(), target, payload, now_ms])?;
        Ok(())
    }

    /// Up to `limit` messages of `kind` with an id above `after`, oldest first. Read-only: the
    /// sinks read, the ingest loop — the only writer — deletes what every sink has settled.
    pub fn outbox_after(&self, after: i64, kind: MessageKind, limit: usize) -> rusqlite::Result<OutboxRead> {
        let conn = self.conn();
        // Read first: rows of other kinds up to here need no second look once the read is short.
        let last: i64 =
            conn.prepare_cached("SELECT coalesce(max(id), 0) FROM outbox")?.query_row([], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, target, payload, created_ms FROM outbox WHERE id > ?1 AND id <= ?2 AND sink = ?3 \
             ORDER BY id LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![after, last, kind.as_str(), limit as i64], |r| {
            Ok(OutboxItem {
                id: r.get(0)?,
                kind,
                target: r.get(1)?,
                payload: r.get(2)?,
                created_ms: r.get(3)?,
                attempts: 0,
            })
        })?;
        let items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let scanned =
            if items.len() == limit { items.last().map_or(after, |i| i.id) } else { last.max(after) };
        Ok(OutboxRead { items, scanned })
    }

    /// Messages of `kind` above `after` and the creation time of the oldest of them: a sink's
    /// queue.
    pub fn outbox_pending(&self, after: i64, kind: MessageKind) -> rusqlite::Result<(u64, Option<i64>)> {
        self.conn()
            .prepare_cached("SELECT count(*), min(created_ms) FROM outbox WHERE id > ?1 AND sink = ?2")?
            .query_row(params![after, kind.as_str()], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
    }

    /// Every sink's cursor (see [`SqliteStore::settle_outbox`]).
    pub fn sink_cursors(&self) -> rusqlite::Result<HashMap<String, i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT sink, settled FROM sink_cursors")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Records how far each sink has settled the outbox and deletes the rows every sink of
    /// `cursors` has settled, inside the caller's transaction. Cursors of sinks not named (no
    /// longer configured) stay stored and hold nothing back.
    pub fn settle_outbox(&self, cursors: &[(&str, i64)]) -> rusqlite::Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let conn = self.conn();
        let mut upsert = conn.prepare_cached(
            "INSERT INTO sink_cursors (sink, settled) VALUES (?1, ?2) \
             ON CONFLICT (sink) DO UPDATE SET settled = max(settled, excluded.settled)",
        )?;
        let mut stored = conn.prepare_cached("SELECT settled FROM sink_cursors WHERE sink = ?1")?;
        let mut all = i64::MAX;
        for (sink, settled) in cursors {
            upsert.execute(params![sink, settled])?;
            all = all.min(stored.query_row([sink], |r| r.get::<_, i64>(0))?);
        }
        conn.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?.execute([all])?;
        Ok(())
    }

    /// Copies committed WAL frames into the database file without blocking the writer (SQLite's
    /// PASSIVE checkpoint). Returns the frames in the WAL and how many of them are copied.
    ///
    /// The WAL only restarts from its beginning when a write transaction starts with every frame
    /// copied. Under a steady stream of commits a checkpoint on another connection never gets
    /// there (frames are appended while it copies) and the WAL grows without bound — 1.5 GB in
    /// 20 s at 10k readings/s. So the writer itself checkpoints now and then, between two
    /// transactions, right after the checkpoint thread did most of the copying
    /// ([`SqliteStore::restart_wal_when_due`]): it copies the rest and its next transaction
    /// restarts the WAL.
    pub fn checkpoint(&self) -> rusqlite::Result<(i64, i64)> {
        self.conn().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
    }

    /// A thread that checkpoints the WAL of this store every [`CHECKPOINT_EVERY`] on its own
    /// connection (the writer has automatic checkpoints off), and once more when the shutdown
    /// reaches its sinks' stage (after the ingest loop's last commit). A checkpoint copies the WAL into the database file and syncs it — several
    /// milliseconds at 10k readings/s on this machine's disk — so it runs on no thread that
    /// anything waits for (on the outbox thread it held every prediction back that long). After
    /// each one that copied everything it saw, the writer's [`SqliteStore::restart_wal`] has
    /// little left to do.
    pub fn spawn_checkpointer(&self, shutdown: Shutdown) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let store = SqliteStore::open(&self.path, self.durability)?;
        let wal = self.wal.clone();
        // Stops only when told: ending (or panicking) before that stops the process.
        Ok(crate::worker::spawn("edgepm-checkpoint", shutdown.clone(), move || {
            let mut next = Instant::now() + CHECKPOINT_EVERY;
            loop {
                let stopping = shutdown.reached(Stage::Sinks);
                if stopping || Instant::now() >= next {
                    next = Instant::now() + CHECKPOINT_EVERY;
                    match store.checkpoint() {
                        Ok((log, done)) => {
                            wal.frames.store(log.max(0) as u64, Ordering::Relaxed);
                            if log >= 0 && log == done {
                                wal.copies.fetch_add(1, Ordering::Release);
                            }
                        }
                        Err(e) => warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
                if stopping {
                    break;
                }
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)),
                );
            }
        })?)
    }

    /// What the checkpoint thread saw of the WAL: `(frames, full copies)`.
    pub fn wal_progress(&self) -> (u64, u64) {
        (self.wal.frames.load(Ordering::Relaxed), self.wal.copies.load(Ordering::Acquire))
    }

    /// Called by the writer between two transactions, after each batch. Once the WAL is past
    /// [`WAL_RESTART_FRAMES`] it waits for the checkpoint thread's next full copy and then runs
    /// [`SqliteStore::restart_wal`] at once — little is left to copy (what was committed during
    /// the thread's checkpoint) — or after [`WAL_RESTART_PATIENCE`] regardless. Returns what the
    /// checkpoint returned when it ran.
    pub fn restart_wal_when_due(&self) -> Option<rusqlite::Result<(i64, i64)>> {
        self.restart_wal_past(WAL_RESTART_FRAMES, Instant::now())
    }

    fn restart_wal_past(&self, threshold: u64, now: Instant) -> Option<rusqlite::Result<(i64, i64)>> {
        let (frames, copies) = self.wal_progress();
        let mut due = self.wal.due.lock().unwrap_or_else(PoisonError::into_inner);
        if frames < threshold {
            *due = None;
            return None;
        }
        let (since, at) = *due.get_or_insert((copies, now));
        if copies == since && now < at + WAL_RESTART_PATIENCE {
            return None;
        }
        *due = None;
        drop(due);
        Some(self.restart_wal())
    }

    /// The writer's checkpoint, between two of its transactions: copies the rest of the WAL so
    /// the next transaction restarts it. Returns what [`SqliteStore::checkpoint`] returns.
    pub fn restart_wal(&self) -> rusqlite::Result<(i64, i64)> {
        let done = self.checkpoint()?;
        self.wal.frames.store(0, Ordering::Relaxed);
        Ok(done)
    }

    /// Messages waiting in the outbox.
    pub fn outbox_depth(&self) -> rusqlite::Result<u64> {
        self.conn().query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
    }

    /// Registry metadata of a device, e.g. `[("model", "W22 15 kW"), ("site", "Plant A")]`.
    pub fn asset(&self, tenant: &str, device: &str) -> rusqlite::Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT attributes FROM assets WHERE tenant = ?1 AND device = ?2")?;
        let json: Option<String> = stmt.query_row(params![tenant, device], |r| r.get(0)).optional()?;
        Ok(json.as_deref().map(parse_attributes).unwrap_or_default())
    }

    /// Replaces the registry metadata of a device.
    pub fn upsert_asset(
        &self,
        tenant: &str,
        device: &str,
        attributes: &[(String, String)],
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let map: serde_json::Map<String, serde_json::Value> =
            attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO assets (tenant, device, attributes, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, device) DO UPDATE SET attributes = excluded.attributes,
               updated_ms = excluded.updated_ms",
        )?
        .execute(params![tenant, device, serde_json::Value::Object(map).to_string(), now_ms])?;
        Ok(())
    }

    /// Keeps a message refused for a cause on the host's side (its tenant not deployed, perhaps
    /// for a moment during a redeploy) for replay once the cause is gone.
    pub fn park(
        &self,
        tenant: &str,
        topic: &str,
        payload: &[u8],
        reason: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO parked (tenant, topic, payload, reason, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![tenant, topic, payload, reason, now_ms])?;
        Ok(())
    }

    /// Tenants with parked messages.
    pub fn parked_tenants(&self) -> rusqlite::Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT tenant FROM parked")?;
        stmt.query_map([], |r| r.get(0))?.collect()
    }

    /// Up to `limit` parked messages of `tenant`, oldest first: (id, topic, payload).
    pub fn parked(&self, tenant: &str, limit: usize) -> rusqlite::Result<Vec<(i64, String, Vec<u8>)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id, topic, payload FROM parked WHERE tenant = ?1 ORDER BY id LIMIT ?2")?;
        stmt.query_map(params![tenant, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
    }

    /// Deletes replayed parked messages (inside the transaction that stored them again).
    pub fn delete_parked(&self, ids: &[i64]) -> rusqlite::Result<()> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("DELETE FROM parked WHERE id = ?1")?;
        for id in ids {
            stmt.execute([id])?;
        }
        Ok(())
    }

    /// Keeps a window for a later batch (inside the transaction that recorded it). Returns its id.
    pub fn defer_window(
        &self,
        tenant: &str,
        device: &str,
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> rusqlite::Result<i64> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO deferred (tenant, device, start_ms, end_ms, deferred_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![tenant, device, start_ms, end_ms, now_ms])?;
        Ok(conn.last_insert_rowid())
    }

    /// Every deferred window, oldest first.
    pub fn deferred_windows(&self) -> rusqlite::Result<Vec<DeferredWindow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, tenant, device, start_ms, end_ms, deferred_ms FROM deferred ORDER BY id",
        )?;
        stmt.query_map([], |r| {
            Ok(DeferredWindow {
                id: r.get(0)?,
                tenant: r.get(1)?,
                device: r.get(2)?,
                start_ms: r.get(3)?,
                end_ms: r.get(4)?,
                deferred_ms: r.get(5)?,
            })
        })?
        .collect()
    }

    /// Deletes deferred windows that ran or were shed (inside the transaction that did so).
    pub fn delete_deferred(&self, ids: &[i64]) -> rusqlite::Result<()> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("DELETE FROM deferred WHERE id = ?1")?;
        for id in ids {
            stmt.execute([id])?;
        }
        Ok(())
    }

    /// The readings of a deferred window, oldest first: those of its device from `start_ms` to
    /// `end_ms` received by the time it was deferred (a late reading received after it is not
    /// part of it, as it was not part of the window when it was completed).
    pub fn window_readings(&self, w: &DeferredWindow) -> rusqlite::Result<Vec<Reading>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT ts_ms, seq, channels FROM readings
             WHERE tenant = ?1 AND device = ?2 AND ts_ms BETWEEN ?3 AND ?4 AND received_ms <= ?5
             ORDER BY ts_ms",
        )?;
        readings_of(
            &w.tenant,
            &w.device,
            stmt.query(params![w.tenant, w.device, w.start_ms, w.end_ms, w.deferred_ms])?,
        )
    }

    /// Keeps the outbox within its bounds: drops messages created before `oldest_ms` (if set),
    /// then the oldest beyond `max_rows`. Returns (dropped for age, dropped for rows). The only
    /// way undelivered messages are ever dropped — the caller counts and logs it.
    pub fn bound_outbox(&self, max_rows: u64, oldest_ms: Option<i64>) -> rusqlite::Result<(u64, u64)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let aged = match oldest_ms {
            Some(t) => tx.execute("DELETE FROM outbox WHERE created_ms < ?1", [t])? as u64,
            None => 0,
        };
        let rows: i64 = tx.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        let excess = (rows as u64).saturating_sub(max_rows);
        let dropped = if excess > 0 {
            tx.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1)",
                [excess as i64],
            )? as u64
        } else {
            0
        };
        tx.commit()?;
        Ok((aged, dropped))
    }

    /// Deletes readings, features, predictions and alerts older than `before_ms`. Returns the
    /// rows deleted. The outbox has bounds of its own ([`SqliteStore::bound_outbox`]).
    pub fn purge_before(&self, before_ms: i64) -> rusqlite::Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 0;
        n += tx.execute("DELETE FROM parked WHERE received_ms < ?1", [before_ms])? as u64;
        // Their readings go now: such a window could not be assembled again.
        n += tx.execute("DELETE FROM deferred WHERE start_ms < ?1", [before_ms])? as u64;
        for table in ["readings", "features", "predictions", "alerts"] {
            n += tx.execute(&format!("DELETE FROM {table} WHERE ts_ms < ?1"), [before_ms])? as u64;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Row counts of the main tables.
    pub fn counts(&self) -> rusqlite::Result<Counts> {
        let conn = self.conn();
        let count = |table: &str| -> rusqlite::Result<u64> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        };
        Ok(Counts {
            readings: count("readings")?,
            windows: count("features")?,
            predictions: count("predictions")?,
            alerts: count("alerts")?,
            outbox: count("outbox")?,
        })
    }

    /// Predictions of a device (or of every device when `device` is `None`), oldest first.
    pub fn predictions(&self, tenant: &str, device: Option<&str>) -> rusqlite::Result<Vec<StoredPrediction>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT device, ts_ms, probability, is_failure, model FROM predictions
             WHERE tenant = ?1 AND (?2 IS NULL OR device = ?2) ORDER BY ts_ms, device",
        )?;
        let rows = stmt.query_map(params![tenant, device], |r| {
            Ok(StoredPrediction {
                tenant: tenant.to_string(),
                device: r.get(0)?,
                ts_ms: r.get(1)?,
                probability: r.get(2)?,
                is_failure: r.get(3)?,
                model: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    fn feature_path(feature: &str) -> String {
        // A JSON path selecting one key, whatever characters it holds.
        format!("$.{}", serde_json::Value::String(feature.to_string()))
    }

    fn above_since_sql(
        conn: &Connection,
        tenant: &str,
        device: &str,
        feature: &str,
        threshold: f64,
        memo: Option<&AboveMemo>,
    ) -> rusqlite::Result<AboveMemo> {
        let path = Self::feature_path(feature);
        match memo {
            // Continue from the memo with the windows recorded since, oldest first.
            Some(m) => {
                let mut stmt = conn.prepare_cached(
                    "SELECT ts_ms, json_extract(features, ?4) FROM features
                     WHERE tenant = ?1 AND device = ?2 AND ts_ms > ?3 ORDER BY ts_ms",
                )?;
                let mut rows = stmt.query(params![tenant, device, m.through_ms, path])?;
                let mut next = AboveMemo { through_ms: m.through_ms, since: m.since };
                while let Some(row) = rows.next()? {
                    let ts: i64 = row.get(0)?;
                    let v: Option<f64> = row.get(1)?;
                    next.since =
                        if v.is_some_and(|v| v > threshold) { next.since.or(Some(ts)) } else { None };
                    next.through_ms = ts;
                }
                Ok(next)
            }
            // From scratch: the newest window at or below the threshold bounds the current run.
            None => {
                let newest: Option<i64> = conn
                    .prepare_cached("SELECT max(ts_ms) FROM features WHERE tenant = ?1 AND device = ?2")?
                    .query_row(params![tenant, device], |r| r.get(0))?;
                let Some(newest) = newest else {
                    return Ok(AboveMemo { through_ms: i64::MIN, since: None });
                };
                let last_not_above: Option<i64> = conn
                    .prepare_cached(
                        "SELECT ts_ms FROM features WHERE tenant = ?1 AND device = ?2
                         AND NOT coalesce(json_extract(features, ?3) > ?4, 0) ORDER BY ts_ms DESC LIMIT 1",
                    )?
                    .query_row(params![tenant, device, path, threshold], |r| r.get(0))
                    .optional()?;
                let since: Option<i64> = conn
                    .prepare_cached(
                        "SELECT min(ts_ms) FROM features WHERE tenant = ?1 AND device = ?2 AND ts_ms > ?3",
                    )?
                    .query_row(params![tenant, device, last_not_above.unwrap_or(i64::MIN)], |r| r.get(0))?;
                Ok(AboveMemo { through_ms: newest, since })
            }
        }
    }

    fn log_error<T: Default>(what: &str, r: rusqlite::Result<T>) -> T {
        r.unwrap_or_else(|e| {
            warn!(error = %e, "History query ({what}) failed; answering as if there were no history");
            T::default()
        })
    }
}

impl History for SqliteStore {
    fn record_features(&self, tenant: &str, device: &str, ts_ms: i64, features: &Features) {
        let json = features_json(features);
        let result = {
            let conn = self.conn();
            conn.prepare_cached(
                "INSERT OR REPLACE INTO features (tenant, device, ts_ms, features) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![tenant, device, ts_ms, json]))
        };
        if let Err(e) = result {
            warn!(tenant, device, ts_ms, error = %e, "Storing features failed");
        }
        // A window older than a memo's end changes that run: forget those memos of the device.
        let mut above = self.above.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(memos) = above.get_mut(&(tenant.to_string(), device.to_string())) {
            memos.retain(|(_, _, m)| ts_ms > m.through_ms);
        }
    }

    fn record_alert(&self, _tenant: &str, _device: &str, _ts_ms: i64) {
        // Alerts are stored with their prediction by `insert_outcome`, in the same transaction.
    }

    fn above_since(&self, tenant: &str, device: &str, feature: &str, threshold: f64) -> Option<i64> {
        let mut above = self.above.lock().unwrap_or_else(PoisonError::into_inner);
        if above.len() > 100_000 {
            above.clear(); // a bound on memory; memos are only a shortcut
        }
        let memos = above.entry((tenant.to_string(), device.to_string())).or_default();
        let bits = threshold.to_bits();
        let slot = memos.iter().position(|(f, t, _)| f == feature && *t == bits);
        let conn = self.conn();
        match Self::above_since_sql(&conn, tenant, device, feature, threshold, slot.map(|i| &memos[i].2)) {
            Ok(memo) => {
                let since = memo.since;
                match slot {
                    Some(i) => memos[i].2 = memo,
                    None => memos.push((feature.to_string(), bits, memo)),
                }
                since
            }
            Err(e) => {
                warn!(error = %e, "History query (above-since) failed; answering none");
                None
            }
        }
    }

    fn mean(&self, tenant: &str, device: &str, feature: &str, from_ms: i64, to_ms: i64) -> Option<f64> {
        let conn = self.conn();
        let r = conn
            .prepare_cached(
                "SELECT avg(json_extract(features, ?3)) FROM features
                 WHERE tenant = ?1 AND device = ?2 AND ts_ms BETWEEN ?4 AND ?5",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, device, Self::feature_path(feature), from_ms, to_ms], |r| {
                    r.get::<_, Option<f64>>(0)
                })
            });
        Self::log_error("mean", r)
    }

    fn last_alert_ms(&self, tenant: &str, device: &str) -> Option<i64> {
        let conn = self.conn();
        let r = conn
            .prepare_cached("SELECT max(ts_ms) FROM alerts WHERE tenant = ?1 AND device = ?2")
            .and_then(|mut s| s.query_row(params![tenant, device], |r| r.get::<_, Option<i64>>(0)));
        Self::log_error("last-alert-ms", r)
    }
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Readings of one device from rows of (ts_ms, seq, channels), in row order. A row whose
/// channels cannot be decoded is skipped with a warning.
fn readings_of(tenant: &str, device: &str, mut rows: rusqlite::Rows<'_>) -> rusqlite::Result<Vec<Reading>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (ts_ms, seq, channels): (i64, Option<i64>, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(2)?);
        match decode_channels(&channels) {
            Some(channels) => out.push(Reading {
                tenant: tenant.to_string(),
                device: device.to_string(),
                ts_ms,
                seq,
                channels,
            }),
            None => warn!(tenant, device, ts_ms, "Stored reading has unreadable channels; skipped"),
        }
    }
    Ok(out)
}

/// Version byte of [`encode_channels`].
const CHANNELS_FORMAT: u8 = 1;

/// A reading's channels as stored in `readings.channels` — compact, because readings are the
/// bulk of the store and of its write cost (a JSON text row is 3–4× larger and 4× slower to
/// insert): a version byte (1), then per channel, sorted by name: the name's length (u8) and
/// UTF-8 bytes, a kind byte (0 scalar, 1 burst), for a burst its sample count (u32 LE), then the
/// values as f32 LE.
pub fn encode_channels(channels: &[(String, Samples)]) -> Vec<u8> {
    let size: usize = channels.iter().map(|(n, s)| n.len() + 6 + 4 * samples_len(s)).sum();
    let mut out = Vec::with_capacity(1 + size);
    out.push(CHANNELS_FORMAT);
    for (name, s) in channels {
        // The length is one byte: a longer name (telemetry does not limit them) is cut at the last
        // character boundary within 255 bytes, so it still reads back as UTF-8.
        let mut cut = name.len().min(255);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(cut as u8);
        out.extend_from_slice(&name.as_bytes()[..cut]);
        match s {
            Samples::Scalar(x) => {
                out.push(0);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Samples::Burst(xs) => {
                out.push(1);
                out.extend_from_slice(&(xs.len() as u32).to_le_bytes());
                for x in xs {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    out
}

fn samples_len(s: &Samples) -> usize {
    match s {
        Samples::Scalar(_) => 1,
        Samples::Burst(xs) => xs.len(),
    }
}

/// Reads [`encode_channels`]; `None` for anything malformed.
pub fn decode_channels(mut b: &[u8]) -> Option<Vec<(String, Samples)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (b.get(..n)?, b.get(n..)?);
        *b = tail;
        Some(head)
    }
    let f32_at = |bytes: &[u8]| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if take(&mut b, 1)? != [CHANNELS_FORMAT] {
        return None;
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = take(&mut b, 1)?[0] as usize;
        let name = std::str::from_utf8(take(&mut b, len)?).ok()?.to_string();
        let samples = match take(&mut b, 1)?[0] {
            0 => Samples::Scalar(f32_at(take(&mut b, 4)?)),
            1 => {
                let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
                let raw = take(&mut b, n.checked_mul(4)?)?;
                Samples::Burst(raw.chunks_exact(4).map(f32_at).collect())
            }
            _ => return None,
        };
        out.push((name, samples));
    }
    Some(out)
}

fn features_json(f: &Features) -> String {
    let map: std::collections::BTreeMap<&str, f32> =
        f.names.iter().map(String::as_str).zip(f.values.iter().copied()).collect();
    serde_json::to_string(&map).unwrap_or_default()
}

fn parse_attributes(json: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("edgepm.db"), Durability::Normal).expect("open");
        (dir, s)
    }

    fn features(rms: f32) -> Features {
        Features { names: vec!["vibration_rms".into(), "x".into()], values: vec![rms, 0.0] }
    }

    #[test]
    fn a_full_durability_store_can_defer_its_syncs_to_whoever_acknowledges() {
        let synchronous = |s: &SqliteStore| -> i64 {
            s.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma")
        };
        let (_dir, normal) = store();
        assert!(normal.defer_sync().expect("defer").is_none(), "nothing to defer at normal");

        let dir = tempfile::tempdir().expect("tempdir");
        let full = SqliteStore::open(&dir.path().join("edgepm.db"), Durability::Full).expect("open");
        assert_eq!(synchronous(&full), 2, "FULL: every commit syncs");
        let sync = full.defer_sync().expect("defer").expect("a WalSync at full");
        assert_eq!(synchronous(&full), 1, "NORMAL: commits return before the disk has them");
        full.begin().expect("begin");
        full.upsert_asset("acme", "MTR-1", &[("site".into(), "A".into())], 1).expect("write");
        full.commit().expect("commit");
        assert!(dir.path().join("edgepm.db-wal").metadata().expect("WAL").len() > 0);
        sync.sync().expect("sync of the WAL");
        // A WAL that is gone cannot make its commits durable: an error, never a silent success.
        std::fs::remove_file(dir.path().join("edgepm.db-wal")).expect("remove the WAL");
        let err = sync.sync().expect_err("no WAL: the commits in it are not on disk");
        assert!(err.to_string().contains("is gone"), "{err}");
    }

    #[test]
    fn channels_round_trip_through_the_binary_form_and_garbage_is_refused() {
        let c = vec![
            ("t".to_string(), Samples::Scalar(61.7)),
            ("v".to_string(), Samples::Burst(vec![0.1234, -2.5])),
        ];
        let b = encode_channels(&c);
        assert_eq!(b.len(), 1 + (2 + 1 + 4) + (2 + 1 + 4 + 8));
        assert_eq!(decode_channels(&b), Some(c));
        assert_eq!(decode_channels(&b[..b.len() - 1]), None);
        assert_eq!(decode_channels(b"{\"v\": 1}"), None);
    }

    #[test]
    fn the_outbox_is_bounded_by_age_and_rows_and_says_what_it_dropped() {
        let (_d, s) = store();
        for i in 0..10 {
            s.enqueue(MessageKind::Publication, "t", b"x", i * 1000).expect("enqueue");
        }
        assert_eq!(s.bound_outbox(100, Some(3000)).expect("bound"), (3, 0), "created before 3 s");
        assert_eq!(s.bound_outbox(4, None).expect("bound"), (0, 3), "the oldest beyond 4 rows");
        let left = s.outbox_after(0, MessageKind::Publication, 100).expect("read").items;
        assert_eq!(left.len(), 4);
        assert_eq!(s.bound_outbox(4, None).expect("bound"), (0, 0));
    }

    #[test]
    fn a_prediction_without_a_probability_fails_instead_of_vanishing() {
        let (_d, s) = store();
        let versions = ["a".to_string(), "b".to_string(), "c".to_string()];
        let row = |p: f32| OutcomeRow {
            tenant: "t",
            device: "d",
            start_ms: 0,
            end_ms: 1,
            probability: p,
            is_failure: false,
            model: "m",
            versions: &versions,
            contributions_json: "[]",
            alerts: &[],
        };
        assert!(s.insert_outcome(&row(0.5), 0).expect("stored"));
        assert!(!s.insert_outcome(&row(0.5), 0).expect("a repeated window is ignored"));
        // NaN binds as NULL: the NOT NULL constraint must fail the write, not skip it silently.
        let nan = OutcomeRow { end_ms: 2, ..row(f32::NAN) };
        assert!(s.insert_outcome(&nan, 0).is_err());
    }

    #[test]
    fn readings_are_idempotent_and_round_trip() {
        let (_d, s) = store();
        let r = Reading {
            tenant: "acme".into(),
            device: "M1".into(),
            ts_ms: 1000,
            seq: Some(7),
            channels: vec![
                ("temperature".into(), Samples::Scalar(61.5)),
                ("vibration".into(), Samples::Burst(vec![0.25, -1.5])),
            ],
        };
        assert!(s.insert_reading(&r, 1).expect("insert"));
        assert!(!s.insert_reading(&r, 2).expect("again"), "redelivery is a no-op");
        assert_eq!(s.recent_readings("acme", "M1", 10).expect("read"), vec![r]);
        assert_eq!(s.counts().expect("counts").readings, 1);
    }

    #[test]
    fn the_wal_restarts_after_the_writer_checkpoints_under_a_steady_stream_of_commits() {
        let (dir, s) = store();
        let shutdown = Shutdown::new();
        let thread = s.spawn_checkpointer(shutdown.clone()).expect("checkpointer");
        let commit = |ts: i64| {
            s.begin().expect("begin");
            for device in 0..20 {
                let r = Reading {
                    tenant: "t".into(),
                    device: format!("M{device}"),
                    ts_ms: ts,
                    seq: None,
                    channels: vec![("vibration".into(), Samples::Burst(vec![0.5; 64]))],
                };
                s.insert_reading(&r, ts).expect("insert");
            }
            s.commit().expect("commit");
        };
        // Commits back to back while the checkpoint thread copies: it sees the WAL and counts
        // its full copies, but alone it never lets the WAL start over.
        let started = Instant::now();
        let mut ts = 0;
        while started.elapsed() < Duration::from_millis(300) || s.wal_progress().1 == 0 {
            // Bounded: a checkpoint thread that never copies fails the test instead of hanging it.
            assert!(started.elapsed() < Duration::from_secs(60), "the checkpoint thread made no full copy");
            ts += 1;
            commit(ts);
        }
        let (frames, copies) = s.wal_progress();
        assert!(frames > 0 && copies > 0, "checkpoint thread: {frames} frames, {copies} full copies");
        let wal_len = || std::fs::metadata(dir.path().join("edgepm.db-wal")).expect("wal").len();
        let grown = wal_len();
        // A checkpoint that finds the checkpoint thread's own under way is busy (-1, -1): the
        // writer's comes again a moment later, as the ingest loop's does after its next batch.
        let unbusy = |f: &dyn Fn() -> rusqlite::Result<(i64, i64)>| {
            for _ in 0..500 {
                let r = f().expect("checkpoint");
                if r.0 >= 0 {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            panic!("the checkpoint stayed busy for a second");
        };
        // The writer's checkpoint copies the rest; its next transaction writes from the start.
        let (log, copied) = unbusy(&|| s.restart_wal());
        assert_eq!(log, copied, "everything copied");
        commit(ts + 1);
        let (after, _) = unbusy(&|| s.checkpoint());
        assert!(after > 0 && after < log, "the WAL restarted: {after} frames after, {log} before");
        // Reused from its start (or truncated to `journal_size_limit` when it grew past it).
        assert!(wal_len() <= grown, "the file did not grow: {} then {grown} bytes", wal_len());
        shutdown.advance(Stage::Sinks);
        thread.join().expect("join");
    }

    #[test]
    fn a_due_wal_restart_waits_for_the_checkpoint_threads_next_full_copy() {
        let (_d, s) = store();
        let t0 = Instant::now();
        let checkpointed = |frames: u64| {
            s.wal.frames.store(frames, Ordering::Relaxed);
            s.wal.copies.fetch_add(1, Ordering::Release);
        };
        checkpointed(10);
        assert!(s.restart_wal_past(100, t0).is_none(), "small WAL");
        checkpointed(150);
        assert!(s.restart_wal_past(100, t0).is_none(), "due: waits for the next full copy");
        assert!(s.restart_wal_past(100, t0 + Duration::from_secs(1)).is_none(), "still waiting");
        checkpointed(160);
        assert!(s.restart_wal_past(100, t0 + Duration::from_secs(1)).is_some_and(|r| r.is_ok()));
        assert_eq!(s.wal_progress().0, 0, "restarted: the WAL counts as empty until the next look");
        checkpointed(170);
        assert!(s.restart_wal_past(100, t0 + Duration::from_secs(2)).is_none(), "due again: waits");
        let late = t0 + Duration::from_secs(2) + WAL_RESTART_PATIENCE;
        assert!(s.restart_wal_past(100, late).is_some(), "without a full copy, after the patience");
    }

    #[test]
    fn above_since_and_mean_follow_the_stored_windows() {
        let (_d, s) = store();
        let h: &dyn History = &s;
        for (ts, v) in [(1, 1.0), (2, 5.0), (3, 6.0)] {
            h.record_features("t", "d", ts, &features(v));
        }
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(2));
        h.record_features("t", "d", 4, &features(7.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(2), "run continues (memo)");
        h.record_features("t", "d", 5, &features(1.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), None, "run broken");
        h.record_features("t", "d", 6, &features(9.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(6));
        // A late window inside the run invalidates the memo and is taken into account.
        h.record_features("t", "d", 5, &features(8.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(2));
        assert_eq!(h.above_since("t", "d", "missing", 0.0), None);
        assert_eq!(h.mean("t", "d", "vibration_rms", 1, 3), Some(4.0));
        assert_eq!(h.mean("t", "other", "vibration_rms", 1, 3), None);
    }

    #[test]
    fn the_outbox_is_read_by_kind_after_a_cursor_and_emptied_by_the_sinks_cursors() {
        let (_d, s) = store();
        s.enqueue(MessageKind::Publication, "a/b", b"1", 10).expect("enqueue");
        s.enqueue(MessageKind::Email, "x.eml", b"2", 20).expect("enqueue");
        s.enqueue(MessageKind::Publication, "a/c", b"3", 30).expect("enqueue");
        let read = s.outbox_after(0, MessageKind::Publication, 10).expect("read");
        assert_eq!(read.items.iter().map(|i| i.target.as_str()).collect::<Vec<_>>(), vec!["a/b", "a/c"]);
        assert_eq!(read.scanned, read.items[1].id, "a short read looked at everything");
        let first = s.outbox_after(0, MessageKind::Publication, 1).expect("read");
        assert_eq!(first.scanned, first.items[0].id, "a full read only as far as its last row");
        let mail = s.outbox_after(0, MessageKind::Email, 10).expect("read");
        assert_eq!(mail.items.len(), 1);
        assert_eq!(mail.items[0].created_ms, 20);
        assert_eq!(s.outbox_after(read.scanned, MessageKind::Email, 10).expect("read").items.len(), 0);
        assert_eq!(s.outbox_pending(0, MessageKind::Publication).expect("pending"), (2, Some(10)));

        // The publications' sink settled everything, the e-mails' sink nothing yet: the rows
        // before the e-mail go, the rest waits for it.
        s.settle_outbox(&[("mqtt", read.scanned), ("email_files", 0)]).expect("settle");
        assert_eq!(s.outbox_depth().expect("depth"), 3, "nothing below the lowest cursor");
        s.settle_outbox(&[("mqtt", read.scanned), ("email_files", mail.items[0].id)]).expect("settle");
        assert_eq!(s.outbox_depth().expect("depth"), 1);
        assert_eq!(s.outbox_pending(0, MessageKind::Publication).expect("pending"), (1, Some(30)));
        s.settle_outbox(&[("mqtt", 0), ("email_files", read.scanned)]).expect("settle");
        let cursors = s.sink_cursors().expect("cursors");
        assert_eq!(cursors["mqtt"], read.scanned, "a cursor never goes back");
        assert_eq!(s.outbox_depth().expect("depth"), 0);
    }

    #[test]
    fn a_reader_sees_every_commit_and_cannot_write() {
        let (dir, s) = store();
        let reader = SqliteStore::open_reader(&dir.path().join("edgepm.db")).expect("reader");
        s.enqueue(MessageKind::Publication, "a/b", b"1", 0).expect("enqueue");
        assert_eq!(reader.outbox_depth().expect("depth"), 1, "committed outside a transaction");
        s.begin().expect("begin");
        s.enqueue(MessageKind::Publication, "a/b", b"2", 0).expect("enqueue");
        assert_eq!(reader.outbox_depth().expect("depth"), 1, "not before the commit");
        s.commit().expect("commit");
        assert_eq!(reader.outbox_depth().expect("depth"), 2);
        let e = reader.enqueue(MessageKind::Publication, "a/b", b"3", 0).expect_err("read-only");
        assert!(e.to_string().contains("readonly") || e.to_string().contains("read-only"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn channels_read_back_as_written(
            channels in proptest::collection::vec(
                ("\\PC{0,300}", proptest::option::of(proptest::collection::vec(proptest::num::f32::ANY, 0..64)), proptest::num::f32::ANY),
                0..6,
            )
        ) {
            let channels: Vec<(String, Samples)> = channels
                .into_iter()
                .map(|(name, burst, x)| (name, burst.map_or(Samples::Scalar(x), Samples::Burst)))
                .collect();
            let back = decode_channels(&encode_channels(&channels)).expect("reads back");
            proptest::prop_assert_eq!(back.len(), channels.len());
            for ((name, samples), (name_back, samples_back)) in channels.iter().zip(&back) {
                // Names longer than 255 bytes come back cut at a character boundary.
                proptest::prop_assert!(name.starts_with(name_back.as_str()));
                proptest::prop_assert!(name_back.len() == name.len() || (name.len() > 255 && name_back.len() > 251));
                let bits = |s: &Samples| match s {
                    Samples::Scalar(x) => vec![x.to_bits()],
                    Samples::Burst(xs) => xs.iter().map(|x| x.to_bits()).collect(),
                };
                proptest::prop_assert_eq!(matches!(samples, Samples::Scalar(_)), matches!(samples_back, Samples::Scalar(_)));
                proptest::prop_assert_eq!(bits(samples), bits(samples_back));
            }
        }
    }
}
