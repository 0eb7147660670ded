//! `augur gc`: ends what nobody else will. Machines whose study is deleted, or whose
//! trial is final or moved on to another attempt (a driver's own sweep does this while
//! it runs; `gc` does it when none does); expired driver leases; `submitted` marks of
//! deleted studies.

use super::{AppError, CmdResult};
use crate::app::backend::Backend;
use augur::reconcile::{sweep, Action, Machine, Mode, Scope, View, CLOCK_SKEW_MS, NO_STUDY};
use augur_model::{Millis, Study, Trial};
use augur_store::logfile::rfc3339;
use augur_store::provider::MachineProvider;
use augur_store::{now_ms, TrialStore};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Say what would be ended and removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print what was done as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn gc(ctx: &Backend, args: &GcArgs) -> CmdResult {
    let Some(store) = ctx.existing_store().await? else {
        if args.json {
            println!("{}", json!({"machines": [], "leases": [], "submitted": []}));
        } else {
            eprintln!("gc: nothing recorded, nothing to do");
        }
        return Ok(0);
    };
    let now = now_ms();
    let ended = end_orphans(ctx, store.as_ref(), args, now).await?;
    let expired = expire_leases(store.as_ref(), args, now).await?;
    let unmarked = clear_marks(store.as_ref(), args).await?;
    if args.json {
        println!(
            "{}",
            json!({"dry_run": args.dry_run, "machines": ended, "leases": expired, "submitted": unmarked})
        );
    } else {
        eprintln!(
            "gc: {} machine(s) {}, {} expired lease(s), {} stale submitted mark(s){}",
            ended.len(),
            if args.dry_run { "would end" } else { "ended" },
            expired.len(),
            unmarked.len(),
            if args.dry_run { " (dry run)" } else { "" }
        );
    }
    Ok(0)
}

/// Machines: every live one, judged by the driver's own sweep against its study's
/// records and recorded timings; those of unrecorded studies are ended too.
async fn end_orphans(
    ctx: &Backend,
    store: &dyn TrialStore,
    args: &GcArgs,
    now: Millis,
) -> Result<Vec<serde_json::Value>, AppError> {
    let provider = ctx.sweeper().await;
    let verb = if args.dry_run { "would end" } else { "ended" };
    let mut by_study: BTreeMap<String, Vec<Machine>> = BTreeMap::new();
    for (name, m) in provider.list_all().await.map_err(unavailable)? {
        by_study.entry(name).or_default().push(m);
    }
    let mut ended = Vec::new();
    for (name, machines) in &by_study {
        let ends: Vec<(Machine, String)> = match store.get_study(name).await? {
            None => machines
                .iter()
                .map(|m| (m.clone(), NO_STUDY.to_string()))
                .collect(),
            Some(rec) => {
                let trials = store.list_trials(name).await?;
                let drive = rec.drive.clone().unwrap_or_else(|| ctx.default_drive());
                let view = View {
                    study: &rec.spec,
                    trials: &trials,
                    open: None,
                    machines,
                    scope: &Scope::Budget(rec.spec.trials),
                    mode: Mode::Run,
                    exhausted: true,
                    warm: provider.warm_by_record(),
                    pooled: false,
                    sees_all: provider.sees_all(),
                    fresh_listing: true,
                    drive: &drive,
                    now,
                    // Judged by the lease alone: run by hand, after the fact.
                    seen_since: 0,
                    slots: slots(provider.as_ref(), &rec.spec, &trials).await,
                };
                sweep(&view)
                    .into_iter()
                    .filter_map(|a| match a {
                        Action::Terminate { machine, reason } => Some((machine, reason)),
                        _ => None,
                    })
                    .collect()
            }
        };
        for (m, reason) in ends {
            if !args.dry_run {
                provider.terminate(&m).await.map_err(unavailable)?;
            }
            if !args.json {
                println!(
                    "{verb} machine {} ({name}/{} attempt {}): {reason}",
                    m.id, m.trial, m.attempt
                );
            }
            ended.push(json!({"study": name, "trial": m.trial, "attempt": m.attempt, "machine": m.id, "reason": reason}));
        }
    }
    Ok(ended)
}

fn unavailable(e: impl std::fmt::Display) -> AppError {
    AppError::unavailable(e.to_string())
}

/// Leases that expired (past the clock-skew margin): their holders are gone.
async fn expire_leases(
    store: &dyn TrialStore,
    args: &GcArgs,
    now: Millis,
) -> Result<Vec<serde_json::Value>, AppError> {
    let mut expired = Vec::new();
    for (name, lease) in store.leases().await? {
        if lease.until + CLOCK_SKEW_MS >= now {
            continue;
        }
        let done = args.dry_run || store.expire_lease(&name, &lease).await?;
        if !done {
            continue;
        }
        if !args.json {
            println!(
                "{} lease of `{name}` held by {} (expired {})",
                if args.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                lease.holder,
                rfc3339(lease.until)
            );
        }
        expired.push(json!({"study": name, "holder": lease.holder, "until": rfc3339(lease.until)}));
    }
    Ok(expired)
}

/// Submitted marks of studies that are no longer recorded.
async fn clear_marks(store: &dyn TrialStore, args: &GcArgs) -> Result<Vec<String>, AppError> {
    let mut unmarked = Vec::new();
    for name in store.submitted().await? {
        if store.get_study(&name).await?.is_some() {
            continue;
        }
        if !args.dry_run {
            store.set_submitted(&name, false).await?;
        }
        if !args.json {
            println!(
                "{} the submitted mark of deleted study `{name}`",
                if args.dry_run {
                    "would clear"
                } else {
                    "cleared"
                }
            );
        }
        unmarked.push(name);
    }
    Ok(unmarked)
}

/// How many attempts one machine of the study runs at once: as its provider says,
/// and at least as many as its records name slots of one machine (a provider that
/// cannot say must not end a machine one of whose slots runs an attempt).
async fn slots(provider: &dyn MachineProvider, study: &Study, trials: &[Trial]) -> u32 {
    let said = provider.slots(study).await.unwrap_or(1);
    said.max(augur::reconcile::slots_named(trials))
}
