//! One staged shutdown signal for the whole host. Each part waits for the stage that concerns it,
//! so the host stops in the order that loses nothing:
//!
//! 1. [`Stage::Ingest`]: the ingest session stops taking messages; the ingest loop stores what it
//!    received, the acknowledger syncs and acknowledges it, and the loop moves the host on to
//! 2. [`Stage::Sinks`]: each sink's driver makes a last pass (up to `sinks::STOP_GRACE`) and
//!    ends; the ingest loop records their cursors; the checkpointer stops;
//! 3. [`Stage::Output`]: the publishing session and HTTP stop.
//!
//! A worker thread that ends once shutdown has begun is no failure (see [`crate::worker`]).

use tokio::sync::watch;

/// Where a shutdown stands; each stage includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Running,
    Ingest,
    Sinks,
    Output,
}

/// The signal: cheap to clone, readable from threads and tasks.
#[derive(Clone)]
pub struct Shutdown(watch::Sender<Stage>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown(watch::Sender::new(Stage::Running))
    }

    /// Moves the shutdown on to `stage` (never back).
    pub fn advance(&self, stage: Stage) {
        self.0.send_if_modified(|s| {
            let later = stage > *s;
            if later {
                *s = stage;
            }
            later
        });
    }

    /// Whether `stage` has been reached.
    pub fn reached(&self, stage: Stage) -> bool {
        *self.0.borrow() >= stage
    }

    /// Whether shutdown has begun.
    pub fn begun(&self) -> bool {
        self.reached(Stage::Ingest)
    }

    /// Resolves once `stage` is reached.
    pub fn wait(&self, stage: Stage) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s >= stage).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_only_move_forward_and_wake_who_waits_for_them() {
        let s = Shutdown::new();
        let sinks = tokio::spawn(s.wait(Stage::Sinks));
        s.advance(Stage::Ingest);
        assert!(s.begun() && !s.reached(Stage::Sinks));
        tokio::task::yield_now().await;
        assert!(!sinks.is_finished());
        s.advance(Stage::Output);
        s.advance(Stage::Ingest);
        assert!(s.reached(Stage::Output), "never back");
        tokio::time::timeout(std::time::Duration::from_secs(1), sinks).await.expect("woken").expect("task");
    }
}
