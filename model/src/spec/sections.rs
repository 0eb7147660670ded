//! The `[params]`, `[prune]` and `[aws]` sections: their shapes and validation.

use super::raw::{count, positive, SpecText};
use super::{AwsSpec, PruneRule, PruneSpec, SpecError};
use crate::space::ParamSpec;
use crate::value::Value;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrune {
    rule: Spanned<String>,
    /// Which objective pruning reads, of a study of several (the first by default).
    pub(super) metric: Option<Spanned<String>>,
    step: Option<Spanned<String>>,
    warmup: Option<Spanned<f64>>,
    min_trials: Option<Spanned<i64>>,
    min_step: Option<Spanned<f64>>,
    reduction: Option<Spanned<i64>>,
}

impl RawPrune {
    pub(super) fn validate(self, cx: &SpecText, objective: &str) -> Result<PruneSpec, SpecError> {
        let rule = match self.rule.get_ref().as_str() {
            "median" => self.median(cx)?,
            "asha" => self.asha(cx)?,
            other => {
                return Err(cx.at(
                    &self.rule,
                    format!(
                        "unknown prune rule \"{other}\" (known: {})",
                        PruneRule::NAMES
                    ),
                ))
            }
        };
        let step = match self.step {
            None => "step".to_string(),
            Some(s) if s.get_ref() == objective => {
                return Err(cx.at(&s, format!("prune.step \"{objective}\" is the objective's metric: name the metric that counts steps")))
            }
            Some(s) if s.get_ref().is_empty() => return Err(cx.at(&s, "prune.step must not be empty")),
            Some(s) => s.into_inner(),
        };
        Ok(PruneSpec { rule, step })
    }

    /// A key given that `rule` does not take.
    fn not_for<T>(
        cx: &SpecText,
        name: &str,
        v: &Option<Spanned<T>>,
        rule: &str,
    ) -> Result<(), SpecError> {
        match v {
            None => Ok(()),
            Some(v) => Err(cx.at(v, format!("prune.{name} does not apply to the {rule} rule"))),
        }
    }

    fn median(&self, cx: &SpecText) -> Result<PruneRule, SpecError> {
        Self::not_for(cx, "min_step", &self.min_step, "median")?;
        Self::not_for(cx, "reduction", &self.reduction, "median")?;
        let warmup = match &self.warmup {
            None => 0.0,
            Some(w) if w.get_ref().is_finite() && *w.get_ref() >= 0.0 => *w.get_ref(),
            Some(w) => {
                return Err(cx.at(
                    w,
                    format!("prune.warmup must be 0 or more, got {}", w.get_ref()),
                ))
            }
        };
        Ok(PruneRule::Median {
            warmup,
            min_trials: positive(cx, "prune.min_trials", &self.min_trials, 5)? as u32,
        })
    }

    fn asha(&self, cx: &SpecText) -> Result<PruneRule, SpecError> {
        Self::not_for(cx, "warmup", &self.warmup, "asha")?;
        Self::not_for(cx, "min_trials", &self.min_trials, "asha")?;
        let min_step = match &self.min_step {
            None => 1.0,
            Some(m) if m.get_ref().is_finite() && *m.get_ref() > 0.0 => *m.get_ref(),
            Some(m) => {
                return Err(cx.at(
                    m,
                    format!("prune.min_step must be above 0, got {}", m.get_ref()),
                ))
            }
        };
        let reduction = match &self.reduction {
            None => 3,
            Some(r) if (2..=100).contains(r.get_ref()) => *r.get_ref() as u32,
            Some(r) => {
                return Err(cx.at(
                    r,
                    format!("prune.reduction must be 2 to 100, got {}", r.get_ref()),
                ))
            }
        };
        Ok(PruneRule::Asha {
            min_step,
            reduction,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    range: Option<Vec<toml::Value>>,
    values: Option<Vec<toml::Value>>,
    scale: Option<String>,
    steps: Option<i64>,
}

fn number(v: &toml::Value) -> Option<Value> {
    match v {
        toml::Value::Integer(i) => Some(Value::Int(*i)),
        toml::Value::Float(f) if f.is_finite() => Some(Value::Float(*f)),
        _ => None,
    }
}

impl RawParam {
    pub(super) fn validate(self, key: &str) -> Result<ParamSpec, String> {
        let log = match self.scale.as_deref() {
            None | Some("linear") => false,
            Some("log") => true,
            Some(other) => {
                return Err(format!(
                    "{key}.scale must be \"linear\" or \"log\", got \"{other}\""
                ))
            }
        };
        let steps = match self.steps {
            None => None,
            Some(n) if (2..=1_000_000).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(format!(
                    "{key}.steps must be between 2 and 1000000, got {n}"
                ))
            }
        };
        match (self.range, self.values) {
            (Some(_), Some(_)) => Err(format!("{key} has both `range` and `values`: give one")),
            (None, None) => Err(format!(
                "{key} needs `range = [lo, hi]` or `values = [...]`"
            )),
            (Some(range), None) => range_param(key, &range, log, steps),
            (None, Some(_)) if self.scale.is_some() || steps.is_some() => Err(format!(
                "{key}: `scale` and `steps` only apply to a `range`"
            )),
            (None, Some(values)) => choice_param(key, &values),
        }
    }
}

/// `range = [lo, hi]`: integers if both bounds are, floats if both are; an integer
/// beside a float is refused (`[5, 20.0]` would silently make `epochs` a float).
fn range_param(
    key: &str,
    range: &[toml::Value],
    log: bool,
    steps: Option<u32>,
) -> Result<ParamSpec, String> {
    if range.len() != 2 {
        return Err(format!(
            "{key}.range must be [lo, hi], got {} element(s)",
            range.len()
        ));
    }
    let (lo, hi) = match (number(&range[0]), number(&range[1])) {
        (Some(lo), Some(hi)) => (lo, hi),
        _ => return Err(format!("{key}.range bounds must be numbers")),
    };
    if matches!(
        (&lo, &hi),
        (Value::Int(_), Value::Float(_)) | (Value::Float(_), Value::Int(_))
    ) {
        let (l, h) = (lo.as_f64().unwrap_or(0.0), hi.as_f64().unwrap_or(0.0));
        let written = |v: &Value| match v {
            Value::Float(x) => format!("{x:?}"),
            other => other.to_string(),
        };
        return Err(format!(
            "{key}.range mixes an integer and a float ([{}, {}]): both integers for an integer parameter ([{}, {}]), or both floats ([{l:?}, {h:?}])",
            written(&lo),
            written(&hi),
            l.round(),
            h.round(),
        ));
    }
    let (flo, fhi) = (lo.as_f64().unwrap_or(0.0), hi.as_f64().unwrap_or(0.0));
    if flo > fhi {
        return Err(format!(
            "{key}.range is inverted: [{lo}, {hi}] (lo must be below hi)"
        ));
    }
    if flo == fhi {
        return Err(format!(
            "{key}.range is empty: [{lo}, {hi}] (for one value use `values = [{lo}]`)"
        ));
    }
    if log && flo <= 0.0 {
        return Err(format!(
            "{key}: log scale needs bounds above 0, got [{lo}, {hi}]"
        ));
    }
    Ok(match (lo, hi) {
        (Value::Int(lo), Value::Int(hi)) => ParamSpec::Int { lo, hi, log, steps },
        _ => ParamSpec::Float {
            lo: flo,
            hi: fhi,
            log,
            steps,
        },
    })
}

/// `values = [...]`: distinct numbers, or distinct strings.
fn choice_param(key: &str, values: &[toml::Value]) -> Result<ParamSpec, String> {
    if values.is_empty() {
        return Err(format!("{key}.values is empty"));
    }
    let mut out = Vec::new();
    for v in values {
        let v = match v {
            toml::Value::String(s) => Value::Str(s.clone()),
            other => number(other).ok_or_else(|| {
                format!(
                    "{key}.values may hold numbers or strings, not {}",
                    other.type_str()
                )
            })?,
        };
        if out.contains(&v) {
            return Err(format!("{key}.values lists {v} twice"));
        }
        out.push(v);
    }
    let strings = out.iter().filter(|v| matches!(v, Value::Str(_))).count();
    if strings != 0 && strings != out.len() {
        return Err(format!("{key}.values mixes numbers and strings"));
    }
    Ok(ParamSpec::Choice { values: out })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    instance_type: Option<String>,
    #[serde(default)]
    fallback_instance_types: Vec<String>,
    image: Option<String>,
    #[serde(default)]
    spot: bool,
    spot_fallback_after: Option<Spanned<i64>>,
    region: Option<String>,
    subnet: Option<String>,
    #[serde(default)]
    subnets: Vec<String>,
    disk_gb: Option<Spanned<i64>>,
    imds_hop_limit: Option<Spanned<i64>>,
    keep_days: Option<Spanned<i64>>,
}

impl RawAws {
    pub(super) fn validate(self, cx: &SpecText) -> Result<AwsSpec, SpecError> {
        let disk_gb = match &self.disk_gb {
            None => None,
            Some(d) if (1..=16384).contains(d.get_ref()) => Some(*d.get_ref() as u32),
            Some(d) => {
                return Err(cx.at(
                    d,
                    format!("aws.disk_gb must be 1..16384, got {}", d.get_ref()),
                ))
            }
        };
        let spot_fallback_after = match &self.spot_fallback_after {
            None => None,
            Some(v) if !self.spot => {
                return Err(cx.at(
                    v,
                    "aws.spot_fallback_after only applies with aws.spot = true",
                ))
            }
            Some(v) => Some(count(cx, "aws.spot_fallback_after", v, 1, 1000)?),
        };
        let imds_hop_limit = match &self.imds_hop_limit {
            None => None,
            Some(v) => Some(count(cx, "aws.imds_hop_limit", v, 1, 64)?),
        };
        let keep_days = match &self.keep_days {
            None => None,
            Some(v) => Some(count(cx, "aws.keep_days", v, 1, 3653)?),
        };
        Ok(AwsSpec {
            instance_type: self.instance_type,
            fallback_instance_types: self.fallback_instance_types,
            image: self.image,
            spot: self.spot,
            spot_fallback_after,
            region: self.region,
            subnet: self.subnet,
            subnets: self.subnets,
            disk_gb,
            imds_hop_limit,
            keep_days,
        })
    }
}

/// `[local]`: what the user's own machines cost.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocal {
    usd_per_hour: Option<Spanned<toml::Value>>,
}

impl RawLocal {
    pub(super) fn validate(self, cx: &SpecText) -> Result<Option<super::LocalSpec>, SpecError> {
        let usd = super::raw::above_zero(cx, "local.usd_per_hour", self.usd_per_hour.as_ref())?;
        Ok(usd.map(|usd_per_hour| super::LocalSpec { usd_per_hour }))
    }
}
