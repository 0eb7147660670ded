//! Launching an attempt: `pending → starting`, the provider's launch, its billing,
//! and what a launch that finds no room or outlasts a tick's deadline leaves.

use super::machines::Weather;
use super::{After, At, Driver};
use crate::provider::ProviderError;
use crate::runner::{Counters, Event, RunError};
use augur_model::cost::Billing;
use augur_model::{Expect, Millis, TrialState, TrialUpdate};
use augur_store::{Launched, Written};
use futures_util::StreamExt;

/// How many launches a pass has in flight at once.
pub(crate) const LAUNCHES_AT_ONCE: usize = 8;

/// A launch to ask: of a pending trial's attempt (written `pending → starting`
/// first), or of a trial just created starting ([`crate::reconcile::Action::Propose`]).
pub(super) enum Launch {
    Pending(u64, u32),
    Created(Box<augur_model::Trial>),
}

/// A launch asked of the provider, and its answer.
pub(super) struct Asked {
    at: At,
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
    ) -> Result<After, RunError> {
        let this = &*self;
        let asked: Vec<Result<Option<Asked>, RunError>> = futures_util::stream::iter(batch)
            .map(|l| async move {
                match l {
                    Launch::Pending(trial, attempt) => this.ask(trial, attempt, now).await,
                    Launch::Created(t) => this.ask_provider(*t).await,
                }
            })
            .buffer_unordered(LAUNCHES_AT_ONCE)
            .collect()
            .await;
        let (mut after, mut failed) = (After::Nothing, None);
        for a in asked {
            let settled = match a {
                Ok(Some(asked)) => self.settle(asked, now).await,
                Ok(None) => Ok(After::Nothing),
                Err(e) => Err(e),
            };
            match settled {
                Ok(After::Again) => after = After::Again,
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(after), Err)
    }

    /// `pending → starting`, then asks the provider for a machine; `None` if the
    /// trial moved on meanwhile. A launch unanswered at the tick's deadline is cut
    /// short (see [`cut_short`](Self::cut_short)).
    async fn ask(&self, trial: u64, attempt: u32, now: Millis) -> Result<Option<Asked>, RunError> {
        let runner = self.runner;
        let up = TrialUpdate {
            state: Some(TrialState::Starting),
            launched_ms: Some(Some(now)),
            machine: Some(None),
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

    /// Asks the provider for a machine for `t`, starting.
    async fn ask_provider(&self, t: augur_model::Trial) -> Result<Option<Asked>, RunError> {
        let runner = self.runner;
        Counters::bump(&runner.counters.launched);
        let at = At {
            trial: t.id,
            attempt: t.attempt,
            from: TrialState::Starting,
        };
        let asked = runner.provider.launch(self.study, &t);
        let answer = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), asked).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.cut_short(at).await?;
                    return Ok(None);
                }
            },
            None => asked.await,
        };
        Ok(Some(Asked { at, answer }))
    }

    /// What a launch's answer leaves: its billing; a study waiting for room; or the
    /// attempt lost (retried as `decide` rules), an unavailable provider an error.
    async fn settle(&mut self, asked: Asked, now: Millis) -> Result<After, RunError> {
        let Asked { at, answer } = asked;
        let e = match answer {
            Ok(launched) => {
                self.weather = Weather::default();
                if let Some(b) = launched.billing {
                    self.bill(at, b).await?;
                }
                return Ok(After::Nothing);
            }
            Err(e) => e,
        };
        if let ProviderError::Capacity(what) = e {
            return self.no_room(at, what, now).await;
        }
        let reason = e.to_string();
        self.end(at, TrialState::Lost, reason.clone()).await?;
        self.runner.emit(Event::Lost {
            trial: at.trial,
            reason,
        });
        if let ProviderError::Unavailable(_) = e {
            return Err(e.into());
        }
        Ok(After::Again)
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
            launched_ms: Some(Some(now)),
            machine: Some(Some(machine)),
            billing: Some(billing),
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

    /// A launch still unanswered at the tick's deadline is given up before the
    /// invocation ends mid-call (a Lambda past its timeout is killed): the attempt
    /// goes back to pending, and the next tick asks again under the same
    /// ClientToken, which EC2 answers with the instance this launch made if it made
    /// one. Not a lost attempt, not a wait for the boot timeout.
    async fn cut_short(&self, at: At) -> Result<(), RunError> {
        let up = TrialUpdate {
            state: Some(TrialState::Pending),
            launched_ms: Some(None),
            status: Some(Some(
                "the launch was cut short by the tick's deadline; the next tick asks again".into(),
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
            billing: Some(Some(billing)),
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
    /// was made), and the study waits; past `capacity_timeout` the drive stops.
    async fn no_room(&mut self, at: At, what: String, now: Millis) -> Result<After, RunError> {
        let timing = &self.runner.timing;
        let w = &mut self.weather;
        let since = *w.since.get_or_insert(now);
        // Launches of one batch that find no room count as one failure.
        if w.until <= now {
            w.failures += 1;
            let wait = timing
                .backoff_ms(self.study.seed, u64::MAX, w.failures)
                .max(timing.backoff_base_ms);
            w.until = now + wait;
        }
        let wait = w.until - now;
        let waited = now - since;
        // Shown with the trial wherever it is looked at (`augur trials`, the status
        // page), whoever drives the study; its agent's first write clears it.
        let up = TrialUpdate {
            state: Some(TrialState::Pending),
            // Nothing was launched: no machine time to count.
            launched_ms: Some(None),
            not_before_ms: Some(Some(w.until)),
            status: Some(Some(format!(
                "waiting for capacity ({} s so far): {what}",
                waited / 1000
            ))),
            ..Default::default()
        };
        self.write(at, &up).await?;
        if waited > timing.capacity_timeout_ms {
            return Err(RunError::Machines(format!(
                "study `{}` stopped: no room to launch for {} s ({what}). Add instance types ([aws] fallback_instance_types) or subnets in other zones ([aws] subnets), raise the quota, or try later; `augur run` again resumes the study.",
                self.study.name,
                waited / 1000
            )));
        }
        self.runner.emit(Event::NoRoom {
            what,
            wait_ms: wait,
            waited_ms: waited,
        });
        Ok(After::Nothing)
    }
}
