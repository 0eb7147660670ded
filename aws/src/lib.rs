//! augur's AWS adapters: the DynamoDB [`TrialStore`](augur_store::TrialStore), EC2 as
//! the [`MachineProvider`](augur_store::MachineProvider), CloudWatch Logs, S3, and the
//! configuration and retry policy shared by every AWS call.
//!
//! Kept out of the model and store crates so that most edits never relink the SDK.

pub mod backoff;
pub mod boot;
pub mod calls;
pub mod checkpoint;
pub mod config;
pub mod cwlogs;
pub mod denied;
pub mod doctor;
pub mod dynamo;
pub mod ec2;
pub mod gpus;
pub mod instance;
mod listing;
pub mod multipart;
pub mod prices;
pub mod s3;
pub mod secrets;

pub use calls::{dynamodb, ec2, logs};
pub use config::{instance_id, sdk_config, spot_notice, AwsOptions};
pub use dynamo::DynamoStore;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// An SDK error for people: a service's code, message and request id, or the whole
/// cause chain of a transport failure (timeout, refused or dropped connection).
pub fn error_text<E>(e: &SdkError<E>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(se) => {
            let id = e
                .raw_response()
                .and_then(|r| r.headers().get("x-amzn-requestid"))
                .unwrap_or("-");
            format!(
                "{}: {} (request id {id})",
                se.code().unwrap_or("error"),
                se.message().unwrap_or("no message")
            )
        }
        None => DisplayErrorContext(e).to_string(),
    }
}
