//! Proposals: the trials of the budget a pass creates, from the oracle (or the next
//! replicate of the last point), each created at once in its slot.

use super::Driver;
use crate::runner::RunError;
use augur_model::{Millis, Trial};
use std::collections::BTreeSet;

impl Driver<'_> {
    /// Creates up to `count` trials of the budget (the oracle may run out first);
    /// with `launched`, those that need no dataset are created starting, launched
    /// then. The trials this call created.
    pub(super) async fn propose(
        &mut self,
        count: u64,
        launched: Option<Millis>,
    ) -> Result<Vec<Trial>, RunError> {
        let mut created = Vec::new();
        for _ in 0..count {
            match self.propose_one(launched).await? {
                None => {
                    self.exhausted = true;
                    break;
                }
                Some((t, true)) => created.push(t),
                Some(_) => {}
            }
        }
        Ok(created)
    }

    /// Creates the next trial of the budget: the next replicate of the last point, or
    /// the oracle's next point (see [`Runner::create`] for `launched`); and whether
    /// this call created it. `None` when the oracle has no more points.
    async fn propose_one(
        &mut self,
        launched: Option<Millis>,
    ) -> Result<Option<(Trial, bool)>, RunError> {
        let study = self.study;
        let trials = || self.cache.trials.iter().filter(|t| !t.is_dataset());
        let last = trials().map(|t| t.point).max();
        let (point, replicate, params) = match last {
            Some(p) => {
                let reps: BTreeSet<u32> = trials()
                    .filter(|t| t.point == p)
                    .map(|t| t.replicate)
                    .collect();
                match (0..study.replicates).find(|r| !reps.contains(r)) {
                    Some(r) => {
                        let params = trials().find(|t| t.point == p).map(|t| t.params.clone());
                        (p, r, params)
                    }
                    None => (p + 1, 0, None),
                }
            }
            None => (0, 0, None),
        };
        let params = match params {
            Some(p) => p,
            None => match self.oracle.propose(point, &self.cache.history()) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let (t, created) = self
            .runner
            .create(study, point, replicate, params, launched)
            .await?;
        self.cache.upsert(t.clone());
        Ok(Some((t, created)))
    }
}
