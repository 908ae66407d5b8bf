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
//! - `alert_acks(tenant, device, ts_ms, idx, acked_by, note, acked_ms)` — who acknowledged an
//!   alert, when, with what note (written through the ingest loop, the store's only writer);
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

mod durability;
mod health;
mod history;
mod outbox;
mod readings;
mod views;

pub use durability::WalSync;
pub use health::{Degradation, DegradationQuery, DeviceTrend};
pub use history::{OutcomeRow, StoredPrediction};
pub use outbox::{MessageKind, OutboxBound, OutboxItem, OutboxRead};
pub use readings::{DeferredWindow, decode_channels, encode_channels};
pub use views::{
    AckOutcome, Acknowledgement, AlertFilter, AlertKey, AlertView, DevicePeriod, DeviceView, PredictionPoint,
    PredictionSeries, ServedVersions,
};

use durability::{WAL_SIZE_LIMIT, WalProgress};
use history::DeviceMemos;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tracing::warn;

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
CREATE TABLE IF NOT EXISTS alert_acks (
    tenant TEXT NOT NULL, device TEXT NOT NULL, ts_ms INTEGER NOT NULL, idx INTEGER NOT NULL,
    acked_by TEXT NOT NULL, note TEXT NOT NULL, acked_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, device, ts_ms, idx)) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS baselines (
    tenant TEXT NOT NULL, device TEXT NOT NULL, feature TEXT NOT NULL, since_ms INTEGER NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (tenant, device, feature, since_ms)) WITHOUT ROWID;
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

/// Row counts, for summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub readings: u64,
    pub windows: u64,
    pub predictions: u64,
    pub alerts: u64,
    pub outbox: u64,
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
    /// Baselines whose commissioning period is over (also in the `baselines` table).
    baselines: crate::store::FinalBaselines,
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
            baselines: Default::default(),
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

    /// Abandons the batch. The memos of `above_since` and of final baselines may describe
    /// rolled-back windows: dropped.
    pub fn rollback(&self) {
        if let Err(e) = self.conn().execute_batch("ROLLBACK") {
            warn!(error = %e, "Rolling back the store transaction failed");
        }
        self.above.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.baselines.clear();
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
        for table in ["readings", "features", "predictions", "alerts", "alert_acks"] {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Features;

    pub(super) fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("edgepm.db"), Durability::Normal).expect("open");
        (dir, s)
    }

    pub(super) fn features(rms: f32) -> Features {
        Features { names: vec!["vibration_rms".into(), "x".into()], values: vec![rms, 0.0] }
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
}
