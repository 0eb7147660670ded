//! A write of a trial record: its condition ([`Expect`]), the fields it changes
//! ([`TrialUpdate`], each kept, cleared or set: [`Set`]) and the rule every store
//! writes by ([`TrialUpdate::check`]): the condition must hold and the state change
//! must be legal, or nothing is written.

use crate::agent::AttemptEnd;
use crate::cost::Billing;
use crate::trial::{AttemptRecord, Checkpoint, MetricPoint, Trial, TrialState, MAX_HISTORY};
use crate::Millis;
use std::collections::BTreeMap;

/// What a write does to a field that may be empty: keeps it, clears it or sets it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Set<T> {
    #[default]
    Keep,
    Clear,
    To(T),
}

impl<T: Clone> Set<T> {
    /// The field becomes exactly `v`: set to its value, or cleared.
    pub fn exactly(v: Option<T>) -> Set<T> {
        v.map_or(Set::Clear, Set::To)
    }

    /// Set to `v` when there is one, else kept.
    pub fn given(v: Option<T>) -> Set<T> {
        v.map_or(Set::Keep, Set::To)
    }

    /// The value the write sets (`None`: it keeps or clears the field).
    pub fn value(&self) -> Option<&T> {
        match self {
            Set::To(v) => Some(v),
            Set::Keep | Set::Clear => None,
        }
    }

    /// Whether the write changes the field.
    pub fn changes(&self) -> bool {
        !matches!(self, Set::Keep)
    }

    fn apply(&self, field: &mut Option<T>) {
        match self {
            Set::Keep => {}
            Set::Clear => *field = None,
            Set::To(v) => *field = Some(v.clone()),
        }
    }
}

/// Why the write rule refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The condition did not hold: someone else wrote first. Nothing is written;
    /// the writer reads the record as it is and decides again.
    Conflict,
    /// The state change is one the state machine forbids ([`TrialState::can_become`]):
    /// a bug in the writer.
    Illegal { from: TrialState, to: TrialState },
}

/// The condition of a conditional write.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// The record must be in one of these states.
    pub states: Vec<TrialState>,
    /// And, if given, at this attempt.
    pub attempt: Option<u32>,
    /// And, if given, name no machine or this one (an agent taking its attempt: a
    /// second instance launched for it is not its machine).
    pub machine: Option<String>,
}

impl Expect {
    pub fn state(s: TrialState, attempt: u32) -> Expect {
        Expect {
            states: vec![s],
            attempt: Some(attempt),
            machine: None,
        }
    }
    pub fn any_of(states: &[TrialState], attempt: u32) -> Expect {
        Expect {
            states: states.to_vec(),
            attempt: Some(attempt),
            machine: None,
        }
    }
    /// And the record names no machine or `machine`.
    pub fn on(mut self, machine: &str) -> Expect {
        self.machine = Some(machine.to_string());
        self
    }
    pub fn holds(&self, t: &Trial) -> bool {
        self.states.contains(&t.state)
            && self.attempt.is_none_or(|a| a == t.attempt)
            && match (&self.machine, &t.machine) {
                (Some(want), Some(named)) => want == named,
                _ => true,
            }
    }
}

/// The fields a write changes: `None` (or [`Set::Keep`]) leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrialUpdate {
    pub state: Option<TrialState>,
    pub attempt: Option<u32>,
    pub add_run: bool,
    /// The attempt ends because its machine was taken away: it counts as a
    /// preemption, not as a run.
    pub preempted: bool,
    /// Start the attempt budget afresh (`augur run --retry-failed`, a dataset re-run).
    pub reset_runs: bool,
    pub machine: Set<String>,
    pub assigned: Option<bool>,
    pub launch_tries: Option<u32>,
    pub launched_ms: Set<Millis>,
    pub started_ms: Set<Millis>,
    pub heartbeat_ms: Option<Millis>,
    pub finished_ms: Set<Millis>,
    pub not_before_ms: Set<Millis>,
    pub exit_code: Set<i32>,
    pub metrics: Option<BTreeMap<String, f64>>,
    pub series: Option<Vec<MetricPoint>>,
    pub error: Set<String>,
    pub retryable: Option<bool>,
    pub status: Set<String>,
    pub log_tail: Option<Vec<String>>,
    pub log: Set<String>,
    pub checkpoint: Option<Checkpoint>,
    pub billing: Set<Billing>,
    pub turn: Option<u32>,
}

impl TrialUpdate {
    /// Applies the update to a record (the store checks the condition first).
    pub fn apply(&self, t: &mut Trial) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        // A new attempt: the one ending goes to the history first, with its machine
        // and outcome (the fields below are then reset by the same update).
        if self.attempt.is_some_and(|a| a > t.attempt) {
            t.history.push(AttemptRecord::of(t));
            let excess = t.history.len().saturating_sub(MAX_HISTORY);
            t.history.drain(..excess);
        }
        if self.preempted {
            t.preemptions += 1;
            if t.state == TrialState::Running {
                t.runs = t.runs.saturating_sub(1);
            }
        }
        set(&mut t.state, &self.state);
        set(&mut t.attempt, &self.attempt);
        if self.reset_runs {
            t.runs = 0;
        }
        if self.add_run {
            t.runs += 1;
        }
        self.launched_ms.apply(&mut t.launched_ms);
        self.billing.apply(&mut t.billing);
        self.machine.apply(&mut t.machine);
        set(&mut t.assigned, &self.assigned);
        set(&mut t.launch_tries, &self.launch_tries);
        set(&mut t.turn, &self.turn);
        self.started_ms.apply(&mut t.started_ms);
        if let Some(h) = self.heartbeat_ms {
            t.heartbeat_ms = Some(h);
        }
        self.finished_ms.apply(&mut t.finished_ms);
        self.not_before_ms.apply(&mut t.not_before_ms);
        self.exit_code.apply(&mut t.exit_code);
        set(&mut t.metrics, &self.metrics);
        set(&mut t.series, &self.series);
        self.error.apply(&mut t.error);
        set(&mut t.retryable, &self.retryable);
        self.status.apply(&mut t.status);
        set(&mut t.log_tail, &self.log_tail);
        self.log.apply(&mut t.log);
        if let Some(c) = self.checkpoint {
            t.checkpoint = Some(c);
        }
    }
}

impl TrialUpdate {
    /// The write rule, the same in every store: the condition holds on the record
    /// as it is, and the state change (if any) is legal. A store that passes it
    /// [`apply`](Self::apply)s the update and writes the record in one step that no
    /// other write can come between (a transaction, a conditional put).
    pub fn check(&self, expect: &Expect, t: &Trial) -> Result<(), Refused> {
        if !expect.holds(t) {
            return Err(Refused::Conflict);
        }
        match self.state {
            Some(to) if !t.state.can_become(to) => Err(Refused::Illegal { from: t.state, to }),
            _ => Ok(()),
        }
    }

    /// [`check`](Self::check), then [`apply`](Self::apply): the record is left as it
    /// was when the rule refuses.
    pub fn apply_checked(&self, expect: &Expect, t: &mut Trial) -> Result<(), Refused> {
        self.check(expect, t)?;
        self.apply(t);
        Ok(())
    }
}

/// The writes of the agent protocol, shared by every kind of agent (process, EC2,
/// in-process objective) so they all leave records the same shape.
impl TrialUpdate {
    /// `starting → failed`, not retried, with nothing run: what the attempt was
    /// given was refused (a study record that fails its check, an agent that is not
    /// the pinned one).
    pub fn refused(why: &str, now: Millis) -> TrialUpdate {
        TrialUpdate {
            state: Some(TrialState::Failed),
            error: Set::To(format!("refused: {why}")),
            retryable: Some(false),
            finished_ms: Set::To(now),
            ..Default::default()
        }
    }

    /// `lost|failed → pending` as attempt `attempt`, not before `not_before`. The
    /// ending attempt goes to the history; the new one shows no machine, times or
    /// outcome until it has them.
    pub fn next_attempt(attempt: u32, not_before: Option<Millis>) -> TrialUpdate {
        TrialUpdate {
            state: Some(TrialState::Pending),
            attempt: Some(attempt),
            not_before_ms: Set::exactly(not_before),
            machine: Set::Clear,
            assigned: Some(false),
            launch_tries: Some(0),
            launched_ms: Set::Clear,
            billing: Set::Clear,
            turn: Some(0),
            started_ms: Set::Clear,
            finished_ms: Set::Clear,
            exit_code: Set::Clear,
            error: Set::Clear,
            status: Set::Clear,
            log: Set::Clear,
            ..Default::default()
        }
    }

    /// `starting → running` by the agent of this attempt on `machine`, its `turn`-th
    /// attempt ([`Trial::turn`]): resets what an earlier attempt left.
    pub fn running(machine: &str, turn: u32, now: Millis, log: Option<String>) -> TrialUpdate {
        TrialUpdate {
            state: Some(TrialState::Running),
            add_run: true,
            machine: Set::To(machine.to_string()),
            turn: Some(turn),
            started_ms: Set::To(now),
            heartbeat_ms: Some(now),
            finished_ms: Set::Clear,
            exit_code: Set::Clear,
            metrics: Some(BTreeMap::new()),
            series: Some(Vec::new()),
            error: Set::Clear,
            retryable: Some(false),
            status: Set::Clear,
            log_tail: Some(Vec::new()),
            log: Set::exactly(log),
            ..Default::default()
        }
    }

    /// The final write of an attempt.
    pub fn finished(now: Millis, outcome: &AttemptEnd) -> TrialUpdate {
        TrialUpdate {
            state: Some(if outcome.preempted {
                TrialState::Lost
            } else if outcome.exit_code == Some(0) && outcome.error.is_none() {
                TrialState::Succeeded
            } else {
                TrialState::Failed
            }),
            preempted: outcome.preempted,
            heartbeat_ms: Some(now),
            finished_ms: Set::To(now),
            exit_code: Set::exactly(outcome.exit_code),
            metrics: Some(outcome.metrics.clone()),
            series: Some(outcome.series.clone()),
            error: Set::exactly(outcome.error.clone()),
            retryable: Some(outcome.retryable),
            status: Set::exactly(outcome.status.clone()),
            log_tail: Some(outcome.log_tail.clone()),
            checkpoint: outcome.checkpoint,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Params;
    use TrialState::*;

    #[test]
    fn an_attempt_ended_by_a_reclaim_notice_is_a_preemption_not_a_run() {
        let mut t = Trial::new("s", 1, 0, 0, Default::default(), 0);
        t.state = Running;
        t.runs = 1;
        let end = AttemptEnd {
            exit_code: Some(143),
            error: Some("its spot instance is reclaimed at T".into()),
            preempted: true,
            ..Default::default()
        };
        TrialUpdate::finished(5, &end).apply(&mut t);
        assert_eq!((t.state, t.runs, t.preemptions), (Lost, 0, 1));
        let mut u = Trial::new("s", 2, 0, 0, Default::default(), 0);
        u.state = Running;
        u.runs = 1;
        let failed = AttemptEnd {
            exit_code: Some(1),
            ..Default::default()
        };
        TrialUpdate::finished(5, &failed).apply(&mut u);
        assert_eq!((u.state, u.runs, u.preemptions), (Failed, 1, 0));
    }

    #[test]
    fn expect_checks_state_and_fencing_token() {
        let mut t = Trial::new("s", 1, 0, 0, Params::new(), 0);
        t.state = Running;
        t.attempt = 2;
        assert!(Expect::state(Running, 2).holds(&t));
        assert!(!Expect::state(Running, 1).holds(&t));
        assert!(!Expect::state(Starting, 2).holds(&t));
    }

    #[test]
    fn a_retry_keeps_the_ending_attempt_in_the_history_bounded() {
        let mut t = Trial::new("s", 1, 0, 0, Params::new(), 0);
        for a in 1..=(MAX_HISTORY as u32 + 5) {
            TrialUpdate::running(&format!("m{a}"), 1, 10 * a as i64, None).apply(&mut t);
            TrialUpdate {
                state: Some(Lost),
                heartbeat_ms: Some(10 * a as i64 + 5),
                error: Set::To(format!("lost {a}")),
                ..Default::default()
            }
            .apply(&mut t);
            // A write that keeps the attempt adds nothing.
            TrialUpdate {
                attempt: Some(a),
                ..Default::default()
            }
            .apply(&mut t);
            TrialUpdate::next_attempt(a + 1, None).apply(&mut t);
            // The attempt to come has no machine, times or outcome of its own yet.
            assert_eq!((t.state, t.attempt), (Pending, a + 1));
            assert_eq!(
                (&t.machine, t.started_ms, t.finished_ms),
                (&None, None, None)
            );
            assert_eq!((&t.error, t.exit_code), (&None, None));
            let first = t.history.first().map(|h| h.attempt);
            assert_eq!(first, Some(a.saturating_sub(MAX_HISTORY as u32 - 1).max(1)));
        }
        assert_eq!(t.history.len(), MAX_HISTORY);
        let last = t.history.last().cloned();
        let want = MAX_HISTORY as u32 + 5;
        assert_eq!(
            last,
            Some(AttemptRecord {
                attempt: want,
                state: Lost,
                machine: Some(format!("m{want}")),
                launched_ms: None,
                started_ms: Some(10 * want as i64),
                ended_ms: Some(10 * want as i64 + 5),
                exit_code: None,
                error: Some(format!("lost {want}")),
                billing: None,
                turn: 1,
            })
        );
        // Old records without the field still read.
        let mut v = serde_json::to_value(&t).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("history");
        }
        let back: Trial = serde_json::from_value(v).expect("a record without history reads");
        assert!(back.history.is_empty());
    }

    #[test]
    fn the_write_rule_refuses_a_stale_condition_and_an_illegal_change_leaving_the_record() {
        let mut t = Trial::new("s", 1, 0, 0, Params::new(), 0);
        t.state = Running;
        t.attempt = 2;
        let before = t.clone();
        let done = TrialUpdate {
            state: Some(Succeeded),
            status: Set::To("done".into()),
            ..Default::default()
        };
        let stale = Expect::state(Running, 1);
        assert_eq!(done.apply_checked(&stale, &mut t), Err(Refused::Conflict));
        let back = TrialUpdate {
            state: Some(Pending),
            ..Default::default()
        };
        let current = Expect::state(Running, 2);
        assert_eq!(
            back.apply_checked(&current, &mut t),
            Err(Refused::Illegal {
                from: Running,
                to: Pending
            })
        );
        assert_eq!(t, before);
        assert_eq!(done.apply_checked(&current, &mut t), Ok(()));
        assert_eq!((t.state, t.status.as_deref()), (Succeeded, Some("done")));
        // Kept, cleared, set.
        let clear = TrialUpdate {
            status: Set::Clear,
            ..Default::default()
        };
        clear.apply(&mut t);
        assert_eq!(t.status, None);
        TrialUpdate::default().apply(&mut t);
        assert_eq!(t.state, Succeeded);
    }
}
