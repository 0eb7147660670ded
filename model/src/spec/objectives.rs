//! What a study file says it optimizes: `objective = { ... }` (one), or `objectives
//! = [{ ... }, ...]` (several, a Pareto search), and `constraints = ["m <= 16"]`.

use super::raw::SpecText;
use super::{Goal, Objective, SpecError};
use crate::constraint::Constraint;
use serde::Deserialize;
use std::collections::BTreeSet;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjective {
    metric: Spanned<String>,
    goal: Option<Spanned<String>>,
    required: Option<bool>,
}

impl RawObjective {
    fn validate(self, cx: &SpecText, key: &str) -> Result<Objective, SpecError> {
        let metric = self.metric.get_ref().trim().to_string();
        if metric.is_empty() {
            return Err(cx.at(&self.metric, format!("{key}.metric is empty")));
        }
        let goal = match self.goal.as_ref().map(|g| g.get_ref().as_str()) {
            None | Some("minimize") | Some("min") => Goal::Minimize,
            Some("maximize") | Some("max") => Goal::Maximize,
            Some(other) => {
                return Err(cx.at(
                    self.goal.as_ref().unwrap_or(&self.metric),
                    format!("{key}.goal must be \"minimize\" or \"maximize\", got \"{other}\""),
                ))
            }
        };
        Ok(Objective {
            metric,
            goal,
            required: self.required.unwrap_or(true),
        })
    }
}

/// The objectives as the study file gives them.
pub(super) struct RawGoals {
    pub(super) objective: Option<Spanned<RawObjective>>,
    pub(super) objectives: Option<Spanned<Vec<RawObjective>>>,
    pub(super) constraints: Vec<Spanned<String>>,
    /// `prune.metric`: which objective pruning reads.
    pub(super) prune_metric: Option<Spanned<String>>,
}

/// The study's primary objective, all its objectives when it has several (else
/// none), and its constraints.
pub(super) struct Goals {
    pub(super) objective: Objective,
    pub(super) objectives: Vec<Objective>,
    pub(super) constraints: Vec<Constraint>,
}

impl RawGoals {
    /// `at`: where to point when neither `objective` nor `objectives` is given.
    pub(super) fn validate<T>(self, cx: &SpecText, at: &Spanned<T>) -> Result<Goals, SpecError> {
        let mut all = match (self.objective, self.objectives) {
            (Some(_), Some(many)) => {
                return Err(cx.at(
                    &many,
                    "give `objective` (one) or `objectives` (several), not both",
                ))
            }
            (None, None) => {
                return Err(cx.at(
                    at,
                    "the study names no objective: add `objective = { metric = \"loss\" }`, or `objectives = [...]` for several",
                ))
            }
            (Some(one), None) => vec![one.into_inner().validate(cx, "objective")?],
            (None, Some(many)) => {
                let span = many.span();
                let many = many.into_inner();
                if many.is_empty() {
                    return Err(cx.err(Some(span), "objectives is empty: name at least one"));
                }
                let mut seen = BTreeSet::new();
                let mut all = Vec::new();
                for (i, o) in many.into_iter().enumerate() {
                    let o = o.validate(cx, &format!("objectives[{i}]"))?;
                    if !seen.insert(o.metric.clone()) {
                        let why = format!("objectives name `{}` twice", o.metric);
                        return Err(cx.err(Some(span), why));
                    }
                    all.push(o);
                }
                all
            }
        };
        let built_in = |m: &str| crate::constraint::BUILT_IN.contains(&m);
        let primary = match &self.prune_metric {
            // Pruning reads a reported series: not a built-in metric.
            None => all.iter().position(|o| !built_in(&o.metric)).unwrap_or(0),
            Some(m) if built_in(m.get_ref()) => {
                return Err(cx.at(m, format!(
                    "prune.metric \"{}\" is computed by augur, not reported as a series: name an objective the script reports",
                    m.get_ref()
                )))
            }
            Some(m) => all
                .iter()
                .position(|o| &o.metric == m.get_ref())
                .ok_or_else(|| {
                    let names: Vec<&str> = all.iter().map(|o| o.metric.as_str()).collect();
                    cx.at(
                        m,
                        format!(
                    "prune.metric \"{}\" is not an objective of the study (its objectives: {})",
                    m.get_ref(),
                    names.join(", ")
                ),
                    )
                })?,
        };
        let objective = all[primary].clone();
        if all.len() == 1 {
            all.clear();
        }
        let constraints = self
            .constraints
            .iter()
            .map(|c| {
                c.get_ref()
                    .parse()
                    .map_err(|why| cx.at(c, format!("constraints: {why}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Goals {
            objective,
            objectives: all,
            constraints,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{Goal, Study};
    use std::path::Path;

    fn parse(goals: &str) -> Result<Study, String> {
        let text = format!("name = 's'\ntrials = 4\n{goals}\n[run]\nscript = 'true'\n");
        Study::parse(&text, "study.toml", Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn several_objectives_and_constraints_read_with_a_primary() {
        let s = parse(
            "objectives = [{ metric = 'loss' }, { metric = 'cost_usd', goal = 'minimize' }, { metric = 'acc', goal = 'max' }]\nconstraints = ['mem_gb <= 16', 'p99_ms < 200']",
        )
        .expect("valid");
        assert!(s.is_multi());
        assert_eq!(s.objective.metric, "loss");
        let names: Vec<&str> = s.objectives().iter().map(|o| o.metric.as_str()).collect();
        assert_eq!(names, ["loss", "cost_usd", "acc"]);
        assert_eq!(s.objectives()[2].goal, Goal::Maximize);
        assert_eq!(s.constraints.len(), 2);
        assert!(s.names_metric("p99_ms") && s.names_metric("cost_usd"));
        // The primary is the first reported objective; pruning reads the one it names,
        // which becomes the primary.
        let s2 = parse("objectives = [{ metric = 'cost_usd' }, { metric = 'acc', goal = 'max' }]")
            .expect("valid");
        assert_eq!(s2.objective.metric, "acc");
        let s = parse(
            "objectives = [{ metric = 'loss' }, { metric = 'acc', goal = 'max' }]\n[prune]\nrule = 'median'\nmetric = 'acc'",
        )
        .expect("valid");
        assert_eq!(s.objective.metric, "acc");
        // One objective given as a list is a study of one, recorded as before.
        let one = parse("objectives = [{ metric = 'loss' }]").expect("valid");
        let plain = parse("objective = { metric = 'loss' }").expect("valid");
        assert!(!one.is_multi());
        assert_eq!(one.fingerprint(), plain.fingerprint());
        assert_ne!(s.fingerprint(), plain.fingerprint());
    }

    #[test]
    fn bad_objectives_and_constraints_are_named_with_their_line() {
        for (goals, said) in [
            ("", "study.toml:1: the study names no objective"),
            (
                "objective = { metric = 'a' }\nobjectives = [{ metric = 'b' }]",
                "study.toml:4: give `objective` (one) or `objectives` (several), not both",
            ),
            ("objectives = []", "study.toml:3: objectives is empty"),
            (
                "objectives = [{ metric = 'a' }, { metric = 'a' }]",
                "study.toml:3: objectives name `a` twice",
            ),
            (
                "objectives = [{ metric = 'a' }, { metric = 'b', goal = 'up' }]",
                "study.toml:3: objectives[1].goal must be \"minimize\" or \"maximize\", got \"up\"",
            ),
            (
                "objective = { metric = 'a' }\nconstraints = ['mem <= lots']",
                "study.toml:4: constraints: `lots` is not a finite number (in `mem <= lots`)",
            ),
            (
                "objectives = [{ metric = 'a' }, { metric = 'b' }]\n[prune]\nrule = 'median'\nmetric = 'c'",
                "study.toml:6: prune.metric \"c\" is not an objective of the study (its objectives: a, b)",
            ),
        ] {
            let e = parse(goals).expect_err(goals);
            assert!(e.starts_with(said), "{goals}: {e}");
        }
    }
}
