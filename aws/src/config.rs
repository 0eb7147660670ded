//! One policy for every AWS call: the standard credential chain, region and endpoint
//! overrides, and retries of throttling, 5xx, timeouts and dropped connections with
//! capped exponential backoff and full jitter, inside an overall deadline.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::time::Duration;

/// How augur reaches AWS (or an emulator).
#[derive(Clone, Debug)]
pub struct AwsOptions {
    /// Endpoint for every service (an emulator); `None` uses AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Static credentials (emulators); `None` uses the standard chain.
    pub credentials: Option<(String, String)>,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff base (diviner's `TestSetRetryBackoff`: small in tests).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Longest one call may take, all its retries included.
    pub deadline: Duration,
}

impl Default for AwsOptions {
    fn default() -> AwsOptions {
        AwsOptions {
            endpoint: None,
            region: None,
            credentials: None,
            max_attempts: 8,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(20),
            deadline: Duration::from_secs(60),
        }
    }
}

/// The SDK configuration for `opts`.
pub async fn sdk_config(opts: &AwsOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(opts.max_attempts.max(1))
                .with_initial_backoff(opts.backoff_base)
                .with_max_backoff(opts.backoff_cap),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(opts.deadline.min(Duration::from_secs(30)))
                .operation_timeout(opts.deadline)
                .build(),
        );
    if let Some(e) = &opts.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some((id, secret)) = &opts.credentials {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "augur-static",
        ));
    }
    loader.load().await
}

/// This instance's id, from its metadata service (IMDSv2, at the endpoint the SDK
/// resolves: `AWS_EC2_METADATA_SERVICE_ENDPOINT` or the link-local address); `None`
/// off EC2, within a few seconds.
pub async fn instance_id() -> Option<String> {
    let client = imds();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        client.get("/latest/meta-data/instance-id"),
    )
    .await
    .ok()?
    .ok()?;
    Some(got.as_ref().to_string())
}

/// A metadata-service client that gives up quickly (off EC2 there is none).
fn imds() -> aws_config::imds::Client {
    aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .max_attempts(2)
        .build()
}

/// Resolves when this spot instance is to be reclaimed: the notice's document
/// (`{"action": "terminate", "time": "..."}`), which EC2 puts in the instance's
/// metadata two minutes ahead and which AWS advises checking every 5 s
/// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html>).
/// Looked at every `every`; before a notice the path answers 404.
pub async fn spot_notice(every: Duration) -> String {
    let client = imds();
    loop {
        if let Ok(doc) = client.get("/latest/meta-data/spot/instance-action").await {
            return doc.as_ref().to_string();
        }
        tokio::time::sleep(every).await;
    }
}
