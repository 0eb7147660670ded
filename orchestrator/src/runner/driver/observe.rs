//! What a pass observes: the study's state, its machines, the trials that changed
//! (counted and reported as they change) and the running trials' beats.

use super::Driver;
use crate::runner::{Counters, Event, RunError};
use augur_model::{StudyState, TrialState};

impl Driver<'_> {
    /// Reads the study's state (and bounds), its machines and the trials that
    /// changed into the cache; counts and reports the trials' changes.
    pub(super) async fn observe(&mut self) -> Result<(StudyState, Vec<crate::Machine>), RunError> {
        let runner = self.runner;
        let name = &self.study.name;
        let state = self
            .read_state()
            .await?
            .ok_or_else(|| RunError::BadInput(format!("study `{name}` was deleted")))?;
        // Machines first, then trials: an agent writes its final state before it
        // exits, so a trial still running whose machine was already gone is lost.
        let machines = runner.provider.list(name).await?;
        let (changed, mark) = runner.store.changed_trials(name, self.cache.mark).await?;
        self.cache.mark = mark;
        let mut reported = false;
        for mut t in changed {
            if let Some(started) = t.started_ms {
                reported |= self.bounds.saw_report(started);
            }
            let copy = runner.events.as_ref().map(|_| t.clone());
            crate::runner::cache::slim(&mut t, self.study);
            let (state, from) = (t.state, self.cache.upsert(t));
            if from == Some(state) {
                continue;
            }
            let c = &runner.counters;
            match state {
                TrialState::Succeeded => Counters::bump(&c.succeeded),
                TrialState::Failed => Counters::bump(&c.failed),
                TrialState::Lost => Counters::bump(&c.lost),
                TrialState::Cancelled => Counters::bump(&c.cancelled),
                TrialState::Pruned => Counters::bump(&c.pruned),
                _ => {}
            }
            if let Some(t) = copy {
                runner.emit(Event::Trial {
                    trial: Box::new(t),
                    from,
                });
            }
        }
        if reported {
            self.save_bounds().await?;
        }
        self.read_beats().await?;
        Ok((state, machines))
    }

    /// Reads the beats of the running trials, at most once a heartbeat (stores that
    /// keep them apart from the records; see [`TrialStore::beats`]).
    async fn read_beats(&mut self) -> Result<(), RunError> {
        let now = (self.runner.clock)();
        if now - self.cache.beats_read_ms < self.runner.timing.heartbeat_ms {
            return Ok(());
        }
        let running = self.cache.running();
        let beats = self.runner.store.beats(&self.study.name, &running).await?;
        self.cache.absorb(beats);
        self.cache.beats_read_ms = now;
        Ok(())
    }
}
