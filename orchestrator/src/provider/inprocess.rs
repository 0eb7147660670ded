//! An in-process objective: a Rust closure instead of a script (diviner's `Acquire`),
//! for tests and search benchmarks. It writes the record exactly as an agent would.

use super::{Launched, MachineProvider, ProviderError};
use crate::reconcile::Machine;
use async_trait::async_trait;
use augur_model::{AttemptEnd, Expect, MetricPoint, Params, Study, Trial, TrialState, TrialUpdate};
use augur_store::{now_ms, TrialStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What an objective sees of its trial.
#[derive(Clone, Debug)]
pub struct TrialContext {
    pub study: String,
    pub trial: u64,
    pub attempt: u32,
    pub replicate: u32,
}

/// The objective: parameters in, metrics out (an `Err` is a failed trial).
pub type Objective =
    dyn Fn(&Params, &TrialContext) -> Result<BTreeMap<String, f64>, String> + Send + Sync;

/// Runs an objective on tokio's blocking pool, one "machine" per attempt.
pub struct InProcessProvider {
    store: Arc<dyn TrialStore>,
    objective: Arc<Objective>,
    running: Arc<Mutex<HashMap<String, (String, Machine)>>>,
    notify: Arc<Notify>,
    next: Mutex<u64>,
}

impl InProcessProvider {
    pub fn new(store: Arc<dyn TrialStore>, objective: Arc<Objective>) -> InProcessProvider {
        InProcessProvider {
            store,
            objective,
            running: Arc::new(Mutex::new(HashMap::new())),
            notify: Arc::new(Notify::new()),
            next: Mutex::new(0),
        }
    }
}

/// What `objective` makes of trial `t`'s parameters, on the blocking pool, as an
/// attempt's end held to the study's objectives.
async fn evaluate(objective: Arc<Objective>, study: &Study, t: &Trial) -> AttemptEnd {
    let cx = TrialContext {
        study: study.name.clone(),
        trial: t.id,
        attempt: t.attempt,
        replicate: t.replicate,
    };
    let params = t.params.clone();
    let result = tokio::task::spawn_blocking(move || objective(&params, &cx))
        .await
        .unwrap_or_else(|e| Err(format!("objective panicked: {e}")));
    let mut outcome = match result {
        Ok(metrics) => AttemptEnd {
            exit_code: Some(0),
            series: vec![MetricPoint {
                t_ms: now_ms(),
                values: metrics.clone(),
            }],
            metrics,
            ..Default::default()
        },
        Err(e) => AttemptEnd {
            exit_code: Some(1),
            error: Some(e),
            ..Default::default()
        },
    };
    if let Some(why) = study.unreported(&outcome) {
        outcome.error = Some(why);
    }
    outcome
}

#[async_trait]
impl MachineProvider for InProcessProvider {
    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        Ok(self
            .running
            .lock()
            .map_err(|_| ProviderError::Poisoned)?
            .values()
            .cloned()
            .collect())
    }

    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        let id = {
            let mut n = self.next.lock().map_err(|_| ProviderError::Poisoned)?;
            *n += 1;
            format!("inproc-{}", *n)
        };
        let machine = Machine {
            id: id.clone(),
            trial: trial.id,
            attempt: trial.attempt,
            gone: None,
            incarnation: None,
            billing: None,
        };
        self.running
            .lock()
            .map_err(|_| ProviderError::Poisoned)?
            .insert(id.clone(), (study.name.clone(), machine));
        let (store, objective, running, notify) = (
            self.store.clone(),
            self.objective.clone(),
            self.running.clone(),
            self.notify.clone(),
        );
        let (name, t, mid) = (study.name.clone(), trial.clone(), id.clone());
        let held_to = study.clone();
        tokio::spawn(async move {
            let up = TrialUpdate::running(&mid, 1, now_ms(), None);
            let ok = store
                .update_trial(
                    &name,
                    t.id,
                    &Expect::state(TrialState::Starting, t.attempt),
                    &up,
                )
                .await;
            if matches!(ok, Ok(augur_store::Written::Done(_))) {
                let outcome = evaluate(objective, &held_to, &t).await;
                let fin = TrialUpdate::finished(now_ms(), &outcome);
                let _ = store
                    .update_trial(
                        &name,
                        t.id,
                        &Expect::state(TrialState::Running, t.attempt),
                        &fin,
                    )
                    .await;
            }
            if let Ok(mut r) = running.lock() {
                r.remove(&mid);
            }
            notify.notify_one();
        });
        Ok(Launched::free(id))
    }

    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        let r = self.running.lock().map_err(|_| ProviderError::Poisoned)?;
        Ok(r.values()
            .filter(|(s, _)| s == study)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn terminate(&self, _machine: &Machine) -> Result<(), ProviderError> {
        // A closure cannot be interrupted; its final write is fenced by its attempt.
        Ok(())
    }

    fn sees_all(&self) -> bool {
        true
    }

    async fn changed(&self) {
        self.notify.notified().await
    }
}
