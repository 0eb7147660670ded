//! The DynamoDB store against a local emulator (or `AUGUR_TEST_AWS_ENDPOINT`): the
//! same suite the SQLite store passes.

use augur_aws::{sdk_config, AwsOptions, DynamoStore};
use augur_store::TrialStore;
use augur_tests::emulator::Emulator;
use std::sync::Arc;
use std::time::Duration;

pub async fn client(emu: &Emulator) -> aws_sdk_dynamodb::Client {
    let opts = AwsOptions {
        endpoint: Some(emu.endpoint.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        deadline: Duration::from_secs(20),
        ..AwsOptions::default()
    };
    aws_sdk_dynamodb::Client::new(&sdk_config(&opts).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_passes_the_store_suite() {
    let emu = Emulator::start();
    let mut store = DynamoStore::new(
        client(&emu).await,
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
