//! The backend a command talks to, and the one place that knows which it is: the
//! store, the machines, the logs, the study files and the default timings.

mod providers;

use super::logs::{FileLogs, GroupLogs, LogReader, StreamLogs};
use super::AppError;
use augur_aws::instance::Arch;
use augur_aws::{sdk_config, AwsOptions, DynamoStore};
use augur_model::{DriveSettings, Study};
use augur_store::{Layout, SqliteStore, TrialStore};
use clap::ValueEnum;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Local `augur-agent` processes, SQLite and log files in the state directory.
    Local,
    /// One EC2 instance per trial, DynamoDB, CloudWatch Logs, S3 (standard AWS
    /// credentials and region; AWS_ENDPOINT_URL for an emulator).
    Aws,
}

/// Settings of the AWS backend (flags or environment).
#[derive(clap::Args, Debug, Clone)]
pub struct AwsArgs {
    /// Where trials run and state lives.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "AUGUR_BACKEND",
        default_value = "local"
    )]
    pub backend: BackendKind,
    /// DynamoDB table (aws).
    #[arg(long, global = true, env = "AUGUR_TABLE", help_heading = "AWS backend")]
    pub table: Option<String>,
    /// Artifacts bucket: agent builds and study files (aws).
    #[arg(
        long,
        global = true,
        env = "AUGUR_BUCKET",
        help_heading = "AWS backend"
    )]
    pub bucket: Option<String>,
    /// Log groups are PREFIX/<study> (aws).
    #[arg(
        long,
        global = true,
        env = "AUGUR_LOG_GROUP_PREFIX",
        default_value = "/augur",
        help_heading = "AWS backend"
    )]
    pub log_group_prefix: String,
    /// AWS region (default: the standard chain).
    #[arg(
        long,
        global = true,
        env = "AUGUR_REGION",
        help_heading = "AWS backend"
    )]
    pub region: Option<String>,
    /// Subnet of the instances (aws).
    #[arg(
        long,
        global = true,
        env = "AUGUR_SUBNET",
        help_heading = "AWS backend"
    )]
    pub subnet: Option<String>,
    /// Security groups of the instances, comma-separated (aws).
    #[arg(
        long,
        global = true,
        env = "AUGUR_SECURITY_GROUPS",
        value_delimiter = ',',
        help_heading = "AWS backend"
    )]
    pub security_groups: Vec<String>,
    /// Instance profile (role) of the instances (aws).
    #[arg(
        long,
        global = true,
        env = "AUGUR_INSTANCE_PROFILE",
        help_heading = "AWS backend"
    )]
    pub instance_profile: Option<String>,
    /// SHA-256 of the agent instances may run (aws; `[aws] agent_sha256` in the
    /// config, which infra/deploy.sh writes).
    #[arg(long, global = true, env = "AUGUR_AGENT_SHA256", hide = true)]
    pub agent_sha256: Option<String>,
    /// The same for arm64 (Graviton) instances (`[aws] agent_sha256_arm64`).
    #[arg(long, global = true, env = "AUGUR_AGENT_SHA256_ARM64", hide = true)]
    pub agent_sha256_arm64: Option<String>,
    /// The launch template workers launch from, its id or name (aws; `[aws]
    /// launch_template` in the config, the stack's, which infra/deploy.sh writes).
    #[arg(
        long,
        global = true,
        env = "AUGUR_LAUNCH_TEMPLATE",
        help_heading = "AWS backend"
    )]
    pub launch_template: Option<String>,
    /// Prefix of the secrets the stack's instance role may read (aws; `[aws]
    /// secrets_prefix` in the config).
    #[arg(long, global = true, env = "AUGUR_SECRETS_PREFIX", hide = true)]
    pub secrets_prefix: Option<String>,
    /// Days a study's logs are kept unless its `[aws] keep_days` says (aws; `[aws]
    /// log_retention_days` in the config, the stack's `LogRetentionDays`).
    #[arg(long, global = true, env = "AUGUR_LOG_RETENTION_DAYS", hide = true)]
    pub log_retention_days: Option<u32>,
    /// Attempts per AWS call (retries of throttling, 5xx, timeouts).
    #[arg(long, global = true, default_value = "8", help_heading = "AWS backend")]
    pub aws_attempts: u32,
    /// Base of the AWS retry backoff.
    #[arg(long, global = true, default_value = "200ms", value_parser = super::dur, help_heading = "AWS backend")]
    pub aws_backoff: Duration,
    /// The GPUs local trials may use, as CUDA numbers them (e.g. 0,1,2,3; default:
    /// the ones `nvidia-smi -L` lists). Read for a study with `run.gpus`.
    #[arg(
        long,
        global = true,
        env = "AUGUR_GPUS",
        value_name = "LIST",
        value_parser = crate::provider::gpus::gpu_list,
        help_heading = "Local backend"
    )]
    pub gpus: Option<crate::provider::gpus::GpuList>,
}

/// A command's view of its backend.
pub struct Backend {
    pub layout: Layout,
    pub aws: AwsArgs,
    /// The AWS configuration, resolved once per command (credential chain, region).
    pub sdk: tokio::sync::OnceCell<aws_config::SdkConfig>,
}

impl Backend {
    /// The same backend for another task (its AWS configuration resolved afresh).
    pub fn fresh(&self) -> Backend {
        Backend {
            layout: self.layout.clone(),
            aws: self.aws.clone(),
            sdk: Default::default(),
        }
    }

    /// Which backend this is: private, so that every difference between the backends
    /// is a method here and nowhere else asks.
    pub fn is_aws(&self) -> bool {
        self.aws.backend == BackendKind::Aws
    }

    /// Whether another driver (the serverless tick) may drive the studies of this
    /// backend: then a driver acts only while it holds the study's lease.
    pub fn drivers_share_studies(&self) -> bool {
        self.is_aws()
    }

    /// How often a follower (`augur logs --follow`, the log page) looks for new
    /// lines: CloudWatch Logs is polled less often than a file.
    pub fn log_poll(&self) -> Duration {
        Duration::from_millis(if self.is_aws() { 1000 } else { 200 })
    }

    fn table(&self) -> Result<String, AppError> {
        self.aws.table.clone().ok_or_else(|| {
            AppError::input("the aws backend needs a DynamoDB table: --table or AUGUR_TABLE")
        })
    }

    pub fn bucket(&self) -> Result<String, AppError> {
        self.aws.bucket.clone().ok_or_else(|| {
            AppError::input("the aws backend needs an S3 bucket: --bucket or AUGUR_BUCKET")
        })
    }

    pub async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk
            .get_or_init(|| async {
                let opts = AwsOptions {
                    region: self.aws.region.clone(),
                    max_attempts: self.aws.aws_attempts,
                    backoff_base: self.aws.aws_backoff,
                    ..AwsOptions::default()
                };
                sdk_config(&opts).await
            })
            .await
    }

    /// A reader of one study's trial logs, attempt by attempt: log files, or one
    /// CloudWatch stream per attempt.
    pub async fn trial_logs(&self, study: &str) -> Box<dyn LogReader> {
        if !self.is_aws() {
            return Box::new(FileLogs::new(self.layout.clone(), study));
        }
        Box::new(StreamLogs::new(
            augur_aws::logs(self.sdk().await),
            augur_aws::cwlogs::group(&self.aws.log_group_prefix, study),
        ))
    }

    /// A reader of every line of a study since `since`: the log files, or the
    /// study's CloudWatch group, looking back `window_ms` for lines sent late.
    pub async fn study_logs(
        &self,
        study: &str,
        since: Option<i64>,
        window_ms: i64,
    ) -> Box<dyn LogReader> {
        if !self.is_aws() {
            return Box::new(FileLogs::new(self.layout.clone(), study));
        }
        Box::new(GroupLogs::new(
            augur_aws::logs(self.sdk().await),
            augur_aws::cwlogs::group(&self.aws.log_group_prefix, study),
            since,
            window_ms,
        ))
    }

    /// What a study leaves on this machine's disk: its logs, work directories and
    /// datasets (none on AWS).
    fn study_dirs(&self, study: &str) -> Vec<std::path::PathBuf> {
        if self.is_aws() {
            return Vec::new();
        }
        let layout = &self.layout;
        vec![
            layout.logs(study),
            layout.root.join("work").join(study),
            layout.root.join("data").join(study),
            layout.checkpoints(study),
        ]
    }

    /// A fresh `dir` holding the study's `run.files`, fetched as an agent would: copied
    /// from the study's directory locally, downloaded from the bucket on AWS.
    pub async fn fetch_study_files(
        &self,
        study: &Study,
        dir: &std::path::Path,
    ) -> Result<(), AppError> {
        let failed = |e: String| {
            AppError::unavailable(format!(
                "cannot fetch the study's files into {}: {e}",
                dir.display()
            ))
        };
        if !self.is_aws() {
            return augur_store::workdir::prepare(study, dir).map_err(|e| failed(e.to_string()));
        }
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        let s3 = augur_aws::s3::client(self.sdk().await, self.path_style());
        augur_aws::s3::download(
            &s3,
            &self.bucket()?,
            &augur_aws::s3::files_prefix(&study.name),
            dir,
        )
        .await
        .map(|_| ())
        .map_err(|e| failed(e.to_string()))
    }

    /// Copies a trial's checkpoint directory from the bucket into `dir` (AWS); how
    /// many files.
    pub async fn fetch_checkpoint(
        &self,
        study: &str,
        trial: u64,
        dir: &std::path::Path,
    ) -> Result<usize, AppError> {
        let failed = |e: String| {
            AppError::unavailable(format!(
                "cannot fetch the checkpoint of {study}/{trial} into {}: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        let s3 = augur_aws::s3::client(self.sdk().await, self.path_style());
        let prefix = augur_aws::s3::checkpoint_prefix(study, trial);
        augur_aws::checkpoint::restore(&s3, &self.bucket()?, &prefix, dir)
            .await
            .map(|_| augur_aws::s3::snapshot(dir).len())
            .map_err(|e| failed(e.to_string()))
    }

    /// The manifest of a trial's checkpoint in the bucket, if it has one.
    pub async fn checkpoint_manifest(
        &self,
        study: &str,
        trial: u64,
    ) -> Result<Option<augur_aws::checkpoint::Manifest>, AppError> {
        let s3 = augur_aws::s3::client(self.sdk().await, self.path_style());
        let prefix = augur_aws::s3::checkpoint_prefix(study, trial);
        augur_aws::checkpoint::read_manifest(&s3, &self.bucket()?, &prefix)
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))
    }

    /// Puts the study's `run.files` where agents fetch them: nothing to do locally
    /// (agents copy them from the study's directory), the bucket on AWS.
    pub async fn upload_study_files(&self, study: &Study) -> Result<(), AppError> {
        if !self.is_aws() || study.run.files.is_empty() {
            return Ok(());
        }
        let s3 = augur_aws::s3::client(self.sdk().await, self.path_style());
        let bucket = self.bucket()?;
        for f in &study.run.files {
            augur_aws::s3::upload(
                &s3,
                &bucket,
                &augur_aws::s3::files_prefix(&study.name),
                &std::path::Path::new(&study.dir).join(f),
            )
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Days a study's logs, and its records once it is done, are kept on AWS: its
    /// `[aws] keep_days`, else the stack's retention; `None` locally (kept).
    pub fn keep_days(&self, study: &Study) -> Option<u32> {
        if !self.is_aws() {
            return None;
        }
        study
            .aws
            .as_ref()
            .and_then(|a| a.keep_days)
            .or(self.aws.log_retention_days)
    }

    /// Makes the study's log group on AWS, kept `[aws] keep_days` (or the stack's
    /// retention): agents would make it with no retention at all.
    pub async fn prepare_logs(&self, study: &Study) -> Result<(), AppError> {
        if !self.is_aws() {
            return Ok(());
        }
        let days = self.keep_days(study);
        let logs = augur_aws::logs(self.sdk().await);
        let group = augur_aws::cwlogs::group(&self.aws.log_group_prefix, &study.name);
        augur_aws::cwlogs::ensure_group_kept(&logs, &group, days)
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))
    }

    /// Removes what a study left besides its records: its log files, work and data
    /// directories (local), or its log group and its files in the bucket (aws).
    /// What was removed, for the user.
    pub async fn delete_artifacts(&self, study: &str) -> Result<Vec<String>, AppError> {
        let mut gone = Vec::new();
        if !self.is_aws() {
            for dir in self.study_dirs(study) {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| {
                        AppError::unavailable(format!("cannot remove {}: {e}", dir.display()))
                    })?;
                    gone.push(dir.display().to_string());
                }
            }
            return Ok(gone);
        }
        let unavailable = |e: &dyn std::fmt::Display| AppError::unavailable(e.to_string());
        let logs = augur_aws::logs(self.sdk().await);
        let group = augur_aws::cwlogs::group(&self.aws.log_group_prefix, study);
        if augur_aws::cwlogs::delete_group(&logs, &group)
            .await
            .map_err(|e| unavailable(&e))?
        {
            gone.push(format!("log group {group}"));
        }
        let s3 = augur_aws::s3::client(self.sdk().await, self.path_style());
        let bucket = self.bucket()?;
        let prefix = augur_aws::s3::study_prefix(study);
        let n = augur_aws::s3::delete_prefix(&s3, &bucket, &prefix)
            .await
            .map_err(|e| unavailable(&e))?;
        if n > 0 {
            gone.push(format!("{n} file(s) in s3://{bucket}/{prefix}"));
        }
        let prefix = augur_aws::s3::checkpoints_prefix(study);
        let n = augur_aws::s3::delete_prefix(&s3, &bucket, &prefix)
            .await
            .map_err(|e| unavailable(&e))?;
        if n > 0 {
            gone.push(format!("{n} checkpoint file(s) in s3://{bucket}/{prefix}"));
        }
        Ok(gone)
    }

    /// `augur init`: the state directory, or the table and the bucket (and the agent
    /// uploaded, when given).
    pub async fn init(&self, agents: &[std::path::PathBuf]) -> Result<(), AppError> {
        let agents = agents_by_arch(agents)?;
        if !self.is_aws() {
            self.store().await?;
            eprintln!(
                "local state directory ready: {}",
                self.layout.root.display()
            );
            return Ok(());
        }
        let table = self.dynamo().await?;
        let made = table.ensure_table().await?;
        eprintln!(
            "DynamoDB table `{}`: {}",
            table.table(),
            if made { "created" } else { "exists" }
        );
        let bucket = self.bucket()?;
        let s3 = augur_aws::s3::client(self.sdk().await, self.path_style());
        let region = self
            .sdk()
            .await
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let made = augur_aws::s3::ensure_bucket(&s3, &bucket, &region)
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))?;
        eprintln!(
            "S3 bucket `{bucket}`: {}",
            if made { "created" } else { "exists" }
        );
        for (arch, a) in agents {
            let pin = sha256_of(&a)?;
            let key = arch.agent_key(&pin);
            augur_aws::s3::put_file(&s3, &bucket, &key, &a)
                .await
                .map_err(|e| AppError::unavailable(e.to_string()))?;
            let (setting, var) = arch.pin_setting();
            eprintln!(
                "uploaded {} ({}) to s3://{bucket}/{key}",
                a.display(),
                arch.name()
            );
            eprintln!(
                "{} instances run it only with this pin: {setting} = \"{pin}\" in [aws] of the config, or {var}={pin}",
                arch.name()
            );
        }
        Ok(())
    }

    /// The SHA-256 every instance of `arch` checks its agent against before it runs
    /// it: `[aws] agent_sha256` (or `agent_sha256_arm64`) in the config
    /// (infra/deploy.sh writes both) or AUGUR_AGENT_SHA256 (`_ARM64`; the serverless
    /// tick's, from its stack).
    fn agent_pin(&self, arch: Arch) -> Result<String, AppError> {
        let (setting, var) = arch.pin_setting();
        let pin = match arch {
            Arch::X86_64 => &self.aws.agent_sha256,
            Arch::Arm64 => &self.aws.agent_sha256_arm64,
        };
        let Some(pin) = pin.clone().filter(|s| !s.is_empty()) else {
            return Err(AppError::input(format!(
                "the aws backend pins the agent {} instances run by its SHA-256, and none is set: [aws] {setting} in the config (infra/deploy.sh writes it), or {var} (`augur init --agent FILE` uploads a build and prints it)",
                arch.name()
            )));
        };
        let pin = pin.to_ascii_lowercase();
        if !augur_aws::boot::is_sha256(&pin) {
            return Err(AppError::input(format!(
                "{setting} / {var} `{pin}`: expected a SHA-256 (64 hex digits)"
            )));
        }
        Ok(pin)
    }

    /// Refuses a study whose `run.secrets` the stack's instance role may not read
    /// (outside AUGUR_SECRETS_PREFIX, the stack's `SecretsPrefix`, when known).
    fn check_secrets(&self, study: &Study) -> Result<(), AppError> {
        let Some(prefix) = self.aws.secrets_prefix.clone().filter(|s| !s.is_empty()) else {
            return Ok(());
        };
        for (name, reference) in &study.run.secrets {
            let r = augur_model::secret::SecretRef::parse(reference).map_err(AppError::input)?;
            if !r.within(&prefix) {
                return Err(AppError::input(format!(
                    "study `{}`: run.secrets.{name} = \"{r}\" is outside the stack's secrets prefix `{prefix}`: its instances may read SSM parameters under /{prefix} and Secrets Manager secrets named {prefix}... only (SecretsPrefix in infra/augur.yaml)",
                    study.name
                )));
            }
        }
        Ok(())
    }

    /// The default timings of a driver on this backend.
    pub fn default_drive(&self) -> DriveSettings {
        if self.is_aws() {
            DriveSettings::cloud()
        } else {
            DriveSettings::local()
        }
    }

    /// Records the image from AUGUR_IMAGE in a study that names none (aws), so that
    /// every driver (a serverless tick too) launches the same one.
    pub fn pin_image(&self, study: &mut Study) {
        if !self.is_aws() {
            return;
        }
        let spec = study.aws.get_or_insert_with(Default::default);
        if spec.image.is_none() {
            spec.image = std::env::var("AUGUR_IMAGE").ok().filter(|s| !s.is_empty());
        }
    }

    /// Whether S3 needs path-style addressing (an emulator endpoint).
    pub fn path_style(&self) -> bool {
        std::env::var_os("AWS_ENDPOINT_URL").is_some()
    }

    pub async fn dynamo(&self) -> Result<DynamoStore, AppError> {
        let table = self.table()?;
        // A driver sees only the trials a proposal vouches for (a trial script may
        // write trial records: augur_aws::dynamo's vouch).
        Ok(DynamoStore::new(augur_aws::dynamodb(self.sdk().await), table).vouching())
    }

    /// The store, created if needed (local).
    pub async fn store(&self) -> Result<Arc<dyn TrialStore>, AppError> {
        if self.is_aws() {
            return Ok(Arc::new(self.dynamo().await?));
        }
        // Inline: a pass waits for each call anyway, and the hop to the blocking pool
        // and back cost more than the call (a write waiting on an agent's lock holds
        // its runtime worker for that moment).
        Ok(Arc::new(SqliteStore::open(&self.layout.db())?.inline()))
    }

    /// The store if there is one (a missing local database means no studies).
    pub async fn existing_store(&self) -> Result<Option<Arc<dyn TrialStore>>, AppError> {
        if self.is_aws() {
            return Ok(Some(Arc::new(self.dynamo().await?)));
        }
        Ok(SqliteStore::open_existing(&self.layout.db())?
            .map(|s| Arc::new(s) as Arc<dyn TrialStore>))
    }
}

/// The SHA-256 of a file, as `sha256sum` prints it.
/// The agent builds `augur init --agent` uploads, each with its architecture (read
/// from its ELF header), checked before anything is made: each a file, an x86_64 or
/// aarch64 Linux executable, at most one of each.
fn agents_by_arch(
    files: &[std::path::PathBuf],
) -> Result<Vec<(Arch, std::path::PathBuf)>, AppError> {
    use std::io::Read;
    let mut found: Vec<(Arch, std::path::PathBuf)> = Vec::new();
    for f in files {
        let mut head = [0u8; 64];
        let read = std::fs::File::open(f).and_then(|mut file| file.read(&mut head));
        let n = read.map_err(|e| AppError::input(format!("--agent {}: {e}", f.display())))?;
        let Some(arch) = Arch::of_executable(&head[..n]) else {
            return Err(AppError::input(format!(
                "--agent {}: not a Linux executable for x86_64 or aarch64 (its ELF header says otherwise): build augur-agent with scripts/instance-binaries.sh",
                f.display()
            )));
        };
        if let Some((_, other)) = found.iter().find(|(a, _)| *a == arch) {
            return Err(AppError::input(format!(
                "--agent {} and --agent {}: both are {} builds; give one per architecture",
                other.display(),
                f.display(),
                arch.name()
            )));
        }
        found.push((arch, f.clone()));
    }
    Ok(found)
}

fn sha256_of(path: &std::path::Path) -> Result<String, AppError> {
    use sha2::Digest;
    let bytes =
        std::fs::read(path).map_err(|e| AppError::input(format!("{}: {e}", path.display())))?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
