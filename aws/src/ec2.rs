//! EC2 as the [`MachineProvider`]: one instance per trial attempt.
//!
//! Launches carry a `ClientToken` naming the launch ([`client_token`]: EC2 makes a
//! retried call idempotent with it) and the tags `augur:stack`, `augur:study`,
//! `augur:trial`, `augur:attempt`, which are how machines are found again: one
//! `DescribeInstances` per tick for the whole study, in this stack only, and a
//! look-up by tags after an ambiguous launch failure. IMDSv2 is required, shutdown from inside
//! terminates the instance, and user-data carries no secrets: the agent and the study
//! files come from S3 with the instance role.

use crate::boot::{AgentRun, BootScript};
use crate::instance::{client_token, max_life_minutes, INCARNATION_TAG, STACK_TAG};
use crate::listing::LIVE;
use async_trait::async_trait;
use augur_model::agent::{AwsTarget, Invocation};
use augur_model::cost::Billing;
use augur_model::{Machine, Study, Trial};
use augur_store::provider::{Launched, MachineProvider, Missing, ProviderError};
use augur_store::Failure;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMarketOptionsRequest, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceType, LaunchTemplateSpecification, MarketType, ResourceType, ShutdownBehavior, Tag,
    TagSpecification, VolumeType,
};
use aws_sdk_ec2::Client;
use base64::Engine;
use std::time::Duration;

/// Where and how instances are launched (the default: for listing and ending
/// instances only).
#[derive(Clone, Debug, Default)]
pub struct Ec2Settings {
    pub image: String,
    pub instance_type: String,
    pub fallback_instance_types: Vec<String>,
    /// The subnets to launch in, in order, each tried when the one before has no
    /// capacity (empty: the default VPC's choice).
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub instance_profile: Option<String>,
    /// The launch template instances launch from (its latest version), an id
    /// (`lt-...`) or a name: the stack's, with whatever its owner put in it (a key
    /// pair, EBS encryption, placement). What the request names overrides it.
    pub launch_template: Option<String>,
    pub spot: bool,
    /// The root volume's size, GiB (the image's own size when `None`).
    pub disk_gb: Option<u32>,
    /// After this many reclaims of one trial, its attempts run on demand.
    pub spot_fallback_after: Option<u32>,
    /// The metadata service's hop limit (`[aws] imds_hop_limit`; 1 when `None`).
    pub imds_hop_limit: Option<u32>,
    /// The instances' architecture (every type the study may launch shares it):
    /// which agent build they fetch.
    pub arch: crate::instance::Arch,
    /// The SHA-256 of that agent in the bucket: an instance runs no other.
    pub agent_sha256: String,
    /// Agent arguments: table, bucket, log group prefix, heartbeat.
    pub table: String,
    pub bucket: String,
    pub log_group_prefix: String,
    pub heartbeat: Duration,
    /// The region instances launch in, which is the deployment's (its table, bucket
    /// and log groups): the boot script exports it for the AWS CLI and the agent.
    pub region: String,
    /// How long one `DescribeInstances` listing is reused (EC2 calls per trial stay
    /// flat however often the reconciler ticks; lost machines are found by the
    /// heartbeat lease anyway).
    pub list_every: Duration,
    /// Instances are kept warm (`run.reuse = "study"`): an agent that finished an
    /// attempt waits for the study's next one ([`augur_model::Trial::leaves_machine_warm`]).
    pub reuse: bool,
}

/// EC2 instances as machines.
pub struct Ec2Provider {
    pub(crate) client: Client,
    pub(crate) settings: Ec2Settings,
    /// The last listing of each study, and when it was made.
    pub(crate) listed: crate::listing::Listed,
    /// The ended instances asked for by name, and when ([`crate::listing`]).
    pub(crate) asked: crate::listing::Asked,
    /// The image's root device name, once looked up.
    root_device: tokio::sync::OnceCell<String>,
    /// What launched instances cost (none: launches are not priced).
    prices: Option<crate::prices::Prices>,
    /// Reads EC2's encoded refusals ([`crate::denied::decode_ec2`]).
    sts: Option<aws_sdk_sts::Client>,
    /// The GPUs of each instance type asked about ([`crate::gpus::describe`]), once.
    gpus: tokio::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// Whether this attempt runs on spot: the study asks for it, and the trial has not
/// been reclaimed `spot_fallback_after` times already.
pub fn spot_for(s: &Ec2Settings, trial: &Trial) -> bool {
    s.spot && s.spot_fallback_after.is_none_or(|n| trial.preemptions < n)
}

impl Ec2Provider {
    pub fn new(client: Client, settings: Ec2Settings) -> Ec2Provider {
        Ec2Provider {
            client,
            settings,
            listed: Default::default(),
            asked: Default::default(),
            root_device: Default::default(),
            prices: None,
            sts: None,
            gpus: Default::default(),
        }
    }

    /// How many attempts of `study` an instance runs at once ([`crate::gpus::slots`]),
    /// the GPUs of its types (the study's, whatever this provider launches: a
    /// sweeper launches nothing) asked of EC2 once.
    async fn slots_of(&self, study: &Study) -> Result<u32, ProviderError> {
        if study.run.gpus == 0 {
            return Ok(1);
        }
        let types = crate::instance::instance_types(study);
        let mut known = self.gpus.lock().await;
        let unknown: Vec<String> = types
            .iter()
            .filter(|t| !known.contains_key(*t))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            known.extend(crate::gpus::describe(&self.client, &unknown).await?);
        }
        let counts: Vec<(String, u32)> = types
            .into_iter()
            .map(|t| {
                let n = known.get(&t).copied().unwrap_or(0);
                (t, n)
            })
            .collect();
        drop(known);
        crate::gpus::slots(study, &counts)
            .map_err(|why| ProviderError::Rejected(Failure::said(why)))
    }

    /// Refusals decoded with STS (`sts:DecodeAuthorizationMessage`), naming what
    /// was refused.
    pub fn with_decoder(mut self, sts: aws_sdk_sts::Client) -> Ec2Provider {
        self.sts = Some(sts);
        self
    }

    /// `fail`, with a refusal's encoded message decoded where it can be.
    async fn failed<E>(&self, op: &str, e: aws_sdk_ec2::error::SdkError<E>) -> ProviderError
    where
        E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + Send + Sync + 'static,
    {
        if let Some(sts) = &self.sts {
            let (call, action) = (format!("EC2 {op}"), format!("ec2:{op}"));
            if let Some(d) = crate::denied::denied(&call, &action, &e) {
                let d = crate::denied::decode_ec2(sts, d, &e).await;
                return ProviderError::Denied(Box::new(d));
            }
        }
        crate::instance::fail(op, e)
    }

    /// Records each launch's price with it ([`crate::prices`]).
    pub fn with_prices(mut self, prices: crate::prices::Prices) -> Ec2Provider {
        self.prices = Some(prices);
        self
    }

    /// The agent's arguments for one attempt (`slot`: of an instance several
    /// attempts share; attempt 0: a slot that waits for its first).
    pub fn agent_args(
        &self,
        study: &str,
        trial: u64,
        attempt: u32,
        slot: Option<u32>,
    ) -> Vec<String> {
        let s = &self.settings;
        Invocation {
            home: "/var/lib/augur".into(),
            aws: Some(AwsTarget {
                table: s.table.clone(),
                bucket: s.bucket.clone(),
                log_group_prefix: s.log_group_prefix.clone(),
            }),
            study: study.into(),
            trial,
            attempt,
            heartbeat_ms: s.heartbeat.as_millis() as u64,
            machine: None,
            shutdown: true,
            reuse: s.reuse,
            slot,
        }
        .to_args()
    }

    /// The instance's boot script: schedule the power-off at the attempt's hard
    /// limit (`life_min` minutes, [`max_life_minutes`]: the instance ends then even if
    /// its agent hangs and no augur process is left), fetch the agent, run it if it
    /// is the pinned one, power off ([`BootScript`]). An instance of `slots` runs an
    /// agent per slot, each on its own `gpus` GPUs ([`crate::gpus`]), the first with
    /// the attempt, the others waiting for theirs.
    pub fn user_data(
        &self,
        (study, trial, attempt): (&str, u64, u32),
        life_min: u64,
        (slots, gpus): (u32, u32),
    ) -> String {
        let s = &self.settings;
        let agents: Vec<AgentRun> = (0..slots.max(1))
            .map(|slot| AgentRun {
                args: match (slots > 1, slot) {
                    (false, _) => self.agent_args(study, trial, attempt, None),
                    (true, 0) => self.agent_args(study, trial, attempt, Some(0)),
                    (true, k) => self.agent_args(study, trial, 0, Some(k)),
                },
                gpus: (gpus > 0).then(|| crate::gpus::slot_gpus(slot, gpus)),
            })
            .collect();
        BootScript {
            study,
            trial,
            attempt,
            life_min,
            region: &s.region,
            bucket: &s.bucket,
            table: &s.table,
            arch: s.arch,
            agent_sha256: &s.agent_sha256,
            agents: &agents,
        }
        .render()
    }

    /// How a listed instance is billed, at a first-guess price
    /// ([`crate::prices::Prices::at_once`]); `None` when launches are not priced.
    pub(crate) fn listed_billing(&self, i: &aws_sdk_ec2::types::Instance) -> Option<Billing> {
        let prices = self.prices.as_ref()?;
        let ty = i.instance_type()?.as_str();
        let zone = i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default();
        let spot = i.instance_lifecycle() == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot);
        Some(prices.at_once(ty, zone, spot).0)
    }

    /// A root volume of `gb` GiB (gp3, ended with the instance) on the image's root
    /// device: DescribeImages says which; an image by SSM parameter (Amazon Linux),
    /// or one that cannot be described, has `/dev/xvda`.
    async fn root_volume(&self, gb: u32) -> BlockDeviceMapping {
        let image = &self.settings.image;
        let device = self
            .root_device
            .get_or_init(|| async {
                let found = match image.starts_with("ami-") {
                    true => self
                        .client
                        .describe_images()
                        .image_ids(image)
                        .send()
                        .await
                        .ok(),
                    false => None,
                };
                found
                    .and_then(|o| o.images().first()?.root_device_name().map(String::from))
                    .unwrap_or_else(|| "/dev/xvda".into())
            })
            .await;
        BlockDeviceMapping::builder()
            .device_name(device)
            .ebs(
                EbsBlockDevice::builder()
                    .volume_size(gb as i32)
                    .volume_type(VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build(),
            )
            .build()
    }

    /// Where a launch may go, in order: each instance type in each subnet.
    fn places(&self) -> Vec<(&str, Option<&str>)> {
        let s = &self.settings;
        let types = std::iter::once(&s.instance_type).chain(&s.fallback_instance_types);
        let subnets: Vec<Option<&str>> = if s.subnets.is_empty() {
            vec![None]
        } else {
            s.subnets.iter().map(|n| Some(n.as_str())).collect()
        };
        types
            .flat_map(|t| subnets.iter().map(move |n| (t.as_str(), *n)))
            .collect()
    }

    /// After a launch failed in a way that may still have launched (a timeout, a
    /// dropped answer): the attempt's instance if one is there, else the error.
    async fn after_ambiguous(
        &self,
        study: &Study,
        trial: &Trial,
        e: ProviderError,
    ) -> Result<String, ProviderError> {
        let mut filters = self.scope(Some(&study.name));
        filters.push(Self::tag_filter("augur:trial", &trial.id.to_string()));
        filters.push(Self::tag_filter(
            "augur:attempt",
            &trial.attempt.to_string(),
        ));
        let found = self.find(filters, LIVE).await;
        match found.map(|v| v.into_iter().next()) {
            Ok(Some((_, m, _))) => Ok(m.id),
            _ => Err(e),
        }
    }

    /// The tags of an attempt's instance: how it is found again (stack, study,
    /// trial, attempt, the trial's incarnation), and its name in the console.
    fn tags(&self, study: &Study, trial: &Trial) -> TagSpecification {
        let s = &self.settings;
        TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(Tag::builder().key("augur:study").value(&study.name).build())
            .tags(
                Tag::builder()
                    .key("augur:trial")
                    .value(trial.id.to_string())
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("augur:attempt")
                    .value(trial.attempt.to_string())
                    .build(),
            )
            .tags(Tag::builder().key(STACK_TAG).value(&s.table).build())
            .tags(
                Tag::builder()
                    .key(INCARNATION_TAG)
                    .value(trial.created_ms.to_string())
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("Name")
                    .value(format!("augur {}/{}", study.name, trial.id))
                    .build(),
            )
            .build()
    }

    async fn run(
        &self,
        study: &Study,
        trial: &Trial,
        (instance_type, subnet): (&str, Option<&str>),
    ) -> Result<(String, String), ProviderError> {
        let s = &self.settings;
        let tags = self.tags(study, trial);
        let mut req = self
            .client
            .run_instances()
            .image_id(&s.image)
            .instance_type(InstanceType::from(instance_type))
            .min_count(1)
            .max_count(1)
            .client_token(client_token(
                &s.table,
                &study.name,
                trial,
                &format!("{instance_type}/{}", subnet.unwrap_or("")),
            ))
            .user_data(
                base64::engine::general_purpose::STANDARD.encode(self.user_data(
                    (&study.name, trial.id, trial.attempt),
                    max_life_minutes(study, trial),
                    (self.slots_of(study).await?, study.run.gpus),
                )),
            )
            .tag_specifications(tags)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(s.imds_hop_limit.unwrap_or(1) as i32)
                    .build(),
            )
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .set_subnet_id(subnet.map(String::from));
        if !s.security_groups.is_empty() {
            req = req.set_security_group_ids(Some(s.security_groups.clone()));
        }
        if let Some(p) = &s.instance_profile {
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        if let Some(t) = &s.launch_template {
            req = req.launch_template(launch_template(t));
        }
        if let Some(gb) = s.disk_gb {
            req = req.block_device_mappings(self.root_volume(gb).await);
        }
        if spot_for(s, trial) {
            req = req.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .build(),
            );
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => return Err(self.failed("RunInstances", e).await),
        };
        let instance = out.instances().first();
        let id = instance
            .and_then(|i| i.instance_id())
            .ok_or_else(|| ProviderError::unavailable("EC2 RunInstances returned no instance"))?;
        let zone = instance
            .and_then(|i| i.placement())
            .and_then(|p| p.availability_zone())
            .unwrap_or_default();
        Ok((id.to_string(), zone.to_string()))
    }
}

/// A launch template by id (`lt-` and hex digits) or by name, at its latest version
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LaunchTemplateSpecification.html>).
fn launch_template(t: &str) -> LaunchTemplateSpecification {
    let by_id = t
        .strip_prefix("lt-")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let spec = LaunchTemplateSpecification::builder().version("$Latest");
    match by_id {
        true => spec.launch_template_id(t),
        false => spec.launch_template_name(t),
    }
    .build()
}

#[async_trait]
impl MachineProvider for Ec2Provider {
    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        let mut no_room = Vec::new();
        for place in self.places() {
            let (id, zone) = match self.run(study, trial, place).await {
                Ok(launched) => launched,
                // No room there: try the next type or subnet.
                Err(ProviderError::Capacity(why)) => {
                    no_room.push(why);
                    continue;
                }
                Err(e) => (self.after_ambiguous(study, trial, e).await?, String::new()),
            };
            // The price as known at once: nothing slow between a launch and its
            // record; the driver asks for the price afterwards (`price`).
            let spot = spot_for(&self.settings, trial);
            let share = Billing::share_of(self.slots_of(study).await?);
            let (billing, priced) = match &self.prices {
                Some(p) => {
                    let (b, priced) = p.at_once(place.0, &zone, spot);
                    (Some(Billing { share, ..b }), priced)
                }
                None => (None, true),
            };
            return Ok(Launched {
                id,
                billing,
                priced,
            });
        }
        Err(ProviderError::Capacity(match no_room.len() {
            1 => no_room.remove(0),
            _ => Failure::said(
                no_room
                    .iter()
                    .map(|f| f.what.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }))
    }

    async fn price(&self, billing: &Billing) -> Option<Billing> {
        let p = self.prices.as_ref()?;
        let b = p
            .billing(&billing.instance_type, &billing.zone, billing.spot)
            .await;
        Some(Billing {
            share: billing.share,
            ..b
        })
    }

    async fn slots(&self, study: &Study) -> Result<u32, ProviderError> {
        self.slots_of(study).await
    }

    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        self.listing(study).await
    }

    async fn ended(&self, study: &str, missing: &Missing) -> Result<Vec<Machine>, ProviderError> {
        self.ended_of(study, missing).await
    }

    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        let found = self.find(self.scope(None), LIVE).await?;
        Ok(found.into_iter().map(|(s, m, _)| (s, m)).collect())
    }

    async fn terminate(&self, machine: &Machine) -> Result<(), ProviderError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(&machine.id)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .and_then(|x| aws_sdk_ec2::error::ProvideErrorMetadata::code(x))
                    == Some("InvalidInstanceID.NotFound") => {}
            Err(e) => return Err(crate::instance::fail("TerminateInstances", e)),
        }
        // Ended: a reused listing must not show it alive (it would be ended again at
        // every pass until the listing is made afresh).
        if let Ok(mut cache) = self.listed.lock() {
            for (_, machines) in cache.values_mut() {
                machines.retain(|m| m.id != machine.id);
            }
        }
        Ok(())
    }

    fn warm_by_record(&self) -> bool {
        true
    }

    fn sees_all(&self) -> bool {
        false
    }

    fn boot_hint(&self) -> &'static str {
        "An instance's boot script fetches the agent from S3 with the AWS CLI and runs it; check that the instance profile lets it read the bucket and write the table and the logs, that the image has the AWS CLI, and that the subnet reaches S3, DynamoDB and CloudWatch Logs (a NAT gateway or VPC endpoints). `aws ec2 get-console-output --instance-id ID` shows what the boot script printed. "
    }

    fn invalidate(&self, study: &str) {
        if let Ok(mut cache) = self.listed.lock() {
            cache.remove(study);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_client() -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder()
                .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
                .region(aws_sdk_ec2::config::Region::new("us-east-1"))
                .build(),
        )
    }

    /// User-data is readable by anything on the instance (and by whoever may
    /// describe it): it carries names and settings only; credentials come from the
    /// instance role.
    #[test]
    fn user_data_carries_no_secrets_and_quotes_its_arguments() {
        let client = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder()
                .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
                .region(aws_sdk_ec2::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "AKIASECRETKEYID",
                    "very/secret+access+key",
                    Some("session-token-value".into()),
                    None,
                    "test",
                ))
                .build(),
        );
        let p = Ec2Provider::new(
            client,
            Ec2Settings {
                table: "augur".into(),
                bucket: "bkt".into(),
                log_group_prefix: "/augur".into(),
                region: "us-east-1".into(),
                heartbeat: Duration::from_secs(20),
                ..Default::default()
            },
        );
        let ud = p.user_data(("it's", 3, 2), 25, (1, 0));
        assert!(ud.contains("\nshutdown -h +25\n"), "{ud}");
        for secret in [
            "AKIASECRETKEYID",
            "very/secret",
            "session-token",
            "AWS_SECRET",
            "AWS_SESSION",
            "AWS_ACCESS_KEY",
        ] {
            assert!(!ud.contains(secret), "{secret} in user-data: {ud}");
        }
        // The only variables set are the region's; the arguments are single-quoted.
        let exports: Vec<&str> = ud.lines().filter(|l| l.starts_with("export ")).collect();
        assert_eq!(
            exports,
            vec!["export AWS_REGION='us-east-1' AWS_DEFAULT_REGION='us-east-1'"]
        );
        assert!(ud.contains("'it'\\''s'"), "{ud}");
        assert!(ud.contains("--study"));
    }

    #[test]
    fn launches_fall_back_over_each_type_in_each_subnet_in_order() {
        let p = Ec2Provider::new(
            test_client(),
            Ec2Settings {
                instance_type: "t3.micro".into(),
                fallback_instance_types: vec!["t3.small".into()],
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            p.places(),
            vec![
                ("t3.micro", Some("subnet-a")),
                ("t3.micro", Some("subnet-b")),
                ("t3.small", Some("subnet-a")),
                ("t3.small", Some("subnet-b")),
            ]
        );
        let default_vpc = Ec2Provider::new(
            test_client(),
            Ec2Settings {
                instance_type: "t3.micro".into(),
                ..Default::default()
            },
        );
        assert_eq!(default_vpc.places(), vec![("t3.micro", None)]);
    }

    #[test]
    fn spot_falls_back_to_on_demand_after_n_preemptions() {
        let s = Ec2Settings {
            spot: true,
            spot_fallback_after: Some(2),
            ..Default::default()
        };
        let mut t = Trial::new("s", 1, 0, 0, Default::default(), 0);
        assert!(spot_for(&s, &t));
        t.preemptions = 1;
        assert!(spot_for(&s, &t));
        t.preemptions = 2;
        assert!(!spot_for(&s, &t));
        let never = Ec2Settings {
            spot: true,
            ..Default::default()
        };
        t.preemptions = 50;
        assert!(spot_for(&never, &t));
        assert!(!spot_for(
            &Ec2Settings::default(),
            &Trial::new("s", 1, 0, 0, Default::default(), 0)
        ));
    }
}
