//! `augur doctor`: each path's AWS calls, asked of IAM's policy simulator
//! (`iam:SimulatePrincipalPolicy`,
//! <https://docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html>)
//! for the identity that makes them, with the resources and condition keys augur's
//! requests carry, before anything is launched. What is refused is named with the
//! grant to add.

use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType};

/// Which of the stack's identities a principal stands for (`infra/augur.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// People running the CLI (`CliPolicy`).
    Cli,
    /// The scheduled tick (`TickRole`).
    Tick,
    /// Worker instances (`WorkerRole`).
    Worker,
}

impl Identity {
    /// Its name in the template.
    pub fn in_template(self) -> &'static str {
        match self {
            Identity::Cli => "CliPolicy",
            Identity::Tick => "TickRole",
            Identity::Worker => "WorkerRole",
        }
    }
}

/// What the checks are asked about: the deployment's names.
#[derive(Clone, Debug, Default)]
pub struct Deployment {
    pub account: String,
    pub region: String,
    pub table: String,
    pub bucket: String,
    pub log_group_prefix: String,
    pub security_groups: Vec<String>,
    pub launch_template: Option<String>,
    pub secrets_prefix: String,
    /// The workers' role (for `iam:PassRole`), when known.
    pub worker_role: Option<String>,
}

/// One call of a path, as IAM authorizes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// What does it (`augur run`, `the agent`, ...).
    pub path: &'static str,
    pub action: String,
    pub resource: String,
    /// Condition keys and their values, as the request carries them.
    pub context: Vec<(String, Vec<String>)>,
}

fn check(path: &'static str, action: &str, resource: &str) -> Check {
    Check {
        path,
        action: action.into(),
        resource: resource.into(),
        context: Vec::new(),
    }
}

impl Check {
    fn with(mut self, key: &str, values: &[&str]) -> Check {
        self.context
            .push((key.into(), values.iter().map(|v| v.to_string()).collect()));
        self
    }
}

impl Deployment {
    fn arn(&self, service: &str, rest: &str) -> String {
        format!("arn:aws:{service}:{}:{}:{rest}", self.region, self.account)
    }

    /// The calls of a launch (`augur run`, the tick): RunInstances against each
    /// resource it makes or uses, tags at launch, the role passed, the default
    /// image's parameter, listing, pricing and ending instances.
    fn launches(&self, path: &'static str) -> Vec<Check> {
        let run = "ec2:RunInstances";
        let ec2 = |rest: &str| self.arn("ec2", rest);
        let mut out = vec![
            check(path, run, &ec2("instance/*"))
                .with("aws:RequestTag/augur:stack", &[&self.table])
                .with("ec2:InstanceType", &["t3.micro"])
                .with("ec2:MetadataHttpTokens", &["required"])
                .with("ec2:MetadataHttpPutResponseHopLimit", &["1"]),
            check(path, run, &format!("arn:aws:ec2:{}::image/*", self.region))
                .with("ec2:Owner", &["amazon"]),
            check(path, run, &ec2("volume/*")),
            check(path, run, &ec2("network-interface/*")),
            check(path, run, &ec2("subnet/*")),
            check(path, run, &ec2("spot-instances-request/*")),
            check(path, "ec2:CreateTags", &ec2("instance/*"))
                .with("ec2:CreateAction", &["RunInstances"])
                .with("aws:RequestTag/augur:stack", &[&self.table]),
            check(
                path,
                "ssm:GetParameters",
                &format!(
                    "arn:aws:ssm:{}::parameter/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
                    self.region
                ),
            ),
            check(path, "ec2:DescribeInstances", "*"),
            check(path, "ec2:DescribeImages", "*"),
            check(path, "ec2:DescribeInstanceTypes", "*"),
            check(path, "ec2:DescribeSpotPriceHistory", "*"),
            check(path, "pricing:GetProducts", "*"),
            check(path, "ec2:TerminateInstances", &ec2("instance/*"))
                .with("aws:ResourceTag/augur:stack", &[&self.table]),
            // What EC2 refused, decoded to be named.
            check(path, "sts:DecodeAuthorizationMessage", "*"),
        ];
        for g in &self.security_groups {
            out.push(check(path, run, &ec2(&format!("security-group/{g}"))));
        }
        if let Some(lt) = &self.launch_template {
            out.push(check(path, run, &ec2(&format!("launch-template/{lt}"))));
        }
        if let Some(role) = &self.worker_role {
            out.push(
                check(path, "iam:PassRole", role)
                    .with("iam:PassedToService", &["ec2.amazonaws.com"]),
            );
        }
        out
    }

    /// The table's items: the store's reads and conditional writes.
    fn records(&self, path: &'static str, actions: &[&str]) -> Vec<Check> {
        let table = self.arn("dynamodb", &format!("table/{}", self.table));
        let mut out: Vec<Check> = actions
            .iter()
            .map(|a| check(path, &format!("dynamodb:{a}"), &table))
            .collect();
        out.push(check(
            path,
            "dynamodb:Query",
            &format!("{table}/index/by_change"),
        ));
        out
    }

    /// Every call the paths of `who` make.
    pub fn checks(&self, who: Identity) -> Vec<Check> {
        match who {
            Identity::Cli => self.cli_checks(),
            Identity::Tick => {
                let mut out = self.records("the tick", &DRIVER_ITEMS);
                out.extend(self.launches("the tick"));
                out
            }
            Identity::Worker => self.worker_checks(),
        }
    }

    fn bucket_arn(&self) -> String {
        format!("arn:aws:s3:::{}", self.bucket)
    }

    fn log_group(&self) -> String {
        self.arn(
            "logs",
            &format!("log-group:{}/doctor", self.log_group_prefix),
        )
    }

    /// A person's: a driver's, and the study files, checkpoints and logs.
    fn cli_checks(&self) -> Vec<Check> {
        let p = "augur run/submit/stop/gc/delete";
        let b = self.bucket_arn();
        let mut items = DRIVER_ITEMS.to_vec();
        items.extend(["BatchWriteItem", "DescribeTable"]);
        let mut out = self.records(p, &items);
        out.extend(self.launches(p));
        for a in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"] {
            out.push(check("study files", a, &format!("{b}/studies/doctor/file")));
        }
        out.push(check("study files", "s3:ListBucket", &b).with("s3:prefix", &["studies/doctor/"]));
        let checkpoint = format!("{b}/checkpoints/doctor/1/file");
        out.push(check("augur script --run", "s3:GetObject", &checkpoint));
        out.push(check("augur delete", "s3:DeleteObject", &checkpoint));
        out.push(check("augur delete", "s3:DeleteObjectVersion", &checkpoint));
        out.push(check(
            "augur delete",
            "s3:DeleteObjectVersion",
            &format!("{b}/studies/doctor/file"),
        ));
        for prefix in ["studies/doctor/", "checkpoints/doctor/"] {
            out.push(
                check("augur delete", "s3:ListBucketVersions", &b).with("s3:prefix", &[prefix]),
            );
        }
        for a in [
            "logs:GetLogEvents",
            "logs:FilterLogEvents",
            "logs:DescribeLogStreams",
            "logs:CreateLogGroup",
            "logs:PutRetentionPolicy",
            "logs:DeleteLogGroup",
        ] {
            out.push(check("augur logs/run/delete", a, &self.log_group()));
        }
        out
    }

    /// An agent's: its study's record and trial partition, the agent and study
    /// files, checkpoints, logs and secrets.
    fn worker_checks(&self) -> Vec<Check> {
        let p = "the agent";
        let b = self.bucket_arn();
        let table = self.arn("dynamodb", &format!("table/{}", self.table));
        let trials = ["trials#doctor"];
        let mut out = vec![
            check(p, "dynamodb:GetItem", &table),
            check(p, "dynamodb:PutItem", &table).with("dynamodb:LeadingKeys", &trials),
            check(p, "dynamodb:UpdateItem", &table).with("dynamodb:LeadingKeys", &trials),
            check("warm agents", "dynamodb:Query", &table).with("dynamodb:LeadingKeys", &trials),
            // Any build (its key names its SHA-256).
            check(
                p,
                "s3:GetObject",
                &format!(
                    "{b}/{}",
                    crate::instance::Arch::X86_64.agent_key(&"0".repeat(64))
                ),
            ),
            check(p, "s3:GetObject", &format!("{b}/studies/doctor/file")),
            check(p, "s3:ListBucket", &b).with("s3:prefix", &["checkpoints/doctor/1/"]),
        ];
        for a in [
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
        ] {
            out.push(check(
                "checkpoints",
                a,
                &format!("{b}/checkpoints/doctor/1/file"),
            ));
        }
        for a in [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        ] {
            out.push(check(p, a, &format!("{}:log-stream:1", self.log_group())));
        }
        let prefix = &self.secrets_prefix;
        out.push(check(
            "secrets",
            "ssm:GetParameter",
            &self.arn("ssm", &format!("parameter/{prefix}doctor")),
        ));
        out.push(check(
            "secrets",
            "secretsmanager:GetSecretValue",
            &self.arn("secretsmanager", &format!("secret:{prefix}doctor")),
        ));
        out
    }
}

/// The item calls of a driver's store (`augur run`, the tick).
const DRIVER_ITEMS: [&str; 7] = [
    "GetItem",
    "BatchGetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
];

/// A check's answer: allowed, or how it was refused (`implicitDeny`,
/// `explicitDeny`).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub check: Check,
    pub allowed: bool,
    pub decision: String,
}

/// An IAM client for `config`.
pub fn client(config: &aws_config::SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(config)
}

/// Why the simulator gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The caller may not ask it (`iam:SimulatePrincipalPolicy`): exit code 2.
    #[error("{0}")]
    Denied(Box<augur_store::Denied>),
    /// It could not be reached: exit code 3.
    #[error("{0}")]
    Failed(#[source] augur_store::Failure),
}

impl SimulateError {
    /// What this failure asks of whoever meets it.
    pub fn kind(&self) -> augur_store::Kind {
        match self {
            SimulateError::Denied(_) => augur_store::Kind::Input,
            SimulateError::Failed(_) => augur_store::Kind::Unavailable,
        }
    }
}

/// The simulator's answer for each check, for `principal` (a user's or role's ARN).
pub async fn simulate(
    iam: &aws_sdk_iam::Client,
    principal: &str,
    checks: &[Check],
) -> Result<Vec<Answer>, SimulateError> {
    let mut out = Vec::new();
    for c in checks {
        let mut req = iam
            .simulate_principal_policy()
            .policy_source_arn(principal)
            .action_names(&c.action)
            .resource_arns(&c.resource);
        for (key, values) in &c.context {
            req = req.context_entries(
                ContextEntry::builder()
                    .context_key_name(key)
                    .context_key_type(ContextKeyTypeEnum::StringList)
                    .set_context_key_values(Some(values.clone()))
                    .build(),
            );
        }
        let got = req.send().await.map_err(|e| {
            match crate::denied::denied(
                "IAM SimulatePrincipalPolicy",
                "iam:SimulatePrincipalPolicy",
                &e,
            ) {
                Some(d) => SimulateError::Denied(Box::new(d)),
                None => {
                    let what = format!(
                        "IAM SimulatePrincipalPolicy for {principal}: {}",
                        crate::error_text(&e)
                    );
                    SimulateError::Failed(augur_store::Failure::caused(what, e))
                }
            }
        })?;
        let decision = got
            .evaluation_results()
            .first()
            .map(|r| r.eval_decision().clone());
        let allowed = decision == Some(PolicyEvaluationDecisionType::Allowed);
        out.push(Answer {
            check: c.clone(),
            allowed,
            decision: decision.map_or("no answer".into(), |d| d.as_str().to_string()),
        });
    }
    Ok(out)
}

/// The IAM principal of a caller's ARN: an assumed role's session is its role.
pub fn principal_of(caller: &str) -> String {
    match caller.split_once(":assumed-role/") {
        Some((head, rest)) => {
            let role = rest.split('/').next().unwrap_or(rest);
            format!("{}:role/{role}", head.replace(":sts:", ":iam:"))
        }
        None => caller.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assumed_roles_session_is_simulated_as_its_role() {
        assert_eq!(
            principal_of("arn:aws:sts::123456789012:assumed-role/Admin/alice"),
            "arn:aws:iam::123456789012:role/Admin"
        );
        assert_eq!(
            principal_of("arn:aws:iam::123456789012:user/bob"),
            "arn:aws:iam::123456789012:user/bob"
        );
    }

    #[test]
    fn launches_are_checked_against_each_resource_with_their_condition_keys() {
        let d = Deployment {
            account: "1".into(),
            region: "r".into(),
            table: "t".into(),
            security_groups: vec!["sg-1".into()],
            launch_template: Some("lt-1".into()),
            worker_role: Some("arn:aws:iam::1:role/w".into()),
            ..Default::default()
        };
        let cli = d.checks(Identity::Cli);
        let find = |a: &str, r: &str| {
            cli.iter()
                .find(|c| c.action == a && c.resource.ends_with(r))
        };
        let instance = find("ec2:RunInstances", ":instance/*").expect("instance");
        assert!(instance
            .context
            .contains(&("aws:RequestTag/augur:stack".into(), vec!["t".into()])));
        assert!(find("ec2:RunInstances", "security-group/sg-1").is_some());
        assert!(find("ec2:RunInstances", "launch-template/lt-1").is_some());
        assert!(find("iam:PassRole", "role/w").is_some());
        let worker = d.checks(Identity::Worker);
        assert!(worker.iter().all(|c| c.action != "ec2:RunInstances"));
    }
}
