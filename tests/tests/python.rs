//! examples/python: a small model trained in pure Python with the `augur` package,
//! which the agent puts on the script's PYTHONPATH (nothing installed). The package's
//! METRICS lines reach the records and ASHA prunes on them; each trial's checkpoint
//! holds its last epoch; a study's own PYTHONPATH comes first.

use augur_tests::{ok, text, Sandbox, FAST};
use serde_json::Value;

#[test]
fn the_python_example_trains_reports_prunes_and_checkpoints_with_the_package() {
    let sb = Sandbox::new();
    let study = augur_tests::repo().join("examples/python/study.toml");
    let study = study.to_string_lossy();
    let mut args = vec!["run", &*study, "--trials", "9"];
    args.extend_from_slice(&FAST);
    // The machine's Python must not have a package of the name: the agent's is found.
    let out = sb
        .cmd(&args)
        .env_remove("PYTHONPATH")
        .output()
        .expect("run augur");
    ok(&out);
    let trials = sb.trials("python");
    assert_eq!(trials.len(), 9);
    for t in &trials {
        let state = t["state"].as_str().unwrap_or_default();
        assert!(state == "succeeded" || state == "pruned", "{t}");
        let epoch = t["metrics"]["epoch"].as_f64().expect("epoch reported");
        assert!(
            t["metrics"]["val_loss"]
                .as_f64()
                .is_some_and(f64::is_finite),
            "{t}"
        );
        if state == "succeeded" {
            assert_eq!(epoch, 9.0, "{t}");
        }
        // The checkpoint the script saved is its last reported epoch.
        let id = t["id"].as_u64().expect("id");
        let saved = sb
            .path()
            .join(format!(".augur/checkpoints/python/{id}/state.json"));
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&saved).expect("a checkpoint"))
                .expect("json");
        assert!(saved["epoch"].as_f64() >= Some(epoch), "{saved} vs {t}");
    }
    let pruned = trials.iter().filter(|t| t["state"] == "pruned").count();
    eprintln!("9 trials, {pruned} pruned by ASHA");

    // A study's PYTHONPATH comes first: its own `augur` module would win.
    sb.write(
        "mine/augur.py",
        "def report(**kw):\n    print('METRICS: mine=1')\n",
    );
    sb.write(
        "s.toml",
        &format!(
            "name = \"own\"\nobjective = {{ metric = \"mine\" }}\ntrials = 1\n[run]\nenv = {{ PYTHONPATH = \"{}\" }}\nscript = 'python3 -c \"import augur; augur.report(x=1)\"'\n",
            sb.path().join("mine").display()
        ),
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    ok(&sb.augur(&args));
    let own = sb.trials("own");
    assert_eq!(
        own[0]["metrics"]["mine"],
        1.0,
        "{}",
        text(&sb.augur(&["logs", "own"]).stdout)
    );
}

/// The example's GPU variant for EC2 (examples/python/gpu.toml) is a valid study
/// file whose script and files are the example's: it cannot run here (no GPU, no
/// PyTorch), so it is checked as far as this machine can.
#[test]
fn the_gpu_variant_of_the_python_example_is_a_valid_study() {
    let sb = Sandbox::new();
    let dir = augur_tests::repo().join("examples/python");
    let study = dir.join("gpu.toml");
    let out = sb
        .cmd(&["validate", &*study.to_string_lossy()])
        .output()
        .expect("run augur");
    ok(&out);
    let text = std::fs::read_to_string(&study).expect("gpu.toml");
    for file in ["train.py", "train_torch.py"] {
        assert!(dir.join(file).is_file(), "{file}");
        assert!(text.contains(file), "{file} not in gpu.toml");
    }
    assert!(
        text.contains("gpus = 1") && text.contains("reuse = \"study\""),
        "{text}"
    );
}
