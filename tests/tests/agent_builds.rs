//! Agent builds live in the bucket under keys named by their SHA-256
//! (`agent/<sha256>/augur-agent`, `augur_aws::instance::Arch::agent_key`), and each
//! instance fetches the build its launch pinned. A deploy uploads the new build
//! before the stack's pin moves to it (`infra/deploy.sh`), so a build a launch has
//! pinned is never replaced under it: a redeploy with a new agent in the middle of
//! a running study refuses no launch. (Before, the one key `agent/augur-agent` was
//! overwritten, and an instance that booted after the upload fetched the new build
//! against its launch's old pin and was refused: `tests/tests/ec2.rs`,
//! `an_agent_that_is_not_the_pinned_one_never_runs`, shows that refusal.)

use augur_tests::cloud::World;
use augur_tests::{ok, text};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

fn trials(w: &World, study: &str) -> Vec<Value> {
    let out = w.augur(&["trials", study, "--json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("trials json")
}

/// One tick, as the stack's tick with the agent pin `pin`.
fn tick(w: &World, pin: &str) {
    let out = w
        .command(&["tick", "--limit", "20s"])
        .env("AUGUR_AGENT_SHA256", pin)
        .output()
        .expect("augur tick");
    ok(&out);
}

/// A study driven by ticks: its first trial is launched pinned to build A and has
/// not booted yet when a redeploy uploads build B (the same agent with bytes
/// added: another SHA-256) and moves the tick's pin to it. Then instances boot: the
/// first fetches A under A's key, the second trial is launched pinned to B and
/// fetches B. Both succeed at their first attempt; nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_with_a_new_agent_during_a_study_refuses_no_launch() {
    let mut w = World::new();
    w.init();
    let pin_a = augur_tests::agent_sha256().to_string();
    let b = w.sb.path().join("augur-agent-b");
    let mut bytes = std::fs::read(augur_tests::bin_dir().join("augur-agent")).expect("agent");
    bytes.extend_from_slice(b"\nbuild B\n");
    std::fs::write(&b, &bytes).expect("write");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pin_b = augur_tests::sha256_of(&b);
    assert_ne!(pin_a, pin_b);
    w.sb.write(
        "s.toml",
        "name = \"mid\"\nobjective = { metric = \"v\" }\noracle = \"grid\"\nparallel = 1\n[params]\nx = { values = [1, 2] }\n[run]\nmax_attempts = 1\nscript = 'echo \"METRICS: v=$AUGUR_PARAM_X\"'\n[aws]\nimage = \"ami-12345678\"\n",
    );
    ok(&w.augur(&["submit", "s.toml"]));
    tick(&w, &pin_a);
    let first = trials(&w, "mid");
    assert_eq!(
        first[0]["state"], "starting",
        "launched, not booted: {first:?}"
    );
    // The redeploy: build B uploaded (as the deployer, under its own key), then
    // the pin moved.
    let out = w.init_tables(std::slice::from_ref(&b));
    ok(&out);
    let key = augur_aws::instance::Arch::X86_64.agent_key(&pin_b);
    assert!(
        text(&out.stderr).contains(&format!("to s3://augur-e2e/{key}\n")),
        "{}",
        text(&out.stderr)
    );
    w.start_hypervisor();
    let mut done = false;
    for _ in 0..40 {
        tick(&w, &pin_b);
        let ts = trials(&w, "mid");
        if ts.len() == 2 && ts.iter().all(|t| t["state"] == "succeeded") {
            done = true;
            break;
        }
        assert!(
            ts.iter().all(|t| t["state"] != "failed"),
            "a launch was refused: {ts:?}"
        );
    }
    let ts = trials(&w, "mid");
    assert!(done, "{ts:?}");
    for t in &ts {
        assert_eq!(t["attempt"], 1, "{t}");
    }
    // Both builds are in the bucket, each under its own key.
    let listed = w.aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "augur-e2e",
        "--prefix",
        "agent/",
    ]);
    let keys: Vec<&str> = listed["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["Key"].as_str())
        .collect();
    for pin in [&pin_a, &pin_b] {
        assert!(
            keys.contains(&format!("agent/{pin}/augur-agent").as_str()),
            "{keys:?}"
        );
    }
}
