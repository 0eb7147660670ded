//! The GPUs of the instance types a study launches (`DescribeInstanceTypes`, asked
//! once per provider), and how trials of a study that asks for some (`run.gpus`)
//! share an instance's: in slots, each with GPUs of its own.
//!
//! An instance with `G` GPUs kept warm (`run.reuse = "study"`) runs `G / run.gpus`
//! attempts at once (its *slots*: [`slots`]), one agent per slot, slot `k` on GPUs
//! `k·N .. k·N + N - 1` ([`slot_gpus`]); kept for one attempt, an instance runs one,
//! on its first `N` GPUs. Each attempt on a shared instance is billed for its
//! slot's part of it ([`augur_model::cost::Billing::share`]), so the instance's time
//! is shared among the trials that ran on it by GPU-time.

use augur_model::{Reuse, Study};
use augur_store::provider::ProviderError;
use augur_store::Failure;
use aws_sdk_ec2::types::InstanceType;

/// Each instance type a study may launch, in its order, with its GPUs.
pub type GpuCounts = Vec<(String, u32)>;

/// The GPUs of `types`, from `DescribeInstanceTypes` (an instance type's
/// `GpuInfo.Gpus[].Count`, summed; none for a type without GPUs). A type EC2 does not
/// know is [`ProviderError::Rejected`], naming it.
pub async fn describe(
    client: &aws_sdk_ec2::Client,
    types: &[String],
) -> Result<GpuCounts, ProviderError> {
    let asked = types.iter().map(|t| InstanceType::from(t.as_str()));
    let out = client
        .describe_instance_types()
        .set_instance_types(Some(asked.collect()))
        .send()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            use aws_sdk_ec2::error::ProvideErrorMetadata;
            let code = e.as_service_error().and_then(|x| x.code()).unwrap_or("");
            if code == "InvalidInstanceType" {
                let text = crate::error_text(&e);
                return Err(ProviderError::Rejected(Failure::said(format!(
                    "EC2 DescribeInstanceTypes: {text}"
                ))));
            }
            return Err(crate::instance::fail("DescribeInstanceTypes", e));
        }
    };
    let gpus_of = |ty: &str| -> u32 {
        let info = out
            .instance_types()
            .iter()
            .find(|i| i.instance_type().is_some_and(|t| t.as_str() == ty));
        let devices = info.and_then(|i| i.gpu_info()).map(|g| g.gpus());
        let count: i32 = devices
            .into_iter()
            .flatten()
            .filter_map(|d| d.count())
            .sum();
        count.max(0) as u32
    };
    Ok(types.iter().map(|t| (t.clone(), gpus_of(t))).collect())
}

/// How many attempts of `study` one instance runs at once: the fewest GPUs of its
/// types over `run.gpus` (at most `parallel`) where it keeps instances warm, else 1 (and 1 for a study
/// without `run.gpus`). A type with fewer GPUs than `run.gpus` is the error, named.
pub fn slots(study: &Study, counts: &[(String, u32)]) -> Result<u32, String> {
    let each = study.run.gpus;
    if each == 0 {
        return Ok(1);
    }
    if let Some((ty, has)) = counts.iter().find(|(_, has)| *has < each) {
        return Err(format!(
            "study `{}` asks for {each} GPU(s) a trial (run.gpus), and instance type {ty} has {has}",
            study.name
        ));
    }
    let fewest = counts.iter().map(|(_, has)| *has).min().unwrap_or(each);
    // No more slots than trials run at once: a slot never used would be billed.
    Ok(match study.run.reuse {
        Some(Reuse::Study) => (fewest / each).clamp(1, study.parallel.max(1)),
        _ => 1,
    })
}

/// The GPUs of slot `slot` when each has `each`, as `CUDA_VISIBLE_DEVICES` lists
/// them: `2,3` for slot 1 of 2.
pub fn slot_gpus(slot: u32, each: u32) -> String {
    let first = slot * each;
    (first..first + each)
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn study(gpus: u32, reuse: &str) -> Study {
        at_once(gpus, reuse, 8)
    }

    fn at_once(gpus: u32, reuse: &str, parallel: u32) -> Study {
        let text = format!("name='g'\nobjective={{metric='m'}}\ntrials=8\nparallel={parallel}\n[run]\nscript='true'\ngpus={gpus}\n{reuse}");
        Study::parse(&text, "t", Path::new(".")).expect("study")
    }

    #[test]
    fn an_instance_runs_as_many_attempts_as_its_gpus_fit_when_kept_warm() {
        let four = vec![("g5.12xlarge".to_string(), 4)];
        let warm = "reuse='study'";
        assert_eq!(slots(&study(2, warm), &four), Ok(2));
        assert_eq!(slots(&study(3, warm), &four), Ok(1));
        assert_eq!(slots(&study(1, warm), &four), Ok(4));
        // No more slots than trials run at once (a slot never used is billed).
        assert_eq!(slots(&at_once(1, warm, 2), &four), Ok(2));
        assert_eq!(slots(&study(2, "reuse='attempt'"), &four), Ok(1));
        assert_eq!(slots(&study(0, warm), &[]), Ok(1));
        // The fewest GPUs of the types it may launch.
        let mixed = vec![("g5.12xlarge".into(), 4), ("g5.48xlarge".into(), 8)];
        assert_eq!(slots(&study(2, warm), &mixed), Ok(2));
        let two = vec![("g5.12xlarge".into(), 4), ("g3.8xlarge".into(), 2)];
        let err = slots(&study(3, warm), &two).expect_err("3 of 2");
        assert!(
            err.contains("g3.8xlarge has 2") && err.contains("3 GPU(s)"),
            "{err}"
        );
    }

    #[test]
    fn each_slot_has_gpus_of_its_own() {
        assert_eq!(slot_gpus(0, 2), "0,1");
        assert_eq!(slot_gpus(1, 2), "2,3");
        assert_eq!(slot_gpus(3, 1), "3");
    }
}
