//! The study file (TOML): parsing and validation into a [`Study`].
//!
//! Every problem is reported as one [`SpecError`] naming the file, the key and, where
//! TOML gives it, the line, before anything is launched or written.

mod check;
mod objectives;
pub(crate) use check::check_record;
mod raw;
mod sections;

/// The most attempts (and preemptions) a trial may be given.
pub(crate) const MAX_ATTEMPTS_LIMIT: u32 = 1000;

use crate::cost::Limits;
use crate::space::ParamSpec;
use raw::{RawStudy, SpecText};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
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
    /// A trial whose script exits 0 without reporting the metric fails (the default);
    /// `required = false` lets it succeed without a value.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(v: &bool) -> bool {
    *v
}

impl Objective {
    /// Whether `a` is strictly better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Minimize => a < b,
            Goal::Maximize => a > b,
        }
    }

    /// Why an attempt whose script ended well still fails: the metric is required and
    /// was never reported. Says what was seen instead, so a typo shows.
    pub fn missing_from(&self, end: &crate::AttemptEnd) -> Option<String> {
        if !self.required || end.exit_code != Some(0) || end.error.is_some() {
            return None;
        }
        if crate::constraint::BUILT_IN.contains(&self.metric.as_str()) {
            return None;
        }
        if end.metrics.contains_key(&self.metric) {
            return None;
        }
        let seen = if end.metrics.is_empty() {
            "it reported no metrics".to_string()
        } else {
            let names: Vec<&str> = end.metrics.keys().map(String::as_str).collect();
            format!("saw: {}", names.join(", "))
        };
        Some(format!(
            "exited 0 but never reported `{}` ({seen}); print `METRICS: {}=<value>`, or set objective.required = false",
            self.metric, self.metric
        ))
    }
}

/// Which oracle proposes points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OracleKind {
    Grid,
    Random,
    /// Tree-structured Parzen estimator: random at first, then model-based (MOTPE
    /// for several objectives or constraints).
    Tpe,
    /// NSGA-II: generations of children of the best points so far.
    Nsga2,
}

impl OracleKind {
    pub const NAMES: &'static str = "grid, random, tpe, nsga2";

    /// Its name as a study file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OracleKind::Grid => "grid",
            OracleKind::Random => "random",
            OracleKind::Tpe => "tpe",
            OracleKind::Nsga2 => "nsga2",
        }
    }
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
    /// On AWS, the least time between two syncs of `AUGUR_CHECKPOINT_DIR` to the
    /// bucket (`None`: at every heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_ms: Option<u64>,
    /// What the study's machines may cost (`run.max_cost_usd`,
    /// `run.max_machine_hours`).
    #[serde(default, skip_serializing_if = "Limits::is_none")]
    pub limits: Limits,
    pub env: BTreeMap<String, String>,
    /// Variables whose values are secrets, by reference ([`crate::secret::SecretRef`]):
    /// read on the machine when the attempt starts, never recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Text put before the script (`set -ex; ` by default, as in diviner).
    pub preamble: String,
    /// Whether a machine that finished an attempt takes the study's next one
    /// (`run.reuse`; `None`: the backend's default, warm locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    /// How long a machine kept warm waits, idle, for the study's next attempt before
    /// it powers off (`run.keep_alive`; `None`: [`KEEP_ALIVE_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_ms: Option<u64>,
    /// Whole GPUs each trial gets to itself (`run.gpus`; 0: none), named to its
    /// script by `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How long an idle warm machine waits for an attempt by default (as SageMaker's
/// warm pools' `KeepAlivePeriodInSeconds` is chosen: about a minute).
pub const KEEP_ALIVE_MS: u64 = 60_000;

impl RunSpec {
    /// How long an idle warm machine waits for the study's next attempt.
    pub fn keep_alive_ms(&self) -> u64 {
        self.keep_alive_ms.unwrap_or(KEEP_ALIVE_MS)
    }
}

/// `run.reuse`: what one machine (a local agent process, an instance) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    /// One attempt, then the machine ends.
    Attempt,
    /// Attempts of the study one after another, while it has trials to run: a
    /// machine kept warm. One that ended an attempt by force (a signal, a timeout)
    /// is not reused.
    Study,
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
    /// More subnets (other availability zones) to launch in when one has no
    /// capacity; `subnet`, if given, is tried first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    pub disk_gb: Option<u32>,
    /// The metadata service's hop limit (1 when `None`: a container a script starts
    /// cannot reach the role's credentials; 2 lets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_hop_limit: Option<u32>,
    /// Days the study's logs are kept (its log group's retention; the stack's
    /// default when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

impl AwsSpec {
    /// The subnets to launch in, in order (empty: the default VPC's choice).
    pub fn all_subnets(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subnet.iter().cloned().collect();
        for s in &self.subnets {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    }
}

/// Local machines (`[local]`): `usd_per_hour` is what an hour of one costs the user
/// (a workstation's share, an on-premises GPU server's), so that `cost_usd` and
/// `run.max_cost_usd` mean dollars on local machines too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalSpec {
    pub usd_per_hour: f64,
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
    /// The primary objective: the study's only one, or of several the one pruning
    /// reads (`prune.metric`, else the first), and the one shown where a single
    /// value is.
    pub objective: Objective,
    /// Every objective of a study of several, in the study file's order (the
    /// primary among them); empty for a study of one ([`Study::objectives`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<Objective>,
    /// What a trial must meet to be feasible: feasible trials rank first, then the
    /// others by how much they miss.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<crate::constraint::Constraint>,
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
    /// What local machines cost (`[local]`; free without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSpec>,
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

    /// Every objective: the primary alone, or all of a study of several.
    pub fn objectives(&self) -> &[Objective] {
        match self.objectives.is_empty() {
            true => std::slice::from_ref(&self.objective),
            false => &self.objectives,
        }
    }

    /// Whether an objective or a constraint of the study reads `metric`.
    pub fn names_metric(&self, metric: &str) -> bool {
        self.objectives().iter().any(|o| o.metric == metric)
            || self.constraints.iter().any(|c| c.metric == metric)
    }

    /// Whether the study optimizes several objectives at once.
    pub fn is_multi(&self) -> bool {
        self.objectives.len() > 1
    }

    /// Why an attempt whose script ended well still fails: an objective it must
    /// report was never reported ([`Objective::missing_from`]).
    pub fn unreported(&self, end: &crate::AttemptEnd) -> Option<String> {
        self.objectives().iter().find_map(|o| o.missing_from(end))
    }

    /// What must stay the same for a recorded study to be continued: its parameters
    /// and objectives. Anything else (budget, parallelism, script, constraints) may
    /// change.
    pub fn fingerprint(&self) -> String {
        let goal = |o: &Objective| serde_json::json!({ "metric": o.metric, "goal": o.goal });
        let mut fp =
            serde_json::json!({ "params": self.params, "objective": goal(&self.objective) });
        if self.is_multi() {
            fp["objectives"] = self.objectives.iter().map(goal).collect();
        }
        fp.to_string()
    }

    /// Why this study cannot continue `recorded`, the study recorded under its name:
    /// other parameters or another objective would make their trials incomparable.
    pub fn conflict_with(&self, recorded: &Study) -> Option<String> {
        if recorded.fingerprint() == self.fingerprint() {
            return None;
        }
        let what = if recorded.params != self.params {
            "parameters"
        } else {
            "objective"
        };
        Some(format!(
            "study `{}` is already recorded with different {what}; its trials would not be comparable. \
             To start afresh, give the study a new `name`, or delete the old one with `augur delete {}`",
            self.name, self.name
        ))
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

    /// An attempt's timeout: its dataset's, else the study's (`None`: it has none).
    pub fn attempt_timeout_ms(&self, t: &crate::Trial) -> Option<u64> {
        match &t.dataset {
            Some(name) => self
                .dataset_spec(name, &t.params)
                .and_then(|d| d.timeout_ms)
                .or(self.run.timeout_ms),
            None => self.run.timeout_ms,
        }
    }

    /// The study as shown to readers (the status server's API): `run.env` keeps its
    /// names, its values are replaced (they may be credentials).
    pub fn redacted(&self) -> Study {
        let mut s = self.clone();
        for v in s.run.env.values_mut() {
            *v = "(redacted)".into();
        }
        s
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::value::Value;

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
    fn a_required_objective_missing_from_a_clean_exit_fails_it() {
        let mut s = parse(GOOD).unwrap();
        assert!(s.objective.required, "required by default");
        let end = |code: i32, names: &[&str]| crate::AttemptEnd {
            exit_code: Some(code),
            metrics: names.iter().map(|n| (n.to_string(), 1.0)).collect(),
            ..Default::default()
        };
        let why = s.objective.missing_from(&end(0, &["val_loss", "step"]));
        assert_eq!(
            why.as_deref(),
            Some("exited 0 but never reported `loss` (saw: step, val_loss); print `METRICS: loss=<value>`, or set objective.required = false")
        );
        let why = s.objective.missing_from(&end(0, &[])).unwrap();
        assert!(why.contains("(it reported no metrics)"), "{why}");
        assert_eq!(s.objective.missing_from(&end(0, &["loss"])), None);
        assert_eq!(
            s.objective.missing_from(&end(1, &[])),
            None,
            "already failed"
        );
        let before = s.fingerprint();
        s.objective.required = false;
        assert_eq!(s.objective.missing_from(&end(0, &[])), None);
        assert_eq!(s.fingerprint(), before, "not part of a study's identity");
        let off = GOOD.replace(
            r#"goal = "minimize" }"#,
            r#"goal = "minimize", required = false }"#,
        );
        assert!(!parse(&off).unwrap().objective.required);
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
            &format!("{base}[params]\nepochs={{range=[5,20.0]}}\n[run]\nscript='true'\n"),
            "epochs.range mixes an integer and a float ([5, 20.0]): both integers for an integer parameter ([5, 20]), or both floats ([5.0, 20.0])",
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
        bad(
            &format!("{base}[run]\nscript='true'\nsecrets={{KEY='hunter2'}}\n"),
            "run.secrets.KEY: `hunter2`: expected ssm:NAME",
            Some(6),
        );
        bad(
            &format!("{base}[run]\nscript='true'\nenv={{K='1'}}\nsecrets={{K='ssm:/k'}}\n"),
            "`K` is in run.env too",
            Some(7),
        );
        bad(
            &format!("{base}[run]\nscript='true'\n[aws]\nimds_hop_limit=0\n"),
            "aws.imds_hop_limit must be 1..=64, got 0",
            Some(7),
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
        bad(
            &format!("{base}[run]\nscript='true'\n[local]\nusd_per_hour=0\n"),
            "local.usd_per_hour must be more than 0, got 0",
            Some(7),
        );
        bad(
            &format!("{base}[run]\nscript='true'\n[local]\nusd_per_hour='3'\n"),
            "local.usd_per_hour must be a number, got string",
            Some(7),
        );
        bad(
            &format!("{base}[run]\nscript='true'\n[local]\nusd_an_hour=3\n"),
            "unknown field `usd_an_hour`, expected `usd_per_hour`",
            Some(7),
        );
        bad(
            &format!("{base}[run]\nscript='true'\ngpus=65\n"),
            "run.gpus must be 0..=64, got 65",
            Some(6),
        );
        bad(
            &format!("{base}[run]\nscript='true'\ngpus=2\nenv={{CUDA_VISIBLE_DEVICES='0'}}\n"),
            "run.gpus gives each trial its GPUs in CUDA_VISIBLE_DEVICES: remove it from run.env",
            Some(6),
        );
        assert_eq!(
            parse(&format!("{base}[run]\nscript='true'\ngpus=2\n"))
                .expect("gpus")
                .run
                .gpus,
            2
        );
        let priced = parse(&format!(
            "{base}[run]\nscript='true'\n[local]\nusd_per_hour=3\n"
        ))
        .expect("priced");
        assert_eq!(priced.local, Some(LocalSpec { usd_per_hour: 3.0 }));
        assert_eq!(
            priced.fingerprint(),
            parse(&format!("{base}[run]\nscript='true'\n"))
                .expect("free")
                .fingerprint(),
            "a price is not what makes trials comparable"
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
