//! A driver's lease on its study: who acts where two drivers may meet (a foreground
//! `augur run` and a serverless tick). Renewed when a third of it is left; a tick
//! takes it once, until its deadline.

use super::Driver;
use crate::reconcile::CLOCK_SKEW_MS;
use crate::runner::{Event, RunError};
use augur_model::Millis;
use augur_store::Lease;
use std::time::Instant;

/// This driver's view of its lease.
#[derive(Default)]
pub(super) struct LeaseState {
    /// Held until then (0: not held).
    pub(super) until: Millis,
    /// The other holder being followed.
    following: Option<String>,
    /// Taken once for a tick, until its deadline: never renewed.
    fixed: bool,
    /// Since when drivers have held the lease without a gap longer than the
    /// heartbeat lease ([`Lease::since`]; 0 when not held): the store has been seen
    /// since then, by this driver or the ones before it.
    pub(super) since: Millis,
}

impl Driver<'_> {
    /// Takes the lease once, until `deadline`, for a tick; the lease another driver
    /// holds if it is not free.
    pub(in crate::runner) async fn lease_until(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Lease>, RunError> {
        let runner = self.runner;
        let holder = runner
            .config
            .lease
            .as_ref()
            .map(|l| l.holder.clone())
            .ok_or_else(|| RunError::Internal("a tick needs a lease holder".into()))?;
        let now = (runner.config.clock)();
        let left = deadline.saturating_duration_since(Instant::now());
        let got = runner
            .store
            .take_lease(
                &self.study.name,
                &holder,
                now - CLOCK_SKEW_MS,
                now + left.as_millis() as Millis,
                runner.config.drive.heartbeat_timeout_ms,
            )
            .await?;
        if !got.held_by(&holder) {
            return Ok(Some(got));
        }
        self.lease = LeaseState {
            until: got.until,
            following: None,
            fixed: true,
            since: got.since,
        };
        self.deadline = Some(deadline);
        Ok(None)
    }

    /// Takes or renews the study's lease when due; whether this driver may act.
    pub(super) async fn keep_lease(&mut self) -> Result<bool, RunError> {
        let runner = self.runner;
        let Some(spec) = &runner.config.lease else {
            return Ok(true);
        };
        let now = (runner.config.clock)();
        let ttl = spec.ttl.as_millis() as Millis;
        let state = &mut self.lease;
        if state.fixed || state.until - now > ttl * 2 / 3 {
            return Ok(true);
        }
        let got = runner
            .store
            .take_lease(
                &self.study.name,
                &spec.holder,
                now - CLOCK_SKEW_MS,
                now + ttl,
                runner.config.drive.heartbeat_timeout_ms,
            )
            .await?;
        if got.held_by(&spec.holder) {
            if state.following.take().is_some() {
                runner.emit(Event::Driving);
            }
            state.until = got.until;
            state.since = got.since;
            return Ok(true);
        }
        state.until = 0;
        state.since = 0;
        if state.following.as_deref() != Some(got.holder.as_str()) {
            tracing::info!(study = %self.study.name, holder = %got.holder, "another driver holds the study's lease; following");
            state.following = Some(got.holder.clone());
            runner.emit(Event::Held {
                holder: got.holder,
                until: got.until,
            });
        }
        Ok(false)
    }
}
