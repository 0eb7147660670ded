//! The DynamoDB store against a local emulator (or `AUGUR_TEST_AWS_ENDPOINT`): the
//! same suite the SQLite store passes; and large files to the bucket in parts.

use augur_aws::{sdk_config, AwsOptions, DynamoStore};
use augur_store::TrialStore;
use augur_tests::emulator::Emulator;
use std::sync::Arc;
use std::time::Duration;

/// The SDK's configuration for the emulator, with short retries and `deadline` per
/// call.
async fn emulator_config(emu: &Emulator, deadline: Duration) -> aws_config::SdkConfig {
    let opts = AwsOptions {
        endpoint: Some(emu.endpoint.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        deadline,
        ..AwsOptions::default()
    };
    sdk_config(&opts).await
}

pub async fn client(emu: &Emulator) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&emulator_config(emu, Duration::from_secs(20)).await)
}

/// Through the stand-in, which applies conditional writes one at a time as
/// DynamoDB does (the emulator checks and writes apart: `standin::DynamoStandin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_passes_the_store_suite() {
    let emu = Emulator::start();
    let proxy = augur_tests::faults::FaultProxy::start(&emu.endpoint);
    let config = emulator_config(&emu, Duration::from_secs(20)).await;
    let config = config.into_builder().endpoint_url(&proxy.endpoint).build();
    let mut store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        format!("augur-conformance-{}", std::process::id()),
    );
    store.page_size = Some(7);
    assert!(
        store.ensure_table().await.expect("create table"),
        "a new table is created"
    );
    assert!(
        !store.ensure_table().await.expect("again"),
        "and creating it again is a no-op"
    );
    let store: Arc<dyn TrialStore> = Arc::new(store);
    augur_store::conformance::run_all(store, "dynamo").await;
}

/// A driver reads what changed from the changes index, not the whole study; a table
/// made before the index existed still works, by whole reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_trials_reads_the_changes_index_not_the_study() {
    use augur_model::{Expect, Params, Trial, TrialState, TrialUpdate};
    let emu = Emulator::start();
    let c = client(&emu).await;
    let mut store = DynamoStore::new(c.clone(), "augur-changes");
    store.lookback = Duration::from_millis(800);
    store.ensure_table().await.expect("table");
    let name = "chg";
    store
        .create_study(&augur_store::conformance::record(name))
        .await
        .expect("study");
    for r in 0..40 {
        store
            .create_trial(&Trial::new(name, 0, 0, r, Params::new(), 0))
            .await
            .expect("trial");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (all, mark) = store
        .changed_trials(name, 0, &augur_model::SeriesKeep::Whole)
        .await
        .expect("first read");
    assert_eq!(all.len(), 40, "the first read is whole");
    let up = TrialUpdate {
        state: Some(TrialState::Starting),
        ..Default::default()
    };
    for id in [7, 31] {
        store
            .update_trial(name, id, &Expect::state(TrialState::Pending, 1), &up)
            .await
            .expect("update");
    }
    let (changed, mark2) = store
        .changed_trials(name, mark, &augur_model::SeriesKeep::Whole)
        .await
        .expect("changes");
    let mut ids: Vec<u64> = changed.iter().map(|t| t.id).collect();
    ids.sort();
    assert_eq!(ids, vec![7, 31], "only what changed is read");
    assert!(changed.iter().all(|t| t.state == TrialState::Starting));
    assert!(mark2 > mark);
    // Changes stay in view for the lookback after the read that saw them (a
    // superset), then drop out.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (again, mark3) = store
        .changed_trials(name, mark2, &augur_model::SeriesKeep::Whole)
        .await
        .expect("again");
    assert_eq!(again.len(), 2, "within the lookback of the last read");
    let (none, _) = store
        .changed_trials(name, mark3, &augur_model::SeriesKeep::Whole)
        .await
        .expect("quiet");
    assert!(none.is_empty(), "{none:?}");

    // A table without the index (made by an older augur): whole reads, no error.
    c.create_table()
        .table_name("augur-old")
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .expect("key"),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Range)
                .build()
                .expect("key"),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("old table");
    let old = DynamoStore::new(c, "augur-old");
    old.create_study(&augur_store::conformance::record(name))
        .await
        .expect("study");
    for r in 0..3 {
        old.create_trial(&Trial::new(name, 0, 0, r, Params::new(), 0))
            .await
            .expect("trial");
    }
    let (all, mark) = old
        .changed_trials(name, 0, &augur_model::SeriesKeep::Whole)
        .await
        .expect("whole");
    let (again, _) = old
        .changed_trials(name, mark, &augur_model::SeriesKeep::Whole)
        .await
        .expect("whole again");
    assert_eq!((all.len(), again.len()), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_one_clear_error() {
    let emu = Emulator::start();
    let store = DynamoStore::new(client(&emu).await, "augur-no-such-table");
    let err = store.list_studies().await.expect_err("no table");
    let msg = err.to_string();
    assert!(
        msg.contains("augur-no-such-table") && msg.contains("augur init"),
        "{msg}"
    );
}

/// A study item as an augur before trial partitions and the study index wrote it:
/// no `layout`, no index entry.
async fn put_older_study(c: &aws_sdk_dynamodb::Client, table: &str, name: &str) {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let rec = augur_store::conformance::record(name);
    c.put_item()
        .table_name(table)
        .item("pk", V::S(name.into()))
        .item("sk", V::S("study".into()))
        .item("state", V::S(rec.state.to_string()))
        .item("rev", V::N("0".into()))
        .item("next_id", V::N("0".into()))
        .item("data", V::S(serde_json::to_string(&rec).expect("json")))
        .send()
        .await
        .expect("put");
}

/// Trials live in a partition of their own (`trials#NAME`), which IAM tells apart
/// from specs, leases and submissions by partition key; a study recorded before
/// (its item has no `layout`) keeps its trials in its own partition, read, written
/// and deleted as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trials_have_a_partition_of_their_own_and_older_studies_keep_theirs() {
    use augur_model::{Params, Trial};
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let emu = Emulator::start();
    let c = client(&emu).await;
    let store = DynamoStore::new(c.clone(), "augur-layout");
    store.ensure_table().await.expect("table");
    let key_exists = |pk: String| {
        let c = c.clone();
        async move {
            c.get_item()
                .table_name("augur-layout")
                .key("pk", V::S(pk))
                .key("sk", V::S("trial#0000000001".into()))
                .send()
                .await
                .expect("get")
                .item
                .is_some()
        }
    };
    store
        .create_study(&augur_store::conformance::record("new"))
        .await
        .expect("study");
    store
        .create_trial(&Trial::new("new", 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    assert!(key_exists("trials#new".into()).await);
    assert!(!key_exists("new".into()).await);
    // A study item as an older augur wrote it: no `layout`.
    put_older_study(&c, "augur-layout", "old").await;
    let fresh = DynamoStore::new(c.clone(), "augur-layout");
    fresh
        .create_trial(&Trial::new("old", 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    assert!(key_exists("old".into()).await);
    assert!(!key_exists("trials#old".into()).await);
    for (study, store) in [("new", &store), ("old", &fresh)] {
        assert_eq!(store.list_trials(study).await.expect("list").len(), 1);
        assert!(store.get_trial(study, 1).await.expect("get").is_some());
        assert!(store.delete_study(study).await.expect("delete"));
    }
    assert!(
        !key_exists("trials#new".into()).await,
        "deleted with its study"
    );
    assert!(!key_exists("old".into()).await);
    // Made anew by the same (long-lived) store: the new layout, not the one it knew.
    fresh
        .create_study(&augur_store::conformance::record("old"))
        .await
        .expect("study");
    fresh
        .create_trial(&Trial::new("old", 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    assert!(key_exists("trials#old".into()).await);
}

/// Studies are listed from their index (`#studies`), not by a scan of the table
/// and every trial in it. A table made before the index is scanned once: the first
/// listing writes the missing entries and marks the table indexed; later listings
/// read the index only (a study item written without an entry, as an older augur
/// would, is then not seen: proof that no scan ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studies_are_listed_from_their_index_after_one_backfill() {
    let emu = Emulator::start();
    let c = client(&emu).await;
    let store = DynamoStore::new(c.clone(), "augur-index");
    store.ensure_table().await.expect("table");
    put_older_study(&c, "augur-index", "before-a").await;
    put_older_study(&c, "augur-index", "before-b").await;
    store
        .create_study(&augur_store::conformance::record("new"))
        .await
        .expect("study");
    let names =
        |v: Vec<augur_model::StudyRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_studies().await.expect("list")),
        ["before-a", "before-b", "new"],
        "the first listing backfills"
    );
    put_older_study(&c, "augur-index", "unindexed").await;
    store
        .create_study(&augur_store::conformance::record("after"))
        .await
        .expect("study");
    assert_eq!(
        names(store.list_studies().await.expect("list")),
        ["after", "before-a", "before-b", "new"],
        "later listings read the index only"
    );
    assert!(store.delete_study("new").await.expect("delete"));
    assert_eq!(
        names(store.list_studies().await.expect("list")),
        ["after", "before-a", "before-b"]
    );
}

mod faults {
    use super::*;
    use augur_store::conformance::record;
    use augur_tests::faults::{Fault, FaultProxy, Rule};

    async fn through(
        proxy: &FaultProxy,
        base_ms: u64,
        attempts: u32,
        deadline: Duration,
    ) -> aws_sdk_dynamodb::Client {
        let opts = AwsOptions {
            endpoint: Some(proxy.endpoint.clone()),
            region: Some("us-east-1".into()),
            credentials: Some(("test".into(), "test".into())),
            max_attempts: attempts,
            backoff_base: Duration::from_millis(base_ms),
            backoff_cap: Duration::from_secs(2),
            deadline,
        };
        aws_sdk_dynamodb::Client::new(&sdk_config(&opts).await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throttled_calls_are_retried_with_growing_jittered_delays() {
        let emu = Emulator::start();
        let proxy = FaultProxy::start(&emu.endpoint);
        let store = DynamoStore::new(
            through(&proxy, 20, 5, Duration::from_secs(30)).await,
            "augur-throttle",
        );
        store.ensure_table().await.expect("table");
        // 20 writes, each throttled 3 times before it goes through.
        let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for i in 0..20 {
            proxy.add(Rule::new("dynamodb", "TransactWriteItems", Fault::Throttle).first(3));
            let before = proxy.calls().len();
            store
                .create_study(&record(&format!("s{i}")))
                .await
                .expect("retried until it succeeds");
            let calls: Vec<_> = proxy.calls()[before..]
                .iter()
                .filter(|c| c.operation == "TransactWriteItems")
                .cloned()
                .collect();
            assert_eq!(calls.len(), 4, "3 throttled attempts and 1 that succeeds");
            for k in 0..3 {
                gaps[k].push(calls[k + 1].at.duration_since(calls[k].at).as_secs_f64() * 1000.0);
            }
            proxy.clear();
        }
        let mean: Vec<f64> = gaps
            .iter()
            .map(|g| g.iter().sum::<f64>() / g.len() as f64)
            .collect();
        // Full jitter over base * 2^(n-1): expected means 10, 20, 40 ms (plus overhead).
        assert!(
            mean[0] < mean[1] && mean[1] < mean[2],
            "delays grow: {mean:?}"
        );
        for (k, g) in gaps.iter().enumerate() {
            let cap = 20.0 * f64::from(1u32 << k) + 200.0;
            assert!(
                g.iter().all(|d| *d <= cap),
                "retry {k} waited at most its cap: {g:?}"
            );
        }
        eprintln!("mean delay before retries 1..3: {mean:.1?} ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_deadline_the_error_surfaces_and_nothing_is_half_written() {
        let emu = Emulator::start();
        let proxy = FaultProxy::start(&emu.endpoint);
        let store = DynamoStore::new(
            through(&proxy, 50, 100, Duration::from_secs(2)).await,
            "augur-deadline",
        );
        store.ensure_table().await.expect("table");
        proxy.add(Rule::new("dynamodb", "*", Fault::Throttle));
        let start = std::time::Instant::now();
        let err = store
            .create_study(&record("late"))
            .await
            .expect_err("gives up");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
            "gave up at the deadline: {took:?}"
        );
        assert!(
            matches!(err, augur_store::StoreError::Unavailable(_)),
            "{err}"
        );
        proxy.clear();
        assert_eq!(store.get_study("late").await.expect("read"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_suite_passes_through_20_percent_server_errors() {
        let emu = Emulator::start();
        let proxy = FaultProxy::start(&emu.endpoint);
        let mut store = DynamoStore::new(
            through(&proxy, 5, 10, Duration::from_secs(30)).await,
            "augur-flaky",
        );
        store.page_size = Some(7);
        store.ensure_table().await.expect("table");
        proxy.add(Rule::new("dynamodb", "*", Fault::ServerError).every(5));
        augur_store::conformance::run_all(Arc::new(store), "flaky").await;
        let injected = proxy.calls().iter().filter(|c| c.fault.is_some()).count();
        assert!(injected > 50, "faults were injected: {injected}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_whose_answer_is_lost_are_not_lost_or_doubled() {
        let emu = Emulator::start();
        let proxy = FaultProxy::start(&emu.endpoint);
        let mut store = DynamoStore::new(
            through(&proxy, 5, 10, Duration::from_secs(30)).await,
            "augur-dropped",
        );
        store.page_size = Some(7);
        store.ensure_table().await.expect("table");
        for op in ["PutItem", "UpdateItem", "TransactWriteItems"] {
            proxy.add(Rule::new("dynamodb", op, Fault::DropAfterApply).every(4));
        }
        augur_store::conformance::run_all(Arc::new(store), "dropped").await;
        let dropped = proxy
            .calls()
            .iter()
            .filter(|c| c.fault == Some(Fault::DropAfterApply))
            .count();
        assert!(
            dropped > 20,
            "connections were dropped after the write: {dropped}"
        );
    }
}

/// A file sent in parts (what checkpoints from 64 MiB take) arrives whole: 11 MiB in
/// parts of 5 MiB, S3's least, is three parts, the last smaller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_goes_up_in_parts_and_comes_back_whole() {
    use augur_aws::{multipart, s3};
    let emu = Emulator::start();
    let config = emulator_config(&emu, Duration::from_secs(60)).await;
    let client = s3::client(&config, true);
    let bucket = format!("augur-parts-{}", std::process::id());
    s3::ensure_bucket(&client, &bucket, "us-east-1")
        .await
        .expect("bucket");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("model.bin");
    let bytes: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &bytes).expect("write");
    let parts = multipart::put_in_parts(
        &client,
        &bucket,
        "checkpoints/s/1/model.bin",
        &src,
        bytes.len() as u64,
        multipart::MIN_PART,
    )
    .await
    .expect("multipart upload");
    assert_eq!(parts, 3);
    let back = dir.path().join("back");
    let n = s3::download(&client, &bucket, "checkpoints/s/1/", &back)
        .await
        .expect("download");
    assert_eq!(n, 1);
    let got = std::fs::read(back.join("model.bin")).expect("read back");
    assert!(
        got == bytes,
        "{} bytes back, {} sent",
        got.len(),
        bytes.len()
    );
}

/// `expire_study` marks every item of a study (its own, its trials', its index
/// entry) with DynamoDB's time to live, and takes it off again; an item deleted
/// meanwhile is not made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_studys_items_are_marked_to_expire_and_kept_again() {
    use augur_model::{Params, Study, StudyRecord, StudyState, Trial};
    let emu = Emulator::start();
    let c = client(&emu).await;
    let table = format!("augur-expiry-{}", std::process::id());
    let store = DynamoStore::new(c.clone(), table.clone());
    store.ensure_table().await.expect("table");
    let spec = Study::parse(
        "name='old'\nobjective={metric='m'}\ntrials=2\n[run]\nscript='true'\n",
        "s.toml",
        std::path::Path::new("."),
    )
    .expect("study");
    let rec = StudyRecord {
        name: "old".into(),
        spec,
        state: StudyState::Done,
        created_ms: 1,
        updated_ms: 1,
        drive: None,
        bounds: Default::default(),
        reason: None,
    };
    store.create_study(&rec).await.expect("study");
    for p in 0..2 {
        store
            .create_trial(&Trial::new("old", 0, p, 0, Params::new(), 1))
            .await
            .expect("trial");
    }
    let marked = |c: aws_sdk_dynamodb::Client, table: String| async move {
        let out = c.scan().table_name(table).send().await.expect("scan");
        out.items()
            .iter()
            .filter(|i| i.contains_key("expires_at"))
            .count()
    };
    let n = store
        .expire_study("old", Some(1_900_000_000_000))
        .await
        .expect("expire");
    assert!(n >= 4, "study, index entry, two trials: {n}");
    assert_eq!(marked(c.clone(), table.clone()).await, n);
    store.expire_study("old", None).await.expect("keep");
    assert_eq!(marked(c.clone(), table.clone()).await, 0);
    // Deleted, then marked: nothing is made again.
    store.delete_study("old").await.expect("delete");
    store
        .expire_study("old", Some(1_900_000_000_000))
        .await
        .expect("expire nothing");
    let left = c.scan().table_name(&table).send().await.expect("scan");
    assert!(
        left.items().iter().all(|i| !i.contains_key("expires_at")),
        "{:?}",
        left.items()
    );
}

/// A heartbeat costs one write unit whatever the series' length (issue 17): it
/// lands on the trial's beat item (at most 1 KB, out of the changes index), and the
/// record is written whole only every `snapshot_every`. Counted by DynamoDB's
/// documented size rule ([`augur_aws::dynamo::item_bytes`]): emulators report no
/// consumed capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_costs_one_write_unit_at_any_series_length() {
    use augur_aws::dynamo::{item_bytes, write_units};
    use augur_model::bounded::{clip, Series};
    use augur_model::{Expect, MetricPoint, Params, Set, Trial, TrialState, TrialUpdate};
    use augur_store::Beaten;
    use aws_sdk_dynamodb::types::AttributeValue;
    let emu = Emulator::start();
    let c = client(&emu).await;
    let table = "augur-beats";
    let mut store = DynamoStore::new(c.clone(), table);
    store.snapshot_every = Duration::from_secs(3600);
    store.ensure_table().await.expect("table");
    let name = "beats";
    store
        .create_study(&augur_store::conformance::record(name))
        .await
        .expect("study");
    store
        .create_trial(&Trial::new(name, 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    for (from, up) in [
        (
            TrialState::Pending,
            TrialUpdate {
                state: Some(TrialState::Starting),
                ..Default::default()
            },
        ),
        (
            TrialState::Starting,
            TrialUpdate::running("i-1", 1, 1, None),
        ),
    ] {
        store
            .update_trial(name, 1, &Expect::state(from, 1), &up)
            .await
            .expect("write")
            .ok()
            .expect("applied");
    }
    let raw = |sk: &'static str| {
        let c = c.clone();
        async move {
            c.get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(format!("trials#{name}")))
                .key("sk", AttributeValue::S(sk.into()))
                .consistent_read(true)
                .send()
                .await
                .expect("get")
                .item()
                .cloned()
                .expect("item")
        }
    };
    let rev = |i: &std::collections::HashMap<String, AttributeValue>| i["rev"].clone();
    let before = rev(&raw("trial#0000000001").await);
    let mut series = Series::default();
    let mut last = Default::default();
    let mut worst = 0;
    let status = clip(&"epoch ".repeat(100));
    for beat in 1..=20i64 {
        for i in 0..50_000 {
            let step = (beat - 1) * 50_000 + i + 1;
            let p = MetricPoint {
                t_ms: step,
                values: [
                    ("step".to_string(), step as f64),
                    ("loss".to_string(), 1.0 / step as f64),
                    ("accuracy".to_string(), 1.0 - 1.0 / step as f64),
                    ("lr".to_string(), 0.001),
                ]
                .into(),
            };
            last = p.values.clone();
            series.push(p);
        }
        let up = TrialUpdate {
            heartbeat_ms: Some(1_000 + beat),
            metrics: Some(last.clone()),
            series: Some(series.points()),
            status: Set::To(status.clone()),
            ..Default::default()
        };
        let out = store.heartbeat(name, 1, 1, &up).await.expect("beat");
        assert_eq!(out, Beaten::Recorded);
        worst = worst.max(item_bytes(&raw("beat#0000000001").await));
    }
    let record = raw("trial#0000000001").await;
    assert_eq!(rev(&record), before, "no beat rewrote the record");
    assert!(worst <= 1024, "a beat item of {worst} bytes");
    assert_eq!(write_units(worst), 1);
    let t = store.get_trial(name, 1).await.expect("get").expect("trial");
    assert_eq!(t.heartbeat_ms, Some(1_020));
    assert_eq!(t.metrics.get("step"), Some(&1_000_000.0));
    assert_eq!(t.series.last().map(|p| p.t_ms), Some(1_000_000));
    assert_eq!(t.status.as_deref(), Some(status.as_str()));

    // The same heartbeat written to the record, as before: due at once.
    let mut whole = DynamoStore::new(c.clone(), table);
    whole.snapshot_every = Duration::ZERO;
    let up = TrialUpdate {
        heartbeat_ms: Some(2_000),
        metrics: Some(last),
        series: Some(series.points()),
        status: Set::To(status),
        ..Default::default()
    };
    assert_eq!(
        whole.heartbeat(name, 1, 1, &up).await.expect("snapshot"),
        Beaten::Recorded
    );
    let record = raw("trial#0000000001").await;
    assert_ne!(rev(&record), before, "a due snapshot writes the record");
    let size = item_bytes(&record);
    // The record is in the changes index (projection ALL) and its sort key `chg`
    // changes at each write: a delete and a put there.
    let old = 3 * write_units(size);
    println!(
        "heartbeat write units with 1,000,000 readings: beat item {worst} bytes = 1 WCU (out of the index); \
         the record written whole: {size} bytes = {} WCU + 2 x {} in the changes index = {old} WCU; \
         the record is written whole every 5 min (snapshot_every)",
        write_units(size),
        write_units(size)
    );
    assert!(size <= 20 * 1024, "record of {size} bytes");
    assert!(old > 1);
}
