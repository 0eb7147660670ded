//! How much of a trial's series a reader keeps: a driver that holds every trial of
//! a study in memory needs only the objective's readings, and only if the study
//! prunes; a record's series, a map of every metric per reading, is most of a
//! trial's size and most of the work of decoding it (`augur-sim --serverless`).
//! A store decodes a record with [`Trial::decode`], so what is not kept is never
//! built.

use crate::trial::{MetricPoint, Trial};
use crate::Study;
use serde::{Deserialize, Deserializer};
use std::cell::Cell;

/// What a reader keeps of each trial's series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeriesKeep {
    /// Every reading (the pages' charts, `augur show`).
    Whole,
    /// None (a study that does not prune: a driver never reads a series).
    Nothing,
    /// The readings of `objective`, with it and `step` only (a pruning study: the
    /// pruner's curves, a pruned trial's best value).
    Objective { objective: String, step: String },
}

impl SeriesKeep {
    /// What a driver of `study` reads of a series.
    pub fn for_driver(study: &Study) -> SeriesKeep {
        match &study.prune {
            Some(prune) => SeriesKeep::Objective {
                objective: study.objective.metric.clone(),
                step: prune.step.clone(),
            },
            None => SeriesKeep::Nothing,
        }
    }

    /// Leaves in `t` only what this keeps of its series.
    pub fn slim(&self, t: &mut Trial) {
        match self {
            SeriesKeep::Whole => {}
            SeriesKeep::Nothing => t.series = Vec::new(),
            SeriesKeep::Objective { objective, step } => {
                t.series.retain(|p| p.values.contains_key(objective));
                for p in &mut t.series {
                    p.values.retain(|k, _| k == objective || k == step);
                }
                t.series.shrink_to_fit();
            }
        }
    }
}

thread_local! {
    /// Set by [`Trial::decode`] for the length of one synchronous decode: the series
    /// is skipped, not built.
    static SKIP_SERIES: Cell<bool> = const { Cell::new(false) };
}

/// A record's `series`, or nothing when [`Trial::decode`] is told to keep none.
pub(crate) fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MetricPoint>, D::Error> {
    if SKIP_SERIES.with(Cell::get) {
        serde::de::IgnoredAny::deserialize(d)?;
        return Ok(Vec::new());
    }
    Vec::<MetricPoint>::deserialize(d)
}

impl Trial {
    /// A trial record from its JSON, with as much of its series as `keep` keeps.
    pub fn decode(json: &str, keep: &SeriesKeep) -> serde_json::Result<Trial> {
        let before = SKIP_SERIES.with(|s| s.replace(*keep == SeriesKeep::Nothing));
        let decoded = serde_json::from_str::<Trial>(json);
        SKIP_SERIES.with(|s| s.set(before));
        let mut t = decoded?;
        keep.slim(&mut t);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_series() -> Trial {
        let mut t = Trial::new("s", 1, 0, 0, Default::default(), 0);
        for (i, loss) in [3.0, 2.0, 1.0].into_iter().enumerate() {
            let mut values = BTreeMap::from([("epoch".to_string(), i as f64)]);
            values.insert("other".into(), 7.0);
            if i > 0 {
                values.insert("loss".into(), loss);
            }
            t.series.push(MetricPoint {
                t_ms: i as i64,
                values,
            });
        }
        t
    }

    #[test]
    fn a_decode_keeps_what_its_reader_keeps_of_the_series_and_all_else() {
        let t = with_series();
        let json = serde_json::to_string(&t).expect("encode");
        let whole = Trial::decode(&json, &SeriesKeep::Whole).expect("whole");
        assert_eq!(whole, t);
        let none = Trial::decode(&json, &SeriesKeep::Nothing).expect("nothing");
        assert!(none.series.is_empty());
        assert_eq!(
            Trial {
                series: t.series.clone(),
                ..none
            },
            t
        );
        let keep = SeriesKeep::Objective {
            objective: "loss".into(),
            step: "epoch".into(),
        };
        let slim = Trial::decode(&json, &keep).expect("objective");
        let kept: Vec<Vec<&str>> = slim
            .series
            .iter()
            .map(|p| p.values.keys().map(String::as_str).collect())
            .collect();
        assert_eq!(kept, vec![vec!["epoch", "loss"], vec!["epoch", "loss"]]);
        // The skip lasts one decode: the next reads whole.
        let again: Trial = serde_json::from_str(&json).expect("plain");
        assert_eq!(again.series.len(), 3);
    }
}
