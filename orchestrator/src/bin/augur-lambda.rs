//! `augur-lambda`: the serverless reconcile tick, as an AWS Lambda function (custom
//! runtime `provided.al2023`, deployed as `bootstrap` by `infra/deploy.sh`).
//!
//! Each invocation (the EventBridge schedule, or a batch of the table's stream) is one
//! [`augur::app::tick::handle`]: settings come from the environment the stack sets
//! (AUGUR_TABLE, AUGUR_BUCKET, AUGUR_SECURITY_GROUPS, ...), and nothing is kept
//! between invocations but the SDK's configuration.

use augur::app::backend::{AwsArgs, Backend, BackendKind};
use augur::app::tick::{acting_deadline, handle};
use augur_store::{now_ms, Layout};
use clap::Parser;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The function's settings, from its environment.
#[derive(Parser, Debug)]
#[command(name = "augur-lambda", version)]
struct Settings {
    #[command(flatten)]
    aws: AwsArgs,
}

async fn invoke(ctx: &Backend, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let left = event
        .context
        .deadline
        .saturating_sub(now_ms().max(0) as u64);
    let holder = format!("lambda:{}", event.context.request_id);
    let report = handle(
        ctx,
        &event.payload,
        acting_deadline(Duration::from_millis(left)),
        &holder,
    )
    .await
    .map_err(|f| Error::from(f.message))?;
    tracing::info!(
        trigger = report.trigger,
        studies = report.studies.len(),
        errors = report.errors(),
        elapsed_ms = report.elapsed_ms,
        "tick done"
    );
    Ok(serde_json::to_value(&report)?)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUGUR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Lambda starts `bootstrap` with no arguments: the settings are the environment's
    // (`--version` and `--help` work by hand).
    let settings = Settings::parse();
    augur_aws::denied::act_as("TickRole");
    let mut aws = settings.aws;
    aws.backend = BackendKind::Aws;
    let ctx = Arc::new(Backend {
        layout: Layout::new(std::env::temp_dir().join("augur")),
        aws,
        sdk: Default::default(),
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augur-lambda: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let run = rt.block_on(lambda_runtime::run(service_fn(move |ev| {
        let ctx = ctx.clone();
        async move { invoke(&ctx, ev).await }
    })));
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augur-lambda: {e}");
            ExitCode::from(3)
        }
    }
}
