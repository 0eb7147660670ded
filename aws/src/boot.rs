//! A worker instance's boot script (its user-data, run as root by cloud-init).
//!
//! It schedules the power-off at the attempt's hard limit, fetches the agent build
//! the launch pinned from S3 (its key names its SHA-256:
//! [`crate::instance::Arch::agent_key`]), checks it against that SHA-256, runs it, and powers off. An
//! agent that is not the pinned one is never run: the script writes the refusal into
//! the attempt's trial item ([`REFUSAL`], read back by the DynamoDB store as the
//! attempt failing with that reason) and powers off.
//!
//! Every value from a record or a setting is one single-quoted shell word
//! ([`sh_quote`]), and the comment line carries JSON: no name, region or bucket can
//! end a line or a word early. User-data is readable on the instance, so it carries
//! names and settings only; credentials come from the instance role.

/// The trial item's attribute a boot script writes when it refuses the agent.
pub const REFUSAL: &str = "boot_refusal";

/// `s` as one word of bash, whatever it holds: single-quoted, with each `'` closed,
/// escaped and reopened.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Whether `s` is a SHA-256 as `sha256sum` prints it (64 lower-case hex digits).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One agent a boot script runs: its words, and the GPUs it and its scripts see.
pub struct AgentRun {
    pub args: Vec<String>,
    /// `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES` (`0,1`), in the PCI bus
    /// order `nvidia-smi` lists; `None`: whatever the image gives.
    pub gpus: Option<String>,
}

impl AgentRun {
    /// The command that runs it (the agent fetched and checked).
    fn command(&self) -> String {
        let env = self.gpus.as_deref().map(sh_quote).map(|g| {
            format!(
                "CUDA_VISIBLE_DEVICES={g} NVIDIA_VISIBLE_DEVICES={g} CUDA_DEVICE_ORDER=PCI_BUS_ID "
            )
        });
        let words: Vec<String> = self.args.iter().map(|a| sh_quote(a)).collect();
        format!(
            "{}/usr/local/bin/augur-agent {}",
            env.unwrap_or_default(),
            words.join(" ")
        )
    }
}

/// What one attempt's boot script is made of.
pub struct BootScript<'a> {
    pub study: &'a str,
    pub trial: u64,
    pub attempt: u32,
    /// Minutes until the instance powers itself off whatever happens.
    pub life_min: u64,
    pub region: &'a str,
    pub bucket: &'a str,
    pub table: &'a str,
    /// The instance's architecture: which agent build it fetches.
    pub arch: crate::instance::Arch,
    /// The SHA-256 the agent must have ([`is_sha256`]).
    pub agent_sha256: &'a str,
    /// The agents it runs: one, or one per slot of an instance whose GPUs
    /// several attempts share (all at once; the power-off waits for the last).
    pub agents: &'a [AgentRun],
}

impl BootScript<'_> {
    pub fn render(&self) -> String {
        // Slots: each agent re-arms the power-off no earlier than any slot's
        // attempt needs (the agent's `poweroff.SLOT` files); slot 0's first is here.
        let (agents, limit) = match self.agents {
            [one] => (one.command(), String::new()),
            many => {
                let each: Vec<String> = many.iter().map(|a| a.command() + " &").collect();
                let limit = format!(
                    "echo \"$(( $(date +%s%3N) + {} * 60000 ))\" > /var/lib/augur/poweroff.0\n",
                    self.life_min
                );
                (format!("{{ {} wait; }}", each.join(" ")), limit)
            }
        };
        // Both names: the AWS CLI v1 reads only the second.
        let region = sh_quote(self.region);
        let pin = sh_quote(self.agent_sha256);
        format!(
            "#!/bin/bash\n\
             # augur worker: study {study}, trial {trial}, attempt {attempt}\n\
             set -uo pipefail\n\
             export AWS_REGION={region} AWS_DEFAULT_REGION={region}\n\
             shutdown -h +{life}\n\
             mkdir -p /var/lib/augur\n\
             {limit}\
             {refuse}\
             if aws s3 cp --only-show-errors {source} /usr/local/bin/augur-agent.download; then\n\
             \x20 got=\"$(sha256sum /usr/local/bin/augur-agent.download | cut -c1-64)\"\n\
             \x20 if [ \"$got\" = {pin} ]; then\n\
             \x20   mv /usr/local/bin/augur-agent.download /usr/local/bin/augur-agent && chmod +x /usr/local/bin/augur-agent \
             && {agents}\n\
             \x20 else\n\
             \x20   refuse \"$got\"\n\
             \x20 fi\n\
             fi\n\
             shutdown -h now\n",
            study = serde_json::to_string(self.study).unwrap_or_default(),
            trial = self.trial,
            attempt = self.attempt,
            life = self.life_min,
            refuse = self.refuse_function(),
            source = sh_quote(&format!(
                "s3://{}/{}",
                self.bucket,
                self.arch.agent_key(self.agent_sha256)
            )),
        )
    }

    /// `refuse GOT`: writes the refusal into the attempt's trial item, if the item
    /// is still at this attempt and starting (the store's compare-and-set sees the
    /// `rev` move, and readers of changes see `chg` move). The item is in the trials'
    /// partition; for a study recorded before they had one, the condition fails and
    /// the attempt ends as a failed boot.
    fn refuse_function(&self) -> String {
        let key = serde_json::json!({
            "pk": { "S": crate::dynamo::trial_pk(self.study) },
            "sk": { "S": crate::dynamo::trial_sk(self.trial) },
        });
        // `printf` fills the two `%s`: the SHA-256 found (hex) and the time (ms). No
        // other text here comes from a record or a setting (the pin is checked hex).
        let pin = if is_sha256(self.agent_sha256) {
            self.agent_sha256
        } else {
            "(not a SHA-256)"
        };
        // The key and the setting are augur's own: no `%` in them.
        let why = format!(
            "the agent fetched from the bucket ({}) has SHA-256 %s, not the pinned {pin}: the object under the pin's key is another build. Upload the build again (infra/deploy.sh, or augur init --agent), or pin the one there ([aws] {})",
            self.arch.agent_key(pin),
            self.arch.pin_setting().0,
        );
        // Written out, not built as a map: the order of the two `%s` is printf's.
        let values = format!(
            r#"{{":r":{{"S":{why}}},":c":{{"N":"%s"}},":a":{{"N":"{attempt}"}},":one":{{"N":"1"}},":starting":{{"S":"starting"}}}}"#,
            why = serde_json::Value::from(why),
            attempt = self.attempt,
        );
        format!(
            "refuse() {{\n\
             \x20 aws dynamodb update-item --table-name {table} --key {key} \\\n\
             \x20   --update-expression 'SET {REFUSAL} = :r, chg = :c ADD rev :one' \\\n\
             \x20   --condition-expression 'attempt = :a AND #s = :starting' \\\n\
             \x20   --expression-attribute-names '{{\"#s\":\"state\"}}' \\\n\
             \x20   --expression-attribute-values \"$(printf {values} \"$1\" \"$(date +%s%3N)\")\"\n\
             }}\n",
            table = sh_quote(self.table),
            key = sh_quote(&key.to_string()),
            values = sh_quote(&values),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    /// The agent the stand-in `aws s3 cp` delivers: a script recording its words.
    fn agent_script(out: &Path) -> String {
        format!(
            "#!/bin/bash\nprintf '%s\\0' \"$@\" > {}\n",
            sh_quote(&out.join("agent").display().to_string())
        )
    }

    fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// What a boot script did: the agent's words (if it ran), each `aws` call's
    /// words, and the region the power-off saw.
    struct Ran {
        agent: Option<Vec<String>>,
        aws: Vec<Vec<String>>,
        region: String,
    }

    /// Runs `user_data` under bash, its paths under a temporary directory, with
    /// `aws` and `shutdown` played by functions that record what they were given
    /// (`aws s3 cp` delivers [`agent_script`]).
    fn run_boot_script(out: &Path, user_data: &str) -> Ran {
        run_boot_script_with(out, user_data, &agent_script(out))
    }

    /// [`run_boot_script`], with `agent` as the agent `aws s3 cp` delivers.
    fn run_boot_script_with(out: &Path, user_data: &str, agent: &str) -> Ran {
        let root = out.join("root");
        std::fs::create_dir_all(root.join("usr/local/bin")).expect("mkdir");
        std::fs::write(out.join("agent.src"), agent).expect("agent");
        let stubs = format!(
            "calls=0\n\
             aws() {{ calls=$((calls+1)); printf '%s\\0' \"$@\" > {aws}.$calls; \
             if [ \"$1\" = s3 ]; then cp {src} \"${{@: -1}}\"; fi; }}\n\
             shutdown() {{ printf '%s' \"${{AWS_DEFAULT_REGION-}}\" > {region}; \
             echo \"$* $(ls {out} | grep -c '^gpus[.]')\" >> {out}/shutdowns; }}\n",
            aws = sh_quote(&out.join("aws").display().to_string()),
            src = sh_quote(&out.join("agent.src").display().to_string()),
            region = sh_quote(&out.join("region").display().to_string()),
            out = sh_quote(&out.display().to_string()),
        );
        let rooted = user_data
            .replace(
                "/usr/local/bin/",
                &format!("{}/usr/local/bin/", root.display()),
            )
            .replace(
                "/var/lib/augur",
                &format!("{}/var/lib/augur", root.display()),
            );
        let script = out.join("boot.sh");
        std::fs::write(&script, format!("{stubs}{rooted}")).expect("write");
        let syntax = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .expect("bash -n");
        assert!(
            syntax.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        let run = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("bash");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let words = |f: &Path| -> Option<Vec<String>> {
            let raw = std::fs::read(f).ok()?;
            Some(
                raw.split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8(w.to_vec()).expect("utf-8"))
                    .collect(),
            )
        };
        let aws = (1..)
            .map_while(|n| words(&out.join(format!("aws.{n}"))))
            .collect();
        Ran {
            agent: words(&out.join("agent")),
            aws,
            region: std::fs::read_to_string(out.join("region")).expect("region"),
        }
    }

    fn text() -> impl Strategy<Value = String> {
        // Any text but NUL (no shell word can hold one), shell metacharacters first.
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(vec!['\'', '"', '$', '`', '\\', '\n', ';', '&', '|', ' ', '*', '!', '#', '(', ')', '{', '}', '<', '>', '%']),
                4 => proptest::char::range('a', 'z'),
                1 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            ],
            1..24,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    fn args(study: &str) -> Vec<String> {
        vec!["--study".into(), study.into(), "--trial".into(), "7".into()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever a record holds, the boot script parses, and each value reaches
        /// the agent, `aws` and the environment byte for byte; the agent runs when
        /// it is the pinned one.
        #[test]
        fn boot_script_values_arrive_byte_for_byte(
            study in text(), region in text(), bucket in text(), table in text(),
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let pin = sha256(agent_script(dir.path()).as_bytes());
            let argv = args(&study);
            let script = BootScript {
                study: &study, trial: 7, attempt: 2, life_min: 25, region: &region,
                bucket: &bucket, table: &table, arch: crate::instance::Arch::X86_64, agent_sha256: &pin,
                agents: &[AgentRun { args: argv.clone(), gpus: None }],
            };
            let ran = run_boot_script(dir.path(), &script.render());
            prop_assert_eq!(ran.agent, Some(argv.clone()));
            prop_assert_eq!(ran.aws, vec![vec![
                "s3".to_string(), "cp".into(), "--only-show-errors".into(),
                format!("s3://{bucket}/agent/{pin}/augur-agent"),
                format!("{}/root/usr/local/bin/augur-agent.download", dir.path().display()),
            ]]);
            prop_assert_eq!(ran.region, region);
        }

        /// An agent that is not the pinned one never runs: the refusal, naming both
        /// digests, goes to the attempt's trial item, whatever the names hold.
        #[test]
        fn an_agent_that_is_not_the_pinned_one_is_refused_into_the_record(
            study in text(), table in text(),
        ) {
            let bucket = "b";
            let dir = tempfile::tempdir().expect("tmp");
            let found = sha256(agent_script(dir.path()).as_bytes());
            let pin = "0".repeat(64);
            let argv = args(&study);
            let script = BootScript {
                study: &study, trial: 7, attempt: 2, life_min: 25, region: "us-east-1",
                bucket, table: &table, arch: crate::instance::Arch::Arm64, agent_sha256: &pin,
                agents: &[AgentRun { args: argv.clone(), gpus: None }],
            };
            let ran = run_boot_script(dir.path(), &script.render());
            prop_assert_eq!(ran.agent, None);
            prop_assert_eq!(ran.aws.len(), 2);
            prop_assert_eq!(&ran.aws[0][3], &format!("s3://b/agent/{pin}/augur-agent-arm64"));
            let update = &ran.aws[1];
            prop_assert_eq!(&update[..4], &["dynamodb".to_string(), "update-item".into(), "--table-name".into(), table.clone()][..]);
            let value = |flag: &str| -> serde_json::Value {
                let i = update.iter().position(|w| w == flag).expect(flag);
                serde_json::from_str(&update[i + 1]).expect("json")
            };
            prop_assert_eq!(value("--key"), serde_json::json!({
                "pk": { "S": format!("trials#{study}") }, "sk": { "S": "trial#0000000007" },
            }));
            let values = value("--expression-attribute-values");
            let why = values[":r"]["S"].as_str().expect("reason");
            prop_assert!(why.contains(&format!("SHA-256 {found}, not the pinned {pin}")), "{}", why);
            prop_assert!(why.contains("([aws] agent_sha256_arm64)"), "{}", why);
            prop_assert_eq!(&values[":a"]["N"], "2");
            let at: i64 = values[":c"]["N"].as_str().expect("chg").parse().expect("ms");
            prop_assert!(at > 1_600_000_000_000, "{}", at);
        }
    }

    #[test]
    fn an_instance_shared_by_slots_runs_an_agent_per_slot_on_its_own_gpus() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path();
        // Each agent writes the GPUs it sees to a file named by its slot, after a
        // moment: the power-off must wait for both.
        let agent = format!(
            "#!/bin/bash\nslot=x; prev=; for a in \"$@\"; do [ \"$prev\" = --slot ] && slot=$a; prev=$a; done\nsleep 0.2\nprintf '%s %s' \"$CUDA_VISIBLE_DEVICES\" \"$NVIDIA_VISIBLE_DEVICES\" > {}/gpus.$slot\n",
            sh_quote(&out.display().to_string())
        );
        let run = |slot: u32| AgentRun {
            args: vec!["--slot".into(), slot.to_string()],
            gpus: Some(crate::gpus::slot_gpus(slot, 2)),
        };
        let pin = "a".repeat(64);
        let script = BootScript {
            study: "s",
            trial: 1,
            attempt: 1,
            life_min: 25,
            region: "us-east-1",
            bucket: "b",
            table: "t",
            arch: crate::instance::Arch::X86_64,
            agent_sha256: &pin,
            agents: &[run(0), run(1)],
        };
        let text = script.render().replace(&pin, &sha256(agent.as_bytes()));
        let ran = run_boot_script_with(out, &text, &agent);
        // Powered off after both agents ended, not before: when `shutdown -h now`
        // ran, both had written what they saw.
        let shutdowns = std::fs::read_to_string(out.join("shutdowns")).unwrap_or_default();
        assert_eq!(shutdowns.lines().last(), Some("-h now 2"), "{shutdowns}");
        assert_eq!(ran.region, "us-east-1");
        // Slot 0's first attempt's limit, for the agents re-arming the power-off.
        let limit = std::fs::read_to_string(out.join("root/var/lib/augur/poweroff.0"));
        assert!(limit.is_ok_and(|l| l.trim().parse::<i64>().is_ok()));
        for (slot, gpus) in [(0, "0,1 0,1"), (1, "2,3 2,3")] {
            let seen = std::fs::read_to_string(out.join(format!("gpus.{slot}")));
            assert_eq!(seen.ok().as_deref(), Some(gpus), "slot {slot}");
        }
    }
}
