//! The study file as written: the TOML's shape (`Raw*`, with the spans that give
//! errors their lines) and its validation into a [`Study`].

use super::objectives::{RawGoals, RawObjective};
use super::sections::{RawAws, RawParam, RawPrune};
use super::{default_max_preemptions, DatasetSpec, OracleKind, RunSpec, SpecError, Study};
use crate::cost::Limits;
use crate::space::{ParamSpec, MAX_GRID_POINTS};
use crate::Millis;
use crate::{valid_ident, valid_study_name};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

pub(super) struct SpecText<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
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
    pub(super) fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> SpecError {
        SpecError {
            path: self.path.to_string(),
            line: self.line(span),
            message: message.into(),
        }
    }
    /// A TOML or type error, reworded for people and prefixed with the key of its line.
    pub(super) fn syntax(&self, e: toml::de::Error) -> SpecError {
        let mut msg = e
            .message()
            .trim_end()
            .replace("expected i64", "expected an integer")
            .replace("expected u32", "expected an integer")
            .replace("expected a boolean", "expected true or false")
            .replace('\n', "; ");
        // augur's own types never reach people: a section given as a plain value
        // (`objective = "loss"`) expected a table.
        while let Some(i) = msg.find("struct Raw") {
            let name_end = msg[i + "struct ".len()..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .map_or(msg.len(), |j| i + "struct ".len() + j);
            msg.replace_range(i..name_end, "a table ({ key = value, ... })");
        }
        if let Some(hint) = did_you_mean(&msg) {
            msg = hint;
        }
        if let Some(span) = e.span() {
            let start = self.text[..span.start.min(self.text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = self.text[start..].lines().next().unwrap_or("");
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                // A missing field is reported at the document's (or table's) first
                // line, whose key it is not about.
                let about_line = !msg.starts_with("missing field");
                if about_line
                    && !key.is_empty()
                    && !key.starts_with('[')
                    && !msg.contains(&format!("`{key}`"))
                {
                    msg = format!("`{key}`: {msg}");
                }
            }
        }
        self.err(e.span(), msg)
    }
    pub(super) fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> SpecError {
        self.err(Some(s.span()), message)
    }
}

/// `unknown field `tirals`, expected one of `name`, …` with the likely key first:
/// `unknown field `tirals` (did you mean `trials`?); expected one of …`.
fn did_you_mean(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (typed, options) = rest.split_once("`, expected one of ")?;
    let best = options
        .split(", ")
        .map(|o| o.trim_matches('`'))
        .map(|o| (strsim::jaro_winkler(typed, o), o))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score >= 0.8)?;
    Some(format!(
        "unknown field `{typed}` (did you mean `{}`?); expected one of {options}",
        best.1
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStudy {
    name: Spanned<String>,
    objective: Option<Spanned<RawObjective>>,
    objectives: Option<Spanned<Vec<RawObjective>>>,
    #[serde(default)]
    constraints: Vec<Spanned<String>>,
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
    local: Option<Spanned<super::sections::RawLocal>>,
    prune: Option<Spanned<RawPrune>>,
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
    checkpoint_every: Option<Spanned<String>>,
    max_cost_usd: Option<Spanned<toml::Value>>,
    max_machine_hours: Option<Spanned<toml::Value>>,
    #[serde(default)]
    retry_on_failure: bool,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    secrets: BTreeMap<Spanned<String>, Spanned<String>>,
    preamble: Option<String>,
    reuse: Option<Spanned<String>>,
    keep_alive: Option<Spanned<String>>,
    gpus: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    name: Spanned<String>,
    script: Spanned<String>,
    timeout: Option<Spanned<String>>,
}

fn duration_ms(cx: &SpecText, key: &str, s: &Spanned<String>) -> Result<u64, SpecError> {
    crate::duration::parse(s.get_ref())
        .map(|d| d.as_millis() as u64)
        .map_err(|e| cx.at(s, format!("{key}: {e}")))
}

pub(super) fn positive(
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
pub(super) fn count(
    cx: &SpecText,
    key: &str,
    v: &Spanned<i64>,
    min: i64,
    max: i64,
) -> Result<u32, SpecError> {
    let n = *v.get_ref();
    if (min..=max).contains(&n) {
        Ok(n as u32)
    } else {
        Err(cx.at(v, format!("{key} must be {min}..={max}, got {n}")))
    }
}

impl RawStudy {
    pub(super) fn validate(self, cx: &SpecText, dir: &Path) -> Result<Study, SpecError> {
        let name = self.name.get_ref().clone();
        if !valid_study_name(&name) {
            return Err(cx.at(&self.name, format!(
                "name `{name}` is not a valid study name (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)"
            )));
        }
        let goals = RawGoals {
            objective: self.objective,
            objectives: self.objectives,
            constraints: self.constraints,
            prune_metric: self.prune.as_ref().and_then(|p| p.get_ref().metric.clone()),
        }
        .validate(cx, &self.name)?;
        let objective = goals.objective;
        let oracle = oracle(cx, &self.oracle, &self.name)?;
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
        let local = self
            .local
            .map(|l| l.into_inner().validate(cx))
            .transpose()?
            .flatten();
        let prune = match self.prune {
            None => None,
            Some(p) => Some(p.into_inner().validate(cx, &objective.metric)?),
        };
        let mut study = Study {
            name,
            objective,
            objectives: goals.objectives,
            constraints: goals.constraints,
            oracle,
            trials: 0,
            parallel: parallel as u32,
            replicates: replicates as u32,
            seed,
            params,
            run,
            datasets,
            aws,
            local,
            prune,
            dir: dir.display().to_string(),
        };
        study.trials = budget(cx, &self.trials, &self.oracle, &study, run_span)?;
        Ok(study)
    }
}

/// The oracle the study names (random when none); `name`: where to point when the
/// key is absent.
fn oracle(
    cx: &SpecText,
    key: &Option<Spanned<String>>,
    name: &Spanned<String>,
) -> Result<OracleKind, SpecError> {
    Ok(match key.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("random") => OracleKind::Random,
        Some("grid") => OracleKind::Grid,
        Some("tpe") => OracleKind::Tpe,
        Some("nsga2") => OracleKind::Nsga2,
        Some(other) => {
            return Err(cx.at(
                key.as_ref().unwrap_or(name),
                format!("unknown oracle \"{other}\" (known: {})", OracleKind::NAMES),
            ))
        }
    })
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
        let files = run_files(cx, &self.files, dir)?;
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
        let checkpoint_every_ms = match &self.checkpoint_every {
            None => None,
            Some(c) => Some(duration_ms(cx, "run.checkpoint_every", c)?),
        };
        let limits = Limits {
            max_cost_usd: above_zero(cx, "run.max_cost_usd", self.max_cost_usd.as_ref())?,
            max_machine_ms: above_zero(
                cx,
                "run.max_machine_hours",
                self.max_machine_hours.as_ref(),
            )?
            .map(|h| (h * 3_600_000.0).round() as Millis),
        };
        let max_attempts = match &self.max_attempts {
            None => 3,
            Some(v) => count(cx, "run.max_attempts", v, 1, 1000)?,
        };
        let max_preemptions = match &self.max_preemptions {
            None => default_max_preemptions(),
            Some(v) => count(cx, "run.max_preemptions", v, 0, 1000)?,
        };
        let gpus = match &self.gpus {
            None => 0,
            Some(g) => count(cx, "run.gpus", g, 0, 64)?,
        };
        if let (true, Some(g)) = (gpus > 0, &self.gpus) {
            let named = ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"];
            if let Some(k) = self
                .env
                .keys()
                .find(|k| named.contains(&k.get_ref().as_str()))
            {
                return Err(cx.at(
                    g,
                    format!(
                        "run.gpus gives each trial its GPUs in {}: remove it from run.env",
                        k.get_ref()
                    ),
                ));
            }
        }
        let (env, secrets) = environment(cx, self.env, self.secrets)?;
        Ok(RunSpec {
            script,
            files,
            timeout_ms,
            grace_ms,
            max_attempts,
            max_preemptions,
            retry_on_failure: self.retry_on_failure,
            checkpoint_every_ms,
            limits,
            env,
            secrets,
            preamble: self.preamble.unwrap_or_else(|| "set -ex; ".to_string()),
            reuse: reuse(cx, self.reuse.as_ref())?,
            keep_alive_ms: keep_alive(cx, self.keep_alive.as_ref(), self.reuse.as_ref())?,
            gpus,
        })
    }
}

/// `run.files`: each a path that ends in the name it is copied under.
fn run_files(
    cx: &SpecText,
    files: &[Spanned<String>],
    dir: &Path,
) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    for f in files {
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
        out.push(rel.clone());
    }
    Ok(out)
}

/// Values by variable name.
type Names = BTreeMap<String, String>;

/// `run.env` and `run.secrets`: usable variable names (not `AUGUR_*`), a secret's
/// name not in `env` too, each secret a reference augur can read.
fn environment(
    cx: &SpecText,
    raw_env: BTreeMap<Spanned<String>, String>,
    raw_secrets: BTreeMap<Spanned<String>, Spanned<String>>,
) -> Result<(Names, Names), SpecError> {
    let mut env = BTreeMap::new();
    for (k, v) in raw_env {
        let key = k.get_ref().clone();
        if !valid_ident(&key) || key.starts_with("AUGUR_") {
            return Err(cx.at(&k, format!("run.env: `{key}` is not a usable variable name (letters, digits, _; not AUGUR_*)")));
        }
        env.insert(key, v);
    }
    let mut secrets = BTreeMap::new();
    for (k, v) in raw_secrets {
        let key = k.get_ref().clone();
        if !valid_ident(&key) || key.starts_with("AUGUR_") {
            return Err(cx.at(&k, format!("run.secrets: `{key}` is not a usable variable name (letters, digits, _; not AUGUR_*)")));
        }
        if env.contains_key(&key) {
            return Err(cx.at(&k, format!("run.secrets: `{key}` is in run.env too")));
        }
        crate::secret::SecretRef::parse(v.get_ref())
            .map_err(|e| cx.at(&v, format!("run.secrets.{key}: {e}")))?;
        secrets.insert(key, v.into_inner());
    }
    Ok((env, secrets))
}

/// `run.reuse`, if given.
fn reuse(cx: &SpecText, r: Option<&Spanned<String>>) -> Result<Option<super::Reuse>, SpecError> {
    let Some(r) = r else { return Ok(None) };
    Ok(Some(match r.get_ref().as_str() {
        "study" => super::Reuse::Study,
        "attempt" => super::Reuse::Attempt,
        other => return Err(cx.at(r, format!("run.reuse: `{other}`: expected \"study\" (a machine that finished an attempt takes the study's next) or \"attempt\" (a machine per attempt)"))),
    }))
}

/// `run.keep_alive`, if given: from 15 s (a warm machine's assignment must reach it
/// well within) to an hour, and only where machines are reused.
fn keep_alive(
    cx: &SpecText,
    k: Option<&Spanned<String>>,
    reuse: Option<&Spanned<String>>,
) -> Result<Option<u64>, SpecError> {
    let Some(k) = k else { return Ok(None) };
    if reuse.is_some_and(|r| r.get_ref() == "attempt") {
        return Err(cx.at(k, "run.keep_alive: machines are not reused (run.reuse = \"attempt\"); remove one of the two"));
    }
    let ms = duration_ms(cx, "run.keep_alive", k)?;
    if !(15_000..=3_600_000).contains(&ms) {
        return Err(cx.at(k, "run.keep_alive: must be from 15s to 1h"));
    }
    Ok(Some(ms))
}

/// A limit that must be a positive number, if given.
pub(super) fn above_zero(
    cx: &SpecText,
    key: &str,
    v: Option<&Spanned<toml::Value>>,
) -> Result<Option<f64>, SpecError> {
    let Some(v) = v else { return Ok(None) };
    let n = match v.get_ref() {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(cx.at(
                v,
                format!("{key} must be a number, got {}", other.type_str()),
            ))
        }
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(cx.at(v, format!("{key} must be more than 0, got {n}")));
    }
    Ok(Some(n))
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
        (None, OracleKind::Random | OracleKind::Tpe | OracleKind::Nsga2) => {
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
        // Said at the `oracle = "grid"` line, which makes a grid of the parameters.
        let at = oracle_key.as_ref().map(Spanned::span);
        let points = study
            .grid_size()
            .map_err(|m| cx.err(at.clone(), format!("grid oracle: {m}")))?;
        if points > MAX_GRID_POINTS {
            return Err(cx.err(
                at,
                format!("grid oracle: the parameters make {points} points, more than {MAX_GRID_POINTS}; use fewer values or steps, or oracle = \"random\""),
            ));
        }
    }
    Ok(n)
}
