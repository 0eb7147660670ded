//! What one EC2 launch is made of, as pure functions of the study and the trial:
//! its `ClientToken`, its tags' names, its default image and architecture, its
//! hard limit, and which answers mean the cloud has no room for it.

use augur_model::{Study, Trial};
use augur_store::{Failure, ProviderError};

/// Whether an instance type runs arm64 (Graviton): its family has a `g` after the
/// generation digit (`t4g`, `m7gd`, `c7gn`, `x2gd`, `hpc7g`), or it is `a1`. GPU
/// families start with a `g` (`g5`) and run x86_64.
pub fn arm64(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    let after_digit = family.trim_start_matches(|c: char| !c.is_ascii_digit());
    family == "a1"
        || after_digit
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .contains('g')
}

/// The two architectures EC2 instances run, and what differs between them for a
/// launch: the default image, and which agent build (S3 key, pin) boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    #[default]
    X86_64,
    Arm64,
}

impl Arch {
    /// The architecture of an instance type ([`arm64`]).
    pub fn of(instance_type: &str) -> Arch {
        match arm64(instance_type) {
            true => Arch::Arm64,
            false => Arch::X86_64,
        }
    }

    /// The architecture a Linux executable is built for, from its ELF header (64-bit,
    /// little-endian; `e_machine` 62 is x86-64, 183 is AArch64); `None` for anything
    /// else.
    pub fn of_executable(head: &[u8]) -> Option<Arch> {
        if head.len() < 20 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
            return None;
        }
        match u16::from_le_bytes([head[18], head[19]]) {
            62 => Some(Arch::X86_64),
            183 => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// EC2's name (`DescribeInstanceTypes`, the AL2023 parameter's suffix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Where the build of the agent for this architecture whose SHA-256 is `sha256`
    /// is in the stack's bucket, whatever its file was called: named by its content
    /// (`agent/<sha256>/augur-agent`, `-arm64`), so that a new build never replaces
    /// one a launch already pinned (a deploy uploads it before the stack's pin moves).
    pub fn agent_key(self, sha256: &str) -> String {
        let file = match self {
            Arch::X86_64 => "augur-agent",
            Arch::Arm64 => "augur-agent-arm64",
        };
        format!("agent/{sha256}/{file}")
    }

    /// The setting (`[aws]` key, and its variable) that pins this architecture's
    /// agent.
    pub fn pin_setting(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("agent_sha256", "AUGUR_AGENT_SHA256"),
            Arch::Arm64 => ("agent_sha256_arm64", "AUGUR_AGENT_SHA256_ARM64"),
        }
    }
}

/// The instance type of a study that names none.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

/// The instance types a study launches, in the order it tries them: its
/// `[aws] instance_type` (else [`DEFAULT_INSTANCE_TYPE`]), then its fallbacks.
pub fn instance_types(study: &Study) -> Vec<String> {
    let aws = study.aws.as_ref();
    let first = aws
        .and_then(|a| a.instance_type.clone())
        .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into());
    let fallbacks = aws.map(|a| a.fallback_instance_types.clone());
    std::iter::once(first)
        .chain(fallbacks.into_iter().flatten())
        .collect()
}

/// The image workers boot when a study names none: the latest Amazon Linux 2023
/// for the type's architecture, through the public SSM parameter that RunInstances
/// resolves itself (`resolve:ssm:`,
/// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/finding-an-ami.html#using-systems-manager-parameter-to-find-AMI>).
pub fn default_image(instance_type: &str) -> String {
    format!(
        "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{}",
        Arch::of(instance_type).name()
    )
}

/// The hard limit of an attempt's instance, in minutes: its timeout (its
/// dataset's, or the study's) and grace, plus 10 minutes to boot and to write its
/// end; a week when the study sets no timeout. The boot script schedules the
/// power-off then, so nothing outlives its purpose when every augur process is gone.
pub fn max_life_minutes(study: &Study, trial: &Trial) -> u64 {
    match study.attempt_timeout_ms(trial) {
        Some(ms) => (ms + study.run.grace_ms).div_ceil(60_000) + 10,
        None => 7 * 24 * 60,
    }
}

/// Whether an EC2 error says the cloud has no room for this launch now: no
/// capacity for the type in the zone, a vCPU or spot quota reached, a spot price
/// too low, a type the zone does not offer, or an instance profile that IAM has not
/// propagated yet (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>).
/// None of it is the attempt's fault: the study waits and tries again.
pub fn no_room(code: &str, text: &str) -> bool {
    matches!(
        code,
        "InsufficientInstanceCapacity"
            | "InsufficientCapacity"
            | "InstanceLimitExceeded"
            | "VcpuLimitExceeded"
            | "MaxSpotInstanceCountExceeded"
            | "SpotMaxPriceTooLow"
            | "Unsupported"
    ) || (code == "InvalidParameterValue" && text.contains("iamInstanceProfile"))
}

/// Whether EC2 refused a launch request itself: a client error that names a
/// resource that does not exist or a parameter it does not accept, which no retry
/// mends (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>,
/// "Client error codes"). Capacity and quotas are [`no_room`]; a repeated token
/// with other parameters (`IdempotentParameterMismatch`) is the launch protocol's.
pub fn rejected(code: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "InvalidAMIID.",
        "InvalidSubnetID.",
        "InvalidGroup.",
        "InvalidGroupId.",
        "InvalidLaunchTemplateId.",
        "InvalidLaunchTemplateName.",
        "InvalidKeyPair.",
        "InvalidBlockDeviceMapping",
    ];
    PREFIXES.iter().any(|p| code.starts_with(p))
        || matches!(
            code,
            "InvalidParameterValue"
                | "InvalidParameterCombination"
                | "InvalidParameter"
                | "MissingParameter"
                | "InvalidInstanceType"
                | "OptInRequired"
                | "UnsupportedOperation"
        )
}

/// An EC2 call's failure as the provider's error: a refusal by IAM, no room, a
/// launch request EC2 refuses as asked, or (else) EC2 unavailable for now.
pub(crate) fn fail<E>(op: &str, e: aws_sdk_ec2::error::SdkError<E>) -> ProviderError
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    let code = e
        .as_service_error()
        .and_then(|x| aws_sdk_ec2::error::ProvideErrorMetadata::code(x))
        .unwrap_or("");
    if let Some(d) = crate::denied::denied(&format!("EC2 {op}"), &format!("ec2:{op}"), &e) {
        return ProviderError::Denied(Box::new(d));
    }
    let text = format!("EC2 {op}: {}", crate::error_text(&e));
    let (no_room, rejected) = (no_room(code, &text), op == "RunInstances" && rejected(code));
    let failure = Failure::caused(text, e);
    match () {
        _ if no_room => ProviderError::Capacity(failure),
        _ if rejected => ProviderError::Rejected(failure),
        _ => ProviderError::Unavailable(failure),
    }
}

/// The `ClientToken` of one launch (at most 64 characters). EC2 answers a repeated
/// token with the first launch's instance, for days and after that instance has
/// ended, and refuses it with other parameters
/// (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html>). So
/// the token names everything that makes a launch another one: the deployment (its
/// table), the study, the trial's incarnation (its record's creation time: a study
/// deleted and created again under its name has new ones), the attempt, and where
/// (`type/subnet`: a fallback type or subnet is another launch).
pub fn client_token(stack: &str, study: &str, trial: &Trial, place: &str) -> String {
    let what = format!(
        "{stack}\0{study}\0{}\0{}\0{place}",
        trial.id, trial.created_ms
    );
    format!(
        "augur-{:016x}-{}-{}",
        fnv1a(what.as_bytes()),
        trial.id,
        trial.attempt
    )
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and versions (a
/// token must survive an upgrade of the orchestrator between two calls).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The tag that names the trial record an instance was launched for (its creation
/// time): an instance of a study deleted and created again under its name is not
/// the new trial's.
pub const INCARNATION_TAG: &str = "augur:created";

/// The tag that scopes instances to one deployment (its value: the deployment's
/// table): listings, sweeps and `gc` see only their own stack's instances, and the
/// instance role may end only those.
pub const STACK_TAG: &str = "augur:stack";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_token_names_the_launch_and_stays_the_same_across_versions() {
        let mut t = Trial::new("s", 7, 0, 0, Default::default(), 1_700_000_000_000);
        t.attempt = 3;
        let token = client_token("augur-table", "s", &t, "t3.micro");
        // Pinned: a token must not change with the build (FNV-1a, not std's hasher).
        assert_eq!(
            token,
            client_token("augur-table", "s", &t.clone(), "t3.micro")
        );
        assert!(
            token.starts_with("augur-") && token.ends_with("-7-3"),
            "{token}"
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut reborn = t.clone();
        reborn.created_ms += 1;
        let long = "x".repeat(200);
        for other in [
            client_token("augur-table", "s", &reborn, "t3.micro"),
            client_token("other-stack", "s", &t, "t3.micro"),
            client_token("augur-table", "s", &t, "t3.small"),
            client_token("augur-table", "s2", &t, "t3.micro"),
        ] {
            assert_ne!(other, token);
        }
        let mut big = t.clone();
        big.id = u64::MAX;
        big.attempt = u32::MAX;
        assert!(client_token(&long, &long, &big, &long).len() <= 64);
    }

    #[test]
    fn a_request_ec2_refuses_as_asked_is_rejected_not_retried() {
        for code in [
            "InvalidAMIID.NotFound",
            "InvalidSubnetID.NotFound",
            "InvalidGroup.NotFound",
            "InvalidLaunchTemplateId.NotFound",
            "InvalidKeyPair.NotFound",
            "InvalidParameterCombination",
            "MissingParameter",
        ] {
            assert!(rejected(code), "{code}");
        }
        for code in [
            "InsufficientInstanceCapacity",
            "IdempotentParameterMismatch",
            "RequestLimitExceeded",
            "InternalError",
            "InvalidInstanceID.NotFound",
        ] {
            assert!(!rejected(code), "{code}");
        }
    }

    #[test]
    fn no_room_is_capacity_quota_price_or_a_profile_not_yet_propagated() {
        for code in [
            "InsufficientInstanceCapacity",
            "VcpuLimitExceeded",
            "MaxSpotInstanceCountExceeded",
            "SpotMaxPriceTooLow",
            "InstanceLimitExceeded",
            "Unsupported",
        ] {
            assert!(no_room(code, ""), "{code}");
        }
        let profile = "Value (augur-worker) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name";
        assert!(no_room("InvalidParameterValue", profile));
        assert!(!no_room(
            "InvalidParameterValue",
            "Invalid value for instanceType"
        ));
        for code in [
            "InternalError",
            "RequestLimitExceeded",
            "InvalidAMIID.NotFound",
            "",
        ] {
            assert!(!no_room(code, ""), "{code}");
        }
    }

    #[test]
    fn graviton_types_are_arm64_and_get_their_own_default_image() {
        for t in [
            "t4g.micro",
            "m7gd.large",
            "c7gn.xlarge",
            "x2gd.medium",
            "hpc7g.4xlarge",
            "a1.large",
            "m6g.metal",
        ] {
            assert!(arm64(t), "{t}");
        }
        for t in [
            "t3.micro",
            "m7i.large",
            "g5.xlarge",
            "inf2.xlarge",
            "c7a.large",
            "p5.48xlarge",
            "r7iz.large",
        ] {
            assert!(!arm64(t), "{t}");
        }
        assert_eq!(Arch::of("t4g.small"), Arch::Arm64);
        assert_eq!(Arch::of("t3.small"), Arch::X86_64);
        let pin = "0".repeat(64);
        assert_ne!(Arch::Arm64.agent_key(&pin), Arch::X86_64.agent_key(&pin));
        assert_eq!(
            Arch::X86_64.agent_key(&pin),
            format!("agent/{pin}/augur-agent")
        );
        assert_ne!(
            Arch::X86_64.agent_key(&pin),
            Arch::X86_64.agent_key(&"1".repeat(64))
        );
        assert!(default_image("t4g.small").ends_with("-arm64"));
        assert!(default_image("t3.small").ends_with("-x86_64"));
        assert!(default_image("t3.small").starts_with(
            "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-"
        ));
    }

    #[test]
    fn an_executable_names_its_architecture_in_its_elf_header() {
        let elf = |machine: u16| {
            let mut h = b"\x7fELF\x02\x01\x01".to_vec();
            h.resize(18, 0);
            h.extend(machine.to_le_bytes());
            h.resize(64, 0);
            h
        };
        assert_eq!(Arch::of_executable(&elf(62)), Some(Arch::X86_64));
        assert_eq!(Arch::of_executable(&elf(183)), Some(Arch::Arm64));
        assert_eq!(Arch::of_executable(&elf(40)), None, "32-bit ARM");
        let mut big_endian = elf(183);
        big_endian[5] = 2;
        assert_eq!(Arch::of_executable(&big_endian), None);
        assert_eq!(Arch::of_executable(b"#!/bin/bash\necho hi\n"), None);
        assert_eq!(Arch::of_executable(&elf(62)[..10]), None);
    }
}
