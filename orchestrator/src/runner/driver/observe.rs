//! What a pass observes: the study's state, its machines, the trials that changed
//! (counted and reported as they change) and the running trials' beats.

use super::Driver;
use crate::reconcile::{Mode, View};
use crate::runner::{Counters, Event, RunError};
use augur_model::{Millis, StudyState, Trial, TrialState};

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
        if self.slots.is_none() {
            // Asked again next pass if it cannot say now; meanwhile the records'.
            self.slots = runner.provider.slots(self.study).await.ok();
        }
        let keep = augur_model::SeriesKeep::for_driver(self.study);
        let (changed, mark) = runner
            .store
            .changed_trials(name, self.cache.mark, &keep)
            .await?;
        self.cache.mark = mark;
        let mut reported = false;
        for t in changed {
            if let Some(started) = t.started_ms {
                reported |= self.bounds.saw_report(started);
            }
            let copy = runner.events.as_ref().map(|_| t.clone());
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
        let now = (self.runner.config.clock)();
        if now - self.cache.beats_read_ms < self.runner.config.drive.heartbeat_ms {
            return Ok(());
        }
        let running = self.cache.running();
        let beats = self.runner.store.beats(&self.study.name, &running).await?;
        self.cache.absorb(beats);
        self.cache.beats_read_ms = now;
        Ok(())
    }

    /// What `decide` looks at: the cache and `machines`, now.
    pub(super) fn view<'v>(
        &'v self,
        mode: Mode,
        (machines, open): (&'v [crate::Machine], &'v [&'v Trial]),
        fresh_listing: bool,
        now: Millis,
    ) -> View<'v> {
        View {
            study: self.study,
            trials: &self.cache.trials,
            open: Some(open),
            machines,
            scope: &self.scope,
            mode,
            exhausted: self.exhausted,
            warm: self.runner.provider.warm_by_record(),
            pooled: self.runner.provider.pools_agents(),
            sees_all: self.runner.provider.sees_all(),
            fresh_listing,
            drive: &self.runner.config.drive,
            now,
            seen_since: self.seen_since(),
            slots: self
                .slots
                .unwrap_or_else(|| crate::reconcile::slots_named(&self.cache.trials)),
        }
    }

    /// `machines` with the ended ones the listing left out that the trials need
    /// ([`crate::reconcile::missing`]). Asked after the trials were read: a machine
    /// that ended after a final write this pass did not see makes a loss that the
    /// write's condition refuses.
    pub(super) async fn with_ended(
        &self,
        mut machines: Vec<crate::Machine>,
        mode: Mode,
        now: Millis,
    ) -> Result<Vec<crate::Machine>, RunError> {
        let open = self.cache.open_trials();
        let missing = crate::reconcile::missing(&self.view(mode, (&machines, &open), false, now));
        if !missing.is_empty() {
            let provider = &self.runner.provider;
            machines.extend(provider.ended(&self.study.name, &missing).await?);
        }
        Ok(machines)
    }
}
