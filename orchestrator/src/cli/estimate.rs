//! `augur run --dry-run`: what a study will cost, before anything starts. Nothing is
//! launched or recorded.

use super::{AppError, CmdResult};
use crate::app::backend::Backend;
use augur::report::cost::{billing_display, usd};
use augur_model::cost::{hours, mean_trial_ms, Estimate};
use augur_model::{Millis, Study};
use std::time::Duration;

/// Where one trial's duration comes from.
pub enum TrialTime {
    /// The user's estimate (`--duration`).
    Given(Duration),
    /// The mean of a recorded study's finished trials (`--like`).
    Like(String),
}

pub async fn dry_run(study: &Study, how_long: Option<TrialTime>, ctx: &Backend) -> CmdResult {
    let billing = ctx.price_of(study).await?;
    println!(
        "study `{}`: {} trial(s), {} at a time",
        study.name, study.trials, study.parallel
    );
    match &billing {
        Some(b) => println!("machine: {}", billing_display(b)),
        None => println!("machine: local processes (free)"),
    }
    let trial_ms = match how_long {
        None => {
            println!("give --duration (one trial's time, e.g. 12m) or --like STUDY (a recorded study's mean) for an estimate");
            println!("nothing was launched or recorded");
            return Ok(0);
        }
        Some(TrialTime::Given(d)) => {
            println!(
                "one trial: {} (--duration)",
                minutes(d.as_millis() as Millis)
            );
            d.as_millis() as Millis
        }
        Some(TrialTime::Like(name)) => {
            let (ms, n) = history(ctx, &name).await?;
            println!(
                "one trial: {} (the mean of {n} finished trial(s) of study `{name}`)",
                minutes(ms)
            );
            ms
        }
    };
    let e = Estimate {
        trials: study.trials,
        parallel: study.parallel,
        trial_ms,
        usd_per_hour: billing.as_ref().and_then(|b| b.usd_per_hour),
    };
    print_estimate(study, &e, billing.is_some());
    println!("nothing was launched or recorded");
    Ok(0)
}

fn print_estimate(study: &Study, e: &Estimate, priced: bool) {
    let (ms, cost, wall) = e.of(e.trials);
    let cost_text = if priced {
        format!(", about {}", usd(cost))
    } else {
        String::new()
    };
    println!(
        "all {} trial(s): {} machine-hours{cost_text}; about {} of wall time",
        e.trials,
        hours(ms),
        minutes(wall)
    );
    let limits = &study.run.limits;
    if limits.is_none() {
        return;
    }
    let n = e.trials_within(limits);
    let (ms, cost, _) = e.of(n);
    let mut set = Vec::new();
    if let Some(max) = limits.max_cost_usd {
        set.push(format!("run.max_cost_usd = {}", usd(max)));
    }
    if let Some(max) = limits.max_machine_ms {
        set.push(format!("run.max_machine_hours = {}", hours(max)));
    }
    if n < e.trials {
        println!(
            "{} let about {n} of the {} trial(s) start ({} machine-hours{}); the study would end as budget spent",
            set.join(" and "),
            e.trials,
            hours(ms),
            if priced { format!(", {}", usd(cost)) } else { String::new() }
        );
    } else {
        println!("{} leave room for every trial", set.join(" and "));
    }
}

/// The mean machine time of a recorded study's finished trials.
async fn history(ctx: &Backend, name: &str) -> Result<(Millis, usize), AppError> {
    let none = || {
        AppError::input(format!(
            "--like: no study named `{name}` (see `augur studies`)"
        ))
    };
    let store = ctx.existing_store().await?.ok_or_else(none)?;
    store.get_study(name).await?.ok_or_else(none)?;
    let trials = store.list_trials(name).await?;
    mean_trial_ms(&trials, augur_store::now_ms()).ok_or_else(|| {
        AppError::input(format!(
            "--like: study `{name}` has no finished trial to take a duration from; give --duration"
        ))
    })
}

/// "12.5 min"; seconds below a minute, hours from two on.
fn minutes(ms: Millis) -> String {
    let m = ms as f64 / 60_000.0;
    if m < 1.0 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if m >= 120.0 {
        format!("{:.1} h", m / 60.0)
    } else {
        format!("{m:.1} min")
    }
}
