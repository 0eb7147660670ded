//! augur's pure model: what a study is, what a trial is, and the rules that govern them.
//!
//! No I/O, no async runtime, no cloud SDK: both binaries and every backend share it.

pub mod agent;
pub mod backoff;
pub mod beat;
pub mod bounded;
pub mod constraint;
pub mod cost;
pub mod duration;
pub mod leaderboard;
pub mod machine;
pub mod metrics;
pub mod motpe;
pub mod nsga2;
pub mod oracle;
pub mod pareto;
pub mod prune;
pub mod secret;
pub mod series;
pub mod space;
pub mod spec;
pub mod study;
pub mod tpe;
pub mod trial;
pub mod update;
pub mod value;

pub use agent::AttemptEnd;
pub use beat::{Beat, KeptBeats};
pub use leaderboard::{leaderboard, LeaderboardRow};
pub use machine::Machine;
pub use oracle::{oracle_for, Oracle};
pub use series::SeriesKeep;
pub use space::ParamSpec;
pub use spec::{
    AwsSpec, DatasetSpec, Goal, LocalSpec, Objective, OracleKind, PruneRule, PruneSpec, Reuse,
    RunSpec, SpecError, Study,
};
pub use study::{DriveSettings, LaunchBounds, StudyRecord, StudyState};
pub use trial::{AttemptRecord, Checkpoint, MetricPoint, Trial, TrialState, MAX_LAUNCH_TRIES};
pub use update::{Expect, Refused, Set, TrialUpdate};
pub use value::{Params, Value};

/// Milliseconds since the Unix epoch: every timestamp in a record.
pub type Millis = i64;

/// Whether `name` is safe as a study name: it becomes a file name, a log-group
/// suffix and a database key, so only `[A-Za-z0-9._-]`, 1..=64 characters, not
/// starting with `.` or `-`.
pub fn valid_study_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` can be part of an environment variable name (`AUGUR_PARAM_<NAME>`).
pub fn valid_ident(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
