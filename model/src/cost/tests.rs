use super::*;
use crate::update::TrialUpdate;
use crate::Params;

const MIN: Millis = 60_000;

fn billing(spot: bool, usd: f64) -> Billing {
    Billing {
        instance_type: "m5.large".into(),
        spot,
        zone: "us-east-1a".into(),
        usd_per_hour: Some(usd),
        price_from: "test".into(),
        share: None,
    }
}

/// A trial whose one attempt ran from `from` to `to` minutes, ending in `state`.
fn trial(id: u64, b: Option<Billing>, from: i64, to: i64, state: TrialState) -> Trial {
    let mut t = Trial::new("s", id, id, 0, Params::new(), 0);
    t.launched_ms = Some(from * MIN);
    t.billing = b;
    t.state = state;
    if !state.is_active() {
        t.finished_ms = Some(to * MIN);
    }
    t
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_trial_costs_each_attempt_at_its_own_price() {
    // Attempt 1 on spot at $0.10/h for 30 min, reclaimed; attempt 2 on-demand at
    // $0.40/h for 60 min.
    let mut t = trial(1, Some(billing(true, 0.10)), 0, 30, TrialState::Lost);
    TrialUpdate::next_attempt(2, None).apply(&mut t);
    assert_eq!((t.launched_ms, t.billing.as_ref()), (None, None));
    assert_eq!(
        t.machine_ms(1_000 * MIN),
        30 * MIN,
        "a pending attempt costs nothing"
    );
    t.state = TrialState::Succeeded;
    t.launched_ms = Some(40 * MIN);
    t.finished_ms = Some(100 * MIN);
    t.billing = Some(billing(false, 0.40));
    assert_eq!(t.machine_ms(1_000 * MIN), 90 * MIN);
    assert!(close(t.cost_usd(1_000 * MIN), 0.05 + 0.40));
}

#[test]
fn ec2_bills_at_least_a_minute_and_local_machines_are_free() {
    let mut short = trial(1, Some(billing(false, 3.60)), 0, 0, TrialState::Failed);
    short.finished_ms = Some(10_000);
    assert_eq!(short.machine_ms(0), MIN);
    assert!(close(short.cost_usd(0), 0.06));
    let mut local = trial(2, None, 0, 0, TrialState::Failed);
    local.finished_ms = Some(10_000);
    assert_eq!((local.machine_ms(0), local.cost_usd(0)), (10_000, 0.0));
    // A running attempt counts to now.
    let running = trial(3, Some(billing(true, 0.60)), 0, 0, TrialState::Running);
    assert!(close(running.cost_usd(30 * MIN), 0.30));
}

#[test]
fn a_study_summary_adds_up_spot_share_and_what_pruning_saved() {
    let trials = vec![
        trial(1, Some(billing(true, 0.60)), 0, 60, TrialState::Succeeded),
        trial(2, Some(billing(true, 0.60)), 0, 60, TrialState::Succeeded),
        // Pruned after 15 of the 60 minutes a full trial takes: 45 min saved at $0.60/h.
        trial(3, Some(billing(true, 0.60)), 0, 15, TrialState::Pruned),
        trial(4, Some(billing(false, 1.20)), 0, 45, TrialState::Failed),
    ];
    let s = Spend::of(&trials, 0);
    assert_eq!(s.machine_ms, 180 * MIN);
    assert!(close(s.usd, 0.60 + 0.60 + 0.15 + 0.90), "{}", s.usd);
    assert_eq!(
        s.summary(),
        "spent $2.25 over 3.00 machine-hours, 75 % on spot; pruning saved about $0.4500"
    );
    let local = vec![trial(1, None, 0, 30, TrialState::Succeeded)];
    assert_eq!(
        Spend::of(&local, 0).summary(),
        "used 0.50 machine-hours (local machines are free)"
    );
    let mut unknown = trial(1, Some(billing(false, 1.0)), 0, 60, TrialState::Succeeded);
    if let Some(b) = unknown.billing.as_mut() {
        b.usd_per_hour = None;
    }
    assert!(Spend::of(&[unknown], 0)
        .summary()
        .ends_with("1 attempt(s) at an unknown price not counted"));
}

#[test]
fn the_budget_stops_before_the_next_trial_would_pass_it() {
    // Three finished trials at $1 each; one running, $0.20 so far, so it will
    // spend about $0.80 more: $4.00 spent or committed, and the next costs $1.
    let mut trials: Vec<Trial> = (1..=3)
        .map(|i| trial(i, Some(billing(false, 1.0)), 0, 60, TrialState::Succeeded))
        .collect();
    trials.push(trial(
        4,
        Some(billing(false, 1.0)),
        0,
        0,
        TrialState::Running,
    ));
    let now = 12 * MIN;
    let limit = |usd| Limits {
        max_cost_usd: Some(usd),
        max_machine_ms: None,
    };
    assert_eq!(limit(5.0).spent(&trials, now), None);
    let why = limit(4.99).spent(&trials, now).expect("spent");
    assert_eq!(
        why,
        "budget spent: $4.00 of run.max_cost_usd = $4.99 spent or committed, and a trial costs about $1.00"
    );
    // Before any trial finished, nothing is expected of the next.
    assert_eq!(limit(0.5).spent(&trials[3..], now), None);
    assert!(limit(0.1).spent(&trials[3..], now).is_some());
    assert_eq!(Limits::default().spent(&trials, now), None);
}

#[test]
fn machine_hours_limit_local_studies_too() {
    let trials: Vec<Trial> = (1..=2)
        .map(|i| trial(i, None, 0, 30, TrialState::Succeeded))
        .collect();
    let hours = |h: f64| Limits {
        max_cost_usd: None,
        max_machine_ms: Some((h * 3_600_000.0) as Millis),
    };
    assert_eq!(hours(1.5).spent(&trials, 0), None);
    assert_eq!(
        hours(1.4).spent(&trials, 0).as_deref(),
        Some("budget spent: 1.00 of run.max_machine_hours = 1.40 spent or committed, and a trial takes about 0.50")
    );
}

#[test]
fn an_estimate_counts_billed_time_waves_and_what_the_limits_let_start() {
    let e = Estimate {
        trials: 50,
        parallel: 4,
        trial_ms: 12 * MIN,
        usd_per_hour: Some(0.50),
    };
    assert!(close(e.trial_usd(), 0.10));
    let (ms, usd, wall) = e.of(50);
    assert_eq!((ms, wall), (600 * MIN, 13 * 12 * MIN));
    assert!(close(usd, 5.0));
    let limits = Limits {
        max_cost_usd: Some(2.05),
        max_machine_ms: None,
    };
    assert_eq!(e.trials_within(&limits), 20);
    assert_eq!(e.trials_within(&Limits::default()), 50);
    let hours = Limits {
        max_cost_usd: None,
        max_machine_ms: Some(60 * MIN),
    };
    assert_eq!(e.trials_within(&hours), 5);
    // A 10-second trial is billed a minute.
    let short = Estimate {
        trial_ms: 10_000,
        ..e
    };
    assert!(close(short.trial_usd(), 0.5 / 60.0));
    let mut finished = trial(1, None, 0, 10, TrialState::Succeeded);
    let other = trial(2, None, 0, 20, TrialState::Pruned);
    assert_eq!(
        mean_trial_ms(&[finished.clone(), other], 0),
        Some((15 * MIN, 2))
    );
    finished.state = TrialState::Running;
    assert_eq!(mean_trial_ms(&[finished], 0), None);
}

#[test]
fn a_priced_local_machine_counts_by_the_second_with_no_minimum() {
    let mut t = trial(1, Some(Billing::local(36.0)), 0, 0, TrialState::Succeeded);
    t.finished_ms = Some(10_000);
    assert!(t.billing.as_ref().is_some_and(Billing::is_local));
    assert_eq!(t.machine_ms(0), 10_000, "no minute's minimum off EC2");
    assert!(close(t.cost_usd(0), 0.1), "{}", t.cost_usd(0));
    let spend = Spend::of(&[t], 0);
    assert!(spend.priced());
    assert_eq!(
        spend.summary(),
        "spent $0.1000 over 0.0028 machine-hours",
        "no spot share of local machines"
    );
}
