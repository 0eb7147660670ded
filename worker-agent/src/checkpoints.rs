//! A trial's checkpoint directory (`AUGUR_CHECKPOINT_DIR`), kept across its
//! attempts. Locally it simply stays where it is (`.augur/checkpoints/<study>/<trial>`).
//! On AWS each attempt has a machine of its own, so the agent restores the directory
//! from the bucket (`checkpoints/<study>/<trial>/`, [`augur_aws::checkpoint`]) before
//! the script starts, publishes what changed (at most every `run.checkpoint_every`)
//! and once more when the script has ended, whether it ended by itself, at a timeout,
//! or at a spot reclaim's SIGTERM.
//!
//! A sync runs as a task of its own: however long a large checkpoint takes to go up,
//! the agent goes on heart-beating, draining the script's output and watching for a
//! reclaim notice meanwhile. One sync at a time; a change made while one is under way
//! goes with the next.

use crate::log::Log;
use crate::AgentConfig;
use augur_aws::checkpoint::{self, Published};
use augur_aws::s3::{self, S3Error};
use augur_model::{Checkpoint, Study, Trial};
use augur_store::logfile::Source;
use augur_store::Layout;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The attempt's checkpoint directory, and on AWS what keeps it in the bucket.
pub(crate) struct Checkpoints {
    pub(crate) dir: PathBuf,
    cloud: Option<Cloud>,
    /// What the bucket holds since the last sync that sent something.
    sent: Option<Checkpoint>,
}

/// What one sync gives back: the state it worked on, and what it sent.
type Synced = (Published, Result<(usize, u64), S3Error>);

struct Cloud {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    attempt: u32,
    /// The checkpoint as published (with the sync under way while it is `None`).
    state: Option<Published>,
    /// The sync under way.
    task: Option<JoinHandle<Synced>>,
    every: Duration,
    last: Option<Instant>,
    /// Files restored at the start.
    restored: usize,
}

impl Drop for Cloud {
    /// An attempt that ends without its last sync (superseded) leaves the bucket to
    /// the attempt that took over: its sync under way goes no further.
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Checkpoints {
    /// The directory for a trial (not a dataset), restored from the bucket on AWS;
    /// why not, if it could not be made or restored (the attempt may be retried).
    pub(crate) async fn prepare(
        cfg: &AgentConfig,
        layout: &Layout,
        study: &Study,
        trial: &Trial,
    ) -> Result<Option<Checkpoints>, String> {
        if trial.is_dataset() {
            return Ok(None);
        }
        let dir = layout.checkpoint_dir(&cfg.study, trial.id);
        let failed = |e: &dyn std::fmt::Display| {
            format!(
                "cannot prepare the checkpoint directory {}: {e}",
                dir.display()
            )
        };
        let Some(aws) = &cfg.aws else {
            crate::spare::SPARES
                .make(crate::spare::Kind::Checkpoint, &dir)
                .map_err(|e| failed(&e))?;
            return Ok(Some(Checkpoints {
                dir,
                cloud: None,
                sent: None,
            }));
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| failed(&e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| failed(&e))?;
        let prefix = s3::checkpoint_prefix(&cfg.study, trial.id);
        let state = checkpoint::restore(&aws.s3, &aws.bucket, &prefix, &dir)
            .await
            .map_err(|e| failed(&e))?;
        let every = study
            .run
            .checkpoint_every_ms
            .map_or(cfg.heartbeat, Duration::from_millis);
        Ok(Some(Checkpoints {
            cloud: Some(Cloud {
                s3: aws.s3.clone(),
                bucket: aws.bucket.clone(),
                prefix,
                attempt: cfg.attempt,
                restored: s3::snapshot(&dir).len(),
                state: Some(state),
                task: None,
                every,
                last: None,
            }),
            dir,
            sent: None,
        }))
    }

    /// Whether anything was restored (said in the log).
    pub(crate) fn restored(&self) -> usize {
        self.cloud.as_ref().map_or(0, |c| c.restored)
    }

    /// At a heartbeat, without waiting for the network: takes in a sync that ended,
    /// and starts one if `run.checkpoint_every` has passed and none is under way.
    /// What the bucket holds now, if that changed.
    pub(crate) async fn beat(&mut self, log: &Log) -> Option<Checkpoint> {
        let c = self.cloud.as_mut()?;
        let mut news = None;
        if c.task.as_ref().is_some_and(|t| t.is_finished()) {
            // Finished: the join answers at once.
            news = self.settle(log).await.ok().flatten();
        }
        let c = self.cloud.as_mut()?;
        let due = c.last.is_none_or(|at| at.elapsed() >= c.every);
        if c.task.is_none() && due {
            c.start(&self.dir);
        }
        news
    }

    /// The last sync, after the script ended: waits for the one under way, then
    /// sends what changed since, tried again with backoff a few times (there is no
    /// next heartbeat). What the bucket holds now, if that changed. Run beside the
    /// heartbeat: it may take as long as the uploads do.
    pub(crate) async fn finish(&mut self, log: &Log) -> Option<Checkpoint> {
        let news = self.settle(log).await.ok().flatten();
        let mut wait = Duration::from_secs(1);
        for last in [false, false, false, true] {
            self.cloud.as_mut()?.start(&self.dir);
            match self.settle(log).await {
                Ok(sent) => return sent.or(news),
                Err(()) if !last => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(()) => break,
            }
        }
        news
    }

    /// Waits for the sync under way, if there is one, and takes it in: what the
    /// bucket holds now if that changed; `Err` if it failed. The task stays held
    /// while it is waited for, so that an attempt that ends meanwhile aborts it.
    async fn settle(&mut self, log: &Log) -> Result<Option<Checkpoint>, ()> {
        let Some(c) = self.cloud.as_mut() else {
            return Ok(None);
        };
        let Some(t) = c.task.as_mut() else {
            return Ok(None);
        };
        let joined = t.await;
        c.task = None;
        match joined {
            Ok(done) => self.take(done, log),
            Err(_) => Err(()),
        }
    }

    /// Takes in an ended sync: logs it; what the bucket holds now, if it changed.
    fn take(&mut self, (state, sent): Synced, log: &Log) -> Result<Option<Checkpoint>, ()> {
        let Some(c) = self.cloud.as_mut() else {
            return Ok(None);
        };
        let (files, bytes) = state.totals();
        c.state = Some(state);
        match sent {
            Ok((0, _)) => Ok(None),
            Ok((n, b)) => {
                log.write(
                    Source::Augur,
                    &format!(
                        "checkpoint: sent {n} file(s), {b} bytes; s3://{}/{} holds {files} file(s), {bytes} bytes",
                        c.bucket, c.prefix
                    ),
                );
                self.sent = Some(Checkpoint {
                    at_ms: augur_store::now_ms(),
                    files,
                    bytes,
                });
                Ok(self.sent)
            }
            Err(e) => {
                log.write(
                    Source::Augur,
                    &format!("warning: checkpoint not sent (tried again): {e}"),
                );
                Err(())
            }
        }
    }

    /// What the attempt leaves for the record: on AWS what the bucket holds (if it
    /// sent anything); locally the directory as it is, if it holds anything.
    pub(crate) fn kept(&self) -> Option<Checkpoint> {
        match &self.cloud {
            Some(_) => self.sent,
            None => {
                let now = s3::snapshot(&self.dir);
                (!now.is_empty()).then(|| Checkpoint {
                    at_ms: augur_store::now_ms(),
                    files: now.len() as u64,
                    bytes: now.values().map(|(size, _)| size).sum(),
                })
            }
        }
    }
}

impl Cloud {
    /// Starts a sync of `dir` as a task of its own.
    fn start(&mut self, dir: &std::path::Path) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        self.last = Some(Instant::now());
        let (s3, bucket, prefix) = (self.s3.clone(), self.bucket.clone(), self.prefix.clone());
        let (dir, attempt) = (dir.to_path_buf(), self.attempt);
        self.task = Some(tokio::spawn(async move {
            let sent = checkpoint::publish(&s3, &bucket, &prefix, &dir, attempt, &mut state).await;
            (state, sent)
        }));
    }
}
