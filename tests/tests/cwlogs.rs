//! An attempt's log on its way to CloudWatch Logs (the emulator's, behind the fault
//! proxy) while the service cannot be reached.

use augur_aws::cwlogs::{self, CloudWatchSink};
use augur_aws::{sdk_config, AwsOptions};
use augur_tests::emulator::Emulator;
use augur_tests::faults::{Fault, FaultProxy, Rule};
use std::time::Duration;

/// While PutLogEvents fails, the queue keeps its newest lines within its bounds;
/// once it succeeds again the stream gets one line counting what was dropped,
/// then the lines kept, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_log_service_keeps_the_newest_lines_and_counts_the_rest() {
    let emu = Emulator::start();
    let proxy = FaultProxy::start(&emu.endpoint);
    let opts = AwsOptions {
        endpoint: Some(proxy.endpoint.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
        max_attempts: 2,
        backoff_base: Duration::from_millis(10),
        deadline: Duration::from_secs(10),
        ..AwsOptions::default()
    };
    let client = augur_aws::logs(&sdk_config(&opts).await);
    let (group, stream) = ("/augur/unreachable", "1/1");
    let mut sink =
        CloudWatchSink::new(client.clone(), group.into(), stream.into()).bounded(1 << 20, 50);
    // Times of now: CloudWatch Logs refuses events older than 14 days.
    let now = augur_store::now_ms();
    sink.push(now, "augur attempt 1 begins".into());
    sink.flush().await.expect("the first line ships");
    for fault in [Fault::ServerError, Fault::Refuse] {
        proxy.add(Rule::new("logs", "PutLogEvents", fault));
    }
    let mut failed = 0;
    for i in 0..400 {
        sink.push(now + i, format!("out line {i:04}"));
        if i % 100 == 99 {
            failed += sink.flush().await.is_err() as u32;
        }
    }
    assert_eq!(failed, 4, "every flush failed while the service was away");
    proxy.clear();
    sink.flush().await.expect("ships again");
    let (lines, _) = cwlogs::read(&client, group, stream, None)
        .await
        .expect("read");
    let texts: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once(' ').map_or("", |(_, m)| m))
        .collect();
    eprintln!("{} lines shipped; {}", texts.len(), texts[1]);
    assert_eq!(texts.len(), 1 + 1 + 50);
    assert_eq!(texts[0], "augur attempt 1 begins");
    assert_eq!(
        texts[1],
        "augur 350 log lines (4550 bytes) dropped while CloudWatch Logs could not be reached"
    );
    assert_eq!(texts[2], "out line 0350");
    assert_eq!(texts[51], "out line 0399");
    let refused = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "PutLogEvents" && c.fault.is_some())
        .count();
    assert!(refused >= 4, "{refused} calls failed");
}
