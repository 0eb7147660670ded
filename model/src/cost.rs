//! What machines cost: how each attempt's machine is billed, what a trial and a study
//! have spent, and the budget rule (`run.max_cost_usd`, `run.max_machine_hours`).
//!
//! An attempt's machine time runs from its launch to its end (to now while it
//! runs). EC2 bills Linux instances per second with a minimum of 60 seconds
//! (<https://aws.amazon.com/ec2/pricing/on-demand/>, "Per Second Billing"), so a
//! attempt on EC2 counts at least a minute. Local machines are free unless the
//! study prices them (`[local] usd_per_hour`, what an hour of the user's own machine
//! costs them): then they count by the second at that price, with no minimum.

use crate::trial::{AttemptRecord, Trial, TrialState};
use crate::Millis;
use serde::{Deserialize, Serialize};

/// How an attempt's machine is billed, as recorded when it was launched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Billing {
    pub instance_type: String,
    /// A spot instance (else on-demand).
    pub spot: bool,
    /// The availability zone it runs in.
    pub zone: String,
    /// Its price, `None` when no source knew it.
    pub usd_per_hour: Option<f64>,
    /// Where the price came from ("spot price history", "price list", "packaged
    /// table of 2025-06 (us-east-1)").
    pub price_from: String,
    /// The part of the machine the attempt held, when it shared it with other
    /// attempts: its GPUs over the machine's (`run.gpus` of a type with more). Its
    /// machine time and cost are that part of the machine's, so the trials that ran
    /// on one machine share it by GPU-time. `None`: the whole machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
}

/// The instance type recorded for a local machine priced by its study.
pub const LOCAL: &str = "local";

impl Billing {
    /// A local machine at the price its study gives it (`[local] usd_per_hour`).
    pub fn local(usd_per_hour: f64) -> Billing {
        Billing {
            instance_type: LOCAL.into(),
            spot: false,
            zone: String::new(),
            usd_per_hour: Some(usd_per_hour),
            price_from: "the study file's local.usd_per_hour".into(),
            share: None,
        }
    }

    /// The part of a machine one of its `slots` holds ([`Billing::share`]): `None`
    /// for a machine of one slot.
    pub fn share_of(slots: u32) -> Option<f64> {
        (slots > 1).then(|| 1.0 / slots as f64)
    }

    /// Whether it is a local machine (priced by its study, billed by the second).
    pub fn is_local(&self) -> bool {
        self.instance_type == LOCAL && self.zone.is_empty()
    }
}

/// The least time EC2 bills an instance for.
pub const MIN_BILLED_MS: Millis = 60_000;

/// One attempt's machine: its billing, and when it was launched and ended.
struct Use<'a> {
    billing: Option<&'a Billing>,
    launched_ms: Option<Millis>,
    ended_ms: Option<Millis>,
}

impl Use<'_> {
    /// Its machine time (none if it was never launched): its part of a shared
    /// machine's ([`Billing::share`]).
    fn machine_ms(&self) -> Millis {
        let Some(from) = self.launched_ms else {
            return 0;
        };
        let ms = (self.ended_ms.unwrap_or(from) - from).max(0);
        let ms = if self.billing.is_some_and(|b| !b.is_local()) {
            ms.max(MIN_BILLED_MS)
        } else {
            ms
        };
        match self.billing.and_then(|b| b.share) {
            Some(part) if (0.0..1.0).contains(&part) => (ms as f64 * part).round() as Millis,
            _ => ms,
        }
    }

    fn usd(&self) -> f64 {
        let price = self.billing.and_then(|b| b.usd_per_hour).unwrap_or(0.0);
        price * self.machine_ms() as f64 / 3_600_000.0
    }
}

impl AttemptRecord {
    fn usage(&self) -> Use<'_> {
        Use {
            billing: self.billing.as_ref(),
            launched_ms: self.launched_ms,
            ended_ms: self.ended_ms.or(self.launched_ms),
        }
    }
}

impl Trial {
    /// Every attempt's machine use, the current one last (ending now if active).
    fn usages(&self, now: Millis) -> impl Iterator<Item = Use<'_>> {
        let ended = if self.state.is_active() {
            Some(now)
        } else {
            self.finished_ms.or(self.heartbeat_ms).or(self.launched_ms)
        };
        let current = Use {
            billing: self.billing.as_ref(),
            launched_ms: self
                .launched_ms
                .filter(|_| self.state != TrialState::Pending),
            ended_ms: ended,
        };
        self.history
            .iter()
            .map(AttemptRecord::usage)
            .chain(std::iter::once(current))
    }

    /// The machine time of every attempt, counted to `now` for a running one.
    pub fn machine_ms(&self, now: Millis) -> Millis {
        self.usages(now).map(|u| u.machine_ms()).sum()
    }

    /// What its machines cost, in US dollars (local machines are free).
    pub fn cost_usd(&self, now: Millis) -> f64 {
        self.usages(now).map(|u| u.usd()).sum()
    }

    /// Each attempt's billing and cost, earlier ones first, the current one last.
    pub fn attempt_costs(&self, now: Millis) -> Vec<(Option<&Billing>, f64)> {
        self.usages(now).map(|u| (u.billing, u.usd())).collect()
    }
}

/// What a study's machines have cost so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spend {
    pub usd: f64,
    pub machine_ms: Millis,
    /// Machine time on spot instances.
    pub spot_ms: Millis,
    /// Machine time on priced machines (cloud ones, and local ones a study prices).
    pub priced_ms: Millis,
    /// Machine time on cloud machines.
    pub cloud_ms: Millis,
    /// Attempts whose price is unknown (counted at $0).
    pub unpriced: u32,
    /// About what pruning saved: each pruned trial's time short of the mean time of
    /// succeeded trials, at its price. `None` before a trial succeeded.
    pub pruning_saved_usd: Option<f64>,
}

impl Spend {
    /// Whether any of it ran on priced (cloud) machines.
    pub fn priced(&self) -> bool {
        self.priced_ms > 0
    }

    /// The spend of `trials` (datasets included).
    pub fn of(trials: &[Trial], now: Millis) -> Spend {
        let mut s = Spend::default();
        for u in trials.iter().flat_map(|t| t.usages(now)) {
            let ms = u.machine_ms();
            s.usd += u.usd();
            s.machine_ms += ms;
            if let Some(b) = u.billing {
                s.priced_ms += ms;
                s.cloud_ms += if b.is_local() { 0 } else { ms };
                s.spot_ms += if b.spot { ms } else { 0 };
                s.unpriced += u32::from(b.usd_per_hour.is_none());
            }
        }
        s.pruning_saved_usd = pruning_saved(trials, now);
        s
    }

    /// "spent $12.40 over 31.2 machine-hours, 87 % on spot; pruning saved about
    /// $20.10" (a local study: "used 0.4 machine-hours").
    pub fn summary(&self) -> String {
        let hours = hours(self.machine_ms);
        if !self.priced() {
            return format!("used {hours} machine-hours (local machines are free)");
        }
        let mut out = format!("spent {} over {hours} machine-hours", usd(self.usd));
        if self.cloud_ms > 0 {
            let spot = 100.0 * self.spot_ms as f64 / self.cloud_ms as f64;
            out.push_str(&format!(", {spot:.0} % on spot"));
        }
        if let Some(saved) = self.pruning_saved_usd.filter(|s| *s >= 0.005) {
            out.push_str(&format!("; pruning saved about {}", usd(saved)));
        }
        if self.unpriced > 0 {
            out.push_str(&format!(
                "; {} attempt(s) at an unknown price not counted",
                self.unpriced
            ));
        }
        out
    }
}

/// Each pruned trial's machine time short of the mean time of succeeded trials, at
/// its current attempt's price.
fn pruning_saved(trials: &[Trial], now: Millis) -> Option<f64> {
    let full: Vec<Millis> = trials
        .iter()
        .filter(|t| t.state == TrialState::Succeeded && !t.is_dataset())
        .filter_map(|t| t.usages(now).last().map(|u| u.machine_ms()))
        .collect();
    if full.is_empty() {
        return None;
    }
    let mean = full.iter().sum::<Millis>() as f64 / full.len() as f64;
    let saved = trials
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .filter_map(|t| {
            let u = t.usages(now).last()?;
            let price = u.billing?.usd_per_hour?;
            Some((mean - u.machine_ms() as f64).max(0.0) * price / 3_600_000.0)
        })
        .sum();
    Some(saved)
}

/// Dollars as people read them: cents from $1 up, a hundredth of a cent below.
pub fn usd(v: f64) -> String {
    if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

/// Hours as people read them: with more digits the fewer there are.
pub fn hours(ms: Millis) -> String {
    let h = ms as f64 / 3_600_000.0;
    match h.abs() {
        a if a >= 10.0 => format!("{h:.1}"),
        a if a >= 0.1 => format!("{h:.2}"),
        _ => format!("{h:.4}"),
    }
}

/// The trials (not datasets) that ran to an end of their own: what a trial costs
/// is learnt from them.
fn finished(trials: &[Trial]) -> impl Iterator<Item = &Trial> {
    trials.iter().filter(|t| {
        use TrialState::*;
        !t.is_dataset() && matches!(t.state, Succeeded | Failed | Pruned)
    })
}

/// A study's limits on what its machines may cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// `run.max_cost_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// `run.max_machine_hours`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_machine_ms: Option<Millis>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_machine_ms.is_none()
    }

    /// Why no further trial may start: what is spent, plus what the active trials
    /// will still spend, plus the next trial's expected cost would pass a limit. The
    /// expectation is the mean of the finished trials (nothing before one finished);
    /// an active trial will still spend that mean less what it has spent.
    pub fn spent(&self, trials: &[Trial], now: Millis) -> Option<String> {
        if self.is_none() {
            return None;
        }
        let finished: Vec<&Trial> = finished(trials).collect();
        let n = finished.len().max(1) as f64;
        let mean_usd = finished.iter().map(|t| t.cost_usd(now)).sum::<f64>() / n;
        let mean_ms = finished.iter().map(|t| t.machine_ms(now)).sum::<Millis>() as f64 / n;
        let (mut usd, mut ms) = (0.0, 0.0);
        for t in trials {
            let (c, m) = (t.cost_usd(now), t.machine_ms(now) as f64);
            usd += c;
            ms += m;
            if t.state.is_active() && !t.is_dataset() {
                usd += (mean_usd - c).max(0.0);
                ms += (mean_ms - m).max(0.0);
            }
        }
        if let Some(max) = self.max_cost_usd {
            if usd + mean_usd > max {
                return Some(format!(
                    "budget spent: {} of run.max_cost_usd = {} spent or committed, and a trial costs about {}",
                    self::usd(usd),
                    self::usd(max),
                    self::usd(mean_usd)
                ));
            }
        }
        if let Some(max) = self.max_machine_ms {
            if ms + mean_ms > max as f64 {
                return Some(format!(
                    "budget spent: {} of run.max_machine_hours = {} spent or committed, and a trial takes about {}",
                    hours(ms as Millis),
                    hours(max),
                    hours(mean_ms as Millis)
                ));
            }
        }
        None
    }
}

/// What a study will cost, before it runs (`augur run --dry-run`).
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub trials: u64,
    pub parallel: u32,
    /// One trial's machine time (launch to end).
    pub trial_ms: Millis,
    /// The machine's price; `None` for free (local) machines.
    pub usd_per_hour: Option<f64>,
}

impl Estimate {
    /// One trial's billed machine time.
    fn billed_ms(&self) -> Millis {
        match self.usd_per_hour {
            Some(_) => self.trial_ms.max(MIN_BILLED_MS),
            None => self.trial_ms,
        }
    }

    /// One trial's cost.
    pub fn trial_usd(&self) -> f64 {
        self.usd_per_hour.unwrap_or(0.0) * self.billed_ms() as f64 / 3_600_000.0
    }

    /// How many of the budgeted trials the limits let start (each at the estimate).
    pub fn trials_within(&self, limits: &Limits) -> u64 {
        let mut n = self.trials;
        if let Some(max) = limits.max_cost_usd {
            let each = self.trial_usd();
            if each > 0.0 {
                n = n.min((max / each).floor() as u64);
            }
        }
        if let Some(max) = limits.max_machine_ms {
            let each = self.billed_ms().max(1);
            n = n.min((max / each) as u64);
        }
        n
    }

    /// The machine time, cost and wall time of `n` trials.
    pub fn of(&self, n: u64) -> (Millis, f64, Millis) {
        let waves = n.div_ceil(self.parallel.max(1) as u64);
        (
            n as Millis * self.billed_ms(),
            n as f64 * self.trial_usd(),
            waves as Millis * self.trial_ms,
        )
    }
}

/// The mean machine time of a study's finished trials (for an estimate from its
/// history), and how many there were.
pub fn mean_trial_ms(trials: &[Trial], now: Millis) -> Option<(Millis, usize)> {
    let done: Vec<Millis> = finished(trials).map(|t| t.machine_ms(now)).collect();
    (!done.is_empty()).then(|| {
        (
            done.iter().sum::<Millis>() / done.len() as Millis,
            done.len(),
        )
    })
}

#[cfg(test)]
mod tests;
