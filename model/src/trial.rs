//! The trial record, its states and the legal transitions between them.
//!
//! The record is the only memory shared by the orchestrator and the agents. The
//! orchestrator owns pending/starting/lost/cancelled and the attempt number; the agent
//! owns running, heartbeat, metrics, succeeded and failed. Every write is conditional
//! ([`crate::Expect`], in `update.rs`) on the previous state and, for agents, on the
//! attempt (a fencing token).

use crate::cost::Billing;
use crate::value::Params;
use crate::{Millis, Objective};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where one trial stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Waiting for a machine (possibly until `not_before`, after a retry).
    Pending,
    /// A machine was asked for; its agent has not reported yet.
    Starting,
    /// The agent runs the script and heart-beats.
    Running,
    /// The script exited 0.
    Succeeded,
    /// The script exited non-zero (or a dataset it needs failed).
    Failed,
    /// The machine or agent vanished, stopped heart-beating, or the attempt timed out.
    Lost,
    /// Stopped on request; `augur run` resumes it.
    Cancelled,
    /// Stopped early by the study's pruner: its curve was not promising. Final; its
    /// best reported value still counts.
    Pruned,
}

impl TrialState {
    pub const ALL: [TrialState; 8] = [
        TrialState::Pending,
        TrialState::Starting,
        TrialState::Running,
        TrialState::Succeeded,
        TrialState::Failed,
        TrialState::Lost,
        TrialState::Cancelled,
        TrialState::Pruned,
    ];

    /// Whether a machine is (or should be) working on the trial.
    pub fn is_active(self) -> bool {
        matches!(self, TrialState::Starting | TrialState::Running)
    }

    /// Whether `self → to` is a legal transition (staying put is legal: heartbeats).
    pub fn can_become(self, to: TrialState) -> bool {
        use TrialState::*;
        self == to
            || matches!(
                (self, to),
                (Pending, Starting | Cancelled | Failed)
                    | (Starting, Running | Lost | Cancelled | Failed)
                    // The cloud had no room: the launch did not happen, the attempt
                    // waits to be launched again.
                    | (Starting, Pending)
                    | (Running, Succeeded | Failed | Lost | Cancelled | Pruned)
                    // A prune recorded after the script had already ended yields to
                    // what the script did.
                    | (Pruned, Succeeded | Failed)
                    | (Lost | Failed | Cancelled, Pending)
                    // A stop also cancels a retry that was still to come.
                    | (Lost | Failed, Cancelled)
            )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Pending => "pending",
            TrialState::Starting => "starting",
            TrialState::Running => "running",
            TrialState::Succeeded => "succeeded",
            TrialState::Failed => "failed",
            TrialState::Lost => "lost",
            TrialState::Cancelled => "cancelled",
            TrialState::Pruned => "pruned",
        }
    }
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reading of a trial's metrics, as reported by one `METRICS:` line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub t_ms: Millis,
    pub values: BTreeMap<String, f64>,
}

/// Why a trial failed, when augur knows better than an exit code.
pub const ERROR_DATASET: &str = "dataset failed: ";

/// The trial record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub study: String,
    /// Per-study sequence number, from 1.
    pub id: u64,
    /// The dataset this record runs, for run-once prerequisites (not a trial of the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Index of the point the oracle proposed (replicates share it).
    pub point: u64,
    pub replicate: u32,
    pub params: Params,
    /// Datasets that must succeed before this trial may start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    pub state: TrialState,
    /// Attempt number, from 1: the fencing token of agent writes.
    pub attempt: u32,
    /// Attempts whose agent reached the script (what `max_attempts` limits), not
    /// counting those whose machine was taken away.
    pub runs: u32,
    /// Attempts whose machine was taken away (spot reclaims; what `max_preemptions`
    /// limits, and what `spot_fallback_after` counts).
    #[serde(default)]
    pub preemptions: u32,
    /// The machine of the current attempt: named by the orchestrator when a cloud
    /// launch answered or a warm machine was assigned, and by the agent when it
    /// reports.
    pub machine: Option<String>,
    /// The machine was given this attempt while warm ([`TrialUpdate::assigned`]), not
    /// launched for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub assigned: bool,
    /// How many times this attempt's launch was asked without an answer to record (an
    /// error, or no answer before a tick's deadline): each was asked again under the
    /// same `ClientToken`. Shown, and bounded ([`MAX_LAUNCH_TRIES`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub launch_tries: u32,
    pub created_ms: Millis,
    /// When the orchestrator asked for a machine, or (on a cloud) when its launch
    /// answered: the boot timeout counts from here.
    #[serde(default)]
    pub launched_ms: Option<Millis>,
    pub started_ms: Option<Millis>,
    pub heartbeat_ms: Option<Millis>,
    pub finished_ms: Option<Millis>,
    /// A retried trial waits until then (capped, jittered backoff).
    pub not_before_ms: Option<Millis>,
    pub exit_code: Option<i32>,
    /// Last value of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// Every reading, in order (a reader may keep less: [`crate::SeriesKeep`]).
    #[serde(deserialize_with = "crate::series::read")]
    pub series: Vec<MetricPoint>,
    pub error: Option<String>,
    /// A failure augur may retry (timeout, keepalive, agent terminated).
    pub retryable: bool,
    /// The last line the script printed.
    pub status: Option<String>,
    /// The last lines of the log, kept with the final state.
    pub log_tail: Vec<String>,
    /// Where the attempt's log is (a file path, or a CloudWatch stream).
    pub log: Option<String>,
    /// The earlier attempts, oldest first (the last [`MAX_HISTORY`]), kept when the
    /// trial is retried: which machine ran each and how it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
    /// The trial's checkpoint directory as last kept (`AUGUR_CHECKPOINT_DIR`),
    /// across attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    /// How the current attempt's machine is billed (cloud machines; recorded after
    /// its launch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
    /// Which attempt of its machine this one is: 1 for a machine's first, more on a
    /// machine kept warm (`run.reuse = "study"`); 0 before its agent says.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub turn: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// After this many tries of one attempt's launch without an answer to record, the
/// attempt is lost (a launch failure, [`Trial::launch_tries`]).
pub const MAX_LAUNCH_TRIES: u32 = 8;

/// What a trial's checkpoint directory held when it was last kept (sent to the
/// bucket on AWS; at the attempt's end locally).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub at_ms: Millis,
    pub files: u64,
    pub bytes: u64,
}

/// How many earlier attempts a record keeps (bounds the record's size: a DynamoDB
/// item is at most 400 KB).
pub const MAX_HISTORY: usize = 20;

/// One earlier attempt of a trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    /// The state the attempt ended in (lost, failed, cancelled).
    pub state: TrialState,
    pub machine: Option<String>,
    pub launched_ms: Option<Millis>,
    pub started_ms: Option<Millis>,
    /// The attempt's last sign of life: its finish, else its last heartbeat.
    pub ended_ms: Option<Millis>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
    /// Which attempt of its machine it was ([`Trial::turn`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub turn: u32,
}

impl AttemptRecord {
    /// The record's current attempt, as history.
    pub fn of(t: &Trial) -> AttemptRecord {
        AttemptRecord {
            attempt: t.attempt,
            state: t.state,
            machine: t.machine.clone(),
            launched_ms: t.launched_ms,
            started_ms: t.started_ms,
            ended_ms: t.finished_ms.or(t.heartbeat_ms),
            exit_code: t.exit_code,
            error: t.error.clone(),
            billing: t.billing.clone(),
            turn: t.turn,
        }
    }
}

impl Trial {
    /// A new pending record (attempt 1).
    pub fn new(
        study: &str,
        id: u64,
        point: u64,
        replicate: u32,
        params: Params,
        now: Millis,
    ) -> Trial {
        Trial {
            study: study.to_string(),
            id,
            dataset: None,
            point,
            replicate,
            params,
            needs: Vec::new(),
            state: TrialState::Pending,
            attempt: 1,
            runs: 0,
            preemptions: 0,
            machine: None,
            assigned: false,
            launch_tries: 0,
            created_ms: now,
            launched_ms: None,
            started_ms: None,
            heartbeat_ms: None,
            finished_ms: None,
            not_before_ms: None,
            exit_code: None,
            metrics: BTreeMap::new(),
            series: Vec::new(),
            error: None,
            retryable: false,
            status: None,
            log_tail: Vec::new(),
            log: None,
            history: Vec::new(),
            checkpoint: None,
            billing: None,
            turn: 0,
        }
    }

    pub fn is_dataset(&self) -> bool {
        self.dataset.is_some()
    }

    /// Whether the machine of this ended attempt may take the study's next one
    /// (`run.reuse = "study"`): its script ended by itself, exit code 0 to 128, and
    /// the agent wrote so. Not a machine whose script was ended by force (a signal, a
    /// timeout, the keepalive watchdog, a reclaim notice; see
    /// [`AttemptEnd::forced`]), nor one whose attempt was lost, cancelled or pruned:
    /// the machine may be what went wrong. The agent of a machine kept warm waits on
    /// exactly these.
    pub fn leaves_machine_warm(&self) -> bool {
        matches!(self.state, TrialState::Succeeded | TrialState::Failed)
            && !self.retryable
            && self.exit_code.is_some_and(|c| (0..=128).contains(&c))
            && self.machine.is_some()
    }

    /// The objective's value, if the trial reported it.
    pub fn objective_value(&self, objective: &Objective) -> Option<f64> {
        self.metrics.get(&objective.metric).copied()
    }

    /// The best value of the objective among every reading (what a pruned trial
    /// counts with).
    pub fn best_value(&self, objective: &Objective) -> Option<f64> {
        self.series
            .iter()
            .filter_map(|p| p.values.get(&objective.metric))
            .chain(self.metrics.get(&objective.metric))
            .copied()
            .filter(|v| v.is_finite())
            .reduce(|a, b| if objective.better(b, a) { b } else { a })
    }

    /// The metrics this trial is ranked by: the last values of a succeeded trial, or a
    /// pruned trial's last values with the objective at its best. `None` when the trial
    /// has no objective to rank by.
    pub fn result_metrics(&self, objective: &Objective) -> Option<BTreeMap<String, f64>> {
        match self.state {
            TrialState::Succeeded => {
                self.objective_value(objective)?;
                Some(self.metrics.clone())
            }
            TrialState::Pruned => {
                let best = self.best_value(objective)?;
                let mut m = self.metrics.clone();
                m.insert(objective.metric.clone(), best);
                Some(m)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrialState::*;

    #[test]
    fn legal_transitions() {
        assert!(Pending.can_become(Starting));
        assert!(Starting.can_become(Running));
        assert!(Running.can_become(Succeeded));
        assert!(Running.can_become(Lost));
        assert!(Lost.can_become(Pending));
        assert!(Running.can_become(Running));
        assert!(!Succeeded.can_become(Pending));
        assert!(!Pending.can_become(Running));
        assert!(!Pending.can_become(Succeeded));
        assert!(!Lost.can_become(Running));
        for s in TrialState::ALL {
            assert!(!Succeeded.can_become(s) || s == Succeeded);
        }
    }
}
