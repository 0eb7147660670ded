//! A study's constraints on what its trials report (`constraints = ["mem_gb <= 16",
//! "p99_ms < 200"]`), and the metrics augur knows of every trial without its script
//! reporting them (`cost_usd`, `machine_hours`), usable as objectives or constraints.

use crate::trial::Trial;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The metrics augur computes for every trial: what its machines cost, in US
/// dollars, and their time in hours. Where a study ranks or constrains by one of
/// these names, augur's value counts, whatever a script reports under it.
pub const BUILT_IN: [&str; 2] = ["cost_usd", "machine_hours"];

/// A trial's value of `metric`: what its script reported last, or a built-in one.
/// For a pruned trial the value is what it reported when it stopped.
pub fn value_of(t: &Trial, metric: &str, now: Millis) -> Option<f64> {
    match metric {
        "cost_usd" => Some(t.cost_usd(now)),
        "machine_hours" => Some(t.machine_ms(now) as f64 / 3_600_000.0),
        _ => t.metrics.get(metric).copied(),
    }
}

/// How a constraint compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    AtMost,
    Below,
    AtLeast,
    Above,
}

impl Compare {
    fn symbol(self) -> &'static str {
        match self {
            Compare::AtMost => "<=",
            Compare::Below => "<",
            Compare::AtLeast => ">=",
            Compare::Above => ">",
        }
    }
}

/// One constraint: a metric compared with a bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub metric: String,
    pub compare: Compare,
    pub bound: f64,
}

impl Constraint {
    /// By how much `value` misses the constraint (0 when it holds). A strict bound
    /// met exactly misses by the least positive amount; a metric never reported
    /// misses by infinity (the trial is as infeasible as can be).
    pub fn violation(&self, value: Option<f64>) -> f64 {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            return f64::INFINITY;
        };
        let over = match self.compare {
            Compare::AtMost | Compare::Below => v - self.bound,
            Compare::AtLeast | Compare::Above => self.bound - v,
        };
        let strict = matches!(self.compare, Compare::Below | Compare::Above);
        match (over > 0.0, over == 0.0 && strict) {
            (true, _) => over,
            (false, true) => f64::MIN_POSITIVE,
            (false, false) => 0.0,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.metric,
            self.compare.symbol(),
            self.bound
        )
    }
}

impl FromStr for Constraint {
    type Err = String;

    /// `METRIC OP NUMBER`, OP one of `<=`, `<`, `>=`, `>`.
    fn from_str(s: &str) -> Result<Constraint, String> {
        let at = s
            .find(['<', '>'])
            .ok_or_else(|| format!("`{s}` is not METRIC <= NUMBER (or <, >=, >)"))?;
        let (metric, rest) = (s[..at].trim(), &s[at..]);
        let (compare, bound) = [
            ("<=", Compare::AtMost),
            (">=", Compare::AtLeast),
            ("<", Compare::Below),
            (">", Compare::Above),
        ]
        .into_iter()
        .find_map(|(sym, c)| rest.strip_prefix(sym).map(|b| (c, b.trim())))
        .ok_or_else(|| format!("`{s}` is not METRIC <= NUMBER (or <, >=, >)"))?;
        if metric.is_empty() {
            return Err(format!("`{s}` names no metric"));
        }
        if metric.contains(char::is_whitespace) {
            return Err(format!("`{metric}` is not a metric name (in `{s}`)"));
        }
        let bound: f64 = bound
            .parse()
            .ok()
            .filter(|b: &f64| b.is_finite())
            .ok_or_else(|| format!("`{bound}` is not a finite number (in `{s}`)"))?;
        Ok(Constraint {
            metric: metric.to_string(),
            compare,
            bound,
        })
    }
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Constraint, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_read_and_print_back() {
        for text in ["mem_gb <= 16", "p99_ms < 200", "acc >= 0.9", "x > -1.5"] {
            let c: Constraint = text.parse().expect(text);
            assert_eq!(c.to_string(), text);
        }
        let c: Constraint = "mem_gb<=16".parse().expect("no spaces");
        assert_eq!(
            (c.metric.as_str(), c.compare, c.bound),
            ("mem_gb", Compare::AtMost, 16.0)
        );
        for bad in [
            "mem_gb",
            "<= 3",
            "a b <= 3",
            "x <= lots",
            "x <= inf",
            "x == 3",
            "x =< 3",
        ] {
            assert!(bad.parse::<Constraint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_violation_is_by_how_much_the_bound_is_missed() {
        let le: Constraint = "m <= 16".parse().expect("le");
        assert_eq!(le.violation(Some(12.0)), 0.0);
        assert_eq!(le.violation(Some(16.0)), 0.0);
        assert_eq!(le.violation(Some(20.0)), 4.0);
        let lt: Constraint = "m < 16".parse().expect("lt");
        assert!(lt.violation(Some(16.0)) > 0.0);
        let ge: Constraint = "acc >= 0.5".parse().expect("ge");
        assert_eq!(ge.violation(Some(0.25)), 0.25);
        assert_eq!(ge.violation(None), f64::INFINITY);
        assert_eq!(ge.violation(Some(f64::NAN)), f64::INFINITY);
    }
}
