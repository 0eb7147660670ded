//! What a trial record keeps of a script's output, bounded whatever the script
//! prints: a DynamoDB item is at most 400 KB
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>),
//! every heartbeat rewrites the record, and a write costs a unit per KB of it. The
//! log keeps every line whole; the record keeps what the control plane and a reader
//! at a glance need: the last value of each metric, a thinned series (for pruning
//! and charts), a few clipped last lines.

use crate::trial::MetricPoint;
use std::collections::BTreeMap;

/// The most readings a record's series keeps.
pub const SERIES_POINTS: usize = 200;

/// The most bytes (as JSON, about) a record's series takes.
pub const SERIES_BYTES: usize = 12 * 1024;

/// How many last lines a record keeps.
pub const TAIL_LINES: usize = 20;

/// The most characters of a line (a last line, the status) a record keeps.
pub const LINE_CHARS: usize = 160;

/// The most distinct metric names a record keeps (the objective's among them,
/// always). With names of at most [`METRIC_NAME_CHARS`], the last values take at
/// most ~40 KB, and a series reading as much: a record stays far below DynamoDB's
/// 400 KB whatever the script prints.
pub const METRIC_NAMES: usize = 256;

/// The longest metric name a record keeps, in characters (the objective's is
/// kept whatever its length: the study file names it).
pub const METRIC_NAME_CHARS: usize = 128;

/// Which metric names a record keeps: every name it already holds, and new ones
/// while it holds fewer than [`METRIC_NAMES`] (one place kept for the objective's
/// until it comes), each of at most [`METRIC_NAME_CHARS`]. The others are dropped
/// and counted.
#[derive(Clone, Debug, Default)]
pub struct MetricNames {
    objective: Option<String>,
    /// Hashes of the distinct names dropped, up to [`DROPPED_TRACKED`].
    dropped: std::collections::HashSet<u64>,
    /// `name=value` pairs dropped.
    dropped_values: u64,
}

/// How many distinct dropped names are told apart (beyond, "more than").
const DROPPED_TRACKED: usize = 100_000;

impl MetricNames {
    /// Keeping `objective`'s name whatever else the script prints.
    pub fn keeping(objective: &str) -> MetricNames {
        MetricNames {
            objective: Some(objective.to_string()),
            ..Default::default()
        }
    }

    /// The values of `reading` a record whose metrics are `held` keeps; what it
    /// drops is counted. The first name ever dropped is returned beside them,
    /// for one warning.
    pub fn admit(
        &mut self,
        held: &BTreeMap<String, f64>,
        reading: BTreeMap<String, f64>,
    ) -> (BTreeMap<String, f64>, Option<String>) {
        let objective = self.objective.as_deref();
        let reserved = objective.is_some_and(|o| !held.contains_key(o)) as usize;
        let mut kept = BTreeMap::new();
        let mut first = None;
        for (name, v) in reading {
            let new_names = kept.keys().filter(|k| !held.contains_key(*k)).count();
            let keep = Some(name.as_str()) == objective
                || held.contains_key(&name)
                || (name.chars().count() <= METRIC_NAME_CHARS
                    && held.len() + new_names + reserved < METRIC_NAMES);
            if keep {
                kept.insert(name, v);
                continue;
            }
            if self.dropped_values == 0 {
                first = Some(name.clone());
            }
            self.dropped_values += 1;
            if self.dropped.len() < DROPPED_TRACKED {
                use std::hash::{BuildHasher, BuildHasherDefault};
                let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                    .hash_one(&name);
                self.dropped.insert(h);
            }
        }
        (kept, first)
    }

    /// What was dropped, as one line for the log's reader; `None` if nothing was.
    pub fn note(&self) -> Option<String> {
        if self.dropped_values == 0 {
            return None;
        }
        let names = match self.dropped.len() {
            n if n >= DROPPED_TRACKED => format!("more than {n}"),
            n => n.to_string(),
        };
        Some(format!(
            "augur: {names} metric names ({} values) not recorded: a record keeps {METRIC_NAMES} names of at most {METRIC_NAME_CHARS} characters (the log has every line)",
            self.dropped_values
        ))
    }
}

/// A metric series thinned as it grows: every reading until it is full, then every
/// second one, every fourth, … (a reading is kept while its number is a multiple of
/// the stride, which doubles whenever the series is over its bounds), with the
/// newest reading always kept. The kept readings stay spread over the whole run.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Kept readings with their number (from 0).
    kept: Vec<(u64, MetricPoint)>,
    /// The newest reading, when the stride did not keep it.
    newest: Option<MetricPoint>,
    stride: u64,
    seen: u64,
    bytes: usize,
}

impl Series {
    pub fn push(&mut self, p: MetricPoint) {
        let n = self.seen;
        self.seen += 1;
        let stride = self.stride.max(1);
        if !n.is_multiple_of(stride) {
            self.newest = Some(p);
            return;
        }
        self.newest = None;
        self.bytes += size(&p);
        self.kept.push((n, p));
        while self.kept.len() > SERIES_POINTS || self.bytes > SERIES_BYTES {
            self.stride = stride_after(self.stride);
            let stride = self.stride;
            self.kept.retain(|(i, _)| i.is_multiple_of(stride));
            self.bytes = self.kept.iter().map(|(_, p)| size(p)).sum();
            if self.kept.len() <= 1 {
                break;
            }
        }
    }

    /// The readings kept, oldest first, the newest last.
    pub fn points(&self) -> Vec<MetricPoint> {
        self.kept
            .iter()
            .map(|(_, p)| p.clone())
            .chain(self.newest.clone())
            .collect()
    }

    /// How many readings were pushed.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

fn stride_after(s: u64) -> u64 {
    s.max(1).saturating_mul(2)
}

/// About the bytes a reading takes as JSON (`{"t_ms":…,"values":{…}}`, a value up
/// to 24 characters).
fn size(p: &MetricPoint) -> usize {
    34 + p.values.keys().map(|k| k.len() + 28).sum::<usize>()
}

/// A line as a record keeps it: at most [`LINE_CHARS`] characters, `…` marking a
/// cut (the log has it whole).
pub fn clip(line: &str) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: u64) -> MetricPoint {
        MetricPoint {
            t_ms: i as i64,
            values: [("step".to_string(), i as f64), ("loss".to_string(), 1.0)]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_long_series_is_thinned_evenly_and_keeps_its_newest_reading() {
        let mut s = Series::default();
        for i in 0..1_000_000 {
            s.push(reading(i));
        }
        let kept = s.points();
        // Bounded by bytes here (about 90 a reading): between half and all of that.
        let most = SERIES_BYTES / 90;
        assert!(
            (most / 2..=SERIES_POINTS + 1).contains(&kept.len()),
            "{}",
            kept.len()
        );
        assert_eq!(kept.first().map(|p| p.t_ms), Some(0));
        assert_eq!(kept.last().map(|p| p.t_ms), Some(999_999));
        // Evenly spread: the gaps between kept readings are all the stride.
        let gaps: std::collections::BTreeSet<i64> = kept[..kept.len() - 1]
            .windows(2)
            .map(|w| w[1].t_ms - w[0].t_ms)
            .collect();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(s.seen(), 1_000_000);
        let json = serde_json::to_string(&kept).unwrap_or_default();
        assert!(json.len() <= SERIES_BYTES, "{} bytes", json.len());
    }

    #[test]
    fn a_short_series_is_kept_whole_and_wide_readings_are_bounded_by_bytes() {
        let mut s = Series::default();
        for i in 0..50 {
            s.push(reading(i));
        }
        assert_eq!(s.points().len(), 50);
        let mut wide = Series::default();
        for i in 0..1000 {
            let values = (0..40).map(|k| (format!("metric_{k}"), i as f64)).collect();
            wide.push(MetricPoint { t_ms: i, values });
        }
        let json = serde_json::to_string(&wide.points()).unwrap_or_default();
        assert!(json.len() <= SERIES_BYTES + 2_000, "{} bytes", json.len());
        assert_eq!(wide.points().last().map(|p| p.t_ms), Some(999));
    }

    #[test]
    fn metric_names_are_bounded_and_the_objective_is_never_dropped() {
        let mut names = MetricNames::keeping("loss");
        let mut held = BTreeMap::new();
        let mut firsts = Vec::new();
        for i in 0..5_000 {
            let reading = BTreeMap::from([(format!("m{i}"), i as f64)]);
            let (kept, first) = names.admit(&held, reading);
            firsts.extend(first);
            held.extend(kept);
        }
        assert_eq!(
            held.len(),
            METRIC_NAMES - 1,
            "one place kept for the objective"
        );
        assert_eq!(firsts, ["m255"], "one warning, at the first name dropped");
        let long = "x".repeat(METRIC_NAME_CHARS + 1);
        let reading = BTreeMap::from([
            ("loss".to_string(), 0.5),
            ("m0".to_string(), -1.0),
            ("m4999".to_string(), 1.0),
            (long.clone(), 1.0),
        ]);
        let (kept, first) = names.admit(&held, reading);
        assert_eq!(first, None);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["loss", "m0"],
            "the objective comes last and is kept, a held name updated"
        );
        held.extend(kept);
        assert_eq!(held.len(), METRIC_NAMES);
        assert_eq!(
            names.note().as_deref(),
            Some("augur: 4746 metric names (4747 values) not recorded: a record keeps 256 names of at most 128 characters (the log has every line)")
        );
        // A long name within the bound is dropped too; the objective's never.
        let mut names = MetricNames::keeping(&long);
        let (kept, _) = names.admit(&BTreeMap::new(), BTreeMap::from([(long.clone(), 1.0)]));
        assert_eq!(kept.len(), 1);
        let (kept, _) =
            MetricNames::default().admit(&BTreeMap::new(), BTreeMap::from([(long, 1.0)]));
        assert!(kept.is_empty());
        assert_eq!(MetricNames::default().note(), None);
    }

    #[test]
    fn lines_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(LINE_CHARS + 10);
        let c = clip(&long);
        assert_eq!(c.chars().count(), LINE_CHARS + 1);
        assert!(c.ends_with('…'));
    }
}
