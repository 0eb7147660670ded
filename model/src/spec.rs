//! The study file (TOML): parsing and validation into a [`Study`].
//!
//! Every problem is reported as one [`SpecError`] naming the file, the key and, where
//! TOML gives it, the line, before anything is launched or written.

use crate::space::{ParamSpec, MAX_GRID_POINTS};
use crate::value::Value;
use crate::{valid_ident, valid_study_name, Millis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// A study file problem: `path:line: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.path, l, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for SpecError {}

/// Whether smaller or larger is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    Minimize,
    Maximize,
}

/// The metric a study optimizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub metric: String,
    pub goal: Goal,
}

impl Objective {
    /// Whether `a` is strictly better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Minimize => a < b,
            Goal::Maximize => a > b,
        }
    }
}

/// Which oracle proposes points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OracleKind {
    Grid,
    Random,
    /// Tree-structured Parzen estimator: random at first, then model-based.
    Tpe,
}

impl OracleKind {
    pub const NAMES: &'static str = "grid, random, tpe";
}

/// How each trial runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub script: String,
    /// Files copied next to the script, relative to the study file's directory.
    pub files: Vec<String>,
    /// Wall-clock limit of one attempt, in milliseconds (none when absent).
    pub timeout_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL when an attempt is ended.
    pub grace_ms: u64,
    pub max_attempts: u32,
    /// Attempts whose machine was taken away (a spot reclaim, an instance terminated
    /// outside augur) do not use up `max_attempts`; this many are tolerated per trial.
    #[serde(default = "default_max_preemptions")]
    pub max_preemptions: u32,
    pub retry_on_failure: bool,
    pub env: BTreeMap<String, String>,
    /// Text put before the script (`set -ex; ` by default, as in diviner).
    pub preamble: String,
}

fn default_max_preemptions() -> u32 {
    20
}

/// A run-once prerequisite of trials (diviner's datasets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Name template: `{param}` placeholders make one dataset per distinct value.
    pub name: String,
    pub script: String,
    pub timeout_ms: Option<u64>,
}

impl DatasetSpec {
    /// The parameter names the template refers to.
    pub fn placeholders(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.name.as_str();
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            match after.find('}') {
                Some(j) => {
                    out.push(after[..j].to_string());
                    rest = &after[j + 1..];
                }
                None => break,
            }
        }
        out
    }

    /// The dataset's name for a trial with `params`.
    pub fn render(&self, params: &crate::Params) -> String {
        let mut name = self.name.clone();
        for p in self.placeholders() {
            let v = params.get(&p).map(|v| v.to_string()).unwrap_or_default();
            let v: String = v
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            name = name.replace(&format!("{{{p}}}"), &v);
        }
        name
    }
}

/// Settings only the AWS backend reads; validated here so mistakes show up early.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct AwsSpec {
    pub instance_type: Option<String>,
    pub fallback_instance_types: Vec<String>,
    pub image: Option<String>,
    pub spot: bool,
    /// After this many reclaims of one trial, its next attempts run on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_fallback_after: Option<u32>,
    pub region: Option<String>,
    pub subnet: Option<String>,
    pub disk_gb: Option<u32>,
}

/// Early stopping (`[prune]`): which rule, and how a reading's step is known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneSpec {
    pub rule: PruneRule,
    /// The metric that numbers the steps (`METRICS: step=3, loss=0.7`). Readings
    /// without it count 1, 2, 3, … in the order they came.
    pub step: String,
}

/// The rules a study may prune by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PruneRule {
    /// Stop a trial whose best value so far is worse than the median of the
    /// completed trials' values at the same step.
    Median {
        /// No pruning before this step.
        warmup: f64,
        /// Completed trials that must have reached the step.
        min_trials: u32,
    },
    /// Asynchronous successive halving: rungs at `min_step · reductionᵏ`; a trial
    /// continues past a rung only if it is in the best `1/reduction` of the trials
    /// that reached the rung before it.
    Asha { min_step: f64, reduction: u32 },
}

impl PruneRule {
    pub const NAMES: &'static str = "median, asha";
}

/// A validated study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub name: String,
    pub objective: Objective,
    pub oracle: OracleKind,
    /// Budget: the number of trials (runs, replicates included).
    pub trials: u64,
    pub parallel: u32,
    pub replicates: u32,
    pub seed: u64,
    pub params: BTreeMap<String, ParamSpec>,
    pub run: RunSpec,
    pub datasets: Vec<DatasetSpec>,
    pub aws: Option<AwsSpec>,
    /// Early stopping of trials whose metric curve is not promising.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    /// Absolute directory of the study file (where `run.files` are found).
    pub dir: String,
}

impl Study {
    /// Number of grid points (before replicates), if every parameter is discrete.
    pub fn grid_size(&self) -> Result<u64, String> {
        let mut n: u64 = 1;
        for (name, p) in &self.params {
            let k = p
                .grid_values()
                .map_err(|e| format!("params.{name}: {e}"))?
                .len() as u64;
            n = n.saturating_mul(k);
        }
        Ok(n)
    }

    /// What must stay the same for a recorded study to be continued: its parameters
    /// and objective. Anything else (budget, parallelism, script) may change.
    pub fn fingerprint(&self) -> String {
        serde_json::json!({ "params": self.params, "objective": self.objective }).to_string()
    }

    /// The datasets a trial with `params` needs (rendered names, sorted, unique).
    pub fn datasets_for(&self, params: &crate::Params) -> Vec<String> {
        let set: BTreeSet<String> = self.datasets.iter().map(|d| d.render(params)).collect();
        set.into_iter().collect()
    }

    /// The dataset spec whose template renders to `name` for `params`.
    pub fn dataset_spec(&self, name: &str, params: &crate::Params) -> Option<&DatasetSpec> {
        self.datasets.iter().find(|d| d.render(params) == name)
    }

    /// Parses and validates study-file text; `dir` is where `run.files` are (recorded,
    /// not looked at: see [`check_files`](Self::check_files)). Reads nothing.
    pub fn parse(text: &str, path: &str, dir: &Path) -> Result<Study, SpecError> {
        let cx = SpecText { text, path };
        let raw: RawStudy = toml::from_str(text).map_err(|e| cx.syntax(e))?;
        raw.validate(&cx, dir)
    }

    /// Checks, after [`parse`](Self::parse) of the same `text`, that every `run.files`
    /// entry exists, as the caller's `exists` says (the file system, in the caller):
    /// the first missing one is an error at its line.
    pub fn check_files(
        &self,
        text: &str,
        path: &str,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<(), SpecError> {
        #[derive(Deserialize)]
        struct Files {
            run: RunFiles,
        }
        #[derive(Deserialize)]
        struct RunFiles {
            #[serde(default)]
            files: Vec<Spanned<String>>,
        }
        let cx = SpecText { text, path };
        let raw: Files = toml::from_str(text).map_err(|e| cx.syntax(e))?;
        let dir = Path::new(&self.dir);
        match raw
            .run
            .files
            .iter()
            .find(|f| !exists(&dir.join(f.get_ref())))
        {
            Some(f) => Err(cx.at(
                f,
                format!(
                    "run.files: `{}` not found (looked in {})",
                    f.get_ref(),
                    self.dir
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Where a study stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyState {
    /// Trials are being run (or will be when an orchestrator runs it).
    Active,
    /// `augur stop` was asked: cancel what runs, launch nothing.
    Stopping,
    /// Stopped before it was done; `augur run` resumes it.
    Stopped,
    /// Budget spent or oracle exhausted, every trial final.
    Done,
}

impl fmt::Display for StudyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StudyState::Active => "active",
            StudyState::Stopping => "stopping",
            StudyState::Stopped => "stopped",
            StudyState::Done => "done",
        })
    }
}

/// A study as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub name: String,
    pub spec: Study,
    pub state: StudyState,
    pub created_ms: Millis,
    pub updated_ms: Millis,
    /// How the study is driven (timings), as last set by `augur run` or `augur submit`:
    /// a serverless tick, or `augur stop`, drives it the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<DriveSettings>,
}

/// The timings of a study's driver, recorded with the study.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveSettings {
    /// Agents heartbeat this often.
    pub heartbeat_ms: Millis,
    /// A running trial with no heartbeat for this long is lost.
    pub lease_ms: Millis,
    /// A starting trial whose agent has not reported after this long is lost.
    pub boot_timeout_ms: Millis,
    pub backoff_base_ms: Millis,
    pub backoff_cap_ms: Millis,
}

impl DriveSettings {
    /// The defaults of the embedded default: local processes report within a second.
    pub fn local() -> DriveSettings {
        DriveSettings {
            heartbeat_ms: 2_000,
            lease_ms: 30_000,
            boot_timeout_ms: 60_000,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 60_000,
        }
    }

    /// The defaults on a cloud: instances boot in minutes, and DynamoDB writes per
    /// trial are 5 + its duration / the heartbeat.
    pub fn cloud() -> DriveSettings {
        DriveSettings {
            heartbeat_ms: 20_000,
            lease_ms: 90_000,
            boot_timeout_ms: 600_000,
            ..DriveSettings::local()
        }
    }
}

struct SpecText<'a> {
    text: &'a str,
    path: &'a str,
}

impl SpecText<'_> {
    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|s| {
            self.text[..s.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1
        })
    }
    fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> SpecError {
        SpecError {
            path: self.path.to_string(),
            line: self.line(span),
            message: message.into(),
        }
    }
    /// A TOML or type error, reworded for people and prefixed with the key of its line.
    fn syntax(&self, e: toml::de::Error) -> SpecError {
        let mut msg = e
            .message()
            .trim_end()
            .replace("expected i64", "expected an integer")
            .replace("expected u32", "expected an integer")
            .replace("expected a boolean", "expected true or false")
            .replace('\n', "; ");
        if let Some(span) = e.span() {
            let start = self.text[..span.start.min(self.text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = self.text[start..].lines().next().unwrap_or("");
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && !key.starts_with('[') && !msg.contains(&format!("`{key}`")) {
                    msg = format!("`{key}`: {msg}");
                }
            }
        }
        self.err(e.span(), msg)
    }
    fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> SpecError {
        self.err(Some(s.span()), message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudy {
    name: Spanned<String>,
    objective: Spanned<RawObjective>,
    oracle: Option<Spanned<String>>,
    trials: Option<Spanned<i64>>,
    parallel: Option<Spanned<i64>>,
    replicates: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, Spanned<RawParam>>,
    run: Spanned<RawRun>,
    #[serde(default)]
    datasets: Vec<Spanned<RawDataset>>,
    aws: Option<Spanned<RawAws>>,
    prune: Option<Spanned<RawPrune>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrune {
    rule: Spanned<String>,
    step: Option<Spanned<String>>,
    warmup: Option<Spanned<f64>>,
    min_trials: Option<Spanned<i64>>,
    min_step: Option<Spanned<f64>>,
    reduction: Option<Spanned<i64>>,
}

impl RawPrune {
    fn validate(self, cx: &SpecText, objective: &str) -> Result<PruneSpec, SpecError> {
        let not_for = |name: &str, v: Option<std::ops::Range<usize>>, rule: &str| {
            v.map_or(Ok(()), |span| {
                Err(cx.err(
                    Some(span),
                    format!("prune.{name} does not apply to the {rule} rule"),
                ))
            })
        };
        let rule = match self.rule.get_ref().as_str() {
            "median" => {
                not_for(
                    "min_step",
                    self.min_step.as_ref().map(|v| v.span()),
                    "median",
                )?;
                not_for(
                    "reduction",
                    self.reduction.as_ref().map(|v| v.span()),
                    "median",
                )?;
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
                PruneRule::Median {
                    warmup,
                    min_trials: positive(cx, "prune.min_trials", &self.min_trials, 5)? as u32,
                }
            }
            "asha" => {
                not_for("warmup", self.warmup.as_ref().map(|v| v.span()), "asha")?;
                not_for(
                    "min_trials",
                    self.min_trials.as_ref().map(|v| v.span()),
                    "asha",
                )?;
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
                PruneRule::Asha {
                    min_step,
                    reduction,
                }
            }
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjective {
    metric: Spanned<String>,
    goal: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    range: Option<Vec<toml::Value>>,
    values: Option<Vec<toml::Value>>,
    scale: Option<String>,
    steps: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    script: Spanned<String>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    max_preemptions: Option<Spanned<i64>>,
    #[serde(default)]
    retry_on_failure: bool,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    preamble: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    name: Spanned<String>,
    script: Spanned<String>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    instance_type: Option<String>,
    #[serde(default)]
    fallback_instance_types: Vec<String>,
    image: Option<String>,
    #[serde(default)]
    spot: bool,
    spot_fallback_after: Option<Spanned<i64>>,
    region: Option<String>,
    subnet: Option<String>,
    disk_gb: Option<Spanned<i64>>,
}

fn duration_ms(cx: &SpecText, key: &str, s: &Spanned<String>) -> Result<u64, SpecError> {
    crate::duration::parse(s.get_ref())
        .map(|d| d.as_millis() as u64)
        .map_err(|e| cx.at(s, format!("{key}: {e}")))
}

fn positive(
    cx: &SpecText,
    key: &str,
    v: &Option<Spanned<i64>>,
    default: i64,
) -> Result<i64, SpecError> {
    match v {
        None => Ok(default),
        Some(s) if *s.get_ref() >= 1 => Ok(*s.get_ref()),
        Some(s) => Err(cx.at(s, format!("{key} must be at least 1, got {}", s.get_ref()))),
    }
}

/// A count in `min..=max` (a `u32` setting: never truncated).
fn count(cx: &SpecText, key: &str, v: &Spanned<i64>, min: i64, max: i64) -> Result<u32, SpecError> {
    let n = *v.get_ref();
    if (min..=max).contains(&n) {
        Ok(n as u32)
    } else {
        Err(cx.at(v, format!("{key} must be {min}..={max}, got {n}")))
    }
}

fn number(v: &toml::Value) -> Option<Value> {
    match v {
        toml::Value::Integer(i) => Some(Value::Int(*i)),
        toml::Value::Float(f) if f.is_finite() => Some(Value::Float(*f)),
        _ => None,
    }
}

impl RawParam {
    fn validate(self, key: &str) -> Result<ParamSpec, String> {
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
            (Some(range), None) => {
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
            (None, Some(values)) => {
                if self.scale.is_some() || steps.is_some() {
                    return Err(format!(
                        "{key}: `scale` and `steps` only apply to a `range`"
                    ));
                }
                if values.is_empty() {
                    return Err(format!("{key}.values is empty"));
                }
                let mut out = Vec::new();
                for v in &values {
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
        }
    }
}

impl RawStudy {
    fn validate(self, cx: &SpecText, dir: &Path) -> Result<Study, SpecError> {
        let name = self.name.get_ref().clone();
        if !valid_study_name(&name) {
            return Err(cx.at(&self.name, format!(
                "name `{name}` is not a valid study name (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)"
            )));
        }
        let objective = self.objective.into_inner().validate(cx)?;
        let oracle = match self.oracle.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("random") => OracleKind::Random,
            Some("grid") => OracleKind::Grid,
            Some("tpe") => OracleKind::Tpe,
            Some(other) => {
                return Err(cx.at(
                    self.oracle.as_ref().unwrap_or(&self.name),
                    format!("unknown oracle \"{other}\" (known: {})", OracleKind::NAMES),
                ))
            }
        };
        let parallel = positive(cx, "parallel", &self.parallel, 1)?;
        let replicates = positive(cx, "replicates", &self.replicates, 1)?;
        let seed = match &self.seed {
            None => 0,
            Some(s) if *s.get_ref() >= 0 => *s.get_ref() as u64,
            Some(s) => return Err(cx.at(s, format!("seed must be 0 or more, got {}", s.get_ref()))),
        };
        let params = validate_params(cx, self.params)?;
        let run_span = self.run.span();
        let run = self.run.into_inner().validate(cx, dir)?;
        let datasets = validate_datasets(cx, self.datasets, &params)?;
        let aws = self.aws.map(|a| a.into_inner().validate(cx)).transpose()?;
        let prune = match self.prune {
            None => None,
            Some(p) => Some(p.into_inner().validate(cx, &objective.metric)?),
        };
        let mut study = Study {
            name,
            objective,
            oracle,
            trials: 0,
            parallel: parallel as u32,
            replicates: replicates as u32,
            seed,
            params,
            run,
            datasets,
            aws,
            prune,
            dir: dir.display().to_string(),
        };
        study.trials = budget(cx, &self.trials, &self.oracle, &study, run_span)?;
        Ok(study)
    }
}

impl RawObjective {
    fn validate(self, cx: &SpecText) -> Result<Objective, SpecError> {
        let metric = self.metric.get_ref().trim().to_string();
        if metric.is_empty() {
            return Err(cx.at(&self.metric, "objective.metric is empty"));
        }
        let goal = match self.goal.as_ref().map(|g| g.get_ref().as_str()) {
            None | Some("minimize") | Some("min") => Goal::Minimize,
            Some("maximize") | Some("max") => Goal::Maximize,
            Some(other) => {
                return Err(cx.at(
                    self.goal.as_ref().unwrap_or(&self.metric),
                    format!("objective.goal must be \"minimize\" or \"maximize\", got \"{other}\""),
                ))
            }
        };
        Ok(Objective { metric, goal })
    }
}

/// The parameters: names usable as `AUGUR_PARAM_<NAME>`, distinct once upper-cased.
fn validate_params(
    cx: &SpecText,
    raw: BTreeMap<Spanned<String>, Spanned<RawParam>>,
) -> Result<BTreeMap<String, ParamSpec>, SpecError> {
    let mut params = BTreeMap::new();
    let mut env_names: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in raw {
        let key = k.get_ref().clone();
        if !valid_ident(&key) {
            return Err(cx.at(
                &k,
                format!(
                "parameter name `{key}` must be letters, digits and _ (it becomes AUGUR_PARAM_{})",
                key.to_uppercase()
            ),
            ));
        }
        let upper = key.to_uppercase();
        if let Some(prev) = env_names.insert(upper.clone(), key.clone()) {
            return Err(cx.at(
                &k,
                format!("duplicate parameter: `{prev}` and `{key}` are both AUGUR_PARAM_{upper}"),
            ));
        }
        let span = v.span();
        let spec = v
            .into_inner()
            .validate(&format!("params.{key}"))
            .map_err(|m| cx.err(Some(span), m))?;
        params.insert(key, spec);
    }
    Ok(params)
}

impl RawRun {
    fn validate(self, cx: &SpecText, dir: &Path) -> Result<RunSpec, SpecError> {
        let script = self.script.get_ref().clone();
        if script.trim().is_empty() {
            return Err(cx.at(&self.script, "run.script is empty"));
        }
        let mut files = Vec::new();
        for f in &self.files {
            let rel = f.get_ref();
            // Copied into the working directory under its own name: `..` or `/` name
            // none, and would copy outside it.
            if !rel.is_empty() && Path::new(rel).file_name().is_none() {
                return Err(cx.at(
                    f,
                    format!("run.files: `{rel}` names no file or directory (give a path ending in its name)"),
                ));
            }
            if rel.is_empty() {
                return Err(cx.at(
                    f,
                    format!("run.files: `` not found (looked in {})", dir.display()),
                ));
            }
            files.push(rel.clone());
        }
        let timeout_ms = match &self.timeout {
            None => None,
            Some(t) => match duration_ms(cx, "run.timeout", t)? {
                0 => None,
                ms => Some(ms),
            },
        };
        let grace_ms = match &self.grace {
            None => 10_000,
            Some(g) => duration_ms(cx, "run.grace", g)?,
        };
        let max_attempts = match &self.max_attempts {
            None => 3,
            Some(v) => count(cx, "run.max_attempts", v, 1, 1000)?,
        };
        let max_preemptions = match &self.max_preemptions {
            None => default_max_preemptions(),
            Some(v) => count(cx, "run.max_preemptions", v, 0, 1000)?,
        };
        let mut env = BTreeMap::new();
        for (k, v) in self.env {
            let key = k.get_ref().clone();
            if !valid_ident(&key) || key.starts_with("AUGUR_") {
                return Err(cx.at(&k, format!("run.env: `{key}` is not a usable variable name (letters, digits, _; not AUGUR_*)")));
            }
            env.insert(key, v);
        }
        Ok(RunSpec {
            script,
            files,
            timeout_ms,
            grace_ms,
            max_attempts,
            max_preemptions,
            retry_on_failure: self.retry_on_failure,
            env,
            preamble: self.preamble.unwrap_or_else(|| "set -ex; ".to_string()),
        })
    }
}

/// Dataset templates: named once each, a script, placeholders that are parameters.
fn validate_datasets(
    cx: &SpecText,
    raw: Vec<Spanned<RawDataset>>,
    params: &BTreeMap<String, ParamSpec>,
) -> Result<Vec<DatasetSpec>, SpecError> {
    let mut datasets = Vec::new();
    let mut seen = BTreeSet::new();
    for d in raw {
        let span = d.span();
        let d = d.into_inner();
        let tmpl = d.name.get_ref().clone();
        if tmpl.is_empty() || !seen.insert(tmpl.clone()) {
            return Err(cx.at(
                &d.name,
                format!("datasets: name `{tmpl}` is empty or declared twice"),
            ));
        }
        if d.script.get_ref().trim().is_empty() {
            return Err(cx.at(&d.script, format!("datasets `{tmpl}`: script is empty")));
        }
        let timeout_ms = match &d.timeout {
            None => None,
            Some(t) => Some(duration_ms(cx, "datasets.timeout", t)?).filter(|ms| *ms > 0),
        };
        let spec = DatasetSpec {
            name: tmpl.clone(),
            script: d.script.into_inner(),
            timeout_ms,
        };
        if let Some(p) = spec
            .placeholders()
            .into_iter()
            .find(|p| !params.contains_key(p))
        {
            return Err(cx.err(
                Some(span),
                format!("datasets `{tmpl}`: `{{{p}}}` is not a parameter"),
            ));
        }
        let bare = spec.name.replace(['{', '}'], "");
        if !valid_study_name(&bare) {
            return Err(cx.at(
                &d.name,
                format!("datasets: name `{tmpl}` must be A-Z a-z 0-9 . _ - (and {{param}})"),
            ));
        }
        datasets.push(spec);
    }
    Ok(datasets)
}

impl RawAws {
    fn validate(self, cx: &SpecText) -> Result<AwsSpec, SpecError> {
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
        Ok(AwsSpec {
            instance_type: self.instance_type,
            fallback_instance_types: self.fallback_instance_types,
            image: self.image,
            spot: self.spot,
            spot_fallback_after,
            region: self.region,
            subnet: self.subnet,
            disk_gb,
        })
    }
}

/// The budget of trials: given, or for a grid its size times the replicates. A grid
/// may have at most [`MAX_GRID_POINTS`] points.
fn budget(
    cx: &SpecText,
    trials: &Option<Spanned<i64>>,
    oracle_key: &Option<Spanned<String>>,
    study: &Study,
    run_span: Range<usize>,
) -> Result<u64, SpecError> {
    let n = match (trials, study.oracle) {
        (Some(_), _) => positive(cx, "trials", trials, 1)? as u64,
        (None, OracleKind::Grid) => {
            let n = study.grid_size().map_err(|m| cx.err(Some(run_span), m))?;
            n.saturating_mul(study.replicates as u64)
        }
        (None, OracleKind::Random | OracleKind::Tpe) => {
            return Err(cx.err(
                Some(0..0),
                format!(
                    "trials (the budget) is required for the {} oracle",
                    oracle_key
                        .as_ref()
                        .map_or("random", |o| o.get_ref().as_str())
                ),
            ))
        }
    };
    if study.oracle == OracleKind::Grid {
        let points = study
            .grid_size()
            .map_err(|m| cx.err(None, format!("grid oracle: {m}")))?;
        if points > MAX_GRID_POINTS {
            return Err(cx.err(
                None,
                format!("grid oracle: {points} points is more than {MAX_GRID_POINTS}"),
            ));
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "quadratic"
objective = { metric = "loss", goal = "minimize" }
oracle = "random"
trials = 40
parallel = 4
seed = 7

[params]
x = { range = [-5.0, 5.0] }
n = { range = [1, 10] }
lr = { range = [1e-4, 1e-1], scale = "log" }
act = { values = ["relu", "tanh"] }

[run]
script = 'echo "METRICS: loss=$AUGUR_PARAM_X"'
timeout = "10m"
max_attempts = 2

[aws]
instance_type = "t3.micro"
"#;

    /// Parses, then checks `run.files` as if no file existed.
    fn parse(text: &str) -> Result<Study, SpecError> {
        let s = Study::parse(text, "study.toml", Path::new("."))?;
        s.check_files(text, "study.toml", |_| false)?;
        Ok(s)
    }

    #[test]
    fn parses_the_design_example() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "quadratic");
        assert_eq!(s.trials, 40);
        assert_eq!(s.parallel, 4);
        assert_eq!(s.run.timeout_ms, Some(600_000));
        assert_eq!(s.run.max_attempts, 2);
        assert_eq!(s.run.preamble, "set -ex; ");
        assert!(matches!(
            s.params["n"],
            ParamSpec::Int { lo: 1, hi: 10, .. }
        ));
        assert!(matches!(s.params["lr"], ParamSpec::Float { log: true, .. }));
    }

    #[test]
    fn grid_budget_defaults_to_points_times_replicates() {
        let s = parse(
            "name='g'\nobjective={metric='m'}\noracle='grid'\nreplicates=2\n[params]\na={values=[1,2,3]}\nb={range=[0.0,1.0],steps=4}\n[run]\nscript='true'\n",
        )
        .unwrap();
        assert_eq!(s.trials, 24);
    }

    fn bad(text: &str, needle: &str, line: Option<usize>) {
        let e = parse(text).expect_err(text);
        assert!(
            e.to_string().contains(needle),
            "`{e}` should mention `{needle}`"
        );
        if line.is_some() {
            assert_eq!(e.line, line, "{e}");
        }
    }

    #[test]
    fn bad_inputs_name_the_problem_and_line() {
        let base = "name='s'\nobjective={metric='m'}\ntrials=3\n";
        bad(
            &format!("{base}[run]\nscript='true'\nbogus=1\n"),
            "bogus",
            Some(6),
        );
        bad(
            &format!("{base}[params]\nx={{range=[5.0,1.0]}}\n[run]\nscript='true'\n"),
            "inverted",
            Some(5),
        );
        bad(
            &format!("{base}[params]\nx={{range=[1.0,1.0]}}\n[run]\nscript='true'\n"),
            "empty",
            Some(5),
        );
        bad(
            &format!("{base}[params]\nx={{range=[0.0,1.0],scale='log'}}\n[run]\nscript='true'\n"),
            "log scale",
            Some(5),
        );
        bad(
            &format!("{base}[params]\nx={{values=[]}}\n[run]\nscript='true'\n"),
            "values is empty",
            Some(5),
        );
        bad(
            &format!(
                "{base}[params]\nx={{range=[0,1]}}\nX={{range=[0,1]}}\n[run]\nscript='true'\n"
            ),
            "duplicate parameter",
            None,
        );
        bad(
            &format!("{base}[run]\nscript=''\n"),
            "run.script is empty",
            Some(5),
        );
        bad(&format!("{base}[run]\n"), "script", None);
        bad(
            &format!("{base}parallel=0\n[run]\nscript='true'\n"),
            "parallel must be at least 1",
            Some(4),
        );
        bad(
            &format!("{base}parallel='x'\n[run]\nscript='true'\n"),
            "parallel",
            Some(4),
        );
        bad(
            &format!("{base}oracle='bayes'\n[run]\nscript='true'\n"),
            "unknown oracle \"bayes\"",
            Some(4),
        );
        bad(
            "name='s'\nobjective={metric='m'}\ntrials=0\n[run]\nscript='true'\n",
            "trials must be at least 1",
            Some(3),
        );
        bad(
            "name='s'\nobjective={metric='m'}\n[run]\nscript='true'\n",
            "trials (the budget) is required",
            None,
        );
        bad(
            "name='../x'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\n",
            "not a valid study name",
            Some(1),
        );
        bad(
            "name='s'\nobjective={metric='m', goal='up'}\ntrials=1\n[run]\nscript='true'\n",
            "objective.goal",
            Some(2),
        );
        bad(
            "name='s'\nobjective={metric='m'}\ntrials=1\n[run\nscript='true'\n",
            "",
            Some(4),
        );
        bad(
            &format!("{base}[run]\nscript='true'\ntimeout='soon'\n"),
            "run.timeout",
            Some(6),
        );
        bad(
            &format!("{base}[run]\nscript='true'\nfiles=['nope.py']\n"),
            "nope.py",
            Some(6),
        );
        bad(
            &format!("{base}[params]\nx={{values=[1,'a']}}\n[run]\nscript='true'\n"),
            "mixes",
            Some(5),
        );
        bad("name='s'\nobjective={metric='m'}\noracle='grid'\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='true'\n", "steps", None);
        bad(
            &format!("{base}[[datasets]]\nname='d-{{y}}'\nscript='true'\n[run]\nscript='true'\n"),
            "not a parameter",
            None,
        );
        bad(
            &format!("{base}[run]\nscript='true'\n[aws]\ninstance='t3.micro'\n"),
            "instance",
            Some(7),
        );
    }

    #[test]
    fn dataset_templates_render_per_value() {
        let s = parse(
            "name='s'\nobjective={metric='m'}\ntrials=3\n[params]\nsize={values=[10,20]}\n[[datasets]]\nname='data-{size}'\nscript='true'\n[run]\nscript='true'\n",
        )
        .unwrap();
        let mut p = crate::Params::new();
        p.insert("size".into(), Value::Int(20));
        assert_eq!(s.datasets_for(&p), vec!["data-20".to_string()]);
    }
}
