//! Readings and their compact binary form, the devices' window positions, parked messages and
//! deferred windows.

use super::SqliteStore;
use crate::types::{Described, Reading, Samples};
use rusqlite::{OptionalExtension as _, params};
use tracing::warn;

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

impl SqliteStore {
    /// Stores a reading. `false` when a reading of the same device and time is already stored.
    pub fn insert_reading(&self, r: &Reading, received_ms: i64) -> rusqlite::Result<bool> {
        let channels = encode_channels(&r.channels, &r.described);
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
}

/// Readings of one device from rows of (ts_ms, seq, channels), in row order. A row whose
/// channels cannot be decoded is skipped with a warning.
fn readings_of(tenant: &str, device: &str, mut rows: rusqlite::Rows<'_>) -> rusqlite::Result<Vec<Reading>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (ts_ms, seq, channels): (i64, Option<i64>, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(2)?);
        match decode_channels(&channels) {
            Some((channels, described)) => out.push(Reading {
                tenant: tenant.to_string(),
                device: device.to_string(),
                ts_ms,
                seq,
                channels,
                described,
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
/// UTF-8 bytes, a kind byte (0 scalar, 1 burst, 2 burst with its description), for a described
/// burst its sample rate (f64 LE, NaN when not given) and unit (length u8, UTF-8), for a burst its
/// sample count (u32 LE), then the values as f32 LE. A description of a scalar channel is not
/// kept (readings describe bursts).
pub fn encode_channels(channels: &[(String, Samples)], described: &[Described]) -> Vec<u8> {
    let size: usize = channels.iter().map(|(n, s)| n.len() + 6 + 4 * samples_len(s)).sum::<usize>()
        + described.iter().map(|d| 9 + d.unit.as_ref().map_or(0, String::len)).sum::<usize>();
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
                match described.iter().find(|d| &d.channel == name) {
                    None => out.push(1),
                    Some(d) => {
                        out.push(2);
                        out.extend_from_slice(&d.fs_hz.unwrap_or(f64::NAN).to_le_bytes());
                        let unit = d.unit.as_deref().unwrap_or("");
                        let mut cut = unit.len().min(255);
                        while !unit.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        out.push(cut as u8);
                        out.extend_from_slice(&unit.as_bytes()[..cut]);
                    }
                }
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

/// A reading's channels and their descriptions, as [`decode_channels`] reads them back.
pub type StoredChannels = (Vec<(String, Samples)>, Vec<Described>);

/// Reads [`encode_channels`]; `None` for anything malformed.
pub fn decode_channels(mut b: &[u8]) -> Option<StoredChannels> {
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
    let mut described = Vec::new();
    while !b.is_empty() {
        let len = take(&mut b, 1)?[0] as usize;
        let name = std::str::from_utf8(take(&mut b, len)?).ok()?.to_string();
        let kind = take(&mut b, 1)?[0];
        if kind == 2 {
            let fs = f64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
            let len = take(&mut b, 1)?[0] as usize;
            let unit = std::str::from_utf8(take(&mut b, len)?).ok()?;
            described.push(Described {
                channel: name.clone(),
                fs_hz: (!fs.is_nan()).then_some(fs),
                unit: (!unit.is_empty()).then(|| unit.to_string()),
            });
        }
        let samples = match kind {
            0 => Samples::Scalar(f32_at(take(&mut b, 4)?)),
            1 | 2 => {
                let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
                let raw = take(&mut b, n.checked_mul(4)?)?;
                Samples::Burst(raw.chunks_exact(4).map(f32_at).collect())
            }
            _ => return None,
        };
        out.push((name, samples));
    }
    Some((out, described))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::store;

    #[test]
    fn channels_round_trip_through_the_binary_form_and_garbage_is_refused() {
        let c = vec![
            ("t".to_string(), Samples::Scalar(61.7)),
            ("v".to_string(), Samples::Burst(vec![0.1234, -2.5])),
        ];
        let b = encode_channels(&c, &[]);
        assert_eq!(b.len(), 1 + (2 + 1 + 4) + (2 + 1 + 4 + 8));
        assert_eq!(decode_channels(&b), Some((c.clone(), vec![])));
        assert_eq!(decode_channels(&b[..b.len() - 1]), None);
        // A described burst keeps its sample rate and unit (kind 2: 8 + 1 + 1 more bytes).
        let d = vec![Described { channel: "v".into(), fs_hz: Some(25_600.0), unit: Some("g".into()) }];
        let b = encode_channels(&c, &d);
        assert_eq!(b.len(), 1 + (2 + 1 + 4) + (2 + 1 + 8 + 2 + 4 + 8));
        assert_eq!(decode_channels(&b), Some((c, d)));
        assert_eq!(decode_channels(&b[..b.len() - 1]), None);
        assert_eq!(decode_channels(b"{\"v\": 1}"), None);
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
                ("vibration_y".into(), Samples::Burst(vec![0.5])),
            ],
            described: vec![
                Described { channel: "vibration".into(), fs_hz: Some(25_600.0), unit: Some("g".into()) },
                Described { channel: "vibration_y".into(), fs_hz: None, unit: Some("m/s²".into()) },
            ],
        };
        assert!(s.insert_reading(&r, 1).expect("insert"));
        assert!(!s.insert_reading(&r, 2).expect("again"), "redelivery is a no-op");
        assert_eq!(s.recent_readings("acme", "M1", 10).expect("read"), vec![r]);
        assert_eq!(s.counts().expect("counts").readings, 1);
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
            let (back, _) = decode_channels(&encode_channels(&channels, &[])).expect("reads back");
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
