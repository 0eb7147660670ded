//! Machines kept warm on a cloud (`run.reuse = "study"`, [`View::warm`]): which
//! attempt each machine serves now, and which are idle, waiting for the study's
//! next attempt.
//!
//! A warm machine's tags name the attempt it was launched for; the record names the
//! ones it ran since. So the attempt a machine serves is the latest one whose record
//! (current or history) names it. It is idle when that attempt ended leaving it warm
//! ([`Trial::leaves_machine_warm`]) less than `run.keep_alive` ago, less a margin:
//! its agent reads the study's changes every second for its next attempt until
//! `keep_alive` after its last ended, by its own clock, then powers off.

use super::{Machine, View, CLOCK_SKEW_MS};
use augur_model::cost::Billing;
use augur_model::machine::slot_of;
use augur_model::{Millis, Trial};
use std::collections::HashMap;

/// What is known about the study's warm machines.
#[derive(Default)]
pub(super) struct Warm<'a> {
    /// The attempt each machine named by a record served last: (trial, attempt).
    serves: HashMap<&'a str, (u64, u32)>,
}

/// An idle warm machine.
#[derive(Clone, Copy)]
pub(super) struct Idle<'a> {
    pub(super) machine: &'a str,
    /// When its last attempt ended (its agent's clock).
    pub(super) ended_ms: Millis,
    /// How it is billed (its last attempt's record).
    pub(super) billing: Option<&'a Billing>,
}

impl<'a> Warm<'a> {
    pub(super) fn new(v: &View<'a>) -> Warm<'a> {
        if !v.warm {
            return Warm::default();
        }
        // (when, trial, attempt) of each machine's latest use.
        let mut latest: HashMap<&str, (Millis, u64, u32)> = HashMap::new();
        let mut note =
            |machine: &'a Option<String>, at: Option<Millis>, trial: u64, attempt: u32| {
                if let Some(m) = machine {
                    let at = (at.unwrap_or(0), trial, attempt);
                    let e = latest.entry(m.as_str()).or_insert(at);
                    if at > *e {
                        *e = at;
                    }
                }
            };
        for t in v.trials {
            for h in &t.history {
                note(&h.machine, h.launched_ms.or(h.started_ms), t.id, h.attempt);
            }
            note(&t.machine, t.launched_ms.or(t.started_ms), t.id, t.attempt);
        }
        let serves = latest
            .into_iter()
            .map(|(m, (_, trial, attempt))| (m, (trial, attempt)))
            .collect();
        Warm { serves }
    }

    /// The attempt `m` serves: its record's, else its tags'; none for a fresh slot
    /// (one no record names: its tags are its machine's first attempt's).
    pub(super) fn key(&self, m: &Machine) -> Option<(u64, u32)> {
        match self.serves.get(m.id.as_str()) {
            Some(&serves) => Some(serves),
            None if slot_of(&m.id) > 0 => None,
            None => Some((m.trial, m.attempt)),
        }
    }

    /// The idle machines, the longest idle first: those whose latest attempt
    /// (`trial` looks records up) left them warm, by the record alone (a cloud's
    /// listing may be older than the machine), unless listed as ended; while they
    /// may still be given an attempt at `v.now`: the time their agent waits, less the
    /// largest clock difference and a few of its reads.
    pub(super) fn idle(
        &self,
        v: &View<'a>,
        trial: impl Fn(u64) -> Option<&'a Trial>,
    ) -> Vec<Idle<'a>> {
        if !reuses(v) {
            return Vec::new();
        }
        let ended = |id: &str| v.machines.iter().any(|m| m.id == id && m.gone.is_some());
        let mut idle: Vec<Idle> = self
            .serves
            .iter()
            .filter_map(|(&id, &(tid, attempt))| {
                let t = trial(tid)?;
                // The listing is scanned last, for the few recent candidates only.
                let warm = t.attempt == attempt && left_warm(v, t) && !ended(id);
                warm.then_some(Idle {
                    machine: id,
                    ended_ms: t.finished_ms?,
                    billing: t.billing.as_ref(),
                })
            })
            .collect();
        idle.extend(self.fresh(v, &trial));
        idle.sort_by_key(|i| (i.ended_ms, i.machine));
        idle
    }

    /// The fresh slots that are idle ([`super::slots`]): of a live machine whose
    /// first attempt (its tags') started less than `run.keep_alive` ago, less the
    /// margin of [`left_warm`]: their agents started waiting with that attempt's.
    fn fresh(&self, v: &View<'a>, trial: &impl Fn(u64) -> Option<&'a Trial>) -> Vec<Idle<'a>> {
        v.machines
            .iter()
            .filter(|m| m.gone.is_none() && self.key(m).is_none())
            .filter_map(|m| {
                let ours = |t: &&Trial| {
                    t.attempt == m.attempt && m.incarnation.is_none_or(|c| c == t.created_ms)
                };
                let t = trial(m.trial).filter(ours)?;
                let started = t.started_ms.filter(|&s| waits(v, s))?;
                Some(Idle {
                    machine: m.id.as_str(),
                    ended_ms: started,
                    billing: t.billing.as_ref(),
                })
            })
            .collect()
    }
}

/// Whether an agent that started waiting for an attempt at `since` (its clock) may
/// still be given one at `v.now`: the time it waits (`run.keep_alive`), less the
/// largest clock difference and a few of its reads.
pub(super) fn waits(v: &View, since: Millis) -> bool {
    let keep = v.study.run.keep_alive_ms() as Millis;
    v.now < since + keep - CLOCK_SKEW_MS - 5_000
}

/// Whether the study keeps machines warm through the record for its next attempts.
pub(super) fn reuses(v: &View) -> bool {
    v.warm && v.study.run.reuse == Some(augur_model::Reuse::Study)
}

/// Whether `t`'s attempt ended leaving its machine warm, recently enough that the
/// machine may still be given an attempt at `v.now`: the time its agent waits, less
/// the largest clock difference and a few of its reads.
pub(super) fn left_warm(v: &View, t: &Trial) -> bool {
    t.leaves_machine_warm() && t.finished_ms.is_some_and(|e| waits(v, e))
}

#[cfg(test)]
mod tests {
    use super::super::{decide, Action, Loss, Mode, Scope, View};
    use augur_model::DriveSettings;
    use augur_model::{Machine, Params, Study, Trial, TrialState};
    use std::path::Path;

    const KEEP: &str = "reuse = 'study'\nkeep_alive = '60s'\n";

    fn study(run: &str, trials: u64) -> Study {
        let text = format!("name='s'\nobjective={{metric='m'}}\ntrials={trials}\nparallel=2\n[run]\nscript='true'\n{run}");
        Study::parse(&text, "t", Path::new(".")).expect("study")
    }

    /// Trial `id` that ran on instance `i-<id>` and ended at 1000 with `exit`.
    fn ended(id: u64, exit: i32) -> Trial {
        let mut t = Trial::new("s", id, id - 1, 0, Params::new(), 0);
        t.state = if exit == 0 {
            TrialState::Succeeded
        } else {
            TrialState::Failed
        };
        t.exit_code = Some(exit);
        t.machine = Some(format!("i-{id}"));
        (t.launched_ms, t.started_ms, t.finished_ms) = (Some(0), Some(10), Some(1_000));
        t
    }

    fn pending(id: u64) -> Trial {
        Trial::new("s", id, id - 1, 0, Params::new(), 0)
    }

    /// The instance launched for trial `id`, attempt 1 (as its tags say).
    fn instance(id: u64) -> Machine {
        Machine {
            id: format!("i-{id}"),
            trial: id,
            attempt: 1,
            ..Default::default()
        }
    }

    fn decide_at(s: &Study, trials: &[Trial], machines: &[Machine], now: i64) -> Vec<Action> {
        let drive = DriveSettings::default();
        decide(&View {
            study: s,
            trials,
            open: None,
            machines,
            scope: &Scope::Budget(s.trials),
            mode: Mode::Run,
            exhausted: false,
            sees_all: false,
            warm: true,
            pooled: false,
            fresh_listing: false,
            drive: &drive,
            now,
            seen_since: 0,
            slots: 1,
        })
    }

    fn assign(trial: u64, machine: &str) -> Action {
        Action::Assign {
            trial,
            attempt: 1,
            machine: machine.into(),
            billing: None,
        }
    }

    #[test]
    fn an_idle_warm_machine_takes_the_next_pending_trial_instead_of_a_launch() {
        let s = study(KEEP, 3);
        let trials = [ended(1, 0), pending(2), pending(3)];
        let a = decide_at(&s, &trials, &[instance(1)], 2_000);
        // One machine is idle: trial 2 goes to it, trial 3 gets a new one; the idle
        // machine is not swept.
        assert_eq!(
            a,
            vec![
                assign(2, "i-1"),
                Action::Launch {
                    trial: 3,
                    attempt: 1
                }
            ]
        );
        // A study that reuses nothing launches both, and ends the machine.
        let single = study("", 3);
        let a = decide_at(&single, &trials, &[instance(1)], 2_000);
        assert!(
            a.iter().all(|a| !matches!(a, Action::Assign { .. })),
            "{a:?}"
        );
        assert!(
            a.iter().any(|a| matches!(a, Action::Terminate { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn a_machine_serves_the_latest_attempt_its_record_names_not_its_tags() {
        let s = study(KEEP, 2);
        let mut t2 = ended(2, 0);
        // Trial 2 was given instance i-1 (tagged for trial 1) after trial 1 ended.
        (t2.state, t2.machine, t2.launched_ms) =
            (TrialState::Running, Some("i-1".into()), Some(1_500));
        (t2.exit_code, t2.finished_ms, t2.heartbeat_ms) = (None, None, Some(1_900));
        let trials = [ended(1, 0), t2];
        let a = decide_at(&s, &trials, &[instance(1)], 2_000);
        assert_eq!(a, vec![], "i-1 runs trial 2: nothing to do");
        // Its reclaim is trial 2's loss, a preemption, not trial 1's.
        let reclaimed = Machine {
            gone: Some("Server.SpotInstanceTermination".into()),
            ..instance(1)
        };
        let a = decide_at(&s, &trials, &[reclaimed], 2_000);
        assert!(
            matches!(
                a.first(),
                Some(Action::MarkLost {
                    trial: 2,
                    loss: Loss::Preempted,
                    ..
                })
            ),
            "{a:?}"
        );
    }

    #[test]
    fn a_machine_ended_by_force_or_idle_too_long_is_not_given_an_attempt() {
        let s = study(KEEP, 2);
        for (exit, now, why) in [
            (137, 2_000, "killed by a signal"),
            (
                0,
                1_000 + 60_000 - 10_000,
                "within the margin of its keep_alive",
            ),
        ] {
            let trials = [ended(1, exit), pending(2)];
            let a = decide_at(&s, &trials, &[instance(1)], now);
            assert!(
                a.contains(&Action::Launch {
                    trial: 2,
                    attempt: 1
                }),
                "{why}: {a:?}"
            );
            assert!(
                a.iter()
                    .any(|a| matches!(a, Action::Terminate { machine, .. } if machine.id == "i-1")),
                "{why}: {a:?}"
            );
        }
        // A lost attempt leaves no warm machine either.
        let mut lost = ended(1, 0);
        (lost.state, lost.exit_code) = (TrialState::Lost, None);
        let a = decide_at(&s, &[lost, pending(2)], &[instance(1)], 2_000);
        assert!(
            a.iter().all(|a| !matches!(a, Action::Assign { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn idle_machines_are_kept_for_attempts_to_come_and_ended_when_none_will() {
        // Trial 2 still runs, and the budget has two trials to propose: the idle
        // machine waits for them.
        let s = study(KEEP, 4);
        let mut running = ended(2, 0);
        (running.state, running.exit_code, running.finished_ms) = (TrialState::Running, None, None);
        running.heartbeat_ms = Some(1_900);
        let trials = [ended(1, 0), running.clone()];
        let machines = [instance(1), instance(2)];
        let a = decide_at(&s, &trials, &machines, 2_000);
        assert_eq!(
            a,
            vec![Action::Propose {
                count: 1,
                launch: false
            }],
            "kept for what comes"
        );
        // The whole budget is made: nothing will come, the idle machine is ended.
        let s = study(KEEP, 2);
        let a = decide_at(&s, &trials, &machines, 2_000);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(
            matches!(&a[0], Action::Terminate { machine, reason } if machine.id == "i-1" && reason.contains("idle")),
            "{a:?}"
        );
    }

    #[test]
    fn an_assignment_not_taken_in_time_is_lost_without_counting_as_a_boot_failure() {
        let s = study(KEEP, 2);
        let mut t2 = pending(2);
        (t2.state, t2.machine, t2.launched_ms) =
            (TrialState::Starting, Some("i-1".into()), Some(1_500));
        t2.assigned = true;
        let trials = [ended(1, 0), t2];
        assert_eq!(decide_at(&s, &trials, &[instance(1)], 20_000), vec![]);
        let a = decide_at(&s, &trials, &[instance(1)], 1_500 + 30_001);
        assert!(
            matches!(a.first(), Some(Action::MarkLost { trial: 2, loss: Loss::Attempt, reason, .. }) if reason.contains("warm machine did not take it")),
            "{a:?}"
        );
        // Its machine powered itself off meanwhile: an attempt lost, not a boot.
        let off = Machine {
            gone: Some("Client.InstanceInitiatedShutdown".into()),
            ..instance(1)
        };
        let a = decide_at(&s, &trials, &[off], 20_000);
        assert!(
            matches!(
                a.first(),
                Some(Action::MarkLost {
                    trial: 2,
                    loss: Loss::Attempt,
                    ..
                })
            ),
            "{a:?}"
        );
    }

    #[test]
    fn what_a_cloud_listing_left_out_is_asked_for_by_tags_or_name_where_decide_needs_it() {
        use super::super::missing;
        let view = |s: &Study, trials: &[Trial], machines: &[Machine], now| {
            let (drive, scope) = (
                super::super::DriveSettings::default(),
                Scope::Budget(s.trials),
            );
            missing(&View {
                study: s,
                trials,
                open: None,
                machines,
                scope: &scope,
                mode: Mode::Run,
                exhausted: false,
                sees_all: false,
                warm: true,
                pooled: false,
                fresh_listing: false,
                drive: &drive,
                now,
                seen_since: 0,
                slots: 1,
            })
        };
        let mut running = pending(2);
        (running.state, running.machine) = (TrialState::Running, Some("i-2".into()));
        let mut unrecorded = pending(3);
        unrecorded.state = TrialState::Starting;
        let mut listed = pending(4);
        (listed.state, listed.machine) = (TrialState::Running, Some("i-4".into()));
        let mut fresh = pending(6);
        (fresh.state, fresh.machine, fresh.launched_ms) =
            (TrialState::Starting, Some("i-6".into()), Some(1_000));
        let trials = [ended(1, 0), running, unrecorded, listed, pending(5), fresh];
        let tags = |ids: &[usize]| -> Vec<super::super::Tagged> {
            let tag = |t: &Trial| super::super::Tagged {
                trial: t.id,
                attempt: t.attempt,
                created_ms: t.created_ms,
            };
            ids.iter().map(|&i| tag(&trials[i])).collect()
        };
        let s = study(KEEP, 6);
        // Listed: trial 4's machine. Missing: the running trial's and the unrecorded
        // launch's, by their tags, and the idle warm machine, which may be given
        // trial 5, by name; not the one launched a second ago, which a listing may
        // not show yet.
        let m = view(&s, &trials, &[instance(4)], 2_000);
        assert_eq!(m.machines, vec!["i-1".to_string()]);
        assert_eq!(m.attempts, tags(&[1, 2]));
        // The launch listed by its tags; the warm machine past its keep-alive; the
        // fresh launch past the listing's lag.
        let m = view(&s, &trials, &[instance(3), instance(4)], 60_000);
        assert_eq!((m.machines, m.attempts), (vec![], tags(&[1, 5])));
        // A study that reuses nothing needs no ended machine of a final trial.
        let m = view(&study("", 6), &trials, &[instance(4)], 2_000);
        assert_eq!((m.machines, m.attempts), (vec![], tags(&[1, 2])));
        // An attempt given to a warm machine is asked for by that machine's name.
        let mut given = trials[1].clone();
        given.assigned = true;
        let m = view(&s, &[given], &[], 2_000);
        assert_eq!((m.machines, m.attempts), (vec!["i-2".to_string()], vec![]));
    }
}
