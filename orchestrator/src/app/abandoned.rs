//! The scheduled tick's second part: studies nobody drives. A study run in the
//! foreground whose `augur run` died (its lease lapsed) still has machines; the tick
//! winds them down ([`Runner::wind_down`]): it launches nothing, records lost
//! attempts and ends their machines, ends machines whose attempt is over, and lets
//! running trials finish. The machines of a deleted study are ended. Submitted
//! studies are the first part's; a study whose driver is alive is left to it.

use super::backend::Backend;
use super::tick::{cut_at, tick_config, StudyTick};
use super::AppError;
use crate::reconcile::{Machine, NO_STUDY};
use crate::{MachineProvider, Runner, TickEnd};
use augur_store::TrialStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// Winds down the studies with live machines that are not `submitted` (the tick's
/// first part read them) and that no
/// driver holds (`held` rows: a live driver has them), until
/// `deadline`, holding each study's lease as `holder` meanwhile; a row each.
pub async fn wind_down(
    ctx: &Backend,
    store: &Arc<dyn TrialStore>,
    submitted: &BTreeSet<String>,
    deadline: Instant,
    holder: &str,
) -> Result<Vec<StudyTick>, AppError> {
    let provider = ctx.sweeper().await;
    // Whether a live driver holds a study is learnt by asking for its lease (a
    // conditional write), not by listing leases (a scan of the table).
    let listed = provider
        .list_all()
        .await
        .map_err(|e| AppError::unavailable(e.to_string()))?;
    let mut by_study: BTreeMap<String, Vec<Machine>> = BTreeMap::new();
    for (name, m) in listed {
        if m.gone.is_none() && !submitted.contains(&name) {
            by_study.entry(name).or_default().push(m);
        }
    }
    let mut rows = Vec::new();
    for (name, machines) in by_study {
        let mut row = StudyTick::new(&name);
        if Instant::now() < deadline {
            let both = (store, &provider);
            wind_down_study(ctx, both, &mut row, &machines, deadline, holder).await?;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// One study's part, into its row.
async fn wind_down_study(
    ctx: &Backend,
    (store, provider): (&Arc<dyn TrialStore>, &Arc<dyn MachineProvider>),
    row: &mut StudyTick,
    machines: &[Machine],
    deadline: Instant,
    holder: &str,
) -> Result<(), AppError> {
    let Some(rec) = store.get_study(&row.study).await? else {
        for m in machines {
            match provider.terminate(m).await {
                Ok(()) => row.terminated += 1,
                Err(e) => row.failed(e.to_string()),
            }
        }
        row.outcome = "gone";
        row.detail = Some(NO_STUDY.to_string());
        return Ok(());
    };
    let drive = rec.drive.clone().unwrap_or_else(|| ctx.default_drive());
    let config = tick_config(&drive, holder, deadline);
    let runner = Runner::with_config(store.clone(), provider.clone(), config);
    let trials = machines.iter().map(|m| m.trial).collect();
    let end = cut_at(deadline, runner.wind_down(&rec.spec, trials, deadline)).await;
    row.count(&runner.counters());
    match end {
        Ok(TickEnd::Finished(_)) => row.outcome = "wound down",
        Ok(TickEnd::Waiting) => row.outcome = "winding down",
        Ok(TickEnd::Deadline) => row.outcome = "deadline",
        Ok(TickEnd::Held(lease)) => row.held(&lease),
        Err(e) => row.failed(e.to_string()),
    }
    tracing::info!(study = %row.study, outcome = row.outcome, terminated = row.terminated, "abandoned study");
    Ok(())
}
