//! Durability: when commits reach the disk, and the WAL's checkpoints and restarts.

use super::{Durability, SqliteStore};
use crate::shutdown::{Shutdown, Stage};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
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
pub(super) const WAL_SIZE_LIMIT: i64 = 192 << 20;
/// How long the writer waits for the checkpoint thread's next full copy before checkpointing
/// anyway (a reader holding an old snapshot can keep the thread from copying everything).
const WAL_RESTART_PATIENCE: Duration = Duration::from_secs(10);

/// The checkpoint thread's view of the WAL, for the writer ([`SqliteStore::restart_wal_when_due`]).
#[derive(Debug, Default)]
pub(super) struct WalProgress {
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

impl SqliteStore {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::store;
    use crate::types::{Reading, Samples};

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
                    described: Vec::new(),
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
}
