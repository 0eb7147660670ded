//! The named steps of [`decide`](super::decide), each a pure function of the view.

use super::warm::{Idle, Warm};
use super::{can_retry, pruned_in_grace, settled, Action, Loss, Machine, Mode, Scope, View};
use super::{ASSIGN_TIMEOUT_MS, LAUNCH_GRACE_MS};
use augur_model::prune::Pruner;
use augur_model::{Millis, Trial, TrialState, MAX_LAUNCH_TRIES};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The view indexed for the steps: machines by attempt, trials by id, datasets by
/// name, and the study's pruner.
pub(super) struct Observed<'a> {
    /// The first live machine listed for an attempt; any other is a duplicate.
    machines: HashMap<(u64, u32), &'a Machine>,
    /// Attempts whose machine the provider lists as ended, with its reason.
    gone: HashMap<(u64, u32), &'a str>,
    by_id: ById<'a>,
    datasets: BTreeMap<&'a str, &'a Trial>,
    pruner: Option<Pruner<'a>>,
    /// Why no further trial may start (`run.max_cost_usd`, `run.max_machine_hours`):
    /// what has not started is cancelled, the rest finish.
    spent: Option<String>,
    /// Which attempt each warm machine serves.
    warm: Warm<'a>,
    /// Idle warm machines, the longest idle first.
    idle: Vec<Idle<'a>>,
}

/// Trials looked up by id: a binary search when they come sorted (a driver's cache
/// always does), else a map; decide runs every pass over every trial of the study.
struct ById<'a> {
    trials: &'a [Trial],
    map: Option<HashMap<u64, &'a Trial>>,
}

impl<'a> ById<'a> {
    /// `sorted`: the caller keeps them in id order (else they are checked).
    fn new(trials: &'a [Trial], sorted: bool) -> ById<'a> {
        let sorted = sorted || trials.windows(2).all(|w| w[0].id < w[1].id);
        let map = (!sorted).then(|| trials.iter().map(|t| (t.id, t)).collect());
        ById { trials, map }
    }

    fn get(&self, id: u64) -> Option<&'a Trial> {
        match &self.map {
            Some(map) => map.get(&id).copied(),
            None => {
                let trials = self.trials;
                trials
                    .binary_search_by_key(&id, |t| t.id)
                    .ok()
                    .map(|i| &trials[i])
            }
        }
    }
}

impl<'a> Observed<'a> {
    pub(super) fn new(v: &View<'a>) -> Observed<'a> {
        let mut machines = HashMap::new();
        let mut gone = HashMap::new();
        let by_id = ById::new(v.trials, v.open.is_some());
        let warm = Warm::new(v);
        for m in v.machines.iter().filter(|m| !stranger(&by_id, m)) {
            // A fresh slot serves no attempt yet.
            let Some(key) = warm.key(m) else { continue };
            match &m.gone {
                None => {
                    machines.entry(key).or_insert(m);
                }
                Some(why) => {
                    gone.insert(key, why.as_str());
                }
            }
        }
        let idle = warm.idle(v, |id| by_id.get(id));
        let pruner = match v.mode {
            Mode::Cancel => None,
            Mode::Run | Mode::Drain => Pruner::new(v.study, v.trials),
        };
        Observed {
            machines,
            gone,
            by_id,
            datasets: v
                .open_trials()
                .filter_map(|t| t.dataset.as_deref().map(|d| (d, t)))
                .collect(),
            pruner,
            spent: match v.mode {
                Mode::Run => v.study.run.limits.spent(v.trials, v.now),
                Mode::Drain | Mode::Cancel => None,
            },
            warm,
            idle,
        }
    }

    /// Whether this drive may touch `t`: in-scope trials and the datasets they need.
    fn in_scope(&self, v: &View, t: &Trial) -> bool {
        match v.scope {
            Scope::Budget(_) => true,
            Scope::Trials(ids) => {
                ids.contains(&t.id)
                    || t.dataset.as_ref().is_some_and(|d| {
                        ids.iter()
                            .any(|id| self.by_id.get(*id).is_some_and(|x| x.needs.contains(d)))
                    })
            }
        }
    }

    fn machine_of(&self, t: &Trial) -> Option<&'a Machine> {
        self.machines.get(&(t.id, t.attempt)).copied()
    }
}

/// Whether `m` was launched for another incarnation of its trial (a study deleted
/// and created again under its name): it is not this trial's machine.
fn stranger(by_id: &ById, m: &Machine) -> bool {
    m.incarnation
        .is_some_and(|c| by_id.get(m.trial).is_some_and(|t| t.created_ms != c))
}

/// What the per-trial steps found, for the steps after them.
#[derive(Default)]
pub(super) struct Plan<'a> {
    pub(super) actions: Vec<Action>,
    /// Attempts that go on (starting or running, not lost).
    active: u64,
    /// Trials that will want a machine (pending, or about to be retried).
    pending: u64,
    /// Pending trials that may launch now.
    launchable: Vec<&'a Trial>,
    /// Idle warm machines the plan gives an attempt or keeps for one to come.
    pub(super) warm_kept: HashSet<&'a str>,
}

/// A starting or running attempt: cancelled, lost (with its machine ended), pruned,
/// or going on.
pub(super) fn judge_active<'a>(
    v: &View<'a>,
    seen: &Observed<'a>,
    t: &'a Trial,
    plan: &mut Plan<'a>,
) {
    let scoped = seen.in_scope(v, t);
    if v.mode == Mode::Cancel && scoped {
        plan.actions.push(cancel(t, "cancelled"));
        return;
    }
    if unrecorded_launch(v, seen, t, plan) {
        return;
    }
    let lost = why_lost(v, seen, t);
    let prune = match (&lost, &seen.pruner) {
        (None, Some(p)) if scoped => p.check(t.id),
        _ => None,
    };
    if let Some(reason) = prune {
        plan.actions.push(Action::Prune {
            trial: t.id,
            attempt: t.attempt,
            reason,
        });
        return;
    }
    let Some(Lost { reason, loss }) = lost else {
        plan.active += 1;
        return;
    };
    // The record first: a machine is only ever ended by augur once its attempt is no
    // longer active, so an active attempt whose machine is gone was ended by the
    // cloud or by itself.
    plan.actions.push(Action::MarkLost {
        trial: t.id,
        attempt: t.attempt,
        from: t.state,
        reason: reason.clone(),
        loss,
    });
    if let Some(m) = seen.machine_of(t) {
        plan.actions.push(Action::Terminate {
            machine: m.clone(),
            reason,
        });
    }
}

/// A starting attempt on a cloud whose record names no machine: its launch's answer
/// was never recorded (a tick's deadline cut it, the answer was lost, a try failed,
/// its driver died). The machine the listing shows for it is adopted; with none, its
/// launch is asked again (not in a drain, which launches nothing) under the same
/// `ClientToken`, once a failed try's backoff is over; past [`MAX_LAUNCH_TRIES`]
/// tries the attempt is lost. Whether `t` was such an attempt.
fn unrecorded_launch<'a>(
    v: &View<'a>,
    seen: &Observed<'a>,
    t: &'a Trial,
    plan: &mut Plan<'a>,
) -> bool {
    if v.sees_all || t.state != TrialState::Starting || t.machine.is_some() {
        return false;
    }
    if let Some(m) = seen.machine_of(t) {
        plan.active += 1;
        plan.actions.push(Action::Adopt {
            trial: t.id,
            attempt: t.attempt,
            machine: m.clone(),
        });
        return true;
    }
    // A machine that ended, or a drain: as any starting attempt.
    if seen.gone.contains_key(&(t.id, t.attempt)) || v.mode != Mode::Run {
        return false;
    }
    if t.launch_tries >= MAX_LAUNCH_TRIES {
        let last = t.status.as_deref().unwrap_or("no answer");
        plan.actions.push(Action::MarkLost {
            trial: t.id,
            attempt: t.attempt,
            from: t.state,
            reason: format!("its launch was tried {} times ({last})", t.launch_tries),
            loss: Loss::Attempt,
        });
        return true;
    }
    plan.active += 1;
    if t.not_before_ms.is_none_or(|nb| nb <= v.now) {
        plan.actions.push(Action::ResumeLaunch {
            trial: t.id,
            attempt: t.attempt,
        });
    }
    true
}

/// Why an active attempt is lost.
struct Lost {
    reason: String,
    loss: Loss,
}

/// How an active attempt whose machine the provider lists as ended is lost: taken
/// away by the cloud, or ended by itself (or by someone) before or after its agent
/// reported. Reasons are EC2's state-reason codes ([`Machine::gone`]).
fn machine_ended(t: &Trial, why: &str) -> Lost {
    let (reason, loss) = if Machine::taken_away(why) {
        (
            format!("its machine was taken away ({why})"),
            Loss::Preempted,
        )
    } else if assigned(t) {
        (
            format!("its warm machine ended before it took the attempt ({why})"),
            Loss::Attempt,
        )
    } else if t.state == TrialState::Starting {
        (
            format!("its machine ended before its agent reported ({why})"),
            Loss::BootFailed,
        )
    } else {
        (
            format!("its machine ended under the running attempt ({why})"),
            Loss::Attempt,
        )
    };
    Lost { reason, loss }
}

/// Whether `t` is an attempt given to a warm machine, not yet taken.
fn assigned(t: &Trial) -> bool {
    t.state == TrialState::Starting && t.assigned && t.machine.is_some()
}

/// Whether an active attempt is lost, and why: its machine ended, its agent never
/// reported or went silent, or it hangs past its timeout.
fn why_lost(v: &View, seen: &Observed, t: &Trial) -> Option<Lost> {
    let machine = seen.machine_of(t);
    if machine.is_none() {
        if let Some(why) = seen.gone.get(&(t.id, t.attempt)) {
            return Some(machine_ended(t, why));
        }
    }
    let lost = |reason: String| {
        Some(Lost {
            reason,
            loss: Loss::Attempt,
        })
    };
    let launched = t.launched_ms.unwrap_or(t.created_ms);
    let vanished = machine.is_none() && v.sees_all && v.now - launched > LAUNCH_GRACE_MS;
    if t.state == TrialState::Starting {
        if vanished {
            return lost("its agent exited before it reported".into());
        }
        if assigned(t) && v.now - launched > ASSIGN_TIMEOUT_MS {
            return lost(format!(
                "its warm machine did not take it within {} s",
                ASSIGN_TIMEOUT_MS / 1000
            ));
        }
        if v.now - launched > v.drive.boot_timeout_ms {
            return lost(format!(
                "its machine did not report within {} s",
                v.drive.boot_timeout_ms / 1000
            ));
        }
        return None;
    }
    let beat = t.heartbeat_ms.unwrap_or(launched);
    if vanished {
        return lost("its agent process is gone".into());
    }
    // Silent past the heartbeat timeout, counted from when the driver could see the store too
    // (an agent cannot beat through the store's outage either); past the agent's
    // give-up horizon, whatever the driver saw.
    let silent = v.now - beat;
    let unseen = v.now - beat.max(v.seen_since);
    if unseen > v.drive.heartbeat_timeout_ms || silent > v.drive.give_up_ms {
        return lost(format!("no heartbeat for {} s", silent / 1000));
    }
    // The agent ends an attempt at its timeout; if it hangs (but still heart-beats),
    // its machine is ended a heartbeat timeout later.
    let grace = v.study.run.grace_ms as Millis + v.drive.heartbeat_timeout_ms;
    let timeout = v.study.attempt_timeout_ms(t)?;
    let over = t
        .started_ms
        .is_some_and(|s| v.now - s > timeout as Millis + grace);
    if over {
        return lost(format!(
            "exceeded its timeout of {} s and its agent did not end it",
            timeout / 1000
        ));
    }
    None
}

/// A lost or failed attempt: retried (with backoff) or cancelled, if it may have
/// another attempt.
pub(super) fn retry_or_cancel<'a>(
    v: &View<'a>,
    seen: &Observed<'a>,
    t: &'a Trial,
    plan: &mut Plan<'a>,
) {
    if !seen.in_scope(v, t) || !can_retry(v.study, t) {
        return;
    }
    if let Some(why) = &seen.spent {
        plan.actions.push(cancel(t, why));
        return;
    }
    match v.mode {
        Mode::Cancel => plan.actions.push(cancel(t, "cancelled")),
        Mode::Run => {
            let not_before = v.now + v.drive.backoff_ms(v.study.seed, t.id, t.attempt);
            plan.actions.push(Action::Retry {
                trial: t.id,
                attempt: t.attempt,
                from: t.state,
                not_before,
            });
            plan.pending += 1;
        }
        Mode::Drain => {}
    }
}

/// A pending trial: cancelled, failed because a dataset it needs failed for good,
/// waiting (for its backoff or its datasets), or ready to launch.
pub(super) fn judge_pending<'a>(
    v: &View<'a>,
    seen: &Observed<'a>,
    t: &'a Trial,
    plan: &mut Plan<'a>,
) {
    if !seen.in_scope(v, t) {
        return;
    }
    if v.mode == Mode::Cancel {
        plan.actions.push(cancel(t, "cancelled"));
        return;
    }
    if let Some(why) = &seen.spent {
        plan.actions.push(cancel(t, why));
        return;
    }
    let mut ready = t.not_before_ms.is_none_or(|nb| nb <= v.now);
    for d in &t.needs {
        match seen.datasets.get(d.as_str()) {
            Some(ds) if ds.state == TrialState::Succeeded => {}
            Some(ds) if settled(v.study, ds) => {
                plan.actions.push(Action::FailForDataset {
                    trial: t.id,
                    attempt: t.attempt,
                    dataset: d.clone(),
                });
                return;
            }
            _ => ready = false,
        }
    }
    plan.pending += 1;
    if ready {
        plan.launchable.push(t);
    }
}

fn cancel(t: &Trial, why: &str) -> Action {
    Action::Cancel {
        trial: t.id,
        attempt: t.attempt,
        from: t.state,
        why: why.to_string(),
    }
}

/// Launches within `parallel` (datasets first: trials wait for them), each on an
/// idle warm machine while there is one (the longest idle first), and proposals of
/// new trials within the budget. Idle machines left over are kept for the attempts
/// still to come, as many as may come.
pub(super) fn plan_launches<'a>(v: &View<'a>, seen: &Observed<'a>, plan: &mut Plan<'a>) {
    let parallel = v.study.parallel as u64;
    let free = parallel.saturating_sub(plan.active) as usize;
    plan.launchable.sort_by_key(|t| (!t.is_dataset(), t.id));
    let mut idle = seen.idle.iter();
    let launched = plan.launchable.len().min(free);
    // Slots still to come on machines booting, which trials wait for.
    let mut spare = super::slots::coming(v, &seen.idle);
    for t in &plan.launchable[..launched] {
        plan.actions.push(match idle.next() {
            Some(i) => {
                plan.warm_kept.insert(i.machine);
                Action::Assign {
                    trial: t.id,
                    attempt: t.attempt,
                    machine: i.machine.to_string(),
                    billing: i.billing.cloned(),
                }
            }
            None if spare > 0 => {
                spare -= 1;
                continue;
            }
            None => {
                spare += v.slots.saturating_sub(1) as u64;
                Action::Launch {
                    trial: t.id,
                    attempt: t.attempt,
                }
            }
        });
    }
    let mut to_come = plan.pending - launched as u64;
    if let Scope::Budget(budget) = v.scope {
        let room = parallel.saturating_sub(plan.active + plan.pending);
        let count = room.min(budget.saturating_sub(created(v)));
        if count > 0 && !v.exhausted && seen.spent.is_none() {
            // Created to launch at once, unless they share machines: then they
            // are placed next pass, launches counted against the slots to come.
            let launch = idle.len() == 0 && v.slots <= 1;
            plan.actions.push(Action::Propose { count, launch });
            to_come += count;
        }
    }
    // The most recently idle wait longest.
    for i in idle.rev().take(to_come as usize) {
        plan.warm_kept.insert(i.machine);
    }
}

/// Trials created so far (datasets are not trials of the budget).
fn created(v: &View) -> u64 {
    let datasets = v.open_trials().filter(|t| t.is_dataset()).count();
    (v.trials.len() - datasets) as u64
}

/// The orphan sweep: every live machine whose trial is final, unknown or at another
/// attempt, or that is a second machine for its attempt, is ended. The agent of a
/// pruned trial stops its script itself at its next heartbeat; its machine is ended
/// only if it has not gone within the stop grace. Returns whether such a machine is
/// still winding down.
pub(super) fn sweep_machines(
    v: &View,
    seen: &Observed,
    warm_kept: &HashSet<&str>,
    out: &mut Vec<Action>,
) -> bool {
    let mut winding_down = false;
    for m in v.machines.iter().filter(|m| m.gone.is_none()) {
        if warm_kept.contains(m.id.as_str()) {
            continue;
        }
        let Some((id, attempt)) = seen.warm.key(m) else {
            out.push(Action::Terminate {
                machine: m.clone(),
                reason: "a slot of it no attempt of the study is left for".into(),
            });
            continue;
        };
        let first = seen
            .machines
            .get(&(id, attempt))
            .is_some_and(|f| f.id == m.id);
        let trial = seen.by_id.get(id);
        let stopping = |t: &Trial| pruned_in_grace(v.study, v.drive, t, v.now);
        let keep = first
            && trial.is_some_and(|t| {
                t.attempt == attempt
                    && ((t.state.is_active() && !(v.mode == Mode::Cancel && seen.in_scope(v, t)))
                        || (stopping(t) && v.mode != Mode::Cancel)
                        || going_back(v, t))
            });
        if keep {
            winding_down |= trial.is_some_and(stopping);
            continue;
        }
        let reason = match trial {
            _ if stranger(&seen.by_id, m) => {
                "launched for an earlier study of the same name (deleted)".to_string()
            }
            _ if !first => format!("a second machine for attempt {attempt}"),
            None => format!("study `{}` has no trial {id}", v.study.name),
            Some(t) if t.attempt != attempt => {
                format!("attempt {attempt} superseded by {}", t.attempt)
            }
            Some(t) if t.state == TrialState::Pruned => {
                "trial is pruned and its agent did not stop in time".to_string()
            }
            Some(t) if v.warm && t.leaves_machine_warm() => {
                "idle warm machine, and no attempt of the study is left for it".to_string()
            }
            Some(t) => format!("trial is {}", t.state),
        };
        out.push(Action::Terminate {
            machine: m.clone(),
            reason,
        });
    }
    winding_down
}

/// Whether `t`'s machine is a pooled agent on its way back to its provider: its
/// attempt ended by itself a moment ago, and the provider has not yet heard it say
/// idle. Ended now, it would be ended in the middle of the next attempt the
/// provider hands it; one still listed so after two heartbeats hangs, and is ended.
fn going_back(v: &View, t: &Trial) -> bool {
    v.pooled
        && t.leaves_machine_warm()
        && v.now - t.finished_ms.unwrap_or(0) < 2 * v.drive.heartbeat_ms
}

/// The end: every trial in scope settled, nothing left to propose (or cancelling),
/// nothing else to do but end machines, none winding down. On a listing that may be
/// stale, a fresh one is asked for first.
pub(super) fn finish(v: &View, seen: &Observed, winding_down: bool, out: &mut Vec<Action>) {
    let all_settled = v
        .open_trials()
        .filter(|t| seen.in_scope(v, t))
        .all(|t| settled(v.study, t));
    let nothing_to_add = match v.scope {
        Scope::Budget(budget) => v.exhausted || created(v) >= *budget || seen.spent.is_some(),
        Scope::Trials(_) => true,
    };
    let quiet = out.iter().all(|a| matches!(a, Action::Terminate { .. }));
    if all_settled && (nothing_to_add || v.mode == Mode::Cancel) && quiet && !winding_down {
        out.push(if v.sees_all || v.fresh_listing {
            Action::Finish {
                budget_spent: seen.spent.is_some(),
            }
        } else {
            Action::Relist
        });
    }
}
