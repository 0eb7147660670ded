//! The bounds on a study's launches ([`augur_model::LaunchBounds`]: failed boots,
//! droughts), kept
//! with the study so that every driver of it enforces the same: read when a drive
//! begins, written when they change, and a study that passes one is stopped with
//! the reason in its record.

use super::Driver;
use crate::reconcile::Scope;
use crate::runner::RunError;
use augur_model::StudyState;

impl Driver<'_> {
    /// Reads the study's state; with it, the first time in a drive (and again
    /// after another driver's write started them afresh), its bounds: one read of
    /// the record in place of two.
    pub(super) async fn read_state(&mut self) -> Result<Option<StudyState>, RunError> {
        let store = &self.runner.store;
        if self.bounds_read {
            return Ok(store.study_state(&self.study.name).await?);
        }
        let Some(rec) = store.get_study(&self.study.name).await? else {
            return Ok(None);
        };
        self.bounds = rec.bounds;
        self.saved_bounds = self.bounds.clone();
        self.bounds_read = true;
        Ok(Some(rec.state))
    }

    /// Records the bounds as they are now, unless a person's `augur run` or
    /// `augur submit` started them afresh meanwhile (then they are read again).
    pub(super) async fn save_bounds(&mut self) -> Result<(), RunError> {
        if self.bounds == self.saved_bounds {
            return Ok(());
        }
        self.saved_bounds = self.bounds.clone();
        let (since, bounds) = (self.bounds.since_ms, self.bounds.clone());
        let change = move |rec: &mut augur_model::StudyRecord| {
            let ours = rec.bounds.since_ms == since && rec.bounds != bounds;
            if ours {
                rec.bounds = bounds.clone();
            }
            ours
        };
        let name = &self.study.name;
        if !self
            .runner
            .store
            .update_study(name, Box::new(change))
            .await?
        {
            let stored = self.runner.store.get_study(name).await?;
            self.bounds_read = stored.is_some_and(|r| r.bounds == self.bounds);
        }
        Ok(())
    }

    /// Stops the drive if the study's launches passed a bound: machines that do
    /// not boot ([`augur_model::LaunchBounds::boots_stop`]).
    pub(super) async fn check_bounds(&self) -> Result<(), RunError> {
        let Some(why) = self.bounds.boots_stop() else {
            return Ok(());
        };
        let hint = self.runner.provider.boot_hint();
        Err(self.stop_for(format!("{why}. {hint}")).await)
    }

    /// Stops the study (a drive of its budget) for `why`, recorded with it, and
    /// the error that ends the drive.
    pub(super) async fn stop_for(&self, why: String) -> RunError {
        let name = &self.study.name;
        if let Scope::Budget(_) = self.scope {
            let now = (self.runner.config.clock)();
            let reason = why.clone();
            let change = move |rec: &mut augur_model::StudyRecord| rec.stop_for(&reason, now);
            if let Err(e) = self.runner.store.update_study(name, Box::new(change)).await {
                tracing::warn!(study = %name, error = %e, "cannot record why the study stopped");
            }
        }
        RunError::Machines(format!(
            "study `{name}` stopped: {} `augur run` (or `augur submit`) again resumes the study.",
            why.trim_end()
        ))
    }
}
