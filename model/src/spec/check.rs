//! A study record read back from the store, checked before anything acts on it.
//!
//! The store is not trusted as much as the study file: anything with write access to
//! the table (a worker's role, a person with the console) can rewrite a record. The
//! checks are the study file's limits, applied to the parsed form, plus the shape of
//! every value that later becomes a command-line word, a path or an AWS parameter.

use super::MAX_ATTEMPTS_LIMIT;
use crate::StudyRecord;
use crate::{valid_ident, valid_study_name};

/// What is wrong with a record, if anything: the first problem found.
pub fn check_record(rec: &StudyRecord) -> Result<(), String> {
    let s = &rec.spec;
    let fail = |what: String| Err(format!("study record `{}`: {what}", rec.name));
    if !valid_study_name(&rec.name) || s.name != rec.name {
        return fail(format!(
            "names `{}`, not a valid study name of its own",
            s.name
        ));
    }
    if s.objective.metric.trim().is_empty() {
        return fail("objective.metric is empty".into());
    }
    if s.parallel == 0 || s.replicates == 0 || s.trials == 0 {
        return fail("parallel, replicates and trials must be at least 1".into());
    }
    if let Some(k) = s.params.keys().find(|k| !valid_ident(k)) {
        return fail(format!("parameter name `{k}`"));
    }
    check_run(s).or_else(fail)?;
    if let Some(d) = s
        .datasets
        .iter()
        .find(|d| !valid_study_name(&d.name.replace(['{', '}'], "")))
    {
        return fail(format!("dataset name `{}`", d.name));
    }
    if let Some(aws) = &s.aws {
        check_aws(aws).or_else(fail)?;
    }
    if let Some(d) = &rec.drive {
        d.check()
            .or_else(|(setting, why)| fail(format!("drive {setting}: {why}")))?;
    }
    Ok(())
}

fn check_run(s: &super::Study) -> Result<(), String> {
    let run = &s.run;
    if run.script.trim().is_empty() {
        return Err("run.script is empty".into());
    }
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&run.max_attempts)
        || run.max_preemptions > MAX_ATTEMPTS_LIMIT
    {
        return Err("run.max_attempts or run.max_preemptions out of range".into());
    }
    let plain = |f: &String| {
        !f.is_empty()
            && !f.starts_with('/')
            && f.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
    };
    if let Some(f) = run.files.iter().find(|f| !plain(f)) {
        return Err(format!("run.files `{f}` leaves the study's directory"));
    }
    if let Some(k) = run
        .env
        .keys()
        .find(|k| !valid_ident(k) || k.starts_with("AUGUR_"))
    {
        return Err(format!("run.env `{k}`"));
    }
    for (k, v) in &run.secrets {
        if !valid_ident(k) || k.starts_with("AUGUR_") || run.env.contains_key(k) {
            return Err(format!("run.secrets `{k}`"));
        }
        crate::secret::SecretRef::parse(v).map_err(|e| format!("run.secrets.{k}: {e}"))?;
    }
    Ok(())
}

/// Names AWS gives its things: they become request parameters and boot-script words.
fn check_aws(aws: &super::AwsSpec) -> Result<(), String> {
    let word = |v: &str, extra: &[char]| {
        !v.is_empty()
            && v.len() <= 128
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c))
    };
    let types = aws.instance_type.iter().chain(&aws.fallback_instance_types);
    if let Some(t) = types.into_iter().find(|t| !word(t, &['.'])) {
        return Err(format!("aws instance type `{t}`"));
    }
    if let Some(i) = aws.image.as_deref().filter(|i| {
        !word(
            i.strip_prefix("resolve:ssm:").unwrap_or(i),
            &['/', '.', '_'],
        )
    }) {
        return Err(format!("aws.image `{i}`"));
    }
    if let Some(r) = aws.region.as_deref().filter(|r| !word(r, &[])) {
        return Err(format!("aws.region `{r}`"));
    }
    if let Some(n) = aws.subnet.as_deref().filter(|n| !word(n, &[])) {
        return Err(format!("aws.subnet `{n}`"));
    }
    if let Some(n) = aws.subnets.iter().find(|n| !word(n, &[])) {
        return Err(format!("aws.subnets `{n}`"));
    }
    if aws.disk_gb.is_some_and(|d| !(1..=16384).contains(&d)) {
        return Err("aws.disk_gb out of range".into());
    }
    if aws.imds_hop_limit.is_some_and(|h| !(1..=64).contains(&h)) {
        return Err("aws.imds_hop_limit out of range".into());
    }
    if aws.keep_days.is_some_and(|d| !(1..=3653).contains(&d)) {
        return Err("aws.keep_days out of range".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DriveSettings, Study, StudyRecord, StudyState};
    use std::path::Path;

    fn record() -> StudyRecord {
        let spec = Study::parse(
            "name='s'\nobjective={metric='m'}\ntrials=4\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='true'\nfiles=['train.py']\nenv={K='v'}\n[aws]\ninstance_type='t3.micro'\nimage='resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64'\nregion='eu-west-1'\nsubnet='subnet-0abc'\n",
            "s.toml",
            Path::new("."),
        )
        .expect("study");
        StudyRecord {
            name: "s".into(),
            spec,
            state: StudyState::Active,
            created_ms: 1,
            updated_ms: 1,
            drive: Some(DriveSettings::cloud()),
            bounds: Default::default(),
            reason: None,
        }
    }

    #[test]
    fn a_record_as_augur_writes_it_passes() {
        assert_eq!(check_record(&record()), Ok(()));
    }

    #[test]
    fn tampered_records_are_refused_naming_the_field() {
        type Tamper = fn(&mut StudyRecord);
        let cases: Vec<(&str, Tamper)> = vec![
            ("names `other`", |r| r.spec.name = "other".into()),
            ("parallel", |r| r.spec.parallel = 0),
            ("max_attempts", |r| r.spec.run.max_attempts = 0),
            ("leaves", |r| {
                r.spec.run.files = vec!["../../etc/passwd".into()]
            }),
            ("run.env", |r| {
                r.spec.run.env.insert("AUGUR_STUDY".into(), "x".into());
            }),
            ("instance type", |r| {
                r.spec.aws.as_mut().expect("aws").instance_type = Some("x'; reboot".into())
            }),
            ("aws.image", |r| {
                r.spec.aws.as_mut().expect("aws").image = Some("ami-1 --user-data".into())
            }),
            ("run.secrets.TOKEN", |r| {
                r.spec
                    .run
                    .secrets
                    .insert("TOKEN".into(), "ssm:/a;reboot".into());
            }),
            ("aws.imds_hop_limit", |r| {
                r.spec.aws.as_mut().expect("aws").imds_hop_limit = Some(65)
            }),
            ("aws.region", |r| {
                r.spec.aws.as_mut().expect("aws").region = Some("us-east-1\nreboot".into())
            }),
            ("drive heartbeat", |r| {
                r.drive.as_mut().expect("drive").heartbeat_ms = 0
            }),
            ("parameter name", |r| {
                let x = r.spec.params.remove("x").expect("x");
                r.spec.params.insert("a b".into(), x);
            }),
        ];
        for (needle, tamper) in cases {
            let mut r = record();
            tamper(&mut r);
            let e = check_record(&r).expect_err(needle);
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
