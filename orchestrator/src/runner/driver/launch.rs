//! Launching an attempt, by the launch protocol (DESIGN, "The launch protocol"):
//! the record says `starting` before the provider is asked; a cloud's answer (the
//! machine, how it is billed) is written as soon as it comes, before anything slow;
//! an attempt whose answer was never recorded is asked again under the same
//! `ClientToken` (the provider answers with the machine the first ask made);
//! a launch that finds no room goes back to `pending`.

use super::{Acted, At, Driver};
use crate::provider::ProviderError;
use crate::runner::{Counters, Event, RunError};
use augur_model::cost::Billing;
use augur_model::{Expect, Machine, Millis, Set, Trial, TrialState, TrialUpdate, MAX_LAUNCH_TRIES};
use augur_store::{Launched, Written};
use futures_util::StreamExt;

/// How many launches a pass has in flight at once.
pub(crate) const LAUNCHES_AT_ONCE: usize = 8;

/// A launch to ask: of a pending trial's attempt (written `pending → starting`
/// first), of a trial just created starting ([`crate::reconcile::Action::Propose`]),
/// or again of a starting attempt whose answer was never recorded
/// ([`crate::reconcile::Action::ResumeLaunch`]).
pub(super) enum Launch {
    Pending(u64, u32),
    Starting(Box<Trial>),
}

/// A launch asked of the provider, and its answer.
pub(super) struct Asked {
    at: At,
    /// The attempt's tries before this one ([`Trial::launch_tries`]).
    tries: u32,
    answer: Result<Launched, ProviderError>,
}

impl Driver<'_> {
    /// Launches `batch`, up to [`LAUNCHES_AT_ONCE`] at a time, then settles each
    /// answer in order. A provider that is unavailable fails the pass, once every
    /// answer is settled.
    pub(super) async fn launch_all(
        &mut self,
        batch: Vec<Launch>,
        now: Millis,
    ) -> Result<Acted, RunError> {
        let this = &*self;
        let asked: Vec<Result<Option<Asked>, RunError>> = futures_util::stream::iter(batch)
            .map(|l| async move {
                match l {
                    Launch::Pending(trial, attempt) => this.ask(trial, attempt, now).await,
                    Launch::Starting(t) => this.ask_provider(*t).await,
                }
            })
            .buffer_unordered(LAUNCHES_AT_ONCE)
            .collect()
            .await;
        let (mut after, mut failed) = (Acted::Quiet, None);
        // Every answer is recorded before any price is asked.
        let mut guesses = Vec::new();
        for a in asked {
            let settled = match a {
                Ok(Some(asked)) => self.settle(asked, now, &mut guesses).await,
                Ok(None) => Ok(Acted::Quiet),
                Err(e) => Err(e),
            };
            match settled {
                Ok(Acted::Again { .. }) => after = Acted::AGAIN,
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        for (at, guess) in guesses {
            if let Err(e) = self.reprice(at, guess).await {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(after), Err)
    }

    /// `pending → starting`, then asks the provider for a machine; `None` if the
    /// trial moved on meanwhile.
    async fn ask(&self, trial: u64, attempt: u32, now: Millis) -> Result<Option<Asked>, RunError> {
        let runner = self.runner;
        let up = TrialUpdate {
            state: Some(TrialState::Starting),
            launched_ms: Set::To(now),
            machine: Set::Clear,
            assigned: Some(false),
            launch_tries: Some(0),
            ..Default::default()
        };
        let expect = Expect::state(TrialState::Pending, attempt);
        let written = runner
            .store
            .update_trial(&self.study.name, trial, &expect, &up)
            .await?;
        let Written::Done(t) = written else {
            return Ok(None);
        };
        self.ask_provider(t).await
    }

    /// Asks the provider for a machine for `t`, starting. A launch unanswered at the
    /// tick's deadline is cut short (see [`cut_short`](Self::cut_short)).
    async fn ask_provider(&self, t: Trial) -> Result<Option<Asked>, RunError> {
        let runner = self.runner;
        Counters::bump(&runner.counters.launched);
        let at = At {
            trial: t.id,
            attempt: t.attempt,
            from: TrialState::Starting,
        };
        let tries = t.launch_tries;
        let asked = runner.provider.launch(self.study, &t);
        let answer = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), asked).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.cut_short(at, tries).await?;
                    return Ok(None);
                }
            },
            None => asked.await,
        };
        Ok(Some(Asked { at, tries, answer }))
    }

    /// What a launch's answer leaves: the machine recorded (on a cloud) and how it
    /// is billed, a first-guess price kept in `guesses` to ask later; a study waiting
    /// for room; a try to repeat; or the attempt lost. An unavailable provider is an
    /// error, once the try is recorded.
    async fn settle(
        &mut self,
        asked: Asked,
        now: Millis,
        guesses: &mut Vec<(At, Billing)>,
    ) -> Result<Acted, RunError> {
        let Asked { at, tries, answer } = asked;
        let e = match answer {
            Ok(launched) => {
                if self.bounds.room() {
                    self.save_bounds().await?;
                }
                if let Some(guess) = self.record(at, launched).await? {
                    guesses.push((at, guess));
                }
                return Ok(Acted::Quiet);
            }
            Err(e) => e,
        };
        if let ProviderError::Capacity(what) = e {
            return self.no_room(at, what.what, now).await;
        }
        if let ProviderError::Denied(_) | ProviderError::Rejected(_) = e {
            return Err(self.refused(at, e).await);
        }
        self.launch_failed(at, tries + 1, &e, now).await?;
        if let ProviderError::Unavailable(_) = e {
            return Err(e.into());
        }
        Ok(Acted::AGAIN)
    }

    /// Writes a launch's answer. Where the provider's listing may miss a machine (a
    /// cloud), the record names it at once, with how it is billed as far as is known
    /// without waiting, in one write. A local machine is listed exactly, and its
    /// agent names itself. A first-guess billing is returned, its price to be asked
    /// ([`reprice`](Self::reprice)).
    async fn record(&self, at: At, launched: Launched) -> Result<Option<Billing>, RunError> {
        let provider = &self.runner.provider;
        if provider.sees_all() {
            if let Some(b) = launched.billing {
                self.bill(at, b).await?;
            }
            return Ok(None);
        }
        let up = TrialUpdate {
            machine: Set::To(launched.id.clone()),
            launched_ms: Set::To((self.runner.config.clock)()),
            billing: Set::given(launched.billing.clone()),
            not_before_ms: Set::Clear,
            status: Set::Clear,
            ..Default::default()
        };
        let named = self.write(at, &up).await?.is_some();
        if let (false, Some(b)) = (named, &launched.billing) {
            // Its agent took the attempt first (and named the machine itself).
            self.bill(at, b.clone()).await?;
        }
        Ok(launched.billing.filter(|_| !launched.priced))
    }

    /// IAM or the provider refused the launch request (a missing grant, a resource
    /// that does not exist): no machine was made, no try or attempt is counted, and
    /// the launch stays unrecorded (`starting`), to be asked again under the same
    /// `ClientToken` once the cause is fixed. The trial says why; the drive ends.
    async fn refused(&self, at: At, e: ProviderError) -> RunError {
        let up = TrialUpdate {
            status: Set::To(format!("launch refused: {e}")),
            ..Default::default()
        };
        if let Err(w) = self.write(at, &up).await {
            tracing::warn!(trial = at.trial, error = %w, "cannot say why the launch was refused");
        }
        e.into()
    }

    /// Asks the source of a first-guess price for the real one, within the tick's
    /// deadline, and records it if it differs (the first guess stands otherwise).
    async fn reprice(&self, at: At, guess: Billing) -> Result<(), RunError> {
        let asked = self.runner.provider.price(&guess);
        let better = match self.deadline {
            Some(d) => tokio::time::timeout_at(d.into(), asked)
                .await
                .ok()
                .flatten(),
            None => asked.await,
        };
        match better {
            Some(b) if b != guess => self.bill(at, b).await,
            _ => Ok(()),
        }
    }

    /// A try of the attempt's launch failed (`tries` so far, this one included): it
    /// is asked again after a backoff, under the same `ClientToken`, and said where
    /// the trial is looked at; a launch the provider refused for good, or one tried
    /// [`MAX_LAUNCH_TRIES`] times, loses the attempt.
    async fn launch_failed(
        &self,
        at: At,
        tries: u32,
        e: &ProviderError,
        now: Millis,
    ) -> Result<(), RunError> {
        let runner = self.runner;
        let permanent = matches!(e, ProviderError::Launch(_));
        if permanent || tries >= MAX_LAUNCH_TRIES {
            let reason = match permanent {
                true => e.to_string(),
                false => format!("its launch failed {tries} times (the last: {e})"),
            };
            self.end(at, TrialState::Lost, reason.clone()).await?;
            runner.emit(Event::Lost {
                trial: at.trial,
                reason,
            });
            return Ok(());
        }
        let drive = &runner.config.drive;
        let key = at.trial.rotate_left(16) ^ at.attempt as u64;
        let wait = drive
            .backoff_ms(self.study.seed, key, tries)
            .max(drive.backoff_base_ms);
        let up = TrialUpdate {
            launch_tries: Some(tries),
            not_before_ms: Set::To(now + wait),
            status: Set::To(format!(
                "launch try {tries} of {MAX_LAUNCH_TRIES} failed: {e}; asked again in {:.1} s under the same ClientToken",
                wait as f64 / 1000.0
            )),
            ..Default::default()
        };
        self.write(at, &up).await?;
        runner.emit(Event::LaunchFailed {
            trial: at.trial,
            tries,
            error: e.to_string(),
            retry_in_ms: wait,
        });
        Ok(())
    }

    /// `pending → starting` on an idle warm machine ([`crate::reconcile::Action::Assign`]):
    /// one conditional write names the machine, whose agent reads it and takes the
    /// attempt, and how it is billed. No launch, so no room to wait for.
    pub(super) async fn assign(
        &self,
        at: At,
        machine: String,
        billing: Option<Billing>,
        now: Millis,
    ) -> Result<(), RunError> {
        let up = TrialUpdate {
            state: Some(TrialState::Starting),
            launched_ms: Set::To(now),
            machine: Set::To(machine),
            assigned: Some(true),
            billing: Set::exactly(billing),
            ..Default::default()
        };
        let expect = Expect::state(TrialState::Pending, at.attempt);
        let written = self
            .runner
            .store
            .update_trial(&self.study.name, at.trial, &expect, &up)
            .await?;
        if let Written::Done(_) = written {
            Counters::bump(&self.runner.counters.launched);
        }
        Ok(())
    }

    /// Names in the record the machine the listing shows for a starting attempt
    /// whose launch's answer was never recorded (its ask cut short, its answer lost,
    /// its driver gone), with how it is billed; the price is asked afterwards.
    pub(super) async fn adopt(&self, at: At, machine: Machine) -> Result<(), RunError> {
        tracing::info!(study = %self.study.name, trial = at.trial, machine = %machine.id, "adopting the machine launched for the attempt");
        // The listing's billing knows the instance, not the slots the study shares
        // it in.
        let share = augur_model::cost::Billing::share_of(self.slots.unwrap_or(1));
        let billing = machine
            .billing
            .map(|b| augur_model::cost::Billing { share, ..b });
        let up = TrialUpdate {
            machine: Set::To(machine.id.clone()),
            billing: Set::given(billing.clone()),
            not_before_ms: Set::Clear,
            status: Set::Clear,
            ..Default::default()
        };
        let named = self.write(at, &up).await?.is_some();
        if let (true, Some(b)) = (named, billing) {
            self.reprice(at, b).await?;
        }
        Ok(())
    }

    /// A launch still unanswered at the tick's deadline is given up before the
    /// invocation ends mid-call (a Lambda past its timeout is killed). The attempt
    /// stays `starting` with no machine named: whoever drives the study next asks
    /// again under the same `ClientToken`, which EC2 answers with the instance this
    /// ask made, if it made one. No new attempt, so never a token whose instance may
    /// have ended since; the agent of such an instance finds its attempt current.
    /// It counts as a try.
    async fn cut_short(&self, at: At, tries: u32) -> Result<(), RunError> {
        let tries = tries + 1;
        let up = TrialUpdate {
            launch_tries: Some(tries),
            status: Set::To(format!(
                "launch try {tries} of {MAX_LAUNCH_TRIES} had no answer before the tick's deadline; the next pass asks again under the same ClientToken"
            )),
            ..Default::default()
        };
        self.write(at, &up).await?;
        Ok(())
    }

    /// Records how the attempt's machine is billed, whatever its agent has written
    /// since (a short script may have ended already).
    async fn bill(&self, at: At, billing: Billing) -> Result<(), RunError> {
        let up = TrialUpdate {
            billing: Set::To(billing),
            ..Default::default()
        };
        let expect = Expect::any_of(&TrialState::ALL, at.attempt);
        self.runner
            .store
            .update_trial(&self.study.name, at.trial, &expect, &up)
            .await?;
        Ok(())
    }

    /// A launch found no room: the attempt goes back to pending unchanged (nothing
    /// was made), and the study waits (the drought is recorded with it); past
    /// `capacity_timeout` the study stops.
    async fn no_room(&mut self, at: At, what: String, now: Millis) -> Result<Acted, RunError> {
        let drive = &self.runner.config.drive;
        let seed = self.study.seed;
        let backoff = |failures| {
            drive
                .backoff_ms(seed, u64::MAX, failures)
                .max(drive.backoff_base_ms)
        };
        // Launches of one batch that find no room count as one failure.
        let waited = self.bounds.no_room(now, &what, backoff);
        let until = self.bounds.no_room_until_ms;
        // Shown with the trial wherever it is looked at (`augur trials`, the status
        // page), whoever drives the study; its agent's first write clears it.
        let up = TrialUpdate {
            state: Some(TrialState::Pending),
            // Nothing was launched: no machine time to count.
            launched_ms: Set::Clear,
            not_before_ms: Set::To(until),
            status: Set::To(format!(
                "waiting for capacity ({} s so far): {what}",
                waited / 1000
            )),
            ..Default::default()
        };
        self.write(at, &up).await?;
        self.save_bounds().await?;
        if waited > drive.capacity_timeout_ms {
            return Err(self
                .stop_for(format!(
                    "no room to launch for {} s ({what}). Add instance types ([aws] fallback_instance_types) or subnets in other zones ([aws] subnets), raise the quota, or try later.",
                    waited / 1000
                ))
                .await);
        }
        self.runner.emit(Event::NoRoom {
            what,
            wait_ms: until - now,
            waited_ms: waited,
        });
        Ok(Acted::Quiet)
    }
}
