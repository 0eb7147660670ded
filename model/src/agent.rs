//! The agent contract: how an orchestrator starts `augur-agent` for one attempt (its
//! flags), and the environment the attempt's script gets. Written once, here, and
//! used by both sides: the machine providers build an [`Invocation`], the agent
//! parses its flags by the names in [`flag`] and sets the script's environment by the
//! names in [`env`]. (The log line format is `augur_store::logfile`'s, on both sides.)

use crate::duration;
use crate::{Checkpoint, MetricPoint, Millis, Trial, TrialState};
use std::collections::BTreeMap;

/// The agent's program name: the local provider finds its agents in `/proc` by it.
pub const PROGRAM: &str = "augur-agent";

/// The agent's flags, without their leading `--`.
pub mod flag {
    /// augur's state directory (database and logs locally; work directories always).
    pub const HOME: &str = "home";
    /// `local` or `aws`.
    pub const BACKEND: &str = "backend";
    pub const TABLE: &str = "table";
    pub const BUCKET: &str = "bucket";
    pub const LOG_GROUP_PREFIX: &str = "log-group-prefix";
    pub const STUDY: &str = "study";
    pub const TRIAL: &str = "trial";
    pub const ATTEMPT: &str = "attempt";
    pub const HEARTBEAT: &str = "heartbeat";
    /// The machine's name in the record.
    pub const MACHINE: &str = "machine";
    /// Power the machine off when done.
    pub const SHUTDOWN: &str = "shutdown";
    /// After its attempt, the agent takes further attempts of its study from its
    /// standard input (a machine kept warm).
    pub const REUSE: &str = "reuse";
    /// The slot of its machine the agent runs attempts in, where a machine runs
    /// several at once (`run.gpus`): its name in the record is the slot's
    /// ([`crate::machine::slot_name`]), and it leaves the machine's power-off to its
    /// boot script. With attempt 0 it has no first attempt and waits for one.
    pub const SLOT: &str = "slot";
}

/// Environment variable names of the contract.
pub mod env {
    /// The agent's own settings (fallbacks of its flags).
    pub const HOME: &str = "AUGUR_HOME";
    pub const TABLE: &str = "AUGUR_TABLE";
    pub const BUCKET: &str = "AUGUR_BUCKET";
    /// The local provider's agent binary, when not beside `augur`.
    pub const AGENT: &str = "AUGUR_AGENT";

    /// What the script sees of its attempt.
    pub const STUDY: &str = "AUGUR_STUDY";
    pub const TRIAL: &str = "AUGUR_TRIAL";
    pub const ATTEMPT: &str = "AUGUR_ATTEMPT";
    pub const REPLICATE: &str = "AUGUR_REPLICATE";
    pub const PARAMS_JSON: &str = "AUGUR_PARAMS_JSON";
    /// The attempt's working directory (also how a dead agent's scripts are found).
    pub const WORKDIR: &str = "AUGUR_WORKDIR";
    /// On a spot reclaim notice the agent writes `AUGUR_PREEMPTED=1` and
    /// `AUGUR_RECLAIM_TIME=<RFC 3339>` into this file of the working directory, then
    /// sends the script SIGTERM (SIGKILL after the study's grace).
    pub const PREEMPTED_FILE: &str = "augur-preempted.env";
    pub const PREEMPTED: &str = "AUGUR_PREEMPTED";
    pub const RECLAIM_TIME: &str = "AUGUR_RECLAIM_TIME";
    /// A directory kept per trial across its attempts, for the script's checkpoints
    /// (the local backend; see the README).
    pub const CHECKPOINT_DIR: &str = "AUGUR_CHECKPOINT_DIR";
    /// A dataset run: its name and the directory it fills.
    pub const DATASET: &str = "AUGUR_DATASET";
    pub const DATASET_DIR: &str = "AUGUR_DATASET_DIR";

    /// `AUGUR_PARAM_<NAME>`: one parameter's value.
    pub fn param(name: &str) -> String {
        format!("AUGUR_PARAM_{}", name.to_uppercase())
    }

    /// `AUGUR_DATASET_DIR_<NAME>`: where a dataset the trial needs is (`data-10` →
    /// `DATA_10`).
    pub fn dataset_dir(name: &str) -> String {
        let suffix: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{DATASET_DIR}_{suffix}")
    }
}

/// The script's environment (on top of the agent's own): the script contract, for
/// `trial`'s current attempt, with `dataset_dir` saying where a dataset is. (Not
/// `AUGUR_WORKDIR`: the directory the script runs in.)
pub fn script_env(
    study: &crate::Study,
    trial: &crate::Trial,
    dataset_dir: impl Fn(&str) -> std::path::PathBuf,
) -> std::collections::BTreeMap<String, String> {
    let mut out = study.run.env.clone();
    out.insert(env::STUDY.into(), study.name.clone());
    out.insert(env::TRIAL.into(), trial.id.to_string());
    out.insert(env::ATTEMPT.into(), trial.attempt.to_string());
    out.insert(env::REPLICATE.into(), trial.replicate.to_string());
    out.insert(
        env::PARAMS_JSON.into(),
        serde_json::to_string(&trial.params).unwrap_or_default(),
    );
    for (k, v) in &trial.params {
        out.insert(env::param(k), v.to_string());
    }
    if let Some(d) = &trial.dataset {
        out.insert(env::DATASET.into(), d.clone());
        out.insert(
            env::DATASET_DIR.into(),
            dataset_dir(d).display().to_string(),
        );
    }
    for d in &trial.needs {
        out.insert(env::dataset_dir(d), dataset_dir(d).display().to_string());
    }
    out
}

/// The script a record runs: its dataset's, or the study's.
pub fn script_of(study: &crate::Study, trial: &crate::Trial) -> String {
    match &trial.dataset {
        Some(name) => study
            .dataset_spec(name, &trial.params)
            .map(|d| d.script.clone())
            .unwrap_or_default(),
        None => study.run.script.clone(),
    }
}

/// Whether `name` (a dataset's, as a record gives it) is one plain path component, so
/// that a directory named by it stays inside its parent: not empty, `.` or `..`, no
/// `/` and no NUL. Records are not trusted: a tampered one must not move the agent.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Where an agent on AWS keeps state, logs and files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsTarget {
    pub table: String,
    pub bucket: String,
    /// Log groups are `<prefix>/<study>`.
    pub log_group_prefix: String,
}

/// One attempt's agent, as it is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub home: String,
    /// `None`: the local backend (SQLite and log files under `home`).
    pub aws: Option<AwsTarget>,
    pub study: String,
    pub trial: u64,
    pub attempt: u32,
    pub heartbeat_ms: u64,
    /// The machine's name in the record (the agent's default: `host:pid`).
    pub machine: Option<String>,
    /// Power the machine off when done (on EC2 the instance then terminates).
    pub shutdown: bool,
    /// Take further attempts of the study after this one ([`flag::REUSE`]).
    pub reuse: bool,
    /// The machine's slot this agent runs attempts in ([`flag::SLOT`]).
    pub slot: Option<u32>,
}

impl Invocation {
    /// The agent's arguments (without the program name).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut put = |name: &str, value: String| {
            out.push(format!("--{name}"));
            out.push(value);
        };
        if let Some(aws) = &self.aws {
            put(flag::BACKEND, "aws".into());
            put(flag::TABLE, aws.table.clone());
            put(flag::BUCKET, aws.bucket.clone());
            put(flag::LOG_GROUP_PREFIX, aws.log_group_prefix.clone());
        }
        put(flag::HOME, self.home.clone());
        put(flag::STUDY, self.study.clone());
        put(flag::TRIAL, self.trial.to_string());
        put(flag::ATTEMPT, self.attempt.to_string());
        put(flag::HEARTBEAT, format!("{}ms", self.heartbeat_ms));
        if let Some(m) = &self.machine {
            put(flag::MACHINE, m.clone());
        }
        if self.shutdown {
            out.push(format!("--{}", flag::SHUTDOWN));
        }
        if self.reuse {
            out.push(format!("--{}", flag::REUSE));
        }
        if let Some(slot) = self.slot {
            out.push(format!("--{}", flag::SLOT));
            out.push(slot.to_string());
        }
        out
    }

    /// Reads an invocation back from the arguments [`to_args`](Self::to_args) wrote
    /// (the local provider reads its agents' from `/proc`); `None` if they are not an
    /// agent's. A missing `--home` or `--heartbeat` takes the agent's default.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Option<Invocation> {
        let (mut study, mut trial, mut attempt) = (None, None, None);
        let mut home = ".augur".to_string();
        let mut aws = AwsTarget {
            table: String::new(),
            bucket: String::new(),
            log_group_prefix: "/augur".into(),
        };
        let (mut on_aws, mut heartbeat_ms, mut machine) = (false, 2_000, None);
        let (mut shutdown, mut reuse, mut slot) = (false, false, None);
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(a) = it.next() {
            let name = a.strip_prefix("--")?;
            if name == flag::SHUTDOWN || name == flag::REUSE {
                shutdown |= name == flag::SHUTDOWN;
                reuse |= name == flag::REUSE;
                continue;
            }
            let value = it.next()?;
            match name {
                flag::HOME => home = value.into(),
                flag::BACKEND => on_aws = value == "aws",
                flag::TABLE => aws.table = value.into(),
                flag::BUCKET => aws.bucket = value.into(),
                flag::LOG_GROUP_PREFIX => aws.log_group_prefix = value.into(),
                flag::STUDY => study = Some(value.to_string()),
                flag::TRIAL => trial = Some(value.parse().ok()?),
                flag::ATTEMPT => attempt = Some(value.parse().ok()?),
                flag::HEARTBEAT => heartbeat_ms = duration::parse(value).ok()?.as_millis() as u64,
                flag::MACHINE => machine = Some(value.to_string()),
                flag::SLOT => slot = Some(value.parse().ok()?),
                _ => return None,
            }
        }
        Some(Invocation {
            home,
            aws: on_aws.then_some(aws),
            study: study?,
            trial: trial?,
            attempt: attempt?,
            heartbeat_ms,
            machine,
            shutdown,
            reuse,
            slot,
        })
    }
}

/// What an attempt ended with, as its agent saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptEnd {
    pub exit_code: Option<i32>,
    pub metrics: BTreeMap<String, f64>,
    pub series: Vec<MetricPoint>,
    pub error: Option<String>,
    /// Timeouts, keepalive expiry and terminated agents may be retried.
    pub retryable: bool,
    /// The machine is being taken away (a spot reclaim notice): the attempt ends as
    /// lost, a preemption, not a run of the trial.
    pub preempted: bool,
    pub status: Option<String>,
    pub log_tail: Vec<String>,
    /// When the script ended (the agent's clock): a prune recorded after it yields
    /// to the script's own outcome.
    pub script_ended_ms: Option<Millis>,
    /// The checkpoint directory as the attempt left it.
    pub checkpoint: Option<Checkpoint>,
}

impl AttemptEnd {
    /// Whether the script was ended by force: by a signal (an exit code above 128,
    /// in the shell's convention: its own crash, the OOM killer, a person), its
    /// timeout, the keepalive watchdog, `augur stop`, or a reclaim notice. Its
    /// machine may be what went wrong: it takes no further attempt.
    pub fn forced(&self) -> bool {
        self.retryable || self.preempted || self.exit_code.is_none_or(|c| c > 128)
    }

    /// Whether `now` (the record a final write found in its way) is this attempt
    /// pruned only after its script had ended: then the script's outcome stands.
    pub fn overrules(&self, now: &Trial, attempt: u32) -> bool {
        now.state == TrialState::Pruned
            && now.attempt == attempt
            && !self.preempted
            && matches!((self.script_ended_ms, now.finished_ms), (Some(ended), Some(pruned)) if pruned >= ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Invocation {
        Invocation {
            home: "/tmp/x y/.augur".into(),
            aws: None,
            study: "s".into(),
            trial: 42,
            attempt: 3,
            heartbeat_ms: 1_500,
            machine: None,
            shutdown: false,
            reuse: true,
            slot: None,
        }
    }

    #[test]
    fn invocations_read_back_as_written() {
        let l = local();
        assert_eq!(Invocation::parse(&l.to_args()), Some(l.clone()));
        let a = Invocation {
            aws: Some(AwsTarget {
                table: "t".into(),
                bucket: "b".into(),
                log_group_prefix: "/p".into(),
            }),
            machine: Some("i-1".into()),
            shutdown: true,
            reuse: false,
            slot: Some(2),
            ..l
        };
        assert_eq!(Invocation::parse(&a.to_args()), Some(a));
    }

    #[test]
    fn what_is_not_an_agents_invocation_is_refused() {
        let args = local().to_args();
        let without = |flag: &str| -> Vec<String> {
            let i = args.iter().position(|a| a == flag).expect("flag");
            [&args[..i], &args[i + 2..]].concat()
        };
        assert!(Invocation::parse(&without("--study")).is_none());
        assert!(Invocation::parse(&without("--attempt")).is_none());
        assert!(Invocation::parse(&["--trial", "x"]).is_none());
        assert!(Invocation::parse(&["--unknown", "1"]).is_none());
        assert!(Invocation::parse(&["stray"]).is_none());
        assert!(Invocation::parse(&["--study"]).is_none());
    }

    #[test]
    fn plain_names_stay_in_their_directory() {
        for ok in ["d-1", "data_10", ".5", "a..b"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/etc", "a\0b"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn script_variables() {
        assert_eq!(env::param("lr"), "AUGUR_PARAM_LR");
        assert_eq!(env::dataset_dir("data-10"), "AUGUR_DATASET_DIR_DATA_10");
    }
}
