//! DynamoDB's errors read as its API documents them, played by the fault proxy's
//! stand-in in front of the emulator (which never cancels a transaction for
//! anything but a failed condition, and never leaves a batch's items unprocessed).

use augur_aws::backoff::Backoff;
use augur_aws::{sdk_config, AwsOptions, DynamoStore};
use augur_model::{Params, Trial};
use augur_store::{StoreError, TrialStore};
use augur_tests::emulator::Emulator;
use augur_tests::faults::{Fault, FaultProxy, Rule};
use std::time::Duration;

/// A store on a table of its own, through a fault proxy in front of the emulator.
async fn store_behind_proxy(emu: &Emulator, table: &str) -> (DynamoStore, FaultProxy) {
    let proxy = FaultProxy::start(&emu.endpoint);
    let opts = AwsOptions {
        endpoint: Some(proxy.endpoint.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        deadline: Duration::from_secs(20),
        ..AwsOptions::default()
    };
    let store = DynamoStore::new(augur_aws::dynamodb(&sdk_config(&opts).await), table);
    store.ensure_table().await.expect("table");
    (store, proxy)
}

fn trial(study: &str, replicate: u32) -> Trial {
    Trial::new(study, 0, 0, replicate, Params::new(), 0)
}

/// Only a failed condition reads as "already there"; a transaction cancelled for
/// a conflict or throttling is unavailable (retried by the caller), and one
/// cancelled for a validation error is refused for good, naming the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transaction_is_read_by_its_reasons() {
    let emu = Emulator::start();
    let (store, proxy) = store_behind_proxy(&emu, "augur-cancel").await;
    let rec = augur_store::conformance::record("s");
    store.create_study(&rec).await.expect("study");
    // The emulator's own cancellation (the study exists): the one recorded.
    assert_eq!(store.create_study(&rec).await.expect("again").name, "s");

    let study_throttled = augur_store::conformance::record("s2");
    proxy.add(
        Rule::new(
            "dynamodb",
            "TransactWriteItems",
            Fault::Cancel("ThrottlingError"),
        )
        .first(1),
    );
    let e = store
        .create_study(&study_throttled)
        .await
        .expect_err("throttled");
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("ThrottlingError"), "{e}");
    store
        .create_study(&study_throttled)
        .await
        .expect("then made");
    assert!(store.get_study("s2").await.expect("read").is_some());

    let (first, made) = store.create_trial(&trial("s", 0)).await.expect("trial");
    assert!(made);
    for reason in ["TransactionConflict", "ProvisionedThroughputExceeded"] {
        proxy.add(Rule::new("dynamodb", "TransactWriteItems", Fault::Cancel(reason)).first(1));
        let e = store.create_trial(&trial("s", 1)).await.expect_err(reason);
        assert!(matches!(e, StoreError::Unavailable(_)), "{reason}: {e}");
        assert!(e.to_string().contains(reason), "{e}");
    }

    proxy.add(
        Rule::new(
            "dynamodb",
            "TransactWriteItems",
            Fault::Cancel("ValidationError"),
        )
        .first(1),
    );
    let e = store
        .create_trial(&trial("s", 1))
        .await
        .expect_err("refused");
    match &e {
        StoreError::Refused { item, reason } => {
            assert!(item.starts_with("trial s/"), "names the item: {e}");
            assert!(reason.contains("ValidationError"), "{e}");
        }
        other => panic!("a validation error is refused for good: {other}"),
    }
    assert!(!e.is_retryable());

    // A failed condition (another writer made the slot first, as far as this
    // writer can tell) is read as a conflict: the slot is read again and, as
    // nothing is there, made under the next id.
    proxy.add(
        Rule::new(
            "dynamodb",
            "TransactWriteItems",
            Fault::Cancel("ConditionalCheckFailed"),
        )
        .first(1),
    );
    let (t, made) = store.create_trial(&trial("s", 1)).await.expect("made");
    assert!(made);
    let used = proxy.count("dynamodb", "TransactWriteItems");
    eprintln!(
        "ids: first {}, then {}; {used} transactions",
        first.id, t.id
    );
    assert!(t.id > first.id + 1, "the cancelled tries' ids stay unused");
    let listed = store.list_trials("s").await.expect("list");
    assert_eq!(
        listed.len(),
        2,
        "no trial written by a cancelled transaction"
    );
}

/// Unprocessed batch items are asked again after waits that grow (capped, with
/// full jitter), a bounded number of times, then the store is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_batch_items_back_off_then_give_up() {
    let emu = Emulator::start();
    let (mut store, proxy) = store_behind_proxy(&emu, "augur-unprocessed").await;
    store.batch_backoff = Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(160),
        tries: 6,
    };
    for name in ["a", "b", "c"] {
        store
            .create_study(&augur_store::conformance::record(name))
            .await
            .expect("study");
        store.create_trial(&trial(name, 0)).await.expect("trial");
    }
    // A listing reads the studies in one BatchGetItem.
    let batch_gets = || proxy.count("dynamodb", "BatchGetItem");
    let before = batch_gets();
    proxy.add(Rule::new("dynamodb", "BatchGetItem", Fault::Unprocessed).first(2));
    assert_eq!(store.list_studies().await.expect("listed").len(), 3);
    assert_eq!(batch_gets() - before, 3, "asked twice more");

    let before = batch_gets();
    proxy.add(Rule::new("dynamodb", "BatchGetItem", Fault::Unprocessed));
    let e = store.list_studies().await.expect_err("gives up");
    assert!(
        e.is_retryable() && e.to_string().contains("after 6 tries"),
        "{e}"
    );
    assert_eq!(batch_gets() - before, 6);
    proxy.clear();

    // Deleting a study: BatchWriteItem, the same way.
    proxy.add(Rule::new("dynamodb", "BatchWriteItem", Fault::Unprocessed).first(3));
    assert!(store.delete_study("a").await.expect("deleted"));
    assert!(store.get_study("a").await.expect("read").is_none());
    let before = proxy.count("dynamodb", "BatchWriteItem");
    proxy.add(Rule::new("dynamodb", "BatchWriteItem", Fault::Unprocessed));
    let e = store.delete_study("b").await.expect_err("gives up");
    assert!(
        e.is_retryable() && e.to_string().contains("after 6 tries"),
        "{e}"
    );
    let calls: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "BatchWriteItem")
        .skip(before)
        .collect();
    assert_eq!(calls.len(), 6);
    // Each wait is below its ceiling (20, 40, 80, 160, 160 ms; the calls
    // themselves take some ms on this machine).
    let gaps: Vec<u128> = calls
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_millis())
        .collect();
    eprintln!("waits between tries (ms): {gaps:?}");
    for (i, g) in gaps.iter().enumerate() {
        let ceiling = store.batch_backoff.ceiling(i as u32 + 1).as_millis();
        assert!(*g <= ceiling + 250, "try {}: {g} ms", i + 2);
    }
}

/// DynamoDB's throttling, counted by operation on `/metrics`: a throttling error
/// (retried by the SDK) and a transaction cancelled for `ThrottlingError` (retried
/// by the driver) while `augur run --serve` creates its trial.
#[test]
fn throttling_is_counted_by_operation_on_metrics() {
    use augur_tests::cloud::{World, RUN};
    use augur_tests::{http_get, server_addr, wait_for};
    let mut w = World::new();
    let started = w.sb.path().join("started");
    let go = w.sb.path().join("go");
    w.sb.write(
        "s.toml",
        &format!(
            r#"
name = "throttled"
objective = {{ metric = "loss" }}
trials = 1
[run]
script = '''
touch {started}
while [ ! -e {go} ]; do sleep 0.1; done
echo "METRICS: loss=1"
'''
[aws]
image = "ami-12345678"
"#,
            started = started.display(),
            go = go.display()
        ),
    );
    w.init();
    w.start_hypervisor();
    // The trial's creation: throttled once, then cancelled for throttling once.
    let creating = |f| {
        Rule::new("dynamodb", "TransactWriteItems", f)
            .when("slot#")
            .first(1)
    };
    w.proxy.add(creating(Fault::Throttle));
    w.proxy.add(creating(Fault::Cancel("ThrottlingError")));
    let args = [&["run", "s.toml", "--serve", "127.0.0.1:0"][..], &RUN].concat();
    let mut run = w.spawn(&args);
    let addr = server_addr(&mut run);
    wait_for(Duration::from_secs(90), "the script started", || {
        started.exists().then_some(())
    });
    let (_, _, metrics) = http_get(&addr, "/metrics");
    std::fs::write(&go, "").expect("go");
    let status = augur_tests::wait_exit(&mut run, Duration::from_secs(90));
    let line = "augur_aws_throttled_total{service=\"dynamodb\",operation=\"TransactWriteItems\"}";
    let n: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} in {metrics}"));
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("augur_aws_throttled"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(n, 2, "{metrics}");
    assert!(status.success(), "the run succeeded: {status}");
}
