//! The serverless reconcile tick: one pass over the submitted studies, as the
//! `augur-lambda` handler (on a schedule and on the table's stream) or `augur tick` (by
//! hand, or from cron). Nothing is kept between ticks: each reads the store afresh,
//! takes each study's lease, acts until nothing is left to do now or its deadline is
//! near, and gives the lease back. A tick that dies leaves a lease that expires at its
//! deadline; everything it did is recorded, and what it did not do is decided again.

use super::backend::Backend;
use super::AppError;
use augur::{Finished, LeaseSpec, Runner, TickEnd};
use augur_model::TrialState;
use augur_store::TrialStore;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What set a tick off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule (or a manual invocation): every submitted study.
    Schedule,
    /// Changes on the table's stream that need a decision, in these studies.
    Changes(BTreeSet<String>),
    /// Stream records that need no decision (heartbeats, the tick's own writes).
    Nothing,
}

/// Reads an invocation's event: an EventBridge schedule event, a DynamoDB stream batch,
/// `{"studies": [...]}`, or anything else (a manual test invocation: tick everything).
pub fn trigger(event: &Value) -> Trigger {
    if let Some(names) = event.get("studies").and_then(Value::as_array) {
        return Trigger::Changes(
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        );
    }
    let Some(records) = event.get("Records").and_then(Value::as_array) else {
        return Trigger::Schedule;
    };
    let mut studies = BTreeSet::new();
    for r in records {
        if let Some(study) = needs_decision(r) {
            studies.insert(study);
        }
    }
    if studies.is_empty() {
        Trigger::Nothing
    } else {
        Trigger::Changes(studies)
    }
}

/// The study of a stream record that calls for a decision: a trial that reached a
/// result (a slot frees up, a retry is due), or a study submitted, resumed or stopped.
/// Heartbeats, the driver's own launches, leases and new trials need none.
fn needs_decision(r: &Value) -> Option<String> {
    let ddb = r.get("dynamodb")?;
    let key = |k: &str| ddb.get("Keys")?.get(k)?.get("S")?.as_str();
    let state = |image: &str| ddb.get(image)?.get("state")?.get("S")?.as_str();
    let (pk, sk) = (key("pk")?, key("sk")?);
    let (new, old) = (state("NewImage"), state("OldImage"));
    if new.is_none() || new == old {
        return None;
    }
    let (wanted, study): (&[&str], &str) = if sk.starts_with("trial#") {
        (
            &[
                TrialState::Succeeded.as_str(),
                TrialState::Failed.as_str(),
                TrialState::Lost.as_str(),
            ],
            augur_aws::dynamo::study_of_trials(pk),
        )
    } else if sk == "study" {
        (&["active", "stopping"], pk)
    } else {
        return None;
    };
    new.filter(|s| wanted.contains(s))
        .map(|_| study.to_string())
}

/// Studies' caches kept between ticks of this process: an augur-lambda environment AWS reuses reads only
/// what changed since its last tick (`augur tick` from cron starts cold each time),
/// within the function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, MB).
static WARM: std::sync::LazyLock<crate::TickCaches> = std::sync::LazyLock::new(|| {
    std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|m| m.parse().ok())
        .map_or_else(crate::TickCaches::default, crate::TickCaches::for_memory)
});

/// What a tick did with one study.
#[derive(Clone, Debug, Serialize)]
pub struct StudyTick {
    pub study: String,
    /// `waiting` (trials running, nothing to do now), `done`, `stopped`, `deadline`
    /// (work left for the next tick), `held` (another driver has the lease), `gone`
    /// (deleted), `skipped` (no time left), or `error`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub launched: u64,
    pub retried: u64,
    pub lost: u64,
    pub cancelled: u64,
    pub pruned: u64,
    pub terminated: u64,
}

/// What a whole tick did.
#[derive(Clone, Debug, Serialize)]
pub struct TickReport {
    pub trigger: &'static str,
    pub holder: String,
    pub studies: Vec<StudyTick>,
    /// Scheduled ticks only: the studies with machines that nobody drives, wound
    /// down ([`super::abandoned`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<StudyTick>,
    pub elapsed_ms: u64,
}

impl TickReport {
    pub fn errors(&self) -> usize {
        let all = self.studies.iter().chain(&self.abandoned);
        all.filter(|s| s.outcome == "error").count()
    }
}

/// How long before an invocation's deadline a tick stops acting, for the last calls
/// to return: a tenth of the time left, at least 2 s and at most 10 s.
pub fn margin(left: Duration) -> Duration {
    (left / 10).clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// When to stop acting, given the time an invocation has left.
pub fn acting_deadline(left: Duration) -> Instant {
    Instant::now() + left.saturating_sub(margin(left))
}

/// One tick for `event`, acting until `deadline`, holding leases as `holder`.
pub async fn handle(
    ctx: &Backend,
    event: &Value,
    deadline: Instant,
    holder: &str,
) -> Result<TickReport, AppError> {
    let started = Instant::now();
    let (name, only) = match trigger(event) {
        Trigger::Schedule => ("schedule", None),
        Trigger::Changes(s) => ("changes", Some(s)),
        Trigger::Nothing => {
            return Ok(TickReport {
                trigger: "nothing",
                holder: holder.to_string(),
                studies: Vec::new(),
                abandoned: Vec::new(),
                elapsed_ms: 0,
            })
        }
    };
    let store = ctx.store().await?;
    let submitted: BTreeSet<String> = store.submitted().await?.into_iter().collect();
    // Once a minute (the schedule), not at each change: one listing of the stack's
    // machines, and reads only for studies that have some and no live driver. Only
    // where every driver holds a lease (AWS): a live local `augur run` holds none.
    // Beside the submitted studies, not after them: with many studies to tick, it
    // would otherwise get only the time they leave.
    let wind_down = only.is_none() && ctx.drivers_share_studies();
    let (studies, abandoned) = tokio::join!(
        tick(ctx, &submitted, only.as_ref(), deadline, holder),
        async {
            match wind_down {
                true => {
                    super::abandoned::wind_down(ctx, &store, &submitted, deadline, holder).await
                }
                false => Ok(Vec::new()),
            }
        }
    );
    let (studies, abandoned) = (studies?, abandoned?);
    Ok(TickReport {
        trigger: name,
        holder: holder.to_string(),
        studies,
        abandoned,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// How many studies one tick drives at once: a tick mostly waits on AWS, so
/// studies share its deadline instead of queueing for it.
pub const STUDIES_AT_ONCE: usize = 8;

/// Ticks the `submitted` studies (those of `only`, if given), up to
/// [`STUDIES_AT_ONCE`] at a time. Whom the queue starts with turns every minute, so
/// that with more studies than time no study is always the one left over.
pub async fn tick(
    ctx: &Backend,
    submitted: &BTreeSet<String>,
    only: Option<&BTreeSet<String>>,
    deadline: Instant,
    holder: &str,
) -> Result<Vec<StudyTick>, AppError> {
    use futures_util::{StreamExt, TryStreamExt};
    let store = ctx.store().await?;
    let names: Vec<String> = submitted
        .iter()
        .filter(|n| only.is_none_or(|o| o.contains(*n)))
        .cloned()
        .collect();
    let names = queue(names, augur_store::now_ms());
    let store = &store;
    let mut out: Vec<StudyTick> = futures_util::stream::iter(names)
        .map(|name| async move {
            let mut row = StudyTick::new(&name);
            if Instant::now() < deadline {
                tick_study(ctx, store, &mut row, deadline, holder).await?;
            }
            Ok::<_, AppError>(row)
        })
        .buffer_unordered(STUDIES_AT_ONCE)
        .try_collect()
        .await?;
    out.sort_by(|a, b| a.study.cmp(&b.study));
    Ok(out)
}

/// The studies in the order a tick at `now_ms` starts them: turned by one every
/// minute.
fn queue(mut names: Vec<String>, now_ms: augur_model::Millis) -> Vec<String> {
    let turn = (now_ms / 60_000).unsigned_abs() as usize;
    let len = names.len().max(1);
    names.rotate_left(turn % len);
    names
}

/// One submitted study's part of a tick, into its row: forgotten when deleted or
/// ended, else driven until it has nothing to do now or the deadline.
async fn tick_study(
    ctx: &Backend,
    store: &Arc<dyn TrialStore>,
    row: &mut StudyTick,
    deadline: Instant,
    holder: &str,
) -> Result<(), AppError> {
    let name = row.study.clone();
    let rec = match store.get_study(&name).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            store.set_submitted(&name, false).await?;
            row.outcome = "gone";
            return Ok(());
        }
        Err(e) => {
            row.failed(e.to_string());
            return Ok(());
        }
    };
    // Whatever can write the table could have written this: check it as a study file.
    if let Err(why) = rec.check() {
        tracing::warn!(study = %name, %why, "refusing a study record");
        row.failed(format!("refused: {why}"));
        return Ok(());
    }
    if rec.state.is_over() {
        store.set_submitted(&name, false).await?;
        row.outcome = rec.state.as_word();
        return Ok(());
    }
    let drive = rec.drive.clone().unwrap_or_else(|| ctx.default_drive());
    let heartbeat = Duration::from_millis(drive.heartbeat_ms as u64);
    let provider = match ctx.provider(&rec.spec, heartbeat).await {
        Ok(p) => p,
        Err(f) => {
            row.failed(f.message);
            return Ok(());
        }
    };
    let config = augur::RunnerConfig {
        keep_days: ctx.keep_days(&rec.spec),
        ..tick_config(&drive, holder, deadline)
    };
    let runner = Runner::with_config(store.clone(), provider, config);
    let end = cut_at(
        deadline,
        runner.tick_cached(&rec.spec, rec.created_ms, deadline, &WARM),
    )
    .await;
    row.count(&runner.counters());
    settle_tick(store, &name, row, end).await?;
    tracing::info!(study = %name, outcome = row.outcome, launched = row.launched, "ticked");
    Ok(())
}

/// Says in `row` how a study's tick ended, and withdraws or stops the study where
/// its end says so.
async fn settle_tick(
    store: &Arc<dyn TrialStore>,
    name: &str,
    row: &mut StudyTick,
    end: Result<TickEnd, augur::RunError>,
) -> Result<(), AppError> {
    match end {
        Ok(TickEnd::Finished(f)) => {
            store.set_submitted(name, false).await?;
            row.outcome = if f == Finished::Done {
                "done"
            } else {
                "stopped"
            };
        }
        Ok(TickEnd::Waiting) => row.outcome = "waiting",
        Ok(TickEnd::Deadline) => row.outcome = "deadline",
        Ok(TickEnd::Held(lease)) => row.held(&lease),
        // A bound on its launches stopped the study, with the reason in its record.
        Err(augur::RunError::Machines(why)) => {
            store.set_submitted(name, false).await?;
            row.outcome = "stopped";
            row.detail = Some(why);
        }
        // A launch the provider refused as asked (an image, subnet or template that
        // is not there): the same, until the study or the stack is fixed.
        Err(augur::RunError::Provider(e @ augur::provider::ProviderError::Rejected(_))) => {
            let why = format!("{e}. Submit the study again once it is fixed.");
            stop_refused(store, name, &why).await;
            row.outcome = "stopped";
            row.detail = Some(why);
        }
        // A grant is missing: the study stops, the reason recorded, until the
        // stack is fixed and the study submitted again.
        Err(augur::RunError::Denied(d)) => {
            let why = format!("{d}. Submit the study again once the grant is added.");
            stop_refused(store, name, &why).await;
            row.outcome = "stopped";
            row.detail = Some(why);
        }
        Err(e) => row.failed(e.to_string()),
    }
    Ok(())
}

/// Stops a study for a refusal, recording `why`, as far as the grants allow (the
/// refusal may be of these very writes: it is said in the tick's log then).
async fn stop_refused(store: &Arc<dyn TrialStore>, name: &str, why: &str) {
    let (reason, now) = (why.to_string(), augur_store::now_ms());
    let change = move |rec: &mut augur_model::StudyRecord| rec.stop_for(&reason, now);
    if let Err(e) = store.update_study(name, Box::new(change)).await {
        tracing::warn!(study = %name, error = %e, "cannot record why the study stopped");
    }
    if let Err(e) = store.set_submitted(name, false).await {
        tracing::warn!(study = %name, error = %e, "cannot withdraw the study");
    }
}

/// How a tick drives a study: with its recorded `drive`, acting only while it holds
/// the study's lease, taken as `holder` until `deadline`.
pub(super) fn tick_config(
    drive: &augur_model::DriveSettings,
    holder: &str,
    deadline: Instant,
) -> augur::RunnerConfig {
    let lease = LeaseSpec {
        holder: holder.to_string(),
        ttl: deadline.saturating_duration_since(Instant::now()),
    };
    augur::RunnerConfig {
        drive: drive.clone(),
        lease: Some(lease),
        ..Default::default()
    }
}

/// `tick`, given up a second past the acting deadline whatever call is in flight,
/// still within the invocation's margin ([`margin`], at least 2 s): a Lambda past
/// its timeout is killed mid-call. What was cut is decided again next time.
pub(super) async fn cut_at(
    deadline: Instant,
    tick: impl std::future::Future<Output = Result<TickEnd, augur::RunError>>,
) -> Result<TickEnd, augur::RunError> {
    let cut = deadline + Duration::from_secs(1);
    tokio::time::timeout_at(cut.into(), tick)
        .await
        .unwrap_or(Ok(TickEnd::Deadline))
}

impl StudyTick {
    /// A study not reached yet.
    pub(super) fn new(name: &str) -> StudyTick {
        StudyTick {
            study: name.to_string(),
            outcome: "skipped",
            detail: None,
            launched: 0,
            retried: 0,
            lost: 0,
            cancelled: 0,
            pruned: 0,
            terminated: 0,
        }
    }

    /// Another driver holds the study's lease.
    pub(super) fn held(&mut self, lease: &augur_store::Lease) {
        self.outcome = "held";
        self.detail = Some(format!("by {} until {}", lease.holder, lease.until));
    }

    pub(super) fn failed(&mut self, why: String) {
        self.outcome = "error";
        self.detail = Some(why);
    }

    /// What the tick's runner did to the study.
    pub(super) fn count(&mut self, c: &augur::CounterValues) {
        self.launched = c.launched;
        self.retried = c.retried;
        self.lost = c.lost;
        self.cancelled = c.cancelled;
        self.pruned = c.pruned;
        self.terminated = c.terminated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_study_starts_a_tick_first_in_turn() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let firsts: BTreeSet<String> = (0..3)
            .map(|minute| queue(names.clone(), minute * 60_000 + 5)[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3, "{firsts:?}");
        assert_eq!(queue(names.clone(), 0), names);
        assert!(queue(Vec::new(), 7).is_empty());
    }

    fn record(name: &str, pk: &str, sk: &str, old: Option<&str>, new: Option<&str>) -> Value {
        let image = |s: Option<&str>| {
            s.map(|s| json!({"pk": {"S": pk}, "sk": {"S": sk}, "state": {"S": s}}))
        };
        let mut d = json!({"Keys": {"pk": {"S": pk}, "sk": {"S": sk}}});
        if let Some(i) = image(old) {
            d["OldImage"] = i;
        }
        if let Some(i) = image(new) {
            d["NewImage"] = i;
        }
        json!({"eventSource": "aws:dynamodb", "eventName": name, "dynamodb": d})
    }

    #[test]
    fn schedule_and_manual_events_tick_everything() {
        let schedule = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(trigger(&schedule), Trigger::Schedule);
        assert_eq!(trigger(&json!({})), Trigger::Schedule);
        assert_eq!(
            trigger(&json!({"studies": ["a", "b"]})),
            Trigger::Changes(["a".to_string(), "b".to_string()].into())
        );
    }

    #[test]
    fn stream_records_tick_only_studies_that_need_a_decision() {
        let ev = json!({"Records": [
            // A heartbeat: same state.
            record("MODIFY", "s1", "trial#0000000001", Some("running"), Some("running")),
            // The driver's own launch and a new trial.
            record("MODIFY", "s1", "trial#0000000002", Some("pending"), Some("starting")),
            record("INSERT", "s1", "trial#0000000003", None, Some("pending")),
            // Leases and submissions.
            record("INSERT", "s1", "lease", None, None),
            record("INSERT", "#submitted", "sub#s1", None, None),
            // A study deleted.
            record("REMOVE", "s4", "study", Some("active"), None),
        ]});
        assert_eq!(trigger(&ev), Trigger::Nothing);
        let ev = json!({"Records": [
            // Trials in their study's partition, and in the study's own (a study
            // recorded before trials had a partition of their own).
            record("MODIFY", "trials#s1", "trial#0000000001", Some("running"), Some("succeeded")),
            record("MODIFY", "s2", "trial#0000000007", Some("running"), Some("failed")),
            record("INSERT", "s3", "study", None, Some("active")),
            record("MODIFY", "s5", "study", Some("active"), Some("stopping")),
            record("MODIFY", "s6", "study", Some("active"), Some("done")),
        ]});
        assert_eq!(
            trigger(&ev),
            Trigger::Changes(
                ["s1", "s2", "s3", "s5"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            )
        );
    }

    #[test]
    fn ticks_stop_acting_with_a_margin_before_the_deadline() {
        let secs = Duration::from_secs;
        assert_eq!(margin(secs(60)), secs(6));
        assert_eq!(margin(secs(900)), secs(10));
        assert_eq!(margin(secs(5)), secs(2));
        assert_eq!(margin(Duration::ZERO), secs(2));
        // Less time than the margin: act not at all.
        assert!(acting_deadline(secs(1)) <= Instant::now());
    }
}
