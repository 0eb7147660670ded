//! Proposals: the trials of the budget a pass creates, from the oracle (or the next
//! replicate of the last point), each created at once in its slot.

use super::Driver;
use crate::runner::RunError;
use augur_model::{Millis, Trial};

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
        let (point, replicate, params) = match self.cache.last_point() {
            Some(last) => match (0..study.replicates).find(|r| !last.replicates.contains(r)) {
                Some(r) => (last.point, r, Some(last.params.clone())),
                None => (last.point + 1, 0, None),
            },
            None => (0, 0, None),
        };
        let params = match params {
            Some(p) => p,
            None => {
                let history = match self.oracle.learns() {
                    true => self.cache.history(),
                    false => Vec::new(),
                };
                match self.oracle.propose(point, &history) {
                    Some(p) => p,
                    None => return Ok(None),
                }
            }
        };
        let (t, created) = self
            .runner
            .create(study, point, replicate, params, launched)
            .await?;
        self.cache.upsert(t.clone());
        Ok(Some((t, created)))
    }
}
