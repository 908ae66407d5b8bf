//! The outbox: every message that still has to leave the host, as a log read by the sinks.

use super::SqliteStore;
use rusqlite::params;
use std::collections::HashMap;

/// What an outbox message is; each sink takes the messages of one kind (see `crate::sinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// An MQTT publication; `target` is the topic.
    Publication,
    /// An RFC 5322 alert e-mail; `target` is its file name.
    Email,
    /// A window's features and prediction for the time-series sinks (Timestream, InfluxDB);
    /// `target` is the device's topic. JSON: `outbox::messages::Record`.
    Record,
    /// An alert for people (SNS); `target` is its alert id. JSON: `outbox::messages::AlertMessage`.
    Alert,
}

impl MessageKind {
    /// The value of the outbox's `sink` column (named when each kind had one sink).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Publication => "mqtt",
            MessageKind::Email => "email",
            MessageKind::Record => "record",
            MessageKind::Alert => "alert",
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

/// What [`SqliteStore::bound_outbox`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBound {
    /// Messages dropped for their age.
    pub aged: u64,
    /// The oldest messages dropped beyond the row bound.
    pub rows: u64,
    /// Messages left in the outbox.
    pub left: u64,
}

/// A read of the outbox for one sink: its messages and how far the read looked.
#[derive(Debug, Default)]
pub struct OutboxRead {
    pub items: Vec<OutboxItem>,
    /// Every row up to this id was looked at: the next read starts after it.
    pub scanned: i64,
}

impl SqliteStore {
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

    /// Messages waiting in the outbox.
    pub fn outbox_depth(&self) -> rusqlite::Result<u64> {
        self.conn().query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
    }

    /// Keeps the outbox within its bounds: drops messages created before `oldest_ms` (if set),
    /// then the oldest beyond `max_rows`. The only way undelivered messages are ever dropped — the
    /// caller counts and logs it.
    pub fn bound_outbox(&self, max_rows: u64, oldest_ms: Option<i64>) -> rusqlite::Result<OutboxBound> {
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
        Ok(OutboxBound { aged, rows: dropped, left: (rows as u64).saturating_sub(dropped) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::store;

    #[test]
    fn the_outbox_is_bounded_by_age_and_rows_and_says_what_it_dropped() {
        let (_d, s) = store();
        for i in 0..10 {
            s.enqueue(MessageKind::Publication, "t", b"x", i * 1000).expect("enqueue");
        }
        let bound = |rows, oldest| {
            let b = s.bound_outbox(rows, oldest).expect("bound");
            (b.aged, b.rows, b.left)
        };
        assert_eq!(bound(100, Some(3000)), (3, 0, 7), "created before 3 s");
        assert_eq!(bound(4, None), (0, 3, 4), "the oldest beyond 4 rows");
        let left = s.outbox_after(0, MessageKind::Publication, 100).expect("read").items;
        assert_eq!(left.len(), 4);
        assert_eq!(bound(4, None), (0, 0, 4));
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
}
