//! `decide()` and its steps with a virtual clock.

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
    let drive = DriveSettings::default();
    decide(&View {
        study,
        trials,
        open: None,
        machines,
        scope: &Scope::Budget(study.trials),
        mode: Mode::Run,
        exhausted: false,
        sees_all: true,
        warm: false,
        pooled: false,
        fresh_listing: false,
        drive: &drive,
        now,
        seen_since: 0,
        slots: 1,
    })
}

fn m(trial: u64, attempt: u32) -> Machine {
    Machine {
        id: format!("pid{trial}"),
        trial,
        attempt,
        gone: None,
        incarnation: None,
        billing: None,
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
    // Seen at once, without waiting for the heartbeat timeout, on a provider that
    // does not see all its machines (EC2).
    let drive = DriveSettings::default();
    let a = decide(&View {
        study: &s,
        trials: std::slice::from_ref(&t),
        open: None,
        machines: std::slice::from_ref(&reclaimed),
        scope: &Scope::Budget(s.trials),
        mode: Mode::Run,
        exhausted: false,
        sees_all: false,
        warm: false,
        pooled: false,
        fresh_listing: false,
        drive: &drive,
        now: 10,
        seen_since: 0,
        slots: 1,
    });
    assert_eq!(
        a.first(),
        Some(&Action::MarkLost {
            trial: 1,
            attempt: 1,
            from: TrialState::Running,
            reason: "its machine was taken away (Server.SpotInstanceTermination)".into(),
            loss: Loss::Preempted,
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
        assert_eq!(can_retry(&s, &rec), n <= 20, "after {n} reclaims");
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
    let limit = 60_000 + 5_000 + DriveSettings::default().heartbeat_timeout_ms;
    t.heartbeat_ms = Some(limit);
    assert!(run(&s, std::slice::from_ref(&t), &[m(1, 1)], limit).is_empty());
    t.heartbeat_ms = Some(limit + 1);
    let a = run(&s, std::slice::from_ref(&t), &[m(1, 1)], limit + 1);
    assert!(
        matches!(&a[..], [Action::MarkLost { reason, loss: Loss::Attempt, .. }, Action::Terminate { .. }] if reason.contains("timeout of 60 s")),
        "{a:?}"
    );
}

#[test]
fn proposes_up_to_parallel_and_budget() {
    let s = study("");
    assert_eq!(
        run(&s, &[], &[], 0),
        vec![Action::Propose {
            count: 2,
            launch: true
        }]
    );
    let ts = [
        trial(1, TrialState::Succeeded),
        trial(2, TrialState::Succeeded),
        trial(3, TrialState::Running),
    ];
    assert_eq!(
        run(&s, &ts, &[m(3, 1)], 10),
        vec![Action::Propose {
            count: 1,
            launch: true
        }]
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
fn a_silent_agent_loses_its_attempt_and_its_machine() {
    let s = study("");
    let t = trial(1, TrialState::Running);
    assert!(run(&s, std::slice::from_ref(&t), &[m(1, 1)], 29_000)
        .iter()
        .all(|a| matches!(a, Action::Propose { .. })));
    let a = run(&s, &[t], &[m(1, 1)], 31_000);
    assert!(
        a.contains(&Action::Terminate {
            machine: m(1, 1),
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

/// A pooled agent (local, warm) is listed with the attempt it just ended until its
/// provider hears it say idle; ended in that moment, the signal would land in the
/// next attempt the provider hands it (seen in `local_overhead.sh`: "agent
/// terminated" on a trial that had just started).
#[test]
fn a_pooled_agent_on_its_way_back_is_not_ended() {
    let s = study("");
    let drive = DriveSettings::default();
    let mut done = trial(1, TrialState::Succeeded);
    (done.finished_ms, done.exit_code) = (Some(100), Some(0));
    let mut failed = trial(2, TrialState::Failed);
    (failed.finished_ms, failed.exit_code) = (Some(100), Some(137));
    failed.retryable = true;
    let listed = [m(1, 1), m(2, 1)];
    done.machine = Some(listed[0].id.clone());
    failed.machine = Some(listed[1].id.clone());
    let ts = [done, failed];
    let v = |pooled, now| View {
        scope: &Scope::Budget(2),
        sees_all: true,
        pooled,
        now,
        machines: &listed,
        ..view(&s, &ts, &listed, &drive)
    };
    let ended = |v: View| -> Vec<u64> {
        decide(&v)
            .into_iter()
            .filter_map(|a| match a {
                Action::Terminate { machine, .. } => Some(machine.trial),
                _ => None,
            })
            .collect()
    };
    // Pooled: the agent whose script ended by itself goes back to the pool; the one
    // whose script was killed does not, and is ended.
    assert_eq!(ended(v(true, 101)), vec![2]);
    // Not pooled: both are ended (their agents exit by themselves anyway).
    assert_eq!(ended(v(false, 101)), vec![1, 2]);
    // Still listed so after two heartbeats: it hangs, and is ended.
    assert_eq!(ended(v(true, 100 + 2 * drive.heartbeat_ms)), vec![1, 2]);
}

#[test]
fn a_second_machine_for_one_attempt_is_terminated() {
    let s = study("");
    let dup = Machine {
        id: "i-2".into(),
        trial: 1,
        attempt: 1,
        gone: None,
        incarnation: None,
        billing: None,
    };
    let a = run(&s, &[trial(1, TrialState::Running)], &[m(1, 1), dup], 10);
    let terms: Vec<&Action> = a
        .iter()
        .filter(|x| matches!(x, Action::Terminate { .. }))
        .collect();
    assert_eq!(terms.len(), 1, "{a:?}");
    assert!(matches!(terms[0], Action::Terminate { machine, .. } if machine.id == "i-2"));
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
    let late = 10 + 2 * DriveSettings::default().heartbeat_ms + s.run.grace_ms as Millis + 1;
    let a = run(&s, &all, &[m(2, 1)], late);
    assert!(
        matches!(&a[0], Action::Terminate { reason, .. } if reason.contains("did not stop in time")),
        "{a:?}"
    );
    assert_eq!(
        run(&s, &all, &[], late),
        vec![Action::Finish {
            budget_spent: false
        }]
    );
}

#[test]
fn finishes_when_budget_spent_and_all_settled() {
    let s = study("");
    let ts: Vec<Trial> = (1..=4).map(|i| trial(i, TrialState::Succeeded)).collect();
    assert_eq!(
        run(&s, &ts, &[], 10),
        vec![Action::Finish {
            budget_spent: false
        }]
    );
    let mut ts2 = ts.clone();
    ts2[3].state = TrialState::Failed;
    assert_eq!(
        run(&s, &ts2, &[], 10),
        vec![Action::Finish {
            budget_spent: false
        }]
    );
}

#[test]
fn backoff_is_capped_jittered_and_reproducible() {
    let t = DriveSettings {
        backoff_base_ms: 100,
        backoff_cap_ms: 1_000,
        ..DriveSettings::default()
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
    let drive = DriveSettings::default();
    let a = decide(&View {
        study: &s,
        trials: &ts,
        open: None,
        machines: &[m(2, 1)],
        scope: &Scope::Budget(4),
        mode: Mode::Cancel,
        exhausted: false,
        sees_all: true,
        warm: false,
        pooled: false,
        fresh_listing: false,
        drive: &drive,
        now: 10,
        seen_since: 0,
        slots: 1,
    });
    assert!(a.contains(&Action::Cancel {
        trial: 1,
        attempt: 1,
        from: TrialState::Pending,
        why: "cancelled".into(),
    }));
    assert!(a.contains(&Action::Cancel {
        trial: 2,
        attempt: 1,
        from: TrialState::Running,
        why: "cancelled".into(),
    }));
    let cancel = a
        .iter()
        .position(|x| matches!(x, Action::Cancel { trial: 2, .. }));
    let term = a
        .iter()
        .position(|x| matches!(x, Action::Terminate { machine, .. } if machine.trial == 2));
    assert!(
        term.is_some() && cancel < term,
        "cancel before terminate: {a:?}"
    );
    assert!(!a.contains(&Action::Finish {
        budget_spent: false
    }));
    // A retry still to come is cancelled too, so the stop can finish.
    let mut f = trial(4, TrialState::Failed);
    f.retryable = true;
    let a = decide(&View {
        study: &s,
        trials: &[f],
        open: None,
        machines: &[],
        scope: &Scope::Budget(4),
        mode: Mode::Cancel,
        exhausted: false,
        sees_all: true,
        warm: false,
        pooled: false,
        fresh_listing: false,
        drive: &drive,
        now: 10,
        seen_since: 0,
        slots: 1,
    });
    assert_eq!(
        a,
        vec![Action::Cancel {
            trial: 4,
            attempt: 1,
            from: TrialState::Failed,
            why: "cancelled".into(),
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

fn view<'a>(
    study: &'a Study,
    trials: &'a [Trial],
    machines: &'a [Machine],
    drive: &'a DriveSettings,
) -> View<'a> {
    View {
        study,
        trials,
        open: None,
        machines,
        scope: &Scope::Budget(0),
        mode: Mode::Run,
        exhausted: true,
        sees_all: false,
        warm: false,
        pooled: false,
        fresh_listing: false,
        drive,
        now: 10,
        seen_since: 0,
        slots: 1,
    }
}

/// A running trial silent past the heartbeat timeout is lost only if the driver could see the
/// store for a heartbeat timeout as well: after the store's bad minutes the agent gets one
/// from their end to beat again; past its give-up horizon it is lost regardless.
#[test]
fn silence_the_driver_could_not_see_counts_from_when_it_could() {
    let s = study("");
    let drive = DriveSettings::default();
    let mut t = trial(1, TrialState::Running);
    (t.heartbeat_ms, t.started_ms, t.launched_ms) = (Some(1_000), Some(500), Some(100));
    let ts = [t];
    let listed = [m(1, 1)];
    let lost = |now: Millis, seen_since: Millis| {
        let v = View {
            scope: &Scope::Budget(1),
            now,
            seen_since,
            ..view(&s, &ts, &listed, &drive)
        };
        decide(&v)
            .iter()
            .any(|a| matches!(a, Action::MarkLost { trial: 1, .. }))
    };
    let timeout = drive.heartbeat_timeout_ms;
    // Seen throughout: lost a heartbeat timeout after the last beat.
    assert!(!lost(1_000 + timeout, 0));
    assert!(lost(1_000 + timeout + 1, 0));
    // The store came back at 200 s: a heartbeat timeout from then.
    let back = 200_000;
    assert!(!lost(back + timeout, back));
    assert!(lost(back + timeout + 1, back));
    // Past the agent's own horizon, lost whatever the driver saw.
    assert!(lost(1_000 + drive.give_up_ms + 1, 1_000 + drive.give_up_ms));
}

#[test]
fn a_study_ends_only_on_a_fresh_listing_where_machines_may_be_unseen() {
    let s = study("");
    let drive = DriveSettings::default();
    let ts = [
        trial(1, TrialState::Succeeded),
        trial(2, TrialState::Failed),
    ];
    // A cached listing (EC2) may miss a machine: look again before finishing.
    let v = View {
        scope: &Scope::Budget(2),
        ..view(&s, &ts, &[], &drive)
    };
    assert_eq!(decide(&v), vec![Action::Relist]);
    // The fresh listing shows a machine that never reported: ended, then finished.
    let left = [m(2, 1)];
    let v = View {
        fresh_listing: true,
        machines: &left,
        ..v
    };
    assert_eq!(
        decide(&v),
        vec![
            Action::Terminate {
                machine: m(2, 1),
                reason: "trial is failed".into()
            },
            Action::Finish {
                budget_spent: false
            }
        ]
    );
}

#[test]
fn gc_sweeps_with_the_drivers_rule() {
    let s = study("[prune]\nrule='median'\n");
    let drive = DriveSettings::default();
    let mut pruned = trial(3, TrialState::Pruned);
    pruned.finished_ms = Some(5);
    let ts = [
        trial(1, TrialState::Running),
        trial(2, TrialState::Succeeded),
        pruned,
    ];
    let ms = [m(1, 1), m(2, 1), m(3, 1), m(9, 1), m(1, 0)];
    let reasons: Vec<(u64, String)> = sweep(&view(&s, &ts, &ms, &drive))
        .into_iter()
        .map(|a| match a {
            Action::Terminate { machine, reason } => (machine.trial, reason),
            other => panic!("only terminations: {other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (2, "trial is succeeded".to_string()),
            (9, "study `s` has no trial 9".to_string()),
            (1, "attempt 0 superseded by 1".to_string()),
        ],
        "the running trial's machine and the pruned one in its grace are kept"
    );
    // Past its grace (the study's recorded heartbeat decides how long) it is ended.
    let slow = DriveSettings::clone(&augur_model::DriveSettings {
        heartbeat_ms: 1,
        heartbeat_timeout_ms: 1,
        boot_timeout_ms: 1,
        backoff_base_ms: 1,
        backoff_cap_ms: 1,
        capacity_timeout_ms: 1,
        give_up_ms: 1,
    });
    let v = View {
        now: 5 + 2 + s.run.grace_ms as Millis,
        ..view(&s, &ts, &ms, &slow)
    };
    assert!(sweep(&v).iter().any(|a| matches!(a, Action::Terminate { machine, reason } if machine.trial == 3 && reason.contains("pruned"))));
}

/// How a machine ended decides what it costs the trial: the cloud taking it away is
/// a preemption; a machine that ended itself before its agent reported is a failed
/// boot; one that ended under a running attempt is a lost run.
#[test]
fn how_a_machine_ended_decides_what_the_loss_costs() {
    let s = study("");
    let drive = DriveSettings::default();
    let cases = [
        (
            TrialState::Running,
            "Server.SpotInstanceTermination",
            Loss::Preempted,
        ),
        (
            TrialState::Starting,
            "Server.InternalError",
            Loss::Preempted,
        ),
        (
            TrialState::Starting,
            "Client.InstanceInitiatedShutdown",
            Loss::BootFailed,
        ),
        (
            TrialState::Starting,
            "Client.UserInitiatedShutdown",
            Loss::BootFailed,
        ),
        (
            TrialState::Running,
            "Client.InstanceInitiatedShutdown",
            Loss::Attempt,
        ),
        (
            TrialState::Running,
            "Client.UserInitiatedShutdown",
            Loss::Attempt,
        ),
    ];
    for (state, why, want) in cases {
        let t = trial(1, state);
        let ended = Machine {
            gone: Some(why.into()),
            ..m(1, 1)
        };
        let a = decide(&view(&s, std::slice::from_ref(&t), &[ended], &drive));
        let got = a.iter().find_map(|x| match x {
            Action::MarkLost { loss, reason, .. } => Some((*loss, reason.clone())),
            _ => None,
        });
        let (loss, reason) = got.unwrap_or_else(|| panic!("{state:?} {why}: {a:?}"));
        assert_eq!(loss, want, "{state:?} {why}: {reason}");
        assert!(reason.contains(why), "{reason}");
    }
}

/// A machine launched for an earlier trial of the same name (a study deleted and
/// created again) is not the new trial's, alive or ended: it is ended, and the new
/// attempt is not judged by it.
#[test]
fn a_machine_of_an_earlier_incarnation_is_a_stranger() {
    let s = study("");
    let drive = DriveSettings::default();
    let mut t = trial(1, TrialState::Starting);
    t.created_ms = 5;
    t.launched_ms = Some(9);
    let old_live = Machine {
        id: "i-old".into(),
        incarnation: Some(1),
        billing: None,
        ..m(1, 1)
    };
    let old_ended = Machine {
        id: "i-older".into(),
        incarnation: Some(1),
        billing: None,
        gone: Some("Client.InstanceInitiatedShutdown".into()),
        ..m(1, 1)
    };
    let a = decide(&view(
        &s,
        std::slice::from_ref(&t),
        &[old_live.clone(), old_ended],
        &drive,
    ));
    assert!(
        !a.iter().any(|x| matches!(x, Action::MarkLost { .. })),
        "{a:?}"
    );
    assert!(
        a.contains(&Action::Terminate {
            machine: old_live,
            reason: "launched for an earlier study of the same name (deleted)".into(),
        }),
        "{a:?}"
    );
    // The new attempt's own machine (same incarnation) is its machine.
    let mine = Machine {
        id: "i-new".into(),
        incarnation: Some(5),
        billing: None,
        ..m(1, 1)
    };
    let a = decide(&view(
        &s,
        std::slice::from_ref(&t),
        std::slice::from_ref(&mine),
        &drive,
    ));
    assert_eq!(
        a,
        vec![Action::Adopt {
            trial: 1,
            attempt: 1,
            machine: mine.clone()
        }],
        "a launch whose answer was not recorded adopts its machine"
    );
    // Once the record names it, nothing is left to do.
    t.machine = Some(mine.id.clone());
    let a = decide(&view(&s, std::slice::from_ref(&t), &[mine], &drive));
    assert!(a.is_empty(), "{a:?}");
}

#[test]
fn a_spent_budget_cancels_what_has_not_started_and_finishes_as_spent() {
    let s = Study::parse(
        "name='s'\nobjective={metric='m'}\ntrials=10\nparallel=3\n[run]\nscript='true'\nmax_machine_hours=1\n",
        "t",
        Path::new("."),
    )
    .unwrap();
    const MIN: Millis = 60_000;
    // Two trials took 20 minutes each; one has run 10 of its expected 20: an
    // hour spent or committed, and the next would take 20 minutes more.
    let mut ts: Vec<Trial> = (1..=2).map(|i| trial(i, TrialState::Succeeded)).collect();
    for t in &mut ts {
        t.finished_ms = Some(20 * MIN);
    }
    let mut running = trial(3, TrialState::Running);
    running.heartbeat_ms = Some(10 * MIN);
    ts.push(running);
    ts.push(trial(4, TrialState::Pending));
    let a = run(&s, &ts, &[m(3, 1)], 10 * MIN);
    assert!(
        matches!(&a[..], [Action::Cancel { trial: 4, why, .. }] if why.starts_with("budget spent: 1.00 of run.max_machine_hours = 1.00")),
        "{a:?}"
    );
    // A lost trial is not retried either; once the running one ended, the study
    // finishes as spent.
    ts[2].state = TrialState::Lost;
    ts[2].finished_ms = Some(15 * MIN);
    ts[3].state = TrialState::Cancelled;
    let a = run(&s, &ts, &[], 15 * MIN);
    assert!(
        matches!(
            &a[..],
            [Action::Cancel {
                trial: 3,
                from: TrialState::Lost,
                ..
            }]
        ),
        "{a:?}"
    );
    ts[2].state = TrialState::Cancelled;
    assert_eq!(
        run(&s, &ts, &[], 15 * MIN),
        vec![Action::Finish { budget_spent: true }]
    );
    // Without limits the same trials go on.
    let free = study("");
    assert!(run(&free, &ts[..2], &[], 15 * MIN)
        .iter()
        .any(|a| matches!(a, Action::Propose { .. })));
}
