//! What the agent watches while the script runs, besides its output: its heartbeat
//! (is the attempt still current, is the store still there) and, on EC2, the spot
//! reclaim notice.

use crate::log::Log;
use crate::output::ScriptOutput;
use crate::AgentConfig;
use augur_model::{duration, TrialUpdate};
use augur_store::logfile::Source;
use augur_store::{now_ms, Beaten, TrialStore};
use std::time::Duration;
use tokio::time::Instant;

/// Records a heartbeat; why the attempt must end, if it must: the trial has moved
/// on, or no heartbeat could be recorded for the study's `lease` (augur counts the
/// attempt lost then, and runs it again elsewhere). A beat the SDK keeps retrying
/// counts as failed once a lease has passed.
pub(crate) async fn heartbeat(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    seen: &mut ScriptOutput,
    log: &mut Log,
    lease: Option<Duration>,
    last_beat: &mut Instant,
) -> Option<String> {
    let limit = lease.unwrap_or(Duration::from_secs(3600));
    let beat = match tokio::time::timeout(limit, beat(store, cfg, seen, log)).await {
        Ok(b) => b,
        Err(_) => {
            seen.dirty = true;
            Beat::Failed
        }
    };
    match beat {
        Beat::Recorded => {
            *last_beat = Instant::now();
            None
        }
        Beat::Failed => lease.filter(|l| last_beat.elapsed() > *l).map(|l| {
            format!(
                "no heartbeat recorded for {} (the store cannot be reached): the attempt counts as lost",
                duration::format(l)
            )
        }),
        Beat::Moved(why) => Some(why),
    }
}

/// What a heartbeat found.
enum Beat {
    Recorded,
    /// The write failed: warned about, and retried at the next beat.
    Failed,
    /// The trial has moved on: why the attempt must end.
    Moved(String),
}

/// Records a heartbeat (with the metrics and status seen since the last one).
async fn beat(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    seen: &mut ScriptOutput,
    log: &mut Log,
) -> Beat {
    let mut up = TrialUpdate {
        heartbeat_ms: Some(now_ms()),
        ..Default::default()
    };
    if seen.dirty {
        up.metrics = Some(seen.metrics.clone());
        up.series = Some(seen.series.points());
        up.checkpoint = seen.checkpoint;
        up.status = Some(seen.status.clone());
        seen.dirty = false;
    }
    match store
        .heartbeat(&cfg.study, cfg.trial, cfg.attempt, &up)
        .await
    {
        Ok(Beaten::Recorded) => Beat::Recorded,
        Ok(Beaten::Moved(now)) => Beat::Moved(match &now {
            Some(t) if t.attempt != cfg.attempt => {
                format!("attempt {} replaced this one", t.attempt)
            }
            Some(t) => match &t.error {
                Some(e) => format!("the trial is {}: {e}", t.state),
                None => format!("the trial is {}", t.state),
            },
            None => "the trial was deleted".to_string(),
        }),
        Err(e) => {
            seen.dirty = true;
            log.write(
                Source::Augur,
                &format!("warning: heartbeat not recorded: {e}"),
            );
            Beat::Failed
        }
    }
}

/// A spot reclaim is announced (`doc`, the instance-action document): the script is
/// told in the working directory's [`PREEMPTED_FILE`](augur_model::agent::env::PREEMPTED_FILE)
/// before its SIGTERM. Why the attempt ends, as recorded and as logged.
pub(crate) fn reclaimed(cwd: &std::path::Path, doc: &str) -> (String, String) {
    use augur_model::agent::env;
    let time = serde_json::from_str::<serde_json::Value>(doc)
        .ok()
        .and_then(|v| v["time"].as_str().map(String::from))
        .unwrap_or_default();
    let file = cwd.join(env::PREEMPTED_FILE);
    let told = std::fs::write(
        &file,
        format!("{}=1\n{}={time}\n", env::PREEMPTED, env::RECLAIM_TIME),
    );
    let why = format!("its spot instance is reclaimed at {time}");
    let said = match told {
        Ok(()) => format!(
            "spot reclaim announced for {time}: {} written, ending the script (SIGTERM)",
            env::PREEMPTED_FILE
        ),
        Err(e) => format!(
            "spot reclaim announced for {time} ({} not written: {e}), ending the script (SIGTERM)",
            env::PREEMPTED_FILE
        ),
    };
    (why, said)
}
