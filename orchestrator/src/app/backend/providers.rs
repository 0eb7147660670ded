//! The machines a study's trials run on: local agent processes, or EC2 instances
//! with the deployment's settings, their price, and the sweeper `stop` and `gc` use.

use super::{AppError, Backend};
use crate::provider::gpus::Gpus;
use augur::{LocalProvider, MachineProvider};
use augur_aws::ec2::{Ec2Provider, Ec2Settings};
use augur_aws::instance::Arch;
use augur_model::cost::Billing;
use augur_model::{Reuse, Study};
use std::sync::Arc;
use std::time::Duration;

impl Backend {
    /// A provider for listing and ending machines only, never launching (`augur
    /// stop`, `augur gc`): no study settings needed.
    pub async fn sweeper(&self) -> Arc<dyn MachineProvider> {
        if self.is_aws() {
            let client = augur_aws::ec2(self.sdk().await);
            let settings = Ec2Settings {
                table: self.aws.table.clone().unwrap_or_default(),
                ..Ec2Settings::default()
            };
            let sts = augur_aws::denied::sts(self.sdk().await);
            return Arc::new(Ec2Provider::new(client, settings).with_decoder(sts));
        }
        // Any agent path will do: it is only used to launch.
        let agent = LocalProvider::find_agent().unwrap_or_else(|| "augur-agent".into());
        Arc::new(LocalProvider::new(
            agent,
            self.layout.clone(),
            Duration::from_secs(2),
        ))
    }

    /// The region a study's instances launch in: the deployment's, where its table,
    /// bucket and log groups are (an agent in another region would not find them).
    /// `[aws] region` may only repeat it.
    async fn launch_region(&self, study: &Study) -> Result<String, AppError> {
        let here = self.sdk().await.region().map(|r| r.to_string());
        let asked = study.aws.as_ref().and_then(|a| a.region.clone());
        match (asked, here) {
            (Some(a), Some(h)) if a != h => Err(AppError::input(format!(
                "study `{}`: [aws] region = \"{a}\", but this deployment (table, bucket, logs) is in {h}: run augur with AWS_REGION={a} against a stack deployed there, or remove the setting",
                study.name
            ))),
            (a, h) => a.or(h).ok_or_else(|| {
                AppError::input("the aws backend needs a region: --region, AWS_REGION or [aws] region")
            }),
        }
    }

    /// How a study's first instance would be billed (`None` locally: free), for
    /// `augur run --dry-run`. No zone is known before a launch: a spot price is any
    /// zone's latest.
    pub async fn price_of(&self, study: &Study) -> Result<Option<Billing>, AppError> {
        if !self.is_aws() {
            return Ok(None);
        }
        let region = self.launch_region(study).await?;
        let client = augur_aws::ec2(self.sdk().await);
        let prices = augur_aws::prices::Prices::new(self.sdk().await, client, &region);
        let spot = study.aws.as_ref().is_some_and(|a| a.spot);
        Ok(Some(
            prices.billing(&instance_type_of(study), "", spot).await,
        ))
    }

    /// The GPUs of this machine for a study that asks for some (`run.gpus`) on the
    /// local backend: the ones `--gpus` names, else the ones this process was given
    /// (`CUDA_VISIBLE_DEVICES`), else those `nvidia-smi -L` lists.
    /// Exit 2 when a trial would not fit.
    pub fn local_gpus(&self, study: &Study) -> Result<Option<Gpus>, AppError> {
        let each = study.run.gpus as usize;
        if each == 0 || self.is_aws() {
            return Ok(None);
        }
        let (all, source) = match &self.aws.gpus {
            Some(list) => (list.0.clone(), "--gpus names".to_string()),
            None => match crate::provider::gpus::default_list() {
                Ok((all, source)) => (all, source.to_string()),
                Err(why) => (
                    Vec::new(),
                    format!("none are known: {why}; name them with --gpus 0,1,..."),
                ),
            },
        };
        if all.len() < each {
            return Err(AppError::input(format!(
                "study `{}` asks for {each} GPU(s) a trial (run.gpus), and this machine has {} ({source}{}); nothing was run",
                study.name,
                all.len(),
                if all.is_empty() { String::new() } else { format!(": {}", all.join(",")) },
            )));
        }
        Ok(Some(Gpus { all, each }))
    }

    /// The machines trials run on.
    pub async fn provider(
        &self,
        study: &Study,
        heartbeat: Duration,
    ) -> Result<Arc<dyn MachineProvider>, AppError> {
        if !self.is_aws() {
            let agent = LocalProvider::find_agent().ok_or_else(|| {
                AppError::unavailable("cannot find the `augur-agent` binary next to `augur` or on PATH (or set AUGUR_AGENT)")
            })?;
            let mut local = LocalProvider::new(agent, self.layout.clone(), heartbeat);
            if let Some(gpus) = self.local_gpus(study)? {
                local = local.with_gpus(gpus);
            }
            return Ok(Arc::new(match study.run.reuse {
                Some(Reuse::Attempt) => local,
                None | Some(Reuse::Study) => local.warm(),
            }));
        }
        self.check_secrets(study)?;
        let spec = study.aws.clone().unwrap_or_default();
        let instance_type = instance_type_of(study);
        let arch = Arch::of(&instance_type);
        let types = std::iter::once(&instance_type).chain(&spec.fallback_instance_types);
        if let Some(other) = types.clone().find(|t| Arch::of(t) != arch) {
            return Err(AppError::input(format!(
                "study `{}`: instance types {instance_type} ({}) and {other} ({}) are of two architectures, and one image boots only one: list fallback types of one architecture",
                study.name,
                arch.name(),
                Arch::of(other).name(),
            )));
        }
        let image = spec
            .image
            .clone()
            .or_else(|| std::env::var("AUGUR_IMAGE").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| augur_aws::instance::default_image(&instance_type));
        // In this order: what is missing is named as it always was.
        let (table, bucket) = (self.table()?, self.bucket()?);
        let region = self.launch_region(study).await?;
        let settings = Ec2Settings {
            image,
            instance_type,
            fallback_instance_types: spec.fallback_instance_types.clone(),
            subnets: match spec.all_subnets() {
                v if v.is_empty() => self.aws.subnet.iter().cloned().collect(),
                v => v,
            },
            security_groups: self.aws.security_groups.clone(),
            instance_profile: self.aws.instance_profile.clone(),
            launch_template: self.aws.launch_template.clone().filter(|s| !s.is_empty()),
            spot: spec.spot,
            disk_gb: spec.disk_gb,
            spot_fallback_after: spec.spot_fallback_after,
            imds_hop_limit: spec.imds_hop_limit,
            table,
            bucket,
            log_group_prefix: self.aws.log_group_prefix.clone(),
            heartbeat,
            region: region.clone(),
            arch,
            agent_sha256: self.agent_pin(arch)?,
            list_every: Duration::from_secs(5),
            reuse: study.run.reuse == Some(Reuse::Study),
        };
        let client = augur_aws::ec2(self.sdk().await);
        let prices = augur_aws::prices::Prices::new(self.sdk().await, client.clone(), &region);
        let sts = augur_aws::denied::sts(self.sdk().await);
        Ok(Arc::new(
            Ec2Provider::new(client, settings)
                .with_prices(prices)
                .with_decoder(sts),
        ))
    }
}

/// The instance type a study's trials launch on first.
fn instance_type_of(study: &Study) -> String {
    augur_aws::instance::instance_types(study).remove(0)
}
