//! What a record keeps of a real script's output, whatever it prints: one attempt
//! run by the agent on the SQLite store.

use augur_agent::{run_attempt, AgentConfig, Ended};
use augur_model::{Expect, Params, StudyRecord, Trial, TrialState, TrialUpdate};
use augur_store::{Layout, SqliteStore, TrialStore};
use std::time::Duration;

/// A store under `dir` holding a study running `script` (objective `m`, with
/// `extra` study lines) and its trial starting at attempt 1, and that attempt's
/// agent configuration.
async fn starting_attempt(
    dir: &std::path::Path,
    script: &str,
    extra: &str,
) -> (SqliteStore, AgentConfig) {
    let mut rec: StudyRecord = augur_store::conformance::record("s");
    rec.spec = augur_model::Study::parse(
        &format!("name='s'\nobjective={{metric='m'}}\ntrials=1\n[run]\nscript='''\n{script}\n'''\n{extra}"),
        "s.toml",
        dir,
    )
    .expect("study");
    let layout = Layout::new(dir.join(".augur"));
    let store = SqliteStore::open(&layout.db()).expect("store");
    store.create_study(&rec).await.expect("study");
    let (t, _) = store
        .create_trial(&Trial::new("s", 0, 0, 0, Params::new(), 1))
        .await
        .expect("trial");
    let starting = TrialUpdate {
        state: Some(TrialState::Starting),
        ..Default::default()
    };
    let pending = Expect::state(TrialState::Pending, 1);
    let w = store.update_trial("s", t.id, &pending, &starting).await;
    assert!(w.is_ok(), "starting: {w:?}");
    let cfg = AgentConfig {
        layout,
        study: "s".into(),
        trial: t.id,
        attempt: 1,
        heartbeat: Duration::from_millis(100),
        machine: "test".into(),
        turn: 1,
        aws: None,
        spot: false,
    };
    (store, cfg)
}

/// 5,000 distinct metric names (one line each, then one line holding them all)
/// leave a record with at most 256, its objective among them, the attempt
/// succeeds, and the log says once what was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_metric_names_leave_a_bounded_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let script = r#"echo "METRICS: m=0"
awk 'BEGIN { for (i = 0; i < 5000; i++) printf "METRICS: name_%d=%d\n", i, i }'
awk 'BEGIN { printf "METRICS: m=2"; for (i = 0; i < 5000; i++) printf ",all_%d=1", i; print "" }'
echo "METRICS: m=1, name_0=7"
echo done"#;
    let (store, cfg) = starting_attempt(dir.path(), script, "").await;
    let ended = run_attempt(&store, &cfg).await.expect("attempt");
    assert_eq!(ended, Ended::Finished(TrialState::Succeeded));
    let t = store
        .get_trial("s", cfg.trial)
        .await
        .expect("read")
        .expect("trial");
    let bound = augur_model::bounded::METRIC_NAMES;
    assert_eq!(t.metrics.len(), bound, "{:?}", t.metrics.keys().last());
    assert_eq!(t.metrics.get("m"), Some(&1.0), "the objective, last value");
    assert_eq!(t.metrics.get("name_0"), Some(&7.0), "a kept name updated");
    for p in &t.series {
        assert!(
            p.values.len() <= bound,
            "{} names in a reading",
            p.values.len()
        );
    }
    let json = serde_json::to_string(&t).expect("json");
    eprintln!(
        "record: {} bytes, {} metrics, {} readings kept",
        json.len(),
        t.metrics.len(),
        t.series.len()
    );
    assert!(json.len() < 100 * 1024, "{} bytes", json.len());
    let note = t.log_tail.last().expect("a tail");
    assert!(
        note.starts_with("augur: 9745 metric names (9745 values) not recorded"),
        "{note}"
    );
    let log = std::fs::read_to_string(cfg.layout.log_file("s", cfg.trial, 1)).expect("log");
    assert_eq!(log.matches("are not recorded").count(), 1, "one warning");
    assert!(
        log.contains("METRICS: name_4999=4999"),
        "the log has every line"
    );
}

/// A multi-line secret printed as the script's lines, and one field of a JSON
/// secret printed alone, are masked in the log, the record's last lines and its
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_secrets_and_fields_of_json_secrets_are_masked() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nq2Vx9rT0kYw3JmPzLb8N\n-----END PRIVATE KEY-----";
    let db = r#"{"user":"ann","password":"hunter2-Zq9","host":"db.internal.example"}"#;
    // SAFETY: no other test of this binary reads or writes these variables, and
    // std's own readers (the script's spawn) take its environment lock.
    unsafe {
        std::env::set_var("TEST_MASK_PEM", pem);
        std::env::set_var("TEST_MASK_DB", db);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let script = r#"echo "key: $TEST_MASK_PEM"
echo "$TEST_MASK_DB" | sed 's/.*"password":"\([^"]*\)".*/pw \1/'
echo "METRICS: m=1"
echo "$TEST_MASK_PEM" | sed -n 2p"#;
    let extra = "secrets={TEST_MASK_PEM='ssm:/t/pem', TEST_MASK_DB='ssm:/t/db'}\n";
    let (store, cfg) = starting_attempt(dir.path(), script, extra).await;
    let ended = run_attempt(&store, &cfg).await.expect("attempt");
    assert_eq!(ended, Ended::Finished(TrialState::Succeeded));
    let t = store
        .get_trial("s", cfg.trial)
        .await
        .expect("read")
        .expect("trial");
    let log = std::fs::read_to_string(cfg.layout.log_file("s", cfg.trial, 1)).expect("log");
    let record = serde_json::to_string(&t).expect("json");
    for leak in [
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
        "q2Vx9rT0kYw3JmPzLb8N",
        "hunter2-Zq9",
        "db.internal.example",
    ] {
        assert!(!log.contains(leak), "{leak} in the log: {log}");
        assert!(!record.contains(leak), "{leak} in the record: {record}");
    }
    assert!(log.contains("out pw ***"), "{log}");
    assert!(log.contains("out key: ***"), "{log}");
    assert_eq!(t.status.as_deref(), Some("***"), "{log}\n{:?}", t.log_tail);
}
