//! What keeps the host from being ready, as the parts that notice it report it: the store failing
//! its transactions, a failed sync to disk, a worker thread gone. `/readyz` answers 503 with
//! these reasons while any is set.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// A part of the host that can be unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The ingest loop's store transactions (disk full, file removed, I/O error).
    Store,
    /// Syncing commits to disk (`durability = "full"`).
    Sync,
    /// Free space on the data folder's filesystem.
    Disk,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Store => "store",
            Part::Sync => "sync",
            Part::Disk => "disk",
        }
    }
}

/// The current problems, by part.
#[derive(Debug, Default)]
pub struct Health {
    problems: Mutex<BTreeMap<Part, String>>,
}

impl Health {
    /// `part` has a problem (replacing any earlier reason).
    pub fn fail(&self, part: Part, reason: impl Into<String>) {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).insert(part, reason.into());
    }

    /// `part` works again. Whether it had a problem.
    pub fn recover(&self, part: Part) -> bool {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).remove(&part).is_some()
    }

    /// Every current problem, as (part, reason).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        problems.iter().map(|(p, r)| (p.as_str(), r.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_listed_until_their_part_recovers() {
        let h = Health::default();
        assert!(h.problems().is_empty());
        h.fail(Part::Store, "disk full");
        h.fail(Part::Store, "database or disk is full");
        assert_eq!(h.problems(), vec![("store", "database or disk is full".to_string())]);
        assert!(h.recover(Part::Store));
        assert!(!h.recover(Part::Store));
        assert!(h.problems().is_empty());
    }
}
