//! Alert e-mails as files: one RFC 5322 message per alert in the e-mail folder, for a mail
//! relay, a shared folder or a person to pick up. Written durably: each file under a temporary
//! name, synced, renamed into place; then the folder is synced, and only then do the files count
//! as delivered (a power cut cannot lose a file whose outbox row is gone). A file written again
//! after a crash replaces itself: the name comes from the alert
//! (`<end_ms>+<tenant>+<device>+<n>.eml`, see `outbox::email`).

use super::{Delivery, Outcome, Sink};
use crate::store::{MessageKind, OutboxItem};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Attempts after which a file that cannot be written is dead-lettered.
const MAX_ATTEMPTS: u32 = 10;

pub struct EmailFiles {
    dir: PathBuf,
}

impl EmailFiles {
    /// Creates `dir` if needed.
    pub fn new(dir: PathBuf) -> anyhow::Result<EmailFiles> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(EmailFiles { dir })
    }

    fn write(&self, item: &OutboxItem) -> std::io::Result<()> {
        let path = self.dir.join(&item.target);
        let tmp = self.dir.join(format!(".{}.tmp", item.target));
        write_synced(&tmp, &item.payload)?;
        std::fs::rename(&tmp, &path)
    }
}

impl Sink for EmailFiles {
    fn name(&self) -> &'static str {
        "email_files"
    }
    fn kind(&self) -> MessageKind {
        MessageKind::Email
    }
    fn batch_size(&self) -> usize {
        64
    }

    fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
        let mut outcomes: Vec<Outcome> = batch
            .iter()
            .map(|item| match self.write(item) {
                Ok(()) => Outcome::Delivered,
                Err(e) if item.attempts + 1 >= MAX_ATTEMPTS => Outcome::Permanent(format!(
                    "writing {} failed {MAX_ATTEMPTS} times, last: {e}",
                    self.dir.join(&item.target).display()
                )),
                Err(e) => Outcome::retry(format!("writing {}: {e}", self.dir.join(&item.target).display())),
            })
            .collect();
        if outcomes.contains(&Outcome::Delivered)
            && let Err(e) = std::fs::File::open(&self.dir).and_then(|d| d.sync_all())
        {
            // The files are in place but perhaps not on disk: written again on the retry.
            let reason = format!("syncing the folder {}: {e}", self.dir.display());
            for o in outcomes.iter_mut().filter(|o| **o == Outcome::Delivered) {
                *o = Outcome::retry(reason.clone());
            }
        }
        Box::pin(std::future::ready(outcomes))
    }
}

/// Writes `bytes` to a new file at `path` and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, target: &str, attempts: u32) -> OutboxItem {
        OutboxItem {
            id,
            kind: MessageKind::Email,
            target: target.into(),
            payload: format!("message {id}").into_bytes(),
            created_ms: 0,
            attempts,
        }
    }

    #[tokio::test]
    async fn files_are_written_whole_and_failures_retried_then_dead_lettered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = EmailFiles::new(dir.path().join("mail")).expect("sink");
        let batch = [item(1, "1+a+b+0.eml", 0), item(2, "no/such/dir.eml", 0), item(3, "no/such/dir.eml", 9)];
        let outcomes = sink.deliver(&batch).await;
        assert_eq!(outcomes[0], Outcome::Delivered);
        assert!(matches!(outcomes[1], Outcome::Retry { .. }), "{:?}", outcomes[1]);
        assert!(matches!(&outcomes[2], Outcome::Permanent(r) if r.contains("10 times")), "{:?}", outcomes[2]);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("mail"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["1+a+b+0.eml"], "no temporary file left behind");
        assert_eq!(std::fs::read(dir.path().join("mail/1+a+b+0.eml")).expect("file"), b"message 1");
    }
}
