//! A trial's checkpoint directory (`AUGUR_CHECKPOINT_DIR`), kept across its
//! attempts. Locally it simply stays where it is (`.augur/checkpoints/<study>/<trial>`).
//! On AWS each attempt has a machine of its own, so the agent restores the directory
//! from the bucket (`checkpoints/<study>/<trial>/`) before the script starts, sends
//! what changed at its heartbeats (at most every `run.checkpoint_every`), and once
//! more when the script has ended, whether it ended by itself, at a timeout, or at a
//! spot reclaim's SIGTERM.

use crate::log::Log;
use crate::AgentConfig;
use augur_aws::s3::{self, Synced};
use augur_model::{Checkpoint, Study, Trial};
use augur_store::logfile::Source;
use augur_store::Layout;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The attempt's checkpoint directory, and on AWS what keeps it in the bucket.
pub(crate) struct Checkpoints {
    pub(crate) dir: PathBuf,
    cloud: Option<Cloud>,
    /// What the bucket holds since the last sync that sent something.
    sent: Option<Checkpoint>,
}

struct Cloud {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    seen: Synced,
    every: Duration,
    last: Option<Instant>,
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
        s3::download(&aws.s3, &aws.bucket, &prefix, &dir)
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
                // What was restored is in the bucket already.
                seen: s3::snapshot(&dir),
                every,
                last: None,
            }),
            dir,
            sent: None,
        }))
    }

    /// Whether anything was restored (said in the log).
    pub(crate) fn restored(&self) -> usize {
        self.cloud.as_ref().map_or(0, |c| c.seen.len())
    }

    /// At a heartbeat: sends what changed, if `run.checkpoint_every` has passed; what
    /// the bucket holds now, if that changed.
    pub(crate) async fn beat(&mut self, log: &mut Log) -> Option<Checkpoint> {
        let due = self
            .cloud
            .as_ref()
            .is_some_and(|c| c.last.is_none_or(|at| at.elapsed() >= c.every));
        match due {
            true => self.sync(log).await,
            false => None,
        }
    }

    /// Sends what changed since the last sync (on AWS); what the bucket holds now, if
    /// that changed. A failure is a warning in the log, never the attempt's end.
    pub(crate) async fn sync(&mut self, log: &mut Log) -> Option<Checkpoint> {
        let c = self.cloud.as_mut()?;
        c.last = Some(Instant::now());
        match s3::sync_up(&c.s3, &c.bucket, &c.prefix, &self.dir, &mut c.seen).await {
            Ok((0, _)) => None,
            Ok((files, bytes)) => {
                log.write(
                    Source::Augur,
                    &format!(
                        "checkpoint: sent {files} file(s), {bytes} bytes to s3://{}/{}",
                        c.bucket, c.prefix
                    ),
                );
                self.sent = Some(totals(&c.seen));
                self.sent
            }
            Err(e) => {
                log.write(
                    Source::Augur,
                    &format!("warning: checkpoint not sent (next try at the next heartbeat): {e}"),
                );
                None
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
                (!now.is_empty()).then(|| totals(&now))
            }
        }
    }
}

/// A directory's files and bytes, now.
fn totals(files: &Synced) -> Checkpoint {
    Checkpoint {
        at_ms: augur_store::now_ms(),
        files: files.len() as u64,
        bytes: files.values().map(|(size, _)| size).sum(),
    }
}
