//! Early stopping: which running trials to stop, decided from the metric series every
//! trial records (`METRICS: step=3, loss=0.7`).
//!
//! Like every other decision, pruning is a function of the records alone: an
//! orchestrator that restarts, or a Lambda tick, decides exactly what the previous one
//! would have. ASHA's "which trials reached the rung before this one" is read from the
//! readings' timestamps, not from memory.

use crate::spec::{Goal, PruneRule, PruneSpec, Study};
use crate::trial::{Trial, TrialState};
use crate::Millis;
use std::collections::HashMap;

/// One reading of the objective: its step, its value (oriented so smaller is better)
/// and when it was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub step: f64,
    pub loss: f64,
    pub t_ms: Millis,
}

/// A trial's objective curve, in reading order. Readings without the step metric count
/// 1, 2, 3, … among the readings that carry the objective.
pub fn curve(spec: &PruneSpec, study: &Study, t: &Trial) -> Vec<Reading> {
    let sign = sign(study);
    let mut out = Vec::new();
    for (i, p) in t
        .series
        .iter()
        .filter(|p| p.values.contains_key(&study.objective.metric))
        .enumerate()
    {
        let v = p.values[&study.objective.metric];
        if !v.is_finite() {
            continue;
        }
        let step = p
            .values
            .get(&spec.step)
            .copied()
            .filter(|s| s.is_finite())
            .unwrap_or((i + 1) as f64);
        out.push(Reading {
            step,
            loss: sign * v,
            t_ms: p.t_ms,
        });
    }
    out
}

fn sign(study: &Study) -> f64 {
    match study.objective.goal {
        Goal::Minimize => 1.0,
        Goal::Maximize => -1.0,
    }
}

/// The curves of a study's trials, built once per decision.
pub struct Pruner<'a> {
    study: &'a Study,
    spec: &'a PruneSpec,
    curves: HashMap<u64, (TrialState, Vec<Reading>)>,
    /// The last step the succeeded trials reached: a trial there has done all its
    /// work, and stopping it would save nothing.
    final_step: Option<f64>,
}

impl<'a> Pruner<'a> {
    /// `None` when the study prunes nothing.
    pub fn new(study: &'a Study, trials: &[Trial]) -> Option<Pruner<'a>> {
        let spec = study.prune.as_ref()?;
        let curves: HashMap<u64, (TrialState, Vec<Reading>)> = trials
            .iter()
            .filter(|t| !t.is_dataset())
            .map(|t| (t.id, (t.state, curve(spec, study, t))))
            .collect();
        let final_step = curves
            .values()
            .filter(|(s, _)| *s == TrialState::Succeeded)
            .filter_map(|(_, c)| c.last().map(|r| r.step))
            .reduce(f64::max);
        Some(Pruner {
            study,
            spec,
            curves,
            final_step,
        })
    }

    /// Why the running trial `id` should stop now, or `None` to let it continue.
    pub fn check(&self, id: u64) -> Option<String> {
        let (state, c) = self.curves.get(&id)?;
        if *state != TrialState::Running {
            return None;
        }
        let step = c.last()?.step;
        if self.final_step.is_some_and(|last| step >= last) {
            return None;
        }
        match self.spec.rule {
            PruneRule::Median { warmup, min_trials } => self.median(c, warmup, min_trials),
            PruneRule::Asha {
                min_step,
                reduction,
            } => self.asha(id, c, min_step, reduction),
        }
    }

    fn show(&self, loss: f64) -> f64 {
        sign(self.study) * loss
    }

    fn median(&self, c: &[Reading], warmup: f64, min_trials: u32) -> Option<String> {
        let step = c.last()?.step;
        if step < warmup {
            return None;
        }
        let best = c.iter().map(|r| r.loss).fold(f64::INFINITY, f64::min);
        let mut others: Vec<f64> = self
            .curves
            .values()
            .filter(|(s, oc)| {
                *s == TrialState::Succeeded && oc.last().is_some_and(|r| r.step >= step)
            })
            .filter_map(|(_, oc)| oc.iter().rev().find(|r| r.step <= step).map(|r| r.loss))
            .collect();
        if others.len() < min_trials as usize {
            return None;
        }
        others.sort_by(f64::total_cmp);
        let n = others.len();
        let median = if n % 2 == 1 {
            others[n / 2]
        } else {
            (others[n / 2 - 1] + others[n / 2]) / 2.0
        };
        (best > median).then(|| {
            format!(
                "median rule: best {} {} by step {step} is worse than the median {} of {n} completed trials at that step",
                self.study.objective.metric,
                self.show(best),
                self.show(median)
            )
        })
    }

    /// When and with what value (the best so far) a curve reached `rung`.
    fn arrival(c: &[Reading], rung: f64) -> Option<(Millis, f64)> {
        let mut best = f64::INFINITY;
        for r in c {
            best = best.min(r.loss);
            if r.step >= rung {
                return Some((r.t_ms, best));
            }
        }
        None
    }

    fn asha(&self, id: u64, c: &[Reading], min_step: f64, reduction: u32) -> Option<String> {
        let last = c.last()?.step;
        let mut rung = min_step;
        let mut k = 0;
        while rung <= last {
            let (at, value) = Self::arrival(c, rung)?;
            // Those that reached the rung no later than this trial (ties by id).
            let mut rivals: Vec<f64> = self
                .curves
                .iter()
                .filter_map(|(other, (_, oc))| {
                    let (t, v) = Self::arrival(oc, rung)?;
                    ((t, *other) <= (at, id)).then_some(v)
                })
                .collect();
            rivals.sort_by(f64::total_cmp);
            let keep = (rivals.len() / reduction as usize).max(1);
            let cutoff = rivals[keep - 1];
            if value > cutoff {
                return Some(format!(
                    "asha: at rung {k} (step {rung}) its best {} {} is not in the best 1/{reduction} of the {} trials there (cut-off {})",
                    self.study.objective.metric,
                    self.show(value),
                    rivals.len(),
                    self.show(cutoff)
                ));
            }
            rung *= reduction as f64;
            k += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::MetricPoint;
    use std::path::Path;

    fn study(prune: &str, goal: &str) -> Study {
        Study::parse(
            &format!("name='p'\ntrials=50\nobjective={{metric='loss',goal='{goal}'}}\n[params]\nx={{range=[0.0,1.0]}}\n[run]\nscript='true'\n[prune]\n{prune}\n"),
            "p.toml",
            Path::new("."),
        )
        .unwrap()
    }

    /// A trial with readings `(step, loss, t_ms)`.
    fn trial(id: u64, state: TrialState, readings: &[(f64, f64, Millis)]) -> Trial {
        let mut t = Trial::new("p", id, id, 0, Default::default(), 0);
        t.state = state;
        t.series = readings
            .iter()
            .map(|(s, l, ms)| MetricPoint {
                t_ms: *ms,
                values: [("step".to_string(), *s), ("loss".to_string(), *l)].into(),
            })
            .collect();
        t
    }

    #[test]
    fn median_waits_for_enough_completed_trials_then_prunes_the_worse_half() {
        let s = study("rule='median'\nmin_trials=3", "minimize");
        let done = |id, l| {
            trial(
                id,
                TrialState::Succeeded,
                &[(1.0, l, 1), (2.0, l, 2), (3.0, l, 3)],
            )
        };
        let mut trials = vec![done(1, 0.5), done(2, 0.6)];
        trials.push(trial(
            9,
            TrialState::Running,
            &[(1.0, 0.9, 10), (2.0, 0.8, 20)],
        ));
        let p = Pruner::new(&s, &trials).unwrap();
        assert_eq!(p.check(9), None, "two completed trials are not enough");
        trials.push(done(3, 0.7));
        let p = Pruner::new(&s, &trials).unwrap();
        let why = p.check(9).expect("0.8 is worse than the median 0.6");
        assert!(why.contains("median 0.6 of 3"), "{why}");
        // A trial better than the median continues, and finished trials are left alone.
        trials.push(trial(
            10,
            TrialState::Running,
            &[(1.0, 0.55, 10), (2.0, 0.4, 20)],
        ));
        let p = Pruner::new(&s, &trials).unwrap();
        assert_eq!(p.check(10), None);
        assert_eq!(p.check(1), None);
    }

    #[test]
    fn median_respects_warmup_and_maximize() {
        let s = study("rule='median'\nmin_trials=1\nwarmup=3", "maximize");
        let trials = vec![
            trial(
                1,
                TrialState::Succeeded,
                &[(1.0, 0.9, 1), (2.0, 0.9, 2), (3.0, 0.9, 3), (4.0, 0.9, 4)],
            ),
            trial(2, TrialState::Running, &[(1.0, 0.1, 5), (2.0, 0.2, 6)]),
            trial(
                3,
                TrialState::Running,
                &[(1.0, 0.1, 5), (2.0, 0.2, 6), (3.0, 0.3, 7)],
            ),
            trial(
                4,
                TrialState::Running,
                &[(1.0, 0.95, 5), (2.0, 0.9, 6), (3.0, 0.91, 7)],
            ),
        ];
        let p = Pruner::new(&s, &trials).unwrap();
        assert_eq!(p.check(2), None, "still warming up");
        assert!(p.check(3).is_some(), "0.3 < 0.9 when maximizing");
        assert_eq!(p.check(4), None, "0.95 beats 0.9 when maximizing");
    }

    #[test]
    fn asha_promotes_the_best_third_of_those_that_arrived_first() {
        let s = study("rule='asha'\nmin_step=1\nreduction=3", "minimize");
        // Six trials reached step 1 in id order (t_ms = id), with these losses.
        let losses = [0.5, 0.4, 0.9, 0.3, 0.8, 0.7];
        let trials: Vec<Trial> = losses
            .iter()
            .enumerate()
            .map(|(i, l)| {
                trial(
                    i as u64 + 1,
                    TrialState::Running,
                    &[(1.0, *l, i as Millis + 1)],
                )
            })
            .collect();
        let p = Pruner::new(&s, &trials).unwrap();
        // 1: alone, promoted. 2: best of 2, promoted. 3: 0.9 of 3 (keep 1): pruned.
        // 4: best, promoted. 5: 0.8 of 5 (keep 1, cut-off 0.3): pruned.
        // 6: 0.7 of 6 (keep 2, cut-off 0.4): pruned.
        let verdict: Vec<bool> = (1..=6).map(|id| p.check(id).is_some()).collect();
        assert_eq!(verdict, [false, false, true, false, true, true]);
        // Later arrivals do not change an earlier verdict.
        let mut more = trials.clone();
        more.push(trial(7, TrialState::Running, &[(1.0, 0.01, 50)]));
        let p = Pruner::new(&s, &more).unwrap();
        assert_eq!(p.check(2), None);
    }

    #[test]
    fn asha_checks_every_rung_reached() {
        let s = study("rule='asha'\nmin_step=1\nreduction=2", "minimize");
        let mut trials = vec![
            trial(
                1,
                TrialState::Succeeded,
                &[(1.0, 0.5, 1), (2.0, 0.2, 2), (4.0, 0.1, 3)],
            ),
            trial(
                2,
                TrialState::Succeeded,
                &[(1.0, 0.6, 1), (2.0, 0.3, 2), (4.0, 0.2, 3)],
            ),
        ];
        // Good at rung 1 (step 1), bad at rung 2 (step 2).
        trials.push(trial(
            3,
            TrialState::Running,
            &[(1.0, 0.45, 10), (2.0, 0.44, 11)],
        ));
        let p = Pruner::new(&s, &trials).unwrap();
        let why = p.check(3).expect("pruned at step 2");
        assert!(why.contains("rung 1 (step 2)"), "{why}");
    }

    #[test]
    fn a_trial_that_reached_the_final_step_is_not_pruned() {
        // Rungs at steps 1, 3, 9 and 27; the finished trials stopped at 27.
        let s = study("rule='asha'\nmin_step=1\nreduction=3", "minimize");
        let curve_to = |id, state, l: f64| {
            let steps = [1.0, 3.0, 9.0, 27.0];
            let r: Vec<(f64, f64, Millis)> =
                steps.iter().map(|st| (*st, l, *st as Millis)).collect();
            trial(id, state, &r)
        };
        let mut trials: Vec<Trial> = (1..=3)
            .map(|i| curve_to(i, TrialState::Succeeded, 0.1 * i as f64))
            .collect();
        // The worst of all at every rung, but it has done its 27 steps (its script is
        // saving a model): stopping it now saves nothing.
        trials.push(curve_to(4, TrialState::Running, 0.9));
        let p = Pruner::new(&s, &trials).unwrap();
        assert_eq!(p.check(4), None);
        // One step short of the end, the same curve is pruned.
        let short = trial(
            5,
            TrialState::Running,
            &[(1.0, 0.9, 1), (3.0, 0.9, 3), (9.0, 0.9, 9)],
        );
        trials.push(short);
        let p = Pruner::new(&s, &trials).unwrap();
        assert!(p.check(5).is_some_and(|why| why.starts_with("asha")));
        // The median rule alike.
        let s = study("rule='median'\nmin_trials=1", "minimize");
        let p = Pruner::new(&s, &trials).unwrap();
        assert_eq!(p.check(4), None);
        assert!(p.check(5).is_some());
    }

    #[test]
    fn readings_without_a_step_count_in_order() {
        let s = study("rule='median'\nmin_trials=1", "minimize");
        let mut t = trial(1, TrialState::Running, &[]);
        for (i, l) in [0.9, 0.8, 0.7].iter().enumerate() {
            t.series.push(MetricPoint {
                t_ms: i as Millis,
                values: [("loss".to_string(), *l)].into(),
            });
        }
        let c = curve(s.prune.as_ref().unwrap(), &s, &t);
        assert_eq!(
            c.iter().map(|r| r.step).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn bad_prune_sections_are_refused() {
        for (text, want) in [
            ("rule='hyperband'", "unknown prune rule \"hyperband\""),
            (
                "rule='asha'\nreduction=1",
                "prune.reduction must be 2 to 100",
            ),
            (
                "rule='asha'\nwarmup=2",
                "prune.warmup does not apply to the asha rule",
            ),
            (
                "rule='median'\nreduction=3",
                "prune.reduction does not apply to the median rule",
            ),
            ("rule='median'\nstep='loss'", "is the objective's metric"),
            ("rule='asha'\nmin_step=0", "prune.min_step must be above 0"),
        ] {
            let err = Study::parse(
                &format!("name='p'\ntrials=5\nobjective={{metric='loss'}}\n[run]\nscript='true'\n[prune]\n{text}\n"),
                "p.toml",
                Path::new("."),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
