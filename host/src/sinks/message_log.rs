//! The MQTT message log: one JSON line per publication the outbox holds,
//! `{"time", "direction": "out", "topic", "payload"}`, for people and tests to read what the
//! host says. A sink of its own, so it is written whether or not the broker is reachable: `time`
//! is when the line was written, not when the broker acknowledged the publication. The file stays
//! open between batches (reopened after an error, e.g. when it was rotated away); past its size
//! limit it is renamed to `<name>.1` (replacing the one before) and a new one started.

use super::{Delivery, Outcome, Sink};
use crate::clock::{now_ms, rfc3339};
use crate::store::{MessageKind, OutboxItem};
use std::io::Write as _;
use std::path::PathBuf;

/// Attempts after which a batch that cannot be appended is dead-lettered.
const MAX_ATTEMPTS: u32 = 10;

pub struct MessageLog {
    path: PathBuf,
    max_bytes: u64,
    /// The open file and its size.
    file: Option<(std::fs::File, u64)>,
}

impl MessageLog {
    /// Creates the log's folder if needed.
    pub fn new(path: PathBuf, max_bytes: u64) -> anyhow::Result<MessageLog> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(MessageLog { path, max_bytes, file: None })
    }

    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some((f, size));
        }
        let Some((file, size)) = &mut self.file else { unreachable!("opened above") };
        if let Err(e) = file.write_all(lines) {
            self.file = None;
            return Err(e);
        }
        *size += lines.len() as u64;
        if *size >= self.max_bytes {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            if let Err(e) = std::fs::rename(&self.path, &old) {
                tracing::warn!(file = %self.path.display(), error = %e, "Rotating the MQTT message log failed");
            }
        }
        Ok(())
    }
}

impl Sink for MessageLog {
    fn name(&self) -> &'static str {
        "message_log"
    }
    fn kind(&self) -> MessageKind {
        MessageKind::Publication
    }

    fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
        let time = rfc3339(now_ms());
        let mut lines = Vec::with_capacity(batch.iter().map(|i| i.payload.len() + 128).sum());
        for item in batch {
            log_line(&mut lines, &time, &item.target, &item.payload);
        }
        let outcomes = match self.append(&lines) {
            Ok(()) => vec![Outcome::Delivered; batch.len()],
            Err(e) => batch
                .iter()
                .map(|item| {
                    let reason = format!("appending to {}: {e}", self.path.display());
                    if item.attempts + 1 >= MAX_ATTEMPTS {
                        Outcome::Permanent(format!("{reason} ({MAX_ATTEMPTS} attempts)"))
                    } else {
                        Outcome::retry(reason)
                    }
                })
                .collect(),
        };
        Box::pin(std::future::ready(outcomes))
    }
}

/// One line of the message log, the payload embedded as JSON when it is JSON (everything the
/// host publishes is), else as a string.
fn log_line(out: &mut Vec<u8>, time: &str, topic: &str, payload: &[u8]) {
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\",\"direction\":\"out\",\"topic\":");
    let _ = serde_json::to_writer(&mut *out, topic);
    out.extend_from_slice(b",\"payload\":");
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend(payload.iter().filter(|&&b| b != b'\n' && b != b'\r'));
    } else {
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(payload));
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_log_lines_embed_json_payloads_and_quote_the_rest() {
        let mut out = Vec::new();
        log_line(
            &mut out,
            "2025-04-05T10:30:00Z",
            "edgepm/a/\"b\"/prediction",
            b"{\"p\": 0.97,\n \"s\": \"x\"}",
        );
        log_line(&mut out, "2025-04-05T10:30:00Z", "edgepm/a/b/deadletter", b"not json \xff");
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["topic"], "edgepm/a/\"b\"/prediction");
        assert_eq!(lines[0]["payload"]["p"], 0.97);
        assert_eq!(lines[0]["direction"], "out");
        assert_eq!(lines[1]["payload"], "not json \u{fffd}");
    }

    #[tokio::test]
    async fn the_log_rotates_past_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/mqtt.jsonl");
        let mut log = MessageLog::new(path.clone(), 300).expect("log");
        let item = |id: i64| OutboxItem {
            id,
            kind: MessageKind::Publication,
            target: "edgepm/a/b/prediction".into(),
            payload: br#"{"probability": 0.5}"#.to_vec(),
            created_ms: 0,
            attempts: 0,
        };
        for id in 0..4 {
            assert_eq!(log.deliver(&[item(id)]).await, vec![Outcome::Delivered]);
        }
        let rotated = std::fs::read_to_string(dir.path().join("logs/mqtt.jsonl.1")).expect("rotated");
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(rotated.lines().count() + current.lines().count(), 4, "{rotated}\n{current}");
    }
}
