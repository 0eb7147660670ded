//! What `infra/deploy.sh` makes beside the table and the bucket, made in the
//! emulator as the stack would make it: the workers' security group, their role and
//! instance profile, and their launch template (`infra/augur.yaml`'s
//! `WorkerSecurityGroup`, `WorkerRole`, `WorkerInstanceProfile`,
//! `WorkerLaunchTemplate`). augur's processes are given them as deploy.sh's config
//! gives them, and IAM is enforced with the template's policies resolved to them.

use crate::iam::enforce::Deployment;
use serde_json::Value;

/// The stack's worker resources, as made.
#[derive(Clone, Debug)]
pub struct Stack {
    pub security_group: String,
    pub launch_template: String,
    pub instance_profile: String,
    pub role_arn: String,
}

impl Stack {
    /// Makes them with `aws` (the AWS CLI as an administrator, its JSON answer).
    pub fn make(aws: impl Fn(&[&str]) -> Value, name: &str) -> Stack {
        let sg = aws(&[
            "ec2",
            "create-security-group",
            "--group-name",
            name,
            "--description",
            "augur workers: no inbound",
        ]);
        let security_group = sg["GroupId"].as_str().expect("GroupId").to_string();
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let role = aws(&[
            "iam",
            "create-role",
            "--role-name",
            name,
            "--assume-role-policy-document",
            trust,
        ]);
        let role_arn = role["Role"]["Arn"].as_str().expect("role Arn").to_string();
        let profile = aws(&[
            "iam",
            "create-instance-profile",
            "--instance-profile-name",
            name,
        ]);
        let profile_arn = profile["InstanceProfile"]["Arn"]
            .as_str()
            .expect("profile Arn");
        aws(&[
            "iam",
            "add-role-to-instance-profile",
            "--instance-profile-name",
            name,
            "--role-name",
            name,
        ]);
        let data = serde_json::json!({
            "IamInstanceProfile": {"Arn": profile_arn},
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
            "SecurityGroupIds": [security_group],
            "TagSpecifications": [{"ResourceType": "volume", "Tags": [{"Key": "augur", "Value": "worker"}]}],
        });
        let lt = aws(&[
            "ec2",
            "create-launch-template",
            "--launch-template-name",
            name,
            "--launch-template-data",
            &data.to_string(),
        ]);
        let launch_template = lt["LaunchTemplate"]["LaunchTemplateId"]
            .as_str()
            .expect("LaunchTemplateId")
            .to_string();
        Stack {
            security_group,
            launch_template,
            instance_profile: name.to_string(),
            role_arn,
        }
    }

    /// The tick's role: the Lambda's (the stand-in plays no Lambda; only its ARN is
    /// named, by the policies and by `augur doctor`).
    pub fn tick_role_arn(&self) -> String {
        format!(
            "arn:aws:iam::123456789012:role/{}-tick",
            self.instance_profile
        )
    }

    /// The CLI's config as deploy.sh writes it, as `AUGUR_*` variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AUGUR_SECURITY_GROUPS", self.security_group.clone()),
            ("AUGUR_INSTANCE_PROFILE", self.instance_profile.clone()),
            ("AUGUR_LAUNCH_TEMPLATE", self.launch_template.clone()),
            ("AUGUR_TICK_ROLE", self.tick_role_arn()),
            ("AUGUR_WORKER_ROLE", self.role_arn.clone()),
        ]
    }

    /// The template's names for a deployment of `table` and `bucket` with these.
    pub fn deployment(&self, table: &str, bucket: &str) -> Deployment {
        Deployment {
            table: table.into(),
            bucket: bucket.into(),
            names: vec![
                (
                    "WorkerSecurityGroup.GroupId".into(),
                    self.security_group.clone(),
                ),
                ("WorkerLaunchTemplate".into(), self.launch_template.clone()),
                ("WorkerRole.Arn".into(), self.role_arn.clone()),
                ("TickRole.Arn".into(), self.tick_role_arn()),
                (
                    "WorkerInstanceProfile".into(),
                    self.instance_profile.clone(),
                ),
            ],
            profiles: vec![(self.instance_profile.clone(), self.role_arn.clone())],
        }
    }
}
