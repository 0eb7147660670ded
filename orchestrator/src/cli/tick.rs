//! `augur tick`: one serverless tick from the command line (what augur-lambda does).

use crate::app::backend::Backend;
use crate::app::tick::{acting_deadline, handle};
use crate::LeaseSpec;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct TickArgs {
    /// Tick only these submitted studies (default: all of them).
    #[arg(long = "study")]
    studies: Vec<String>,
    /// Stop acting after this long, as a Lambda's time limit would.
    #[arg(long, default_value = "50s", value_parser = crate::app::dur)]
    limit: Duration,
}

/// `augur tick`: one serverless tick from the command line; prints its report (JSON).
pub async fn command(ctx: &Backend, args: TickArgs) -> super::CmdResult {
    let event = if args.studies.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "studies": args.studies })
    };
    let holder = LeaseSpec::for_process("augur-tick", args.limit).holder;
    let report = handle(ctx, &event, acting_deadline(args.limit), &holder).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(if report.errors() > 0 { 3 } else { 0 })
}
