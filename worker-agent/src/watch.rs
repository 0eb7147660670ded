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

/// The attempt's heartbeats: one write at a time, under way beside whatever else the
/// agent does (the script's output, a checkpoint going up, a restore), so that no
/// slow call of another service delays one, and none delays the rest.
///
/// A beat that fails is tried again after a capped exponential backoff with jitter
/// (the store is throttling, or down): never sooner than the next tick, never later
/// than a third of the heartbeat timeout. The agent ends its script only when no beat could be
/// recorded for its give-up horizon (`DriveSettings::give_up_ms`, minutes), apart
/// from and longer than the heartbeat timeout after which a driver that *can* see the store
/// counts the attempt lost.
pub(crate) struct Beats<'a> {
    store: &'a dyn TrialStore,
    cfg: &'a AgentConfig,
    give_up: Duration,
    /// After this long without a beat recorded, a driver that can read the store
    /// counts the attempt lost.
    heartbeat_timeout: Option<Duration>,
    /// The longest wait between two tries of a failing beat.
    cap: Duration,
    /// When a beat was last recorded (the attempt's start, at first).
    last: Instant,
    /// Beats failed in a row.
    failed: u32,
    /// A failing beat is not tried again before then.
    not_before: Instant,
    /// The beat under way.
    write: Option<BeatWrite<'a>>,
    ticks: tokio::time::Interval,
}

/// What the heartbeat has come to.
pub(crate) enum Pulse {
    /// A beat is due ([`Beats::on`] starts it).
    Tick,
    /// The beat under way ended.
    Answer(augur_store::Result<Beaten>),
}

type BeatWrite<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = augur_store::Result<Beaten>> + Send + 'a>>;

impl<'a> Beats<'a> {
    pub(crate) fn new(
        store: &'a dyn TrialStore,
        cfg: &'a AgentConfig,
        heartbeat_timeout: Option<Duration>,
        give_up: Duration,
    ) -> Beats<'a> {
        let cap = heartbeat_timeout
            .map_or(Duration::from_secs(30), |l| l / 3)
            .max(cfg.heartbeat);
        let mut ticks = tokio::time::interval_at(Instant::now() + cfg.heartbeat, cfg.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Beats {
            ticks,
            store,
            cfg,
            give_up,
            heartbeat_timeout,
            cap,
            last: Instant::now(),
            failed: 0,
            not_before: Instant::now(),
            write: None,
        }
    }

    /// At a heartbeat tick: starts a beat (with the metrics and status seen since the
    /// last one) unless one is under way or backing off; why the attempt must end, if
    /// no beat was recorded for the give-up horizon.
    fn tick(&mut self, seen: &mut ScriptOutput) -> Option<String> {
        if self.last.elapsed() > self.give_up {
            return Some(format!(
                "no heartbeat recorded for {} (the store cannot be reached): the agent gives up; the attempt counts as lost",
                duration::format(self.give_up)
            ));
        }
        if self.write.is_some() || Instant::now() < self.not_before {
            return None;
        }
        let mut up = TrialUpdate {
            heartbeat_ms: Some(now_ms()),
            ..Default::default()
        };
        if seen.dirty {
            up.metrics = Some(seen.metrics.clone());
            up.series = Some(seen.series.points());
            up.checkpoint = seen.checkpoint;
            up.status = augur_model::Set::exactly(seen.status.clone());
            seen.dirty = false;
        }
        let (store, cfg) = (self.store, self.cfg);
        self.write = Some(Box::pin(async move {
            store
                .heartbeat(&cfg.study, cfg.trial, cfg.attempt, &up)
                .await
        }));
        None
    }

    /// Whether a beat was recorded within the heartbeat timeout: past it, another attempt may
    /// own the trial (its checkpoint is then left to that one).
    pub(crate) fn heard(&self) -> bool {
        self.heartbeat_timeout
            .is_none_or(|l| self.last.elapsed() <= l)
    }

    /// The heartbeat's next event (cancel-safe: a beat under way stays so).
    pub(crate) async fn pulse(&mut self) -> Pulse {
        tokio::select! {
            _ = self.ticks.tick() => Pulse::Tick,
            got = written(&mut self.write) => Pulse::Answer(got),
        }
    }

    /// Acts on a pulse: why the attempt must end, if it must.
    pub(crate) fn on(&mut self, p: Pulse, seen: &mut ScriptOutput, log: &Log) -> Option<String> {
        match p {
            Pulse::Tick => self.tick(seen),
            Pulse::Answer(got) => self.answer(got, seen, log),
        }
    }

    /// Runs `work` (a restore, a secret read, the last checkpoint sync) while the
    /// heartbeat goes on; why the attempt must end, if a beat found it must first
    /// (`work` is then dropped where it stands).
    pub(crate) async fn beside<F: std::future::Future>(
        &mut self,
        seen: &mut ScriptOutput,
        log: &Log,
        work: F,
    ) -> Result<F::Output, String> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                p = self.pulse() => if let Some(why) = self.on(p, seen, log) {
                    return Err(why);
                },
            }
        }
    }

    /// Runs `work` to its end while the heartbeat goes on, for work that must end
    /// whatever a beat finds (the last log lines, before the final write decides):
    /// a beat that finds the attempt must end only stops the beats.
    pub(crate) async fn alongside<F: std::future::Future>(
        &mut self,
        seen: &mut ScriptOutput,
        log: &Log,
        work: F,
    ) -> F::Output {
        tokio::pin!(work);
        let mut beating = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                p = self.pulse(), if beating => beating = self.on(p, seen, log).is_none(),
            }
        }
    }

    /// What a beat's answer means: why the attempt must end, if the trial moved on.
    /// A failure is logged and the beat backs off (what it carried goes again).
    fn answer(
        &mut self,
        got: augur_store::Result<Beaten>,
        seen: &mut ScriptOutput,
        log: &Log,
    ) -> Option<String> {
        match got {
            Ok(Beaten::Recorded) => {
                self.last = Instant::now();
                self.failed = 0;
                None
            }
            Ok(Beaten::Moved(now)) => Some(moved(self.cfg, now.as_deref())),
            Err(e) => {
                seen.dirty = true;
                self.failed += 1;
                let wait = backoff(self.cfg.heartbeat, self.cap, self.failed);
                self.not_before = Instant::now() + wait;
                log.write(
                    Source::Augur,
                    &format!(
                        "warning: heartbeat not recorded ({} in a row; next try in {}): {e}",
                        self.failed,
                        duration::format(wait)
                    ),
                );
                None
            }
        }
    }
}

/// The beat under way, when it ends; pending forever when none is.
async fn written(write: &mut Option<BeatWrite<'_>>) -> augur_store::Result<Beaten> {
    let out = match write.as_mut() {
        Some(w) => w.await,
        None => std::future::pending().await,
    };
    *write = None;
    out
}

/// The wait after `failed` beats failed in a row: `min(cap, base * 2^failed)`, the
/// upper half of it jittered (so that every agent of a throttled table does not try
/// again at once, and none waits less than half).
fn backoff(base: Duration, cap: Duration, failed: u32) -> Duration {
    let full = augur_model::backoff::ceiling(base, cap, failed.saturating_add(1)).max(base);
    augur_model::backoff::upper_half(full, rand::random::<f64>())
}

/// Why the attempt ends, a beat having found the trial moved on.
fn moved(cfg: &AgentConfig, now: Option<&augur_model::Trial>) -> String {
    match now {
        Some(t) if t.attempt != cfg.attempt => format!("attempt {} replaced this one", t.attempt),
        Some(t) => match &t.error {
            Some(e) => format!("the trial is {}: {e}", t.state),
            None => format!("the trial is {}", t.state),
        },
        None => "the trial was deleted".to_string(),
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
