//! Every AWS call attempt counted by service and outcome, for `/metrics`: an SDK
//! interceptor on every client augur makes ([`dynamodb`], [`ec2`], [`logs`], and the
//! S3 client), so retries inside the SDK's retry loop are seen too.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallOutcome {
    /// A 2xx answer.
    Ok,
    /// A 4xx answer that is not throttling (a failed condition, a missing item: often
    /// expected).
    ClientError,
    /// The service asked us to slow down (429, or a throttling error code).
    Throttled,
    /// A 5xx answer.
    ServerError,
    /// No answer: a refused, dropped or timed-out connection.
    Transport,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Ok,
        CallOutcome::ClientError,
        CallOutcome::Throttled,
        CallOutcome::ServerError,
        CallOutcome::Transport,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ClientError => "client_error",
            CallOutcome::Throttled => "throttled",
            CallOutcome::ServerError => "server_error",
            CallOutcome::Transport => "transport_error",
        }
    }
    /// Whether the attempt failed for a reason the service or network is to blame for.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            CallOutcome::Throttled | CallOutcome::ServerError | CallOutcome::Transport
        )
    }
}

/// The counts of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCalls {
    /// Attempts by how they ended.
    pub attempts: BTreeMap<CallOutcome, u64>,
    /// Attempts that were retries of an earlier attempt of the same call.
    pub retries: u64,
    /// Throttled attempts by operation (`GetItem`, `TransactWriteItems`): the
    /// throttling error codes, and a DynamoDB transaction cancelled for
    /// `ThrottlingError` or `ProvisionedThroughputExceeded`.
    pub throttled: BTreeMap<String, u64>,
}

static COUNTS: Mutex<BTreeMap<String, ServiceCalls>> = Mutex::new(BTreeMap::new());

/// The counts so far in this process, by service (`dynamodb`, `ec2`, `cloudwatchlogs`,
/// `s3`).
pub fn snapshot() -> BTreeMap<String, ServiceCalls> {
    COUNTS.lock().map(|c| c.clone()).unwrap_or_default()
}

/// Error codes services answer with when they throttle (with a 400), found in
/// the answer's first 2 KB: `Throttling` covers `ThrottlingException` and a
/// DynamoDB transaction's `ThrottlingError` cancellation reason,
/// `ProvisionedThroughputExceeded` both the exception and the reason
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html>).
const THROTTLING: [&str; 6] = [
    "Throttling",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceeded",
    "RequestThrottled",
    "SlowDown",
    "TooManyRequests",
];

fn classify(status: Option<u16>, body: Option<&[u8]>) -> CallOutcome {
    let Some(status) = status else {
        return CallOutcome::Transport;
    };
    if status < 400 {
        return CallOutcome::Ok;
    }
    // EC2 throttles with a 503, DynamoDB with a 400: the code tells.
    let head = body.map(|b| &b[..b.len().min(2048)]).unwrap_or_default();
    let head = String::from_utf8_lossy(head);
    if status == 429 || THROTTLING.iter().any(|code| head.contains(code)) {
        CallOutcome::Throttled
    } else if status >= 500 {
        CallOutcome::ServerError
    } else {
        CallOutcome::ClientError
    }
}

/// The interceptor that counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallCounter;

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "augur-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let meta = cfg.load::<Metadata>();
        let service = meta.map_or_else(|| "unknown".into(), |m| m.service().to_ascii_lowercase());
        let operation = meta.map_or("unknown", |m| m.name());
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        let response = context.response();
        let outcome = classify(
            response.map(|r| r.status().as_u16()),
            response.and_then(|r| r.body().bytes()),
        );
        if let Ok(mut counts) = COUNTS.lock() {
            let c = counts.entry(service).or_default();
            *c.attempts.entry(outcome).or_default() += 1;
            if outcome == CallOutcome::Throttled {
                *c.throttled.entry(operation.to_string()).or_default() += 1;
            }
            if attempt > 1 {
                c.retries += 1;
            }
        }
        Ok(())
    }
}

/// A DynamoDB client whose calls are counted.
pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(CallCounter)
            .build(),
    )
}

/// An EC2 client whose calls are counted, and whose launches that find no room
/// are not retried by the SDK ([`NoRoomIsAnswer`]).
pub fn ec2(config: &aws_config::SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(config)
            .interceptor(CallCounter)
            .retry_classifier(NoRoomIsAnswer)
            .build(),
    )
}

/// EC2 answers `InsufficientInstanceCapacity` with HTTP 500, which the SDK would
/// retry as a server error, five times, on the same type and subnet. It is an
/// answer: the launch falls back to the next type or subnet at once, and the study
/// waits when none has room ([`crate::instance::no_room`]).
#[derive(Debug, Clone, Copy)]
pub struct NoRoomIsAnswer;

impl ClassifyRetry for NoRoomIsAnswer {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        use aws_sdk_ec2::error::ProvideErrorMetadata;
        use aws_sdk_ec2::operation::run_instances::RunInstancesError;
        let Some(Err(e)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(err) = e
            .as_operation_error()
            .and_then(|o| o.downcast_ref::<RunInstancesError>())
        else {
            return RetryAction::NoActionIndicated;
        };
        let text = err.message().unwrap_or_default();
        if crate::instance::no_room(err.code().unwrap_or_default(), text) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "augur-no-room-is-an-answer"
    }
}

/// A CloudWatch Logs client whose calls are counted.
pub fn logs(config: &aws_config::SdkConfig) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(config)
            .interceptor(CallCounter)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status_and_throttling_code() {
        assert_eq!(classify(Some(200), None), CallOutcome::Ok);
        assert_eq!(classify(None, None), CallOutcome::Transport);
        assert_eq!(classify(Some(503), None), CallOutcome::ServerError);
        assert_eq!(classify(Some(429), None), CallOutcome::Throttled);
        let dynamo = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#;
        assert_eq!(classify(Some(400), Some(dynamo)), CallOutcome::Throttled);
        let ec2 = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>";
        assert_eq!(classify(Some(503), Some(ec2)), CallOutcome::Throttled);
        let cas =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}"#;
        assert_eq!(classify(Some(400), Some(cas)), CallOutcome::ClientError);
        assert!(!CallOutcome::ClientError.is_error() && CallOutcome::Throttled.is_error());
        let reason = |r: &str| {
            format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{{"Code":"None"}},{{"Code":"{r}"}}]}}"#
            )
        };
        for throttled in ["ThrottlingError", "ProvisionedThroughputExceeded"] {
            let body = reason(throttled);
            assert_eq!(
                classify(Some(400), Some(body.as_bytes())),
                CallOutcome::Throttled
            );
        }
        for not in [
            "TransactionConflict",
            "ConditionalCheckFailed",
            "ValidationError",
        ] {
            let body = reason(not);
            assert_eq!(
                classify(Some(400), Some(body.as_bytes())),
                CallOutcome::ClientError
            );
        }
        let limit = br#"{"__type":"com.amazonaws.dynamodb.v20120810#RequestLimitExceeded"}"#;
        assert_eq!(classify(Some(400), Some(limit)), CallOutcome::Throttled);
    }
}
