//! The driver of one study: observe, decide ([`decide`]), apply each action, repeat.
//!
//! A pass reads what changed (the study's state, its machines, its trials), asks
//! `decide` what to do and applies the actions one at a time ([`Driver::apply`]),
//! each a conditional write or an idempotent call. It decides nothing itself. The
//! loop ([`Driver::drive`]) passes again at once after acting, waits for a change
//! or at most the runner's `idle` otherwise, and retries an unavailable backend up
//! to the runner's `backend_deadline`. A serverless tick is the same loop with a deadline: it returns when nothing is
//! left to do now, or when the deadline comes.

mod launch;
use launch::Launch;
#[cfg(test)]
pub(crate) use launch::LAUNCHES_AT_ONCE;
mod bounds;
mod lease;
mod observe;
mod propose;

use super::cache::Cache;
use super::{Counters, Event, Finished, Next, RunError, Runner, TickEnd};
use crate::reconcile::{decide, Action, Loss, Mode, Scope, CLOCK_SKEW_MS};
use augur_model::trial::ERROR_DATASET;
use augur_model::{
    oracle_for, Expect, LaunchBounds, Millis, Oracle, Set, Study, StudyState, Trial, TrialState,
    TrialUpdate,
};
use lease::LeaseState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One driver's memory of a study between passes: its cache of the trials (read
/// incrementally from the store), its oracle, and its lease.
pub struct Driver<'a> {
    runner: &'a Runner,
    study: &'a Study,
    scope: Scope,
    oracle: Box<dyn Oracle>,
    pub(super) cache: Cache,
    /// The oracle said it has no more points.
    exhausted: bool,
    lease: LeaseState,
    /// A serverless tick's end: stop acting there, and return when nothing is left
    /// to do now.
    deadline: Option<Instant>,
    /// The last pass asked for a fresh listing of the machines ([`Action::Relist`]).
    fresh_listing: bool,
    /// What the study's launches have shown (as recorded with the study).
    bounds: LaunchBounds,
    /// The bounds as last read or written.
    saved_bounds: LaunchBounds,
    bounds_read: bool,
    /// Since when this driver has read the store without a failure, if it failed
    /// to ([`crate::reconcile::View::seen_since`]).
    seen: Seen,
    /// How many attempts one machine runs at once, once the provider said
    /// ([`crate::reconcile::View::slots`]).
    slots: Option<u32>,
}

/// What a driver has seen of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// No failure since it started.
    Throughout,
    /// It failed to read it: the next pass that reads it starts a new run.
    Failed,
    /// Read without a failure since then.
    Since(Millis),
}

/// The attempt an orchestrator write is conditional on: the trial, its attempt and
/// the state it is expected in.
#[derive(Clone, Copy)]
struct At {
    trial: u64,
    attempt: u32,
    from: TrialState,
}

impl At {
    fn new(trial: u64, attempt: u32, from: TrialState) -> At {
        At {
            trial,
            attempt,
            from,
        }
    }
}

/// What an action, or a pass's actions, did: the one outcome inside a pass (a
/// pass's own is [`Next`], a tick's [`TickEnd`](crate::TickEnd)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acted {
    /// Nothing that calls for another pass at once.
    Quiet,
    /// The records changed: pass again at once. With `only_proposed`, nothing but
    /// new trials were made, which can be launched on the same observation.
    Again {
        only_proposed: bool,
    },
    Finished(Finished),
}

impl Acted {
    /// The records changed by more than proposals.
    const AGAIN: Acted = Acted::Again {
        only_proposed: false,
    };
}

impl<'a> Driver<'a> {
    pub(super) fn new(runner: &'a Runner, study: &'a Study, scope: Scope) -> Driver<'a> {
        Driver {
            runner,
            study,
            scope,
            oracle: oracle_for(study),
            cache: Cache::default(),
            exhausted: false,
            lease: LeaseState::default(),
            deadline: None,
            fresh_listing: false,
            bounds: LaunchBounds::default(),
            saved_bounds: LaunchBounds::default(),
            bounds_read: false,
            seen: Seen::Throughout,
            slots: None,
        }
    }

    /// Passes until the scope ends, or (with a deadline) until nothing is left to do
    /// now. An unavailable backend is retried with backoff for the runner's
    /// `backend_deadline`, except in a tick, which leaves it to the next one.
    pub(super) async fn drive(
        &mut self,
        control: &mut watch::Receiver<Mode>,
    ) -> Result<TickEnd, RunError> {
        let runner = self.runner;
        let mut failing: Option<(Instant, u32)> = None;
        let mut control_open = true;
        loop {
            if self.past_deadline() {
                return Ok(TickEnd::Deadline);
            }
            // Marks the value seen: `changed()` below then waits for the next change.
            let mode = *control.borrow_and_update();
            let wait = match self.pass(mode).await {
                Ok(Next::Finished(f)) => return Ok(TickEnd::Finished(f)),
                Ok(Next::Again) => {
                    failing = None;
                    continue;
                }
                Ok(Next::Wait(_)) if self.deadline.is_some() => return Ok(TickEnd::Waiting),
                Ok(Next::Wait(d)) => {
                    failing = None;
                    d
                }
                Err(e) if e.kind().retryable() && self.deadline.is_none() => {
                    // What the store could not tell meanwhile is not held against
                    // the agents, who could not tell it either.
                    self.seen = Seen::Failed;
                    Counters::bump(&runner.counters.backend_errors);
                    runner.emit(Event::Backend {
                        error: e.to_string(),
                    });
                    let (since, n) = failing.get_or_insert((Instant::now(), 0));
                    if since.elapsed() > runner.config.backend_deadline {
                        return Err(RunError::GaveUp {
                            secs: runner.config.backend_deadline.as_secs(),
                            last: Box::new(e),
                        });
                    }
                    *n += 1;
                    backend_backoff(*n)
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                _ = runner.provider.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                r = control.changed(), if control_open => control_open = r.is_ok(),
            }
        }
    }

    /// One reconcile pass: renews the lease when due, reads what changed, decides,
    /// acts. Without the lease it only follows the driver that has it.
    pub async fn pass(&mut self, mode: Mode) -> Result<Next, RunError> {
        let act = self.keep_lease().await?;
        let counters = &self.runner.counters;
        Counters::bump(&counters.passes);
        let started = Instant::now();
        let step = self.observe_and_act(mode, act).await;
        counters
            .pass_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        step
    }

    /// Gives the lease back, if held (best effort: an unreleased lease expires).
    pub async fn release(self) {
        if self.lease.until > 0 {
            if let Some(spec) = &self.runner.config.lease {
                let _ = self
                    .runner
                    .store
                    // Ended as takers judge it (they allow for clock skew): free at once.
                    .release_lease(
                        &self.study.name,
                        &spec.holder,
                        (self.runner.config.clock)() - CLOCK_SKEW_MS,
                    )
                    .await;
            }
        }
    }

    /// Since when the store has been seen without a break: by this driver, and,
    /// where it holds the study's lease, by the drivers before it whose leases it
    /// continues ([`augur_store::Lease::since`]; a tick is a fresh process).
    fn seen_since(&self) -> Millis {
        let mine = match self.seen {
            Seen::Since(t) => t,
            _ => 0,
        };
        mine.max(self.lease.since)
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Observes, then (with `act`) decides and applies. With a deadline it stops
    /// acting there: the rest is decided again next time (every action is
    /// level-triggered).
    async fn observe_and_act(&mut self, mode: Mode, act: bool) -> Result<Next, RunError> {
        let (state, machines) = self.observe().await?;
        // `augur stop` (here or in another process) cancels whatever this loop does.
        let mode = match state {
            StudyState::Stopping | StudyState::Stopped => Mode::Cancel,
            _ => mode,
        };
        if !act {
            // Following another driver: end with it.
            return Ok(match state {
                StudyState::Done | StudyState::Spent => Next::Finished(Finished::Done),
                StudyState::Stopped => Next::Finished(Finished::Interrupted),
                _ if mode != Mode::Run => Next::Finished(Finished::Interrupted),
                _ => Next::Wait(self.runner.config.idle),
            });
        }
        let now = (self.runner.config.clock)();
        if self.seen == Seen::Failed {
            self.seen = Seen::Since(now);
        }
        let fresh_listing = std::mem::take(&mut self.fresh_listing);
        let machines = self.with_ended(machines, mode, now).await?;
        let mut acted = self
            .decide_and_apply(mode, &machines, fresh_listing, now)
            .await?;
        // Trials just proposed and not launched with their creation (they wait for
        // a dataset) are decided on again in the same pass, on the same observation:
        // nothing but the proposals was done, and they are in the cache as created.
        if let Acted::Again {
            only_proposed: true,
        } = acted
        {
            acted = self
                .decide_and_apply(mode, &machines, fresh_listing, now)
                .await?;
        }
        let again = match acted {
            Acted::Finished(f) => return Ok(Next::Finished(f)),
            Acted::Again { .. } => true,
            Acted::Quiet => false,
        };
        self.check_bounds().await?;
        Ok(self.next_step(mode, again, now))
    }

    /// Decides on the cache and `machines`, and applies the actions.
    async fn decide_and_apply(
        &mut self,
        mode: Mode,
        machines: &[crate::Machine],
        fresh_listing: bool,
        now: Millis,
    ) -> Result<Acted, RunError> {
        let open = self.cache.open_trials();
        let actions = decide(&self.view(mode, (machines, &open), fresh_listing, now));
        let only_proposed = actions.iter().all(|a| matches!(a, Action::Propose { .. }));
        let mut again = false;
        let mut actions = actions.into_iter().peekable();
        while let Some(a) = actions.next() {
            if self.past_deadline() {
                return Ok(Acted::AGAIN);
            }
            // Launches side by side run at once.
            if let Some(first) = self.launch_of(&a) {
                let mut batch = vec![first];
                while let Some(next) = actions.peek().and_then(|a| self.launch_of(a)) {
                    batch.push(next);
                    actions.next();
                }
                if !self.bounds.holds_launches(now) {
                    again |= matches!(self.launch_all(batch, now).await?, Acted::Again { .. });
                }
                continue;
            }
            match self.apply(a, mode, now).await? {
                Acted::Quiet => {}
                Acted::Again { .. } => again = true,
                Acted::Finished(f) => return Ok(Acted::Finished(f)),
            }
        }
        Ok(match again {
            false => Acted::Quiet,
            true => Acted::Again { only_proposed },
        })
    }

    /// The launch `a` asks for, if it is one: of a pending attempt, or again of a
    /// starting one whose answer was never recorded (the trial as cached).
    fn launch_of(&self, a: &Action) -> Option<Launch> {
        match *a {
            Action::Launch { trial, attempt } => Some(Launch::Pending(trial, attempt)),
            Action::ResumeLaunch { trial, attempt } => {
                let t = self.cache.get(trial).filter(|t| t.attempt == attempt)?;
                Some(Launch::Starting(Box::new(t.clone())))
            }
            _ => None,
        }
    }

    /// Applies one action of [`decide`].
    async fn apply(&mut self, action: Action, mode: Mode, now: Millis) -> Result<Acted, RunError> {
        match action {
            Action::Finish { budget_spent } => self.finish(mode, budget_spent, now).await,
            Action::Relist => {
                self.runner.provider.invalidate(&self.study.name);
                self.fresh_listing = true;
                Ok(Acted::AGAIN)
            }
            Action::Propose { count, launch } => self.propose_and_launch(count, launch, now).await,
            // Batched in `decide_and_apply`.
            Action::Launch { .. } | Action::ResumeLaunch { .. } => Ok(Acted::Quiet),
            Action::Adopt {
                trial,
                attempt,
                machine,
            } => {
                let at = At::new(trial, attempt, TrialState::Starting);
                self.adopt(at, machine).await?;
                Ok(Acted::Quiet)
            }
            Action::Terminate { machine, reason } => {
                tracing::info!(study = %self.study.name, trial = machine.trial, machine = %machine.id, %reason, "terminating machine");
                self.runner.provider.terminate(&machine).await?;
                Counters::bump(&self.runner.counters.terminated);
                Ok(Acted::Quiet)
            }
            other => {
                self.change_attempt(other, now).await?;
                Ok(Acted::AGAIN)
            }
        }
    }

    /// Proposes `count` trials and launches those made `starting` (`launch`: none
    /// when no room anywhere: they wait with the study, as launches do).
    async fn propose_and_launch(
        &mut self,
        count: u64,
        launch: bool,
        now: Millis,
    ) -> Result<Acted, RunError> {
        let launch = launch && !self.bounds.holds_launches(now);
        let created = self.propose(count, launch.then_some(now)).await?;
        let (starting, pending): (Vec<Trial>, Vec<Trial>) = created
            .into_iter()
            .partition(|t| t.state == TrialState::Starting);
        if starting.is_empty() {
            return Ok(Acted::AGAIN);
        }
        let batch = starting
            .into_iter()
            .map(|t| Launch::Starting(Box::new(t)))
            .collect();
        let acted = self.launch_all(batch, now).await?;
        // Those that wait for datasets, or the oracle's end, are decided on.
        Ok(match pending.is_empty() && !self.exhausted {
            true => acted,
            false => Acted::AGAIN,
        })
    }

    /// Applies an action that changes one attempt, conditional on its state.
    async fn change_attempt(&mut self, action: Action, now: Millis) -> Result<(), RunError> {
        match action {
            Action::Assign {
                trial,
                attempt,
                machine,
                billing,
            } => {
                let at = At::new(trial, attempt, TrialState::Pending);
                self.assign(at, machine, billing, now).await
            }
            Action::MarkLost {
                trial,
                attempt,
                from,
                reason,
                loss,
            } => {
                let at = At::new(trial, attempt, from);
                self.mark_lost(at, reason, loss).await
            }
            Action::Retry {
                trial,
                attempt,
                from,
                not_before,
            } => {
                let at = At::new(trial, attempt, from);
                self.retry(at, not_before, now).await
            }
            Action::Cancel {
                trial,
                attempt,
                from,
                why,
            } => {
                let at = At::new(trial, attempt, from);
                self.end(at, TrialState::Cancelled, why).await?;
                Ok(())
            }
            Action::Prune {
                trial,
                attempt,
                reason,
            } => {
                let at = At::new(trial, attempt, TrialState::Running);
                self.end(at, TrialState::Pruned, reason).await?;
                Ok(())
            }
            Action::FailForDataset {
                trial,
                attempt,
                dataset,
            } => {
                let why = format!(
                    "{ERROR_DATASET}{dataset} (see `augur trials {}`)",
                    self.study.name
                );
                let at = At::new(trial, attempt, TrialState::Pending);
                self.end(at, TrialState::Failed, why).await?;
                Ok(())
            }
            other => Err(RunError::Internal(format!(
                "{other:?} is not a change of one attempt"
            ))),
        }
    }

    /// Ends an active attempt as lost; a preemption when its machine was taken away.
    async fn mark_lost(&mut self, at: At, reason: String, loss: Loss) -> Result<(), RunError> {
        let up = TrialUpdate {
            preempted: loss == Loss::Preempted,
            ..self.ending(TrialState::Lost, Some(reason.clone()))
        };
        let done = self.write(at, &up).await?.is_some();
        self.runner.emit(Event::Lost {
            trial: at.trial,
            reason: reason.clone(),
        });
        match loss {
            Loss::Preempted if done => Counters::bump(&self.runner.counters.preempted),
            // Counted with the study; past the bound, no further launch.
            Loss::BootFailed if done => {
                self.bounds.failed_boot(at.trial, at.attempt, &reason);
                self.save_bounds().await?;
                self.check_bounds().await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `lost|failed → pending` as the next attempt, not before `not_before`.
    async fn retry(&self, at: At, not_before: Millis, now: Millis) -> Result<(), RunError> {
        let up = TrialUpdate::next_attempt(at.attempt + 1, Some(not_before));
        if let Some(t) = self.write(at, &up).await? {
            Counters::bump(&self.runner.counters.retried);
            self.runner.emit(Event::Retry {
                trial: at.trial,
                attempt: t.attempt,
                delay_ms: not_before - now,
                runs: t.runs,
                preemptions: t.preemptions,
            });
        }
        Ok(())
    }

    /// Records the end of the scope: a study driven by its budget is done (or
    /// stopped, when cancelled or drained).
    async fn finish(&self, mode: Mode, budget_spent: bool, now: Millis) -> Result<Acted, RunError> {
        if let Scope::Budget(_) = self.scope {
            let to = match mode {
                Mode::Run if budget_spent => StudyState::Spent,
                Mode::Run => StudyState::Done,
                Mode::Drain | Mode::Cancel => StudyState::Stopped,
            };
            let store = &self.runner.store;
            let name = &self.study.name;
            let moved = store
                .set_study_state(name, &[StudyState::Active, StudyState::Stopping], to, now)
                .await?;
            if let (true, true, Some(days)) = (
                moved,
                to != StudyState::Stopped,
                self.runner.config.keep_days,
            ) {
                store
                    .expire_study(name, Some(now + days as Millis * 86_400_000))
                    .await?;
            }
        }
        Ok(Acted::Finished(if mode == Mode::Run {
            Finished::Done
        } else {
            Finished::Interrupted
        }))
    }

    /// What the pass leaves to do: finish a drain with nothing running, pass again
    /// after acting, or wait until the next retry is due (at most `idle`; a study
    /// that prunes looks at the curves as often as agents record them).
    pub(super) fn next_step(&self, mode: Mode, again: bool, now: Millis) -> Next {
        let trials = self.cache.open_trials();
        if mode == Mode::Drain && !again && !trials.iter().any(|t| t.state.is_active()) {
            return Next::Finished(Finished::Interrupted);
        }
        if again {
            return Next::Again;
        }
        let runner = self.runner;
        // Pending trials wait for their backoff, and so do launches to ask again.
        let next = trials
            .iter()
            .filter(|t| {
                t.state == TrialState::Pending
                    || (t.state == TrialState::Starting && t.machine.is_none())
            })
            .filter_map(|t| t.not_before_ms)
            .filter(|nb| *nb > now)
            .min();
        let longest = if self.study.prune.is_some() {
            let beat = Duration::from_millis(runner.config.drive.heartbeat_ms.max(100) as u64);
            runner.config.idle.min(beat)
        } else {
            runner.config.idle
        };
        let wait = next.map_or(longest, |nb| {
            Duration::from_millis((nb - now) as u64 + 1).min(longest)
        });
        Next::Wait(wait)
    }

    /// Ends the attempt `at` in `to`, with `error`, now; whether it was written.
    async fn end(&self, at: At, to: TrialState, error: String) -> Result<bool, RunError> {
        Ok(self
            .write(at, &self.ending(to, Some(error)))
            .await?
            .is_some())
    }

    /// The write that ends an attempt (in `to`, with `error`) now.
    fn ending(&self, to: TrialState, error: Option<String>) -> TrialUpdate {
        TrialUpdate {
            state: Some(to),
            error: Set::exactly(error),
            finished_ms: Set::To((self.runner.config.clock)()),
            ..Default::default()
        }
    }

    /// `up` if the trial is still at `at`; the record written, if it was.
    async fn write(&self, at: At, up: &TrialUpdate) -> Result<Option<Trial>, RunError> {
        let expect = Expect::state(at.from, at.attempt);
        let written = self
            .runner
            .store
            .update_trial(&self.study.name, at.trial, &expect, up)
            .await?;
        Ok(written.ok())
    }
}

/// The wait before pass `n` (1-based) after the backend failed: 200 ms doubling,
/// at most 5 s.
pub(super) fn backend_backoff(n: u32) -> Duration {
    augur_model::backoff::ceiling(Duration::from_millis(200), Duration::from_secs(5), n)
}
