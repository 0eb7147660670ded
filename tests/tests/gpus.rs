//! Whole GPUs for local trials (`run.gpus`): a machine whose `nvidia-smi -L` lists 4
//! GPUs (a stand-in `nvidia-smi` on PATH prints what the real one prints) runs
//! trials of 2 GPUs two at a time, each on GPUs no other running trial holds, named
//! in its script's `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`; a study that
//! asks for more GPUs than the machine has is exit 2 before anything runs.

use augur_tests::{exits, ok, text, Sandbox, FAST};
use std::collections::BTreeSet;

/// A stand-in `nvidia-smi` in `bin/` that lists `n` GPUs as the real `-L` does.
fn nvidia_smi(sb: &Sandbox, n: usize) -> String {
    let lines: String = (0..n)
        .map(|i| {
            format!("GPU {i}: NVIDIA A10G (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)\\n")
        })
        .collect();
    let path = sb.write(
        "bin/nvidia-smi",
        &format!("#!/bin/sh\n[ \"$1\" = -L ] || exit 9\nprintf '{lines}'\n"),
    );
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    let path_var = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path_var}", sb.path().join("bin").display())
}

/// One line of the trials' own log: a trial's start or end, when, and its GPUs.
struct Event {
    trial: u64,
    start: bool,
    at_ns: u128,
    cuda: String,
    nvidia: String,
}

fn events(text: &str) -> Vec<Event> {
    let mut out: Vec<Event> = text
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 5, "{l}");
            Event {
                trial: w[0].parse().expect("trial"),
                start: w[1] == "start",
                at_ns: w[2].parse().expect("time"),
                cuda: w[3].to_string(),
                nvidia: w[4].to_string(),
            }
        })
        .collect();
    out.sort_by_key(|e| (e.at_ns, e.start));
    out
}

/// Warm agents (each keeps its GPUs for the study's next trials), then an agent per
/// attempt (a launch may find the last agent still exiting, holding its GPUs, and
/// waits for it).
#[test]
fn trials_of_two_gpus_run_two_at_a_time_on_disjoint_gpus_of_four() {
    packed("study");
    packed("attempt");
}

fn packed(reuse: &str) {
    let sb = Sandbox::new();
    let path = nvidia_smi(&sb, 4);
    let log = sb.path().join("gpus.log");
    sb.write(
        "s.toml",
        &format!(
            r#"
name = "packed"
objective = {{ metric = "loss" }}
trials = 8
parallel = 4
[params]
x = {{ range = [0.0, 1.0] }}
[run]
gpus = 2
reuse = "{reuse}"
script = '''
echo "$AUGUR_TRIAL start $(date +%s%N) $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES" >> {log}
sleep 0.5
echo "$AUGUR_TRIAL end $(date +%s%N) $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES" >> {log}
echo "METRICS: loss=$AUGUR_PARAM_X"
'''
"#,
            log = log.display()
        ),
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let out = sb
        .cmd(&args)
        .env("PATH", &path)
        .output()
        .expect("run augur");
    ok(&out);
    let said = text(&out.stderr);
    assert!(
        said.contains("parallel 4 lowered to 2: this machine's 4 GPU(s) (0,1,2,3) fit 2 trial(s) of 2 GPU(s) at once"),
        "{said}"
    );
    let events = events(&std::fs::read_to_string(&log).expect("the trials' log"));
    assert_eq!(events.len(), 16, "8 trials, each started and ended once");
    let all: BTreeSet<&str> = ["0", "1", "2", "3"].into();
    let mut running: Vec<(u64, Vec<String>)> = Vec::new();
    let mut most = 0;
    for e in &events {
        assert_eq!(e.cuda, e.nvidia, "trial {}", e.trial);
        let mine: Vec<String> = e.cuda.split(',').map(str::to_string).collect();
        assert_eq!(mine.len(), 2, "trial {} got {}", e.trial, e.cuda);
        assert!(mine.iter().all(|g| all.contains(g.as_str())), "{}", e.cuda);
        assert_ne!(mine[0], mine[1]);
        if e.start {
            for (other, theirs) in &running {
                assert!(
                    mine.iter().all(|g| !theirs.contains(g)),
                    "trial {} started on {} while trial {other} held {}",
                    e.trial,
                    e.cuda,
                    theirs.join(",")
                );
            }
            running.push((e.trial, mine));
            most = most.max(running.len());
        } else {
            running.retain(|(t, _)| *t != e.trial);
        }
    }
    assert!(most <= 2, "at most two trials of 2 GPUs on 4 at once");
    let trials = sb.trials("packed");
    assert_eq!(trials.len(), 8);
    assert!(
        trials.iter().all(|t| t["state"] == "succeeded"),
        "{trials:?}"
    );
    eprintln!("reuse = {reuse}: 8 trials, at most {most} at once, GPU sets disjoint");
}

#[test]
fn a_study_asking_more_gpus_than_the_machine_has_is_refused_before_anything_runs() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name = \"greedy\"\nobjective = { metric = \"loss\" }\ntrials = 2\n[run]\ngpus = 3\nscript = 'echo METRICS: loss=1'\n",
    );
    let out = sb.augur(&["run", "s.toml", "--gpus", "0,1"]);
    exits(&out, 2);
    let said = text(&out.stderr);
    assert!(
        said.contains("study `greedy` asks for 3 GPU(s) a trial (run.gpus), and this machine has 2 (--gpus names: 0,1)"),
        "{said}"
    );
    // With no nvidia-smi and no --gpus, no GPU is known: refused the same way.
    let path = nvidia_smi(&sb, 0);
    let out = sb
        .cmd(&["run", "s.toml"])
        .env("PATH", &path)
        .output()
        .expect("run augur");
    exits(&out, 2);
    assert!(
        text(&out.stderr).contains("this machine has 0"),
        "{}",
        text(&out.stderr)
    );
    let out = sb.augur(&["run", "s.toml", "--gpus", "0,0"]);
    exits(&out, 2);
    assert!(
        text(&out.stderr).contains("GPU 0 is named twice"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&sb.augur(&["studies"]).stdout).contains("greedy"),
        "nothing recorded"
    );
}
