//! Agents that never go silent: slow uploads beside the heartbeat, and the store's
//! bad minutes ridden out, on the AWS path (the emulator behind the fault proxy,
//! EC2 played by the stand-in and the fake hypervisor, IAM enforced).

use augur_tests::cloud::World;
use augur_tests::faults::{Fault, Rule};
use augur_tests::{ok, text, wait_exit, wait_for};
use serde_json::Value;
use std::time::Duration;

/// Ends the throttling for everything but the agents on instances (they stay
/// throttled until the test says): when.
fn lift_for_drivers(w: &World) -> std::time::Instant {
    let at = std::time::Instant::now();
    w.proxy.clear();
    w.proxy
        .add(Rule::new("dynamodb", "*", Fault::Throttle).workers(true));
    at
}

/// Writes `s.toml`: a study of two trials at once whose scripts wait until the
/// file at the returned path exists, then report `m`.
fn waiting_study(w: &World, name: &str) -> std::path::PathBuf {
    let go = w.sb.path().join("go");
    w.sb.write(
        "s.toml",
        &format!(
            r#"name = "{name}"
objective = {{ metric = "m" }}
trials = 2
parallel = 2
[run]
max_attempts = 1
env = {{ GO = "{}" }}
script = 'while [ ! -e "$GO" ]; do sleep 0.5; done; echo "METRICS: m=1"'
[aws]
image = "ami-12345678"
"#,
            go.display()
        ),
    );
    go
}

/// Waits until `n` trials of `study` run (their instances boot in the stand-in).
fn wait_running(w: &World, study: &str, n: usize) {
    wait_for(Duration::from_secs(600), "the trials to run", || {
        let t = trials(w, study)?;
        (t.iter().filter(|t| t["state"] == "running").count() == n).then_some(())
    });
}

/// The study's trials, as `augur trials --json` gives them.
fn trials(w: &World, study: &str) -> Option<Vec<Value>> {
    let out = w.augur(&["trials", study, "--json"]);
    match serde_json::from_slice(&out.stdout).ok()? {
        Value::Array(a) if out.status.success() => Some(a),
        _ => None,
    }
}

/// A large checkpoint on a slow link: every upload of the 1 MiB file under
/// `checkpoints/` takes 40 s, with heartbeats due every 2 s and a 20 s lease.
/// Attempt 1 saves three generations of its checkpoint over 30 s and fails (exit
/// 1, retryable); attempt 2 must find the last generation whole. No attempt is lost:
/// the uploads go on beside the heartbeat (which beats all through each upload),
/// the last sync is waited for before the final write, and the manifest written
/// last means a restore never mixes two generations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_checkpoint_uploads_lose_no_attempt_and_restore_whole() {
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        r#"name = "slow"
objective = { metric = "m", goal = "maximize" }
trials = 1
[run]
max_attempts = 2
retry_on_failure = true
script = '''
ck="$AUGUR_CHECKPOINT_DIR"
if [ "$AUGUR_ATTEMPT" = 1 ]; then
  for g in 1 2 3; do
    head -c 1048576 /dev/zero | tr '\0' "$g" > "$ck/big.new" && mv "$ck/big.new" "$ck/big"
    echo "$g" > "$ck/gen"
    echo "METRICS: step=$g"
    sleep 10
  done
  exit 1
fi
g=$(cat "$ck/gen"); size=$(wc -c < "$ck/big"); other=$(tr -d "$g" < "$ck/big" | wc -c)
echo "restored generation $g: $size bytes, $other of another generation"
[ "$size" = 1048576 ] && [ "$other" = 0 ] || exit 3
echo "METRICS: m=$g"
'''
[aws]
image = "ami-12345678"
"#,
    );
    w.init();
    w.start_hypervisor();
    w.proxy.add(
        Rule::new("s3", "PUT", Fault::Latency(Duration::from_secs(40)))
            .on_path("/checkpoints/slow/1/augur-data/")
            .on_path("/big"),
    );
    let out = w.augur(&[
        "run",
        "s.toml",
        "--heartbeat",
        "2s",
        "--heartbeat-timeout",
        "20s",
        "--backoff-base",
        "100ms",
    ]);
    let logs = text(&w.augur(&["logs", "slow"]).stdout);
    eprintln!("{logs}");
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        !err.contains("no heartbeat") && !err.contains("lost"),
        "no attempt was lost: {err}"
    );
    let t: Value =
        serde_json::from_slice(&w.augur(&["show", "slow/1", "--json"]).stdout).expect("json");
    assert_eq!(
        (t["state"].as_str(), t["attempt"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{t}"
    );
    // The last generation, whole: attempt 1's last sync was waited for.
    assert_eq!(t["metrics"]["m"], 3.0, "{t}");
    // Heartbeats went on through every slow upload.
    let calls = w.proxy.calls();
    let slow: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c.fault, Some(Fault::Latency(_))))
        .collect();
    assert!(slow.len() >= 2, "{} slow uploads", slow.len());
    for up in &slow {
        let beats = calls
            .iter()
            .filter(|c| c.service == "dynamodb" && c.session.is_some())
            .filter(|c| c.at > up.at && c.at < up.at + Duration::from_secs(38))
            .count();
        assert!(
            beats >= 8,
            "{beats} worker store calls during a 40 s upload"
        );
    }
    assert!(
        logs.contains("restored generation 3: 1048576 bytes, 0 of another generation"),
        "{logs}"
    );
}

/// DynamoDB answers nothing but throttling errors for 3 minutes while two trials
/// run (2 s heartbeats, a 20 s lease): no running trial is lost. The agents back
/// off and go on (their give-up horizon is 15 minutes, not the lease), and the
/// driver, which could not read the store either, gives them a lease from when it
/// could again before it counts a heartbeat missing. The outage ends for the driver
/// first: it reads heartbeats 3 minutes old before any agent can beat again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_minutes_of_throttling_lose_no_running_trial() {
    let mut w = World::new();
    let go = waiting_study(&w, "throttled");
    w.init();
    w.start_hypervisor();
    let mut run = w.spawn(&[
        "run",
        "s.toml",
        "--heartbeat",
        "2s",
        "--heartbeat-timeout",
        "20s",
        "--backoff-base",
        "100ms",
        "--backend-deadline",
        "10m",
    ]);
    // Read as it comes: a driver retrying for minutes says so at every retry.
    let (mut stdout, mut stderr) = (run.stdout.take(), run.stderr.take());
    let said = std::thread::spawn(move || {
        use std::io::Read;
        let mut all = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut all);
        }
        all
    });
    let _drain = std::thread::spawn(move || {
        if let Some(o) = stdout.as_mut() {
            let _ = std::io::copy(o, &mut std::io::sink());
        }
    });
    wait_running(&w, "throttled", 2);
    w.proxy.add(Rule::new("dynamodb", "*", Fault::Throttle));
    // The outage itself lasts 3 minutes (what is tested, not a wait for an event).
    std::thread::sleep(Duration::from_secs(180));
    let throttled = w
        .proxy
        .calls()
        .iter()
        .filter(|c| c.fault == Some(Fault::Throttle))
        .count();
    // Drivers first: the driver reads the store while no agent could beat yet.
    let lifted = lift_for_drivers(&w);
    wait_for(
        Duration::from_secs(300),
        "a driver's call to go through",
        || {
            w.proxy
                .calls()
                .iter()
                .any(|c| {
                    c.service == "dynamodb"
                        && c.session.is_none()
                        && c.fault.is_none()
                        && c.at > lifted
                })
                .then_some(())
        },
    );
    // Its pass decides on what it read (a few local steps after its reads).
    std::thread::sleep(Duration::from_secs(3));
    w.proxy.clear();
    std::fs::write(&go, "").expect("go");
    let status = wait_exit(&mut run, Duration::from_secs(900));
    let err = said.join().expect("stderr");
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(throttled > 50, "{throttled} calls throttled");
    for t in trials(&w, "throttled").expect("trials") {
        assert_eq!(
            (t["state"].as_str(), t["attempt"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{t}"
        );
    }
    assert!(
        !err.contains("no heartbeat") && !err.contains("lost"),
        "no trial was lost: {err}"
    );
}

/// The same 3 minutes under the serverless control plane: `augur submit`, then
/// nothing but `augur tick` runs, each a fresh process (as Lambda invocations are),
/// one after another; those during the throttling fail. The first tick that reads
/// the store again has no memory of the failures, but the study's lease record
/// tells it the chain of drivers was broken (`Lease::since`): the running trials get
/// a lease from then, beat again, and none is lost. The outage ends for the ticks
/// first: a whole tick reads heartbeats 3 minutes old before any agent can beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_minutes_of_throttling_under_ticks_lose_no_running_trial() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut w = World::new();
    let go = waiting_study(&w, "ticked");
    w.init();
    w.start_hypervisor();
    ok(&w.augur(&[
        "submit",
        "s.toml",
        "--heartbeat",
        "2s",
        "--heartbeat-timeout",
        "20s",
    ]));
    let w = Arc::new(w);
    let stop = Arc::new(AtomicBool::new(false));
    let said = Arc::new(Mutex::new(String::new()));
    // When each tick started, and whether it passed.
    let ran = Arc::new(Mutex::new(Vec::<(std::time::Instant, bool)>::new()));
    let ticks = {
        let (w, stop, said, ran) = (w.clone(), stop.clone(), said.clone(), ran.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let at = std::time::Instant::now();
                let out = w.augur(&["tick", "--limit", "5s"]);
                if let Ok(mut s) = said.lock() {
                    s.push_str(&text(&out.stderr));
                }
                if let Ok(mut r) = ran.lock() {
                    r.push((at, out.status.success()));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    wait_running(&w, "ticked", 2);
    w.proxy.add(Rule::new("dynamodb", "*", Fault::Throttle));
    // The outage itself lasts 3 minutes (what is tested, not a wait for an event).
    std::thread::sleep(Duration::from_secs(180));
    // Drivers first: a whole tick reads the store and decides while no agent could
    // beat yet.
    let lifted = lift_for_drivers(&w);
    wait_for(
        Duration::from_secs(300),
        "a tick to pass after the outage",
        || {
            let ran = ran.lock().ok()?;
            ran.iter().any(|(at, ok)| *ok && *at > lifted).then_some(())
        },
    );
    w.proxy.clear();
    std::fs::write(&go, "").expect("go");
    let all = wait_for(Duration::from_secs(600), "the study to end", || {
        let t = trials(&w, "ticked")?;
        t.iter()
            .all(|t| {
                matches!(
                    t["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            })
            .then_some(t)
    });
    stop.store(true, Ordering::SeqCst);
    ticks.join().expect("ticks");
    let said = said.lock().map(|s| s.clone()).unwrap_or_default();
    for t in &all {
        assert_eq!(
            (t["state"].as_str(), t["attempt"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{t}\n{said}"
        );
    }
    assert!(
        !said.contains("no heartbeat") && !said.contains("lost"),
        "no trial was lost: {said}"
    );
}
