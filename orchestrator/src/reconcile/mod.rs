//! The reconciler's decision: a pure function of the observed state.
//!
//! [`decide`] looks at the whole study every pass (level-triggered), so a restarted
//! orchestrator, or the next serverless tick, simply continues: nothing in memory
//! matters. The driver ([`crate::runner`]) applies the actions through the store and
//! the machine provider, each one a conditional write or an idempotent call, and
//! decides nothing itself.
//!
//! `decide` is a few named steps (in [`steps`]), in this order: judge each trial
//! (active attempts, ended ones, pending ones), plan launches and proposals, sweep
//! the machines nobody needs, and finish. Every rule about orphaned machines is in
//! the sweep, which `augur gc` uses too ([`sweep`]).

mod slots;
pub use slots::slots_named;
mod steps;
#[cfg(test)]
mod tests;
mod warm;

use augur_model::machine::machine_of_slot;
pub use augur_model::Machine;
use augur_model::{DriveSettings, Millis, Study, Trial, TrialState};
pub use augur_store::provider::{Missing, Tagged};
use std::collections::{BTreeSet, HashSet};

/// Grace after a launch before a machine missing from the listing counts as gone.
pub const LAUNCH_GRACE_MS: Millis = 2_000;
/// How long after a launch a cloud's listing may still not show it (the EC2 provider
/// reuses a listing for 5 s): its machine is not asked for by name before
/// ([`missing`]).
pub const LISTING_LAG_MS: Millis = 10_000;
/// Launches that never reached the script (machine never booted, agent died at once)
/// do not use up `max_attempts`; this many are tolerated per trial.
pub const MAX_LAUNCH_FAILURES: u32 = 5;
/// The largest difference between two machines' clocks that leases tolerate. A
/// driver's lease is written with the holder's clock and read with the taker's: it is
/// taken over only this long after it expired by the taker's clock. (The heartbeat
/// timeout compares the agent's clock with the driver's; its margin is the timeout
/// minus the heartbeat interval, 70 s by default on AWS.)
pub const CLOCK_SKEW_MS: Millis = 5_000;
/// An attempt given to a warm machine that has not taken it after this long is lost
/// (its agent reads for one every second).
pub const ASSIGN_TIMEOUT_MS: Millis = 30_000;

/// What the orchestrator is doing with the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Launch and propose as the budget allows.
    Run,
    /// Launch nothing new; let running trials finish (first Ctrl-C).
    Drain,
    /// Cancel every trial that is not final (second Ctrl-C, `augur stop`).
    Cancel,
}

/// Which trials this drive is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    /// The study's budget of trials (`stream`).
    Budget(u64),
    /// Only these trials (and the datasets they need): `run` and `round`.
    Trials(BTreeSet<u64>),
}

/// Everything `decide` looks at.
pub struct View<'a> {
    pub study: &'a Study,
    /// Every trial of the study, in id order when `open` is given.
    pub trials: &'a [Trial],
    /// The trials of `trials` not [closed](closed), when the caller keeps them apart
    /// (a driver's cache): the steps that act on each trial go through these alone.
    /// A study of 100,000 trials is mostly closed ones, and every pass went through
    /// each of them several times.
    pub open: Option<&'a [&'a Trial]>,
    pub machines: &'a [Machine],
    pub scope: &'a Scope,
    pub mode: Mode,
    /// The oracle said it has no more points.
    pub exhausted: bool,
    /// A trial missing from `machines` certainly has no machine (local processes).
    pub sees_all: bool,
    /// Machines may be kept warm through the record (a cloud's,
    /// [`MachineProvider::warm_by_record`](augur_store::provider::MachineProvider::warm_by_record)):
    /// a machine serves the latest attempt whose record names it, and with
    /// `run.reuse = "study"` an idle one is given the study's next attempt
    /// ([`Action::Assign`]).
    pub warm: bool,
    /// Agents go back to the provider's pool when their attempt ends by itself
    /// ([`MachineProvider::pools_agents`](augur_store::provider::MachineProvider::pools_agents)):
    /// one still listed with an attempt that has just ended so is on its way there,
    /// not to be ended.
    pub pooled: bool,
    /// `machines` was listed afresh for this pass, not from a provider's cache: a
    /// study finishes only on such a listing (or where `sees_all`), so that a machine
    /// a cached listing missed (one that never booted, say) is ended first.
    pub fresh_listing: bool,
    pub drive: &'a DriveSettings,
    pub now: Millis,
    /// How many attempts of the study one machine runs at once, each in a slot of
    /// its own ([`slots`]; [`MachineProvider::slots`](augur_store::provider::MachineProvider::slots)):
    /// 1 but for `run.gpus` on a type with more GPUs, kept warm.
    pub slots: u32,
    /// The driver has read the store without a failure since then (its start, or
    /// the end of the store's last bad minutes): a heartbeat missed before then may
    /// be one the store could not take, and is given a lease from then.
    pub seen_since: Millis,
}

/// One step for the executor.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `pending → starting` and ask the provider for a machine.
    Launch { trial: u64, attempt: u32 },
    /// Ask again for the machine of a starting attempt whose launch's answer was
    /// never recorded (on a cloud, whose listing may miss it), under the same
    /// `ClientToken`: the provider answers with the machine the first ask made, if
    /// it made one.
    ResumeLaunch { trial: u64, attempt: u32 },
    /// Name in the record the machine the listing shows for such an attempt.
    Adopt {
        trial: u64,
        attempt: u32,
        machine: Machine,
    },
    /// `pending → starting` on an idle warm machine: the record names it, and its
    /// agent takes the attempt from there (no launch).
    Assign {
        trial: u64,
        attempt: u32,
        machine: String,
        /// How the machine is billed (its last attempt's record).
        billing: Option<augur_model::cost::Billing>,
    },
    /// `starting|running → lost`.
    MarkLost {
        trial: u64,
        attempt: u32,
        from: TrialState,
        reason: String,
        /// What the loss costs the trial.
        loss: Loss,
    },
    /// `lost|failed → pending` with attempt + 1, not before `not_before`.
    Retry {
        trial: u64,
        attempt: u32,
        from: TrialState,
        not_before: Millis,
    },
    /// `running → pruned`: the study's pruner stops a trial whose curve is not
    /// promising (its machine is ended by the sweep once the state is written).
    Prune {
        trial: u64,
        attempt: u32,
        reason: String,
    },
    /// `pending|starting|running → cancelled` (or `lost|failed`, a retry to come).
    Cancel {
        trial: u64,
        attempt: u32,
        from: TrialState,
        /// The error recorded: "cancelled", or why the budget is spent.
        why: String,
    },
    /// `pending → failed` because a dataset it needs failed for good.
    FailForDataset {
        trial: u64,
        attempt: u32,
        dataset: String,
    },
    /// End a machine (its trial is final, unknown, or moved to another attempt).
    Terminate { machine: Machine, reason: String },
    /// Create this many new trials from the oracle; with `launch`, each that needs no
    /// dataset is created starting and launched at once (one write, not two). There
    /// is room for them: a proposal stays within `parallel`, after the launches of
    /// the pending trials. Not when an idle warm machine is left for them (they are
    /// assigned to it on the next decision).
    Propose { count: u64, launch: bool },
    /// Every trial in scope is final, but the listing may be stale: list the machines
    /// afresh and decide again.
    Relist,
    /// Every trial in scope is final and no machine is left to end; with
    /// `budget_spent`, because the study's limits let no further trial start.
    Finish { budget_spent: bool },
}

/// What a lost attempt costs its trial, by how it was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Its agent went silent, hung, or never reported in time: a run of the trial
    /// (`max_attempts`), or a launch failure if its agent never reported.
    Attempt,
    /// The cloud took its machine away (a spot reclaim, a failed host): a preemption
    /// (`max_preemptions`), no fault of the trial.
    Preempted,
    /// Its machine ended itself before its agent reported: the boot failed (a
    /// launch failure). When a drive's first launches all end so, the study stops
    /// (the driver's rule) instead of launching more machines that cannot work.
    BootFailed,
}

/// Whether nothing more will happen to `t` whatever the study's settings: it
/// succeeded, was cancelled or pruned, and is no dataset (a dataset is looked up by
/// the trials that need it).
pub fn closed(t: &Trial) -> bool {
    matches!(
        t.state,
        TrialState::Succeeded | TrialState::Cancelled | TrialState::Pruned
    ) && !t.is_dataset()
}

impl<'a> View<'a> {
    /// The trials that are not [closed]: `open` if given, else found in `trials`.
    pub fn open_trials(&self) -> impl Iterator<Item = &'a Trial> + '_ {
        let (given, found) = match self.open {
            Some(open) => (Some(open.iter().copied()), None),
            None => (None, Some(self.trials.iter().filter(|t| !closed(t)))),
        };
        given
            .into_iter()
            .flatten()
            .chain(found.into_iter().flatten())
    }
}

/// Whether the trial may have another attempt.
pub fn can_retry(study: &Study, t: &Trial) -> bool {
    let unstarted = t
        .attempt
        .saturating_sub(t.runs.saturating_add(t.preemptions));
    match t.state {
        TrialState::Lost => {
            t.runs < study.run.max_attempts
                && t.preemptions <= study.run.max_preemptions
                && unstarted <= MAX_LAUNCH_FAILURES
        }
        TrialState::Failed => {
            (t.retryable || study.run.retry_on_failure)
                && t.runs < study.run.max_attempts
                && unstarted <= MAX_LAUNCH_FAILURES
        }
        _ => false,
    }
}

/// Whether nothing more will happen to the trial (without a new `augur run`).
pub fn settled(study: &Study, t: &Trial) -> bool {
    match t.state {
        TrialState::Succeeded | TrialState::Cancelled | TrialState::Pruned => true,
        TrialState::Failed | TrialState::Lost => !can_retry(study, t),
        TrialState::Pending | TrialState::Starting | TrialState::Running => false,
    }
}

/// Whether `t` was pruned so recently that its agent may still be ending the script
/// and sending its last lines (two heartbeats plus the study's `grace`): its machine
/// is left alone until then.
pub fn pruned_in_grace(study: &Study, drive: &DriveSettings, t: &Trial, now: Millis) -> bool {
    t.state == TrialState::Pruned
        && now - t.finished_ms.unwrap_or(0) < 2 * drive.heartbeat_ms + study.run.grace_ms as Millis
}

/// The decision. See the module docs.
pub fn decide(v: &View) -> Vec<Action> {
    let machines = slots::expand(v.machines, v.slots);
    let v = &View {
        machines: &machines,
        ..*v
    };
    let seen = steps::Observed::new(v);
    let mut plan = steps::Plan::default();
    for t in v.open_trials() {
        match t.state {
            TrialState::Starting | TrialState::Running => {
                steps::judge_active(v, &seen, t, &mut plan)
            }
            TrialState::Lost | TrialState::Failed => steps::retry_or_cancel(v, &seen, t, &mut plan),
            TrialState::Pending => steps::judge_pending(v, &seen, t, &mut plan),
            TrialState::Succeeded | TrialState::Cancelled | TrialState::Pruned => {}
        }
    }
    if v.mode == Mode::Run {
        steps::plan_launches(v, &seen, &mut plan);
    }
    // After the state changes above: a trial is cancelled before its machine is told
    // to stop, so the agent's own final write cannot win that race.
    let winding_down = steps::sweep_machines(v, &seen, &plan.warm_kept, &mut plan.actions);
    steps::finish(v, &seen, winding_down, &mut plan.actions);
    slots::merge_ends(plan.actions, v)
}

/// The machines of `v` that nobody needs, each as an [`Action::Terminate`] with its
/// reason: the same rule `decide` sweeps with, for `augur gc`, which judges machines
/// nobody drives.
pub fn sweep(v: &View) -> Vec<Action> {
    let machines = slots::expand(v.machines, v.slots);
    let v = &View {
        machines: &machines,
        ..*v
    };
    let seen = steps::Observed::new(v);
    let mut out = Vec::new();
    steps::sweep_machines(v, &seen, &Default::default(), &mut out);
    slots::merge_ends(out, v)
}

/// What the listing in `v` left out that [`decide`] needs to judge the study
/// ([`Missing`]): the machines of active attempts, by their tags (an attempt given
/// to a warm machine by its name), and, where machines are kept warm, those of
/// recently ended attempts that may be given the next, by name. Not an attempt
/// launched within [`LISTING_LAG_MS`], which a listing may not show yet,
/// nor an unrecorded launch waiting out its backoff.
pub fn missing(v: &View) -> Missing {
    let mut out = Missing::default();
    if v.sees_all {
        return out;
    }
    let listed: HashSet<&str> = v.machines.iter().map(|m| m.id.as_str()).collect();
    let tagged: HashSet<(u64, u32)> = v.machines.iter().map(|m| (m.trial, m.attempt)).collect();
    let reuses = warm::reuses(v);
    // A slot is listed, asked for and ended as its machine.
    let unlisted = |m: &Option<String>| {
        m.as_deref()
            .is_none_or(|m| !listed.contains(machine_of_slot(m)))
    };
    let machine = |t: &Trial| t.machine.as_deref().map(|m| machine_of_slot(m).to_string());
    let settled = |t: &Trial| {
        t.launched_ms.is_none_or(|l| v.now - l >= LISTING_LAG_MS)
            && t.not_before_ms.is_none_or(|nb| nb <= v.now)
    };
    // Warm machines are kept by closed trials too.
    let (open, all) = match reuses {
        false => (Some(v.open_trials()), None),
        true => (None, Some(v.trials.iter())),
    };
    for t in open.into_iter().flatten().chain(all.into_iter().flatten()) {
        match t.state {
            TrialState::Starting | TrialState::Running if !settled(t) || !unlisted(&t.machine) => {}
            TrialState::Starting | TrialState::Running if t.assigned => {
                out.machines.extend(machine(t))
            }
            TrialState::Starting | TrialState::Running if !tagged.contains(&(t.id, t.attempt)) => {
                out.attempts.push(Tagged {
                    trial: t.id,
                    attempt: t.attempt,
                    created_ms: t.created_ms,
                })
            }
            TrialState::Starting | TrialState::Running => {}
            _ if reuses && warm::left_warm(v, t) && unlisted(&t.machine) => {
                out.machines.extend(machine(t))
            }
            _ => {}
        }
    }
    out.machines.sort_unstable();
    out.machines.dedup();
    out
}

/// Why `augur gc` ends a machine whose study is not recorded.
pub const NO_STUDY: &str = "its study is not recorded (deleted?)";
