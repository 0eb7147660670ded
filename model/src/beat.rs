//! A running attempt's heartbeat, where a store keeps it apart from the trial record.
//!
//! DynamoDB prices a write by the size of the whole item, before or after, whichever
//! is larger (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html#write-operation-consumption>),
//! not by the attributes it changed. A record with a thinned series is up to ~20 KB,
//! so a heartbeat written to it costs up to 20 write units, twice over with the
//! changes index. A [`Beat`] is what a heartbeat adds to the record — when, the last
//! value of each metric, the status, the readings since the record was last written —
//! in an item of its own of at most 1 KB: one write unit. The record is written in
//! full at the attempt's start and end, and every few minutes in between.
//!
//! Readers lay the beat over the record ([`Trial::absorb`]).

use crate::trial::{Checkpoint, MetricPoint, Trial, TrialState};
use crate::update::TrialUpdate;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The most bytes of a beat's JSON: with its keys and numbers, the item stays under
/// DynamoDB's 1 KB write unit.
pub const BEAT_BYTES: usize = 700;

/// A running attempt's last heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// The trial.
    #[serde(skip)]
    pub id: u64,
    /// The attempt that beat (its fencing token).
    #[serde(skip)]
    pub attempt: u32,
    /// When it beat (the agent's clock).
    #[serde(skip)]
    pub at_ms: Millis,
    /// The last value of each metric.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The newest readings after those the record holds, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<MetricPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

impl Beat {
    /// The beat of a heartbeat that knows `metrics`, `series`, `status` and
    /// `checkpoint`, with as many of the newest readings after `after_ms` (the
    /// newest the record holds) as fit; `None` when even none fit (many metrics, a
    /// long status): the record must take this heartbeat.
    pub fn of(known: &TrialUpdate, after_ms: Millis) -> Option<Beat> {
        let mut beat = Beat {
            metrics: known.metrics.clone().unwrap_or_default(),
            status: known.status.value().cloned(),
            checkpoint: known.checkpoint,
            ..Default::default()
        };
        if beat.bytes() > BEAT_BYTES {
            return None;
        }
        let series = known.series.as_deref().unwrap_or_default();
        let mut left = BEAT_BYTES - beat.bytes();
        let mut recent = Vec::new();
        for p in series.iter().rev().take_while(|p| p.t_ms > after_ms) {
            let size = serde_json::to_string(p).map_or(usize::MAX, |j| j.len() + 1);
            if size > left {
                break;
            }
            left -= size;
            recent.push(p.clone());
        }
        recent.reverse();
        beat.recent = recent;
        Some(beat)
    }

    /// The bytes of its JSON.
    pub fn bytes(&self) -> usize {
        serde_json::to_string(self).map_or(usize::MAX, |j| j.len())
    }
}

impl Trial {
    /// Lays a beat over the record: if the record is that attempt running and the
    /// beat is newer than its last heartbeat, the beat's time, metrics, status and
    /// checkpoint, and its readings after the record's. Whether it did.
    pub fn absorb(&mut self, b: &Beat) -> bool {
        let newer = self.heartbeat_ms.is_none_or(|h| b.at_ms > h);
        if self.state != TrialState::Running || self.attempt != b.attempt || !newer {
            return false;
        }
        self.heartbeat_ms = Some(b.at_ms);
        if !b.metrics.is_empty() {
            self.metrics = b.metrics.clone();
        }
        if b.status.is_some() {
            self.status = b.status.clone();
        }
        if b.checkpoint.is_some() {
            self.checkpoint = b.checkpoint;
        }
        let last = self.series.last().map_or(Millis::MIN, |p| p.t_ms);
        let after = b.recent.iter().filter(|p| p.t_ms > last).cloned();
        self.series.extend(after);
        true
    }
}

/// The last beat read of each running trial, as a reader's cache keeps them: laid
/// again over a record read later, which may be older than the beat (a record
/// written by the control plane meanwhile), so that a heartbeat never turns back.
#[derive(Debug, Default)]
pub struct KeptBeats(HashMap<u64, Beat>);

impl KeptBeats {
    /// Keeps `b`, in place of its trial's earlier one.
    pub fn keep(&mut self, b: Beat) {
        self.0.insert(b.id, b);
    }

    /// Lays its trial's kept beat over `t` if `t` runs; forgets it if `t` ended.
    pub fn lay(&mut self, t: &mut Trial) {
        if t.state == TrialState::Running {
            if let Some(b) = self.0.get(&t.id) {
                t.absorb(b);
            }
        } else {
            self.0.remove(&t.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Set;

    fn reading(t: Millis, step: f64) -> MetricPoint {
        MetricPoint {
            t_ms: t,
            values: [("step".to_string(), step), ("loss".to_string(), 1.0 / step)]
                .into_iter()
                .collect(),
        }
    }

    fn known(n: i64) -> TrialUpdate {
        let series: Vec<MetricPoint> = (1..=n).map(|i| reading(i, i as f64)).collect();
        TrialUpdate {
            metrics: series.last().map(|p| p.values.clone()),
            series: Some(series),
            status: Set::To("epoch 3".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_beat_keeps_the_newest_readings_after_the_record_and_stays_small() {
        let b = Beat::of(&known(100_000), 10).expect("fits");
        assert!(b.bytes() <= BEAT_BYTES, "{}", b.bytes());
        assert!(!b.recent.is_empty());
        assert_eq!(b.recent.last().map(|p| p.t_ms), Some(100_000));
        assert!(b.recent.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        // Only what the record lacks.
        let few = Beat::of(&known(12), 10).expect("fits");
        assert_eq!(
            few.recent.iter().map(|p| p.t_ms).collect::<Vec<_>>(),
            [11, 12]
        );
        // Too many metrics for a beat: the record takes the heartbeat.
        let mut wide = known(3);
        wide.metrics = Some((0..100).map(|i| (format!("metric_{i}"), 0.5)).collect());
        assert!(Beat::of(&wide, 0).is_none());
    }

    #[test]
    fn a_beat_is_laid_only_over_its_own_running_attempt_and_only_when_newer() {
        let mut t = Trial::new("s", 1, 0, 0, Default::default(), 0);
        t.state = TrialState::Running;
        t.attempt = 2;
        t.heartbeat_ms = Some(50);
        t.series = vec![reading(1, 1.0)];
        let mut b = Beat::of(&known(3), 1).expect("fits");
        b.attempt = 2;
        b.at_ms = 60;
        let mut older = t.clone();
        assert!(t.absorb(&b));
        assert_eq!(t.heartbeat_ms, Some(60));
        assert_eq!(t.status.as_deref(), Some("epoch 3"));
        assert_eq!(
            t.series.iter().map(|p| p.t_ms).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(t.metrics.get("step"), Some(&3.0));
        // Twice is once.
        let once = t.clone();
        assert!(!t.absorb(&b));
        assert_eq!(t, once);
        // Another attempt's, an older one, or over an ended trial: nothing.
        b.attempt = 1;
        assert!(!older.absorb(&b));
        b.attempt = 2;
        b.at_ms = 40;
        assert!(!older.absorb(&b));
        older.state = TrialState::Succeeded;
        b.at_ms = 70;
        assert!(!older.absorb(&b));
    }

    #[test]
    fn a_kept_beat_is_laid_over_an_older_record_and_forgotten_once_the_trial_ends() {
        let mut kept = KeptBeats::default();
        let mut b = Beat::of(&known(3), 0).expect("fits");
        (b.id, b.attempt, b.at_ms) = (1, 1, 90);
        kept.keep(b);
        let mut older = Trial::new("s", 1, 0, 0, Default::default(), 0);
        older.state = TrialState::Running;
        older.attempt = 1;
        older.heartbeat_ms = Some(50);
        let mut again = older.clone();
        kept.lay(&mut older);
        assert_eq!(older.heartbeat_ms, Some(90));
        let mut ended = again.clone();
        ended.state = TrialState::Succeeded;
        kept.lay(&mut ended);
        assert_eq!(ended.heartbeat_ms, Some(50));
        // Forgotten: a running record read after that keeps its own.
        kept.lay(&mut again);
        assert_eq!(again.heartbeat_ms, Some(50));
    }
}
