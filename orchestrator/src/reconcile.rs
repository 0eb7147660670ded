//! The reconciler's decision: a pure function of the observed state.
//!
//! `decide` looks at the whole study every tick (level-triggered), so a restarted
//! orchestrator, or the next serverless tick, simply continues: nothing in memory
//! matters. Executors apply the actions through the store and the machine provider,
//! each one a conditional write or an idempotent call.

use augur_model::prune::Pruner;
use augur_model::{Millis, Study, Trial, TrialState};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Timing policy of the reconciler.
#[derive(Clone, Debug)]
pub struct Timing {
    /// A running trial whose last heartbeat is older than this is lost.
    pub lease_ms: Millis,
    /// A starting trial whose agent has not reported after this long is lost.
    pub boot_timeout_ms: Millis,
    /// Grace after a launch before a machine missing from the listing counts as gone.
    pub launch_grace_ms: Millis,
    /// Retry backoff: full jitter over `min(cap, base * 2^(n-1))` for retry n.
    pub backoff_base_ms: Millis,
    pub backoff_cap_ms: Millis,
    /// Launches that never reached the script (machine never booted, agent died at
    /// once) do not use up `max_attempts`; this many are tolerated per trial.
    pub max_launch_failures: u32,
    /// How often agents write their heartbeat (and with it the metric series). The
    /// agent of a pruned trial has two of these, plus the study's `grace`, to see it
    /// and end its script before its machine is ended for it.
    pub heartbeat_ms: Millis,
    /// The largest difference between two machines' clocks that leases tolerate. A
    /// driver's lease is written with the holder's clock and read with the taker's:
    /// it is taken over only this long after it expired by the taker's clock. (The
    /// heartbeat lease compares the agent's clock with the driver's; its margin is
    /// `lease_ms` minus the heartbeat interval, 70 s by default on AWS.)
    pub clock_skew_ms: Millis,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            lease_ms: 30_000,
            boot_timeout_ms: 60_000,
            launch_grace_ms: 2_000,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 60_000,
            max_launch_failures: 5,
            heartbeat_ms: 2_000,
            clock_skew_ms: 5_000,
        }
    }
}

impl Timing {
    /// The delay before retry `n` (1-based) of trial `id`: capped exponential backoff
    /// with full jitter, drawn from a generator seeded by the study seed, trial and
    /// attempt, so the decision stays a pure function.
    pub fn backoff_ms(&self, seed: u64, id: u64, n: u32) -> Millis {
        let exp = self
            .backoff_base_ms
            .saturating_mul(1i64 << n.saturating_sub(1).min(30));
        let ceiling = exp.min(self.backoff_cap_ms).max(0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ id.rotate_left(32) ^ n as u64);
        if ceiling == 0 {
            0
        } else {
            rng.gen_range(0..=ceiling)
        }
    }
}

/// A machine as the provider sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Provider's id (pid, instance id).
    pub id: String,
    pub trial: u64,
    pub attempt: u32,
    /// `Some(why)` when the provider lists the machine as ended (an EC2 instance
    /// shutting down or terminated, with its state-reason code): if its attempt is
    /// still active, the machine was taken away (a spot reclaim, a termination
    /// outside augur) and the attempt is a preemption, not a failure of the trial.
    pub gone: Option<String>,
}

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
    pub trials: &'a [Trial],
    pub machines: &'a [Machine],
    pub scope: &'a Scope,
    pub mode: Mode,
    /// The oracle said it has no more points.
    pub exhausted: bool,
    /// A trial missing from `machines` certainly has no machine (local processes).
    pub sees_all: bool,
    pub timing: &'a Timing,
    pub now: Millis,
}

/// One step for the executor.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `pending → starting` and ask the provider for a machine.
    Launch { trial: u64, attempt: u32 },
    /// `starting|running → lost`.
    MarkLost {
        trial: u64,
        attempt: u32,
        from: TrialState,
        reason: String,
        /// Its machine was taken away: counts against `max_preemptions`, not
        /// `max_attempts`.
        preempted: bool,
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
    /// `pending|starting|running → cancelled`.
    Cancel {
        trial: u64,
        attempt: u32,
        from: TrialState,
    },
    /// `pending → failed` because a dataset it needs failed for good.
    FailForDataset {
        trial: u64,
        attempt: u32,
        dataset: String,
    },
    /// End a machine (its trial is final, unknown, or moved to another attempt).
    Terminate {
        machine: String,
        trial: u64,
        reason: String,
    },
    /// Create this many new trials from the oracle.
    Propose { count: u64 },
    /// Every trial in scope is final.
    Finish,
}

/// Whether the trial may have another attempt.
pub fn can_retry(study: &Study, timing: &Timing, t: &Trial) -> bool {
    let unstarted = t
        .attempt
        .saturating_sub(t.runs.saturating_add(t.preemptions));
    match t.state {
        TrialState::Lost => {
            t.runs < study.run.max_attempts
                && t.preemptions <= study.run.max_preemptions
                && unstarted <= timing.max_launch_failures
        }
        TrialState::Failed => {
            (t.retryable || study.run.retry_on_failure)
                && t.runs < study.run.max_attempts
                && unstarted <= timing.max_launch_failures
        }
        _ => false,
    }
}

/// Whether nothing more will happen to the trial (without a new `augur run`).
pub fn settled(study: &Study, timing: &Timing, t: &Trial) -> bool {
    match t.state {
        TrialState::Succeeded | TrialState::Cancelled | TrialState::Pruned => true,
        TrialState::Failed | TrialState::Lost => !can_retry(study, timing, t),
        TrialState::Pending | TrialState::Starting | TrialState::Running => false,
    }
}

/// Whether `t` was pruned so recently that its agent may still be ending the script
/// and sending its last lines (two heartbeats plus the study's `grace`): its machine
/// is left alone until then.
pub fn pruned_in_grace(study: &Study, timing: &Timing, t: &Trial, now: Millis) -> bool {
    t.state == TrialState::Pruned
        && now - t.finished_ms.unwrap_or(0) < 2 * timing.heartbeat_ms + study.run.grace_ms as Millis
}

/// Why `augur gc` ends a live machine nobody drives, if it should: its study is not
/// recorded, its trial is unknown, final (a pruned one past its grace) or at another
/// attempt. A machine of an active attempt is left to the study's driver.
pub fn orphan_reason(
    study: Option<(&Study, &[Trial])>,
    m: &Machine,
    timing: &Timing,
    now: Millis,
) -> Option<String> {
    let Some((spec, trials)) = study else {
        return Some("its study is not recorded (deleted?)".into());
    };
    let Some(t) = trials.iter().find(|t| t.id == m.trial) else {
        return Some(format!("study `{}` has no trial {}", spec.name, m.trial));
    };
    if t.attempt != m.attempt {
        return Some(format!("attempt {} superseded by {}", m.attempt, t.attempt));
    }
    if t.state.is_active() || pruned_in_grace(spec, timing, t, now) {
        return None;
    }
    Some(format!("trial is {}", t.state))
}

/// Trials looked up by id.
struct ById<'a> {
    trials: &'a [Trial],
    sorted: bool,
    map: HashMap<u64, &'a Trial>,
}

impl<'a> ById<'a> {
    fn get(&self, id: &u64) -> Option<&'a Trial> {
        if self.sorted {
            let trials = self.trials;
            trials
                .binary_search_by_key(id, |t| t.id)
                .ok()
                .map(|i| &trials[i])
        } else {
            self.map.get(id).copied()
        }
    }
}

/// The decision. See the module docs.
pub fn decide(v: &View) -> Vec<Action> {
    let mut out = Vec::new();
    // The first machine listed for an attempt is its machine; any other is a duplicate.
    let mut machines: HashMap<(u64, u32), &Machine> = HashMap::new();
    let mut gone: HashMap<(u64, u32), &str> = HashMap::new();
    for m in v.machines {
        match &m.gone {
            None => {
                machines.entry((m.trial, m.attempt)).or_insert(m);
            }
            Some(why) => {
                gone.insert((m.trial, m.attempt), why);
            }
        }
    }
    // Trials by id: a binary search when they come sorted (a driver's cache always
    // does), else a map; decide runs every pass over every trial of the study.
    let sorted = v.trials.windows(2).all(|w| w[0].id < w[1].id);
    let map: HashMap<u64, &Trial> = if sorted {
        HashMap::new()
    } else {
        v.trials.iter().map(|t| (t.id, t)).collect()
    };
    let by_id = ById {
        trials: v.trials,
        sorted,
        map,
    };
    let datasets: BTreeMap<&str, &Trial> = v
        .trials
        .iter()
        .filter_map(|t| t.dataset.as_deref().map(|d| (d, t)))
        .collect();

    // Which trials this drive may touch: in-scope trials and the datasets they need.
    let in_scope = |t: &Trial| -> bool {
        match v.scope {
            Scope::Budget(_) => true,
            Scope::Trials(ids) => {
                ids.contains(&t.id)
                    || t.dataset.as_ref().is_some_and(|d| {
                        ids.iter()
                            .any(|id| by_id.get(id).is_some_and(|x| x.needs.contains(d)))
                    })
            }
        }
    };

    let pruner = match v.mode {
        Mode::Cancel => None,
        Mode::Run | Mode::Drain => Pruner::new(v.study, v.trials),
    };
    let mut active = 0u64;
    let mut launchable: Vec<&Trial> = Vec::new();
    let mut pending = 0u64;
    for t in v.trials {
        let scoped = in_scope(t);
        let machine = machines.get(&(t.id, t.attempt));
        match t.state {
            TrialState::Starting | TrialState::Running => {
                if v.mode == Mode::Cancel && scoped {
                    out.push(Action::Cancel {
                        trial: t.id,
                        attempt: t.attempt,
                        from: t.state,
                    });
                    continue;
                }
                let launched = t.launched_ms.unwrap_or(t.created_ms);
                let taken = match (machine, gone.get(&(t.id, t.attempt))) {
                    (None, Some(why)) => Some(format!("its machine was taken away ({why})")),
                    _ => None,
                };
                let timeout = t
                    .dataset
                    .as_ref()
                    .and_then(|d| v.study.datasets.iter().find(|s| s.render(&t.params) == *d))
                    .map_or(v.study.run.timeout_ms, |d| d.timeout_ms);
                let lost = if taken.is_some() {
                    taken.clone()
                } else if t.state == TrialState::Starting {
                    if machine.is_none()
                        && v.sees_all
                        && v.now - launched > v.timing.launch_grace_ms
                    {
                        Some("its agent exited before it reported".to_string())
                    } else if v.now - launched > v.timing.boot_timeout_ms {
                        Some(format!(
                            "its machine did not report within {} s",
                            v.timing.boot_timeout_ms / 1000
                        ))
                    } else {
                        None
                    }
                } else {
                    let beat = t.heartbeat_ms.unwrap_or(launched);
                    if machine.is_none()
                        && v.sees_all
                        && v.now - launched > v.timing.launch_grace_ms
                    {
                        Some("its agent process is gone".to_string())
                    } else if v.now - beat > v.timing.lease_ms {
                        Some(format!("no heartbeat for {} s", (v.now - beat) / 1000))
                    } else {
                        // The agent ends an attempt at its timeout; if it hangs (but
                        // still heart-beats), its machine is ended a lease later.
                        let grace = v.study.run.grace_ms as Millis + v.timing.lease_ms;
                        timeout
                            .filter(|ms| {
                                t.started_ms
                                    .is_some_and(|s| v.now - s > *ms as Millis + grace)
                            })
                            .map(|ms| {
                                format!(
                                    "exceeded its timeout of {} s and its agent did not end it",
                                    ms / 1000
                                )
                            })
                    }
                };
                let prune = match (&lost, &pruner) {
                    (None, Some(p)) if scoped => p.check(t.id),
                    _ => None,
                };
                if let Some(reason) = prune {
                    out.push(Action::Prune {
                        trial: t.id,
                        attempt: t.attempt,
                        reason,
                    });
                    continue;
                }
                match lost {
                    Some(reason) => {
                        // The record first: a machine is only ever ended by augur once
                        // its attempt is no longer active, so an active attempt whose
                        // machine is gone was preempted.
                        out.push(Action::MarkLost {
                            trial: t.id,
                            attempt: t.attempt,
                            from: t.state,
                            reason: reason.clone(),
                            preempted: taken.is_some(),
                        });
                        if let Some(m) = machine {
                            out.push(Action::Terminate {
                                machine: m.id.clone(),
                                trial: t.id,
                                reason,
                            });
                        }
                    }
                    None => active += 1,
                }
            }
            TrialState::Lost | TrialState::Failed => {
                if scoped && v.mode == Mode::Cancel && can_retry(v.study, v.timing, t) {
                    out.push(Action::Cancel {
                        trial: t.id,
                        attempt: t.attempt,
                        from: t.state,
                    });
                } else if scoped && v.mode == Mode::Run && can_retry(v.study, v.timing, t) {
                    let n = t.attempt;
                    let not_before = v.now + v.timing.backoff_ms(v.study.seed, t.id, n);
                    out.push(Action::Retry {
                        trial: t.id,
                        attempt: t.attempt,
                        from: t.state,
                        not_before,
                    });
                    pending += 1;
                }
            }
            TrialState::Pending => {
                if !scoped {
                    continue;
                }
                if v.mode == Mode::Cancel {
                    out.push(Action::Cancel {
                        trial: t.id,
                        attempt: t.attempt,
                        from: t.state,
                    });
                    continue;
                }
                pending += 1;
                let mut ready = t.not_before_ms.is_none_or(|nb| nb <= v.now);
                for d in &t.needs {
                    match datasets.get(d.as_str()) {
                        Some(ds) if ds.state == TrialState::Succeeded => {}
                        Some(ds) if settled(v.study, v.timing, ds) => {
                            out.push(Action::FailForDataset {
                                trial: t.id,
                                attempt: t.attempt,
                                dataset: d.clone(),
                            });
                            ready = false;
                            pending -= 1;
                            break;
                        }
                        _ => ready = false,
                    }
                }
                if ready {
                    launchable.push(t);
                }
            }
            TrialState::Succeeded | TrialState::Cancelled | TrialState::Pruned => {}
        }
    }

    if v.mode == Mode::Run {
        let parallel = v.study.parallel as u64;
        let mut free = parallel.saturating_sub(active);
        // Datasets first: trials wait for them.
        launchable.sort_by_key(|t| (!t.is_dataset(), t.id));
        for t in launchable {
            if free == 0 {
                break;
            }
            out.push(Action::Launch {
                trial: t.id,
                attempt: t.attempt,
            });
            free -= 1;
        }
        if let Scope::Budget(budget) = v.scope {
            let created = v.trials.iter().filter(|t| !t.is_dataset()).count() as u64;
            let room = parallel.saturating_sub(active + pending);
            let count = room.min(budget.saturating_sub(created));
            if count > 0 && !v.exhausted {
                out.push(Action::Propose { count });
            }
        }
    }

    // Orphan sweep, after the state changes above: a trial is cancelled before its
    // machine is told to stop, so the agent's own final write cannot win that race.
    // A machine whose trial is final, unknown or at another attempt is ended.
    // The agent of a pruned trial stops its script itself at its next heartbeat; its
    // machine is ended only if it has not gone within the stop grace.
    let mut winding_down = false;
    for m in v.machines.iter().filter(|m| m.gone.is_none()) {
        let first = machines
            .get(&(m.trial, m.attempt))
            .is_some_and(|f| f.id == m.id);
        let stopping = |t: &Trial| pruned_in_grace(v.study, v.timing, t, v.now);
        let keep = first
            && by_id.get(&m.trial).is_some_and(|t| {
                t.attempt == m.attempt
                    && ((t.state.is_active() && !(v.mode == Mode::Cancel && in_scope(t)))
                        || (stopping(t) && v.mode != Mode::Cancel))
            });
        if keep && by_id.get(&m.trial).is_some_and(stopping) {
            winding_down = true;
        }
        if !keep {
            let reason = match by_id.get(&m.trial) {
                _ if !first => format!("a second machine for attempt {}", m.attempt),
                None => "no such trial".to_string(),
                Some(t) if t.attempt != m.attempt => {
                    format!("attempt {} superseded by {}", m.attempt, t.attempt)
                }
                Some(t) if t.state == TrialState::Pruned => {
                    "trial is pruned and its agent did not stop in time".to_string()
                }
                Some(t) => format!("trial is {}", t.state),
            };
            out.push(Action::Terminate {
                machine: m.id.clone(),
                trial: m.trial,
                reason,
            });
        }
    }

    let all_settled = v
        .trials
        .iter()
        .filter(|t| in_scope(t))
        .all(|t| settled(v.study, v.timing, t));
    let nothing_to_add = match v.scope {
        Scope::Budget(budget) => {
            v.exhausted || v.trials.iter().filter(|t| !t.is_dataset()).count() as u64 >= *budget
        }
        Scope::Trials(_) => true,
    };
    let quiet = out.iter().all(|a| matches!(a, Action::Terminate { .. }));
    if all_settled && (nothing_to_add || v.mode == Mode::Cancel) && quiet && !winding_down {
        out.push(Action::Finish);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::{Params, TrialUpdate};
    use std::path::Path;

    fn study(extra: &str) -> Study {
        Study::parse(
            &format!("name='s'\nobjective={{metric='m'}}\ntrials=4\nparallel=2\n{extra}\n[run]\nscript='true'\nmax_attempts=2\n"),
            "t",
            Path::new("."),
        )
        .unwrap()
    }

    fn trial(id: u64, state: TrialState) -> Trial {
        let mut t = Trial::new("s", id, id - 1, 0, Params::new(), 0);
        t.state = state;
        t.launched_ms = Some(0);
        t.heartbeat_ms = Some(0);
        t
    }

    fn run(study: &Study, trials: &[Trial], machines: &[Machine], now: Millis) -> Vec<Action> {
        let timing = Timing::default();
        decide(&View {
            study,
            trials,
            machines,
            scope: &Scope::Budget(study.trials),
            mode: Mode::Run,
            exhausted: false,
            sees_all: true,
            timing: &timing,
            now,
        })
    }

    fn m(trial: u64, attempt: u32) -> Machine {
        Machine {
            id: format!("pid{trial}"),
            trial,
            attempt,
            gone: None,
        }
    }

    #[test]
    fn a_machine_taken_away_is_a_preemption_not_a_run() {
        let s = study("");
        let mut t = trial(1, TrialState::Running);
        t.runs = 1;
        t.started_ms = Some(0);
        let reclaimed = Machine {
            gone: Some("Server.SpotInstanceTermination".into()),
            ..m(1, 1)
        };
        // Seen at once, without waiting for the heartbeat lease, on a provider that
        // does not see all its machines (EC2).
        let timing = Timing::default();
        let a = decide(&View {
            study: &s,
            trials: std::slice::from_ref(&t),
            machines: std::slice::from_ref(&reclaimed),
            scope: &Scope::Budget(s.trials),
            mode: Mode::Run,
            exhausted: false,
            sees_all: false,
            timing: &timing,
            now: 10,
        });
        assert_eq!(
            a.first(),
            Some(&Action::MarkLost {
                trial: 1,
                attempt: 1,
                from: TrialState::Running,
                reason: "its machine was taken away (Server.SpotInstanceTermination)".into(),
                preempted: true,
            })
        );
        assert!(
            !a.iter().any(|x| matches!(x, Action::Terminate { .. })),
            "an ended machine is not ended again: {a:?}"
        );
        // The write makes it a preemption: max_attempts (2) is not used up, however
        // many reclaims, until max_preemptions.
        let mut rec = t.clone();
        for n in 1..=25u32 {
            TrialUpdate {
                state: Some(TrialState::Lost),
                preempted: true,
                ..Default::default()
            }
            .apply(&mut rec);
            assert_eq!(rec.runs, 0);
            assert_eq!(rec.preemptions, n);
            assert_eq!(can_retry(&s, &timing, &rec), n <= 20, "after {n} reclaims");
            rec.attempt += 1;
            rec.state = TrialState::Running;
            rec.runs = 1;
        }
        // A live machine for the attempt wins over an ended duplicate.
        let a = run(&s, std::slice::from_ref(&t), &[m(1, 1), reclaimed], 10);
        assert!(
            a.is_empty() || !a.iter().any(|x| matches!(x, Action::MarkLost { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn a_hung_attempt_past_its_timeout_is_ended_even_while_it_heartbeats() {
        let s = Study::parse(
            "name='s'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\ntimeout='60s'\ngrace='5s'\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        let mut t = trial(1, TrialState::Running);
        t.started_ms = Some(0);
        let limit = 60_000 + 5_000 + Timing::default().lease_ms;
        t.heartbeat_ms = Some(limit);
        assert!(run(&s, std::slice::from_ref(&t), &[m(1, 1)], limit).is_empty());
        t.heartbeat_ms = Some(limit + 1);
        let a = run(&s, std::slice::from_ref(&t), &[m(1, 1)], limit + 1);
        assert!(
            matches!(&a[..], [Action::MarkLost { reason, preempted: false, .. }, Action::Terminate { .. }] if reason.contains("timeout of 60 s")),
            "{a:?}"
        );
    }

    #[test]
    fn proposes_up_to_parallel_and_budget() {
        let s = study("");
        assert_eq!(run(&s, &[], &[], 0), vec![Action::Propose { count: 2 }]);
        let ts = [
            trial(1, TrialState::Succeeded),
            trial(2, TrialState::Succeeded),
            trial(3, TrialState::Running),
        ];
        assert_eq!(
            run(&s, &ts, &[m(3, 1)], 10),
            vec![Action::Propose { count: 1 }]
        );
        let ts = [
            trial(1, TrialState::Succeeded),
            trial(2, TrialState::Succeeded),
            trial(3, TrialState::Running),
            trial(4, TrialState::Running),
        ];
        assert!(run(&s, &ts, &[m(3, 1), m(4, 1)], 10).is_empty());
    }

    #[test]
    fn launches_pending_within_capacity() {
        let s = study("");
        let ts = [
            trial(1, TrialState::Pending),
            trial(2, TrialState::Pending),
            trial(3, TrialState::Pending),
        ];
        let a = run(&s, &ts, &[], 0);
        assert_eq!(
            a,
            vec![
                Action::Launch {
                    trial: 1,
                    attempt: 1
                },
                Action::Launch {
                    trial: 2,
                    attempt: 1
                }
            ]
        );
    }

    #[test]
    fn vanished_agent_is_lost_then_retried_with_backoff() {
        let s = study("");
        let mut t = trial(1, TrialState::Running);
        t.runs = 1;
        let a = run(&s, &[t.clone()], &[], 5_000);
        assert!(
            matches!(
                &a[0],
                Action::MarkLost {
                    trial: 1,
                    from: TrialState::Running,
                    ..
                }
            ),
            "{a:?}"
        );
        t.state = TrialState::Lost;
        let a = run(&s, &[t.clone()], &[], 5_000);
        match &a[0] {
            Action::Retry {
                trial: 1,
                attempt: 1,
                not_before,
                ..
            } => assert!((5_000..=6_000).contains(not_before)),
            other => panic!("{other:?}"),
        }
        // Out of attempts: settled, nothing more.
        t.runs = 2;
        t.attempt = 2;
        let a = run(&s, &[t], &[], 5_000);
        assert!(
            !a.iter().any(|x| matches!(x, Action::Retry { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn silent_agent_loses_its_lease_and_its_machine() {
        let s = study("");
        let t = trial(1, TrialState::Running);
        assert!(run(&s, std::slice::from_ref(&t), &[m(1, 1)], 29_000)
            .iter()
            .all(|a| matches!(a, Action::Propose { .. })));
        let a = run(&s, &[t], &[m(1, 1)], 31_000);
        assert!(
            a.contains(&Action::Terminate {
                machine: "pid1".into(),
                trial: 1,
                reason: "no heartbeat for 31 s".into()
            }),
            "{a:?}"
        );
        assert!(a.iter().any(|x| matches!(x, Action::MarkLost { .. })));
    }

    #[test]
    fn orphan_machines_are_swept() {
        let s = study("");
        let a = run(
            &s,
            &[trial(1, TrialState::Succeeded)],
            &[m(1, 1), m(9, 1)],
            10,
        );
        assert!(
            a.iter()
                .filter(|x| matches!(x, Action::Terminate { .. }))
                .count()
                == 2,
            "{a:?}"
        );
    }

    #[test]
    fn a_second_machine_for_one_attempt_is_terminated() {
        let s = study("");
        let dup = Machine {
            id: "i-2".into(),
            trial: 1,
            attempt: 1,
            gone: None,
        };
        let a = run(&s, &[trial(1, TrialState::Running)], &[m(1, 1), dup], 10);
        let terms: Vec<&Action> = a
            .iter()
            .filter(|x| matches!(x, Action::Terminate { .. }))
            .collect();
        assert_eq!(terms.len(), 1, "{a:?}");
        assert!(matches!(terms[0], Action::Terminate { machine, .. } if machine == "i-2"));
    }

    #[test]
    fn pruning_stops_a_trial_then_gives_its_agent_time_before_ending_its_machine() {
        let s = study("[prune]\nrule='median'\nmin_trials=1");
        let curve = |t: &mut Trial, losses: &[f64]| {
            t.series = losses
                .iter()
                .enumerate()
                .map(|(i, l)| augur_model::MetricPoint {
                    t_ms: i as Millis,
                    values: [("step".to_string(), (i + 1) as f64), ("m".to_string(), *l)].into(),
                })
                .collect();
        };
        let mut done = trial(1, TrialState::Succeeded);
        curve(&mut done, &[0.5, 0.4, 0.3]);
        let mut bad = trial(2, TrialState::Running);
        bad.heartbeat_ms = Some(9);
        curve(&mut bad, &[0.9, 0.8]);
        let a = run(&s, &[done.clone(), bad.clone()], &[m(2, 1)], 10);
        assert!(
            matches!(&a[0], Action::Prune { trial: 2, attempt: 1, reason } if reason.starts_with("median rule")),
            "{a:?}"
        );
        assert!(
            !a.iter().any(|x| matches!(x, Action::Terminate { .. })),
            "the agent stops its script itself: {a:?}"
        );
        // Pruned, machine still there: kept within the grace, and the study waits for it.
        let mut ts = vec![done, bad];
        ts[1].state = TrialState::Pruned;
        ts[1].finished_ms = Some(10);
        let mut all: Vec<Trial> = (3..=4).map(|i| trial(i, TrialState::Succeeded)).collect();
        all.extend(ts);
        let a = run(&s, &all, &[m(2, 1)], 1_000);
        assert!(a.is_empty(), "{a:?}");
        // Past the grace (two heartbeats + run.grace), the machine is ended for it.
        let late = 10 + 2 * Timing::default().heartbeat_ms + s.run.grace_ms as Millis + 1;
        let a = run(&s, &all, &[m(2, 1)], late);
        assert!(
            matches!(&a[0], Action::Terminate { reason, .. } if reason.contains("did not stop in time")),
            "{a:?}"
        );
        assert_eq!(run(&s, &all, &[], late), vec![Action::Finish]);
    }

    #[test]
    fn finishes_when_budget_spent_and_all_settled() {
        let s = study("");
        let ts: Vec<Trial> = (1..=4).map(|i| trial(i, TrialState::Succeeded)).collect();
        assert_eq!(run(&s, &ts, &[], 10), vec![Action::Finish]);
        let mut ts2 = ts.clone();
        ts2[3].state = TrialState::Failed;
        assert_eq!(run(&s, &ts2, &[], 10), vec![Action::Finish]);
    }

    #[test]
    fn backoff_is_capped_jittered_and_reproducible() {
        let t = Timing {
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
            ..Timing::default()
        };
        for n in 1..20 {
            let d = t.backoff_ms(7, 3, n);
            assert!(
                d <= (100i64 << (n - 1).min(30)).min(1_000),
                "retry {n}: {d}"
            );
            assert_eq!(d, t.backoff_ms(7, 3, n));
        }
        let spread: BTreeSet<Millis> = (0..50).map(|id| t.backoff_ms(7, id, 5)).collect();
        assert!(spread.len() > 10, "jitter: {spread:?}");
    }

    #[test]
    fn cancel_mode_cancels_everything_unsettled() {
        let s = study("");
        let ts = [
            trial(1, TrialState::Pending),
            trial(2, TrialState::Running),
            trial(3, TrialState::Succeeded),
        ];
        let timing = Timing::default();
        let a = decide(&View {
            study: &s,
            trials: &ts,
            machines: &[m(2, 1)],
            scope: &Scope::Budget(4),
            mode: Mode::Cancel,
            exhausted: false,
            sees_all: true,
            timing: &timing,
            now: 10,
        });
        assert!(a.contains(&Action::Cancel {
            trial: 1,
            attempt: 1,
            from: TrialState::Pending
        }));
        assert!(a.contains(&Action::Cancel {
            trial: 2,
            attempt: 1,
            from: TrialState::Running
        }));
        let cancel = a
            .iter()
            .position(|x| matches!(x, Action::Cancel { trial: 2, .. }));
        let term = a
            .iter()
            .position(|x| matches!(x, Action::Terminate { trial: 2, .. }));
        assert!(
            term.is_some() && cancel < term,
            "cancel before terminate: {a:?}"
        );
        assert!(!a.contains(&Action::Finish));
        // A retry still to come is cancelled too, so the stop can finish.
        let mut f = trial(4, TrialState::Failed);
        f.retryable = true;
        let a = decide(&View {
            study: &s,
            trials: &[f],
            machines: &[],
            scope: &Scope::Budget(4),
            mode: Mode::Cancel,
            exhausted: false,
            sees_all: true,
            timing: &timing,
            now: 10,
        });
        assert_eq!(
            a,
            vec![Action::Cancel {
                trial: 4,
                attempt: 1,
                from: TrialState::Failed
            }]
        );
    }

    #[test]
    fn trials_wait_for_datasets_and_fail_with_them() {
        let s = study("");
        let mut d = trial(1, TrialState::Running);
        d.dataset = Some("data".into());
        let mut t = trial(2, TrialState::Pending);
        t.needs = vec!["data".into()];
        let a = run(&s, &[d.clone(), t.clone()], &[m(1, 1)], 10);
        assert!(
            !a.iter()
                .any(|x| matches!(x, Action::Launch { trial: 2, .. })),
            "{a:?}"
        );
        d.state = TrialState::Succeeded;
        let a = run(&s, &[d.clone(), t.clone()], &[], 10);
        assert!(
            a.contains(&Action::Launch {
                trial: 2,
                attempt: 1
            }),
            "{a:?}"
        );
        d.state = TrialState::Failed;
        let a = run(&s, &[d, t], &[], 10);
        assert!(
            a.contains(&Action::FailForDataset {
                trial: 2,
                attempt: 1,
                dataset: "data".into()
            }),
            "{a:?}"
        );
    }
}
